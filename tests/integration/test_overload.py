"""Overload (issue 7, item 4): thousands of concurrent SMTP connections, slow clients among
them, and a smtp process out of file descriptors. tern keeps serving new clients within its
limits, its memory per idle connection stays small (the figure is printed and bounded), and
running out of descriptors never kills a service.

The client side needs many sockets: the test raises its own open-file limit (tern inherits it).
"""
from __future__ import annotations

import resource
import socket
import time

import pytest

from ternlib import HOSTNAME, SmtpClient, wait_until

pytestmark = pytest.mark.backend_independent

IDLE = 2000
MESSAGE = "From: x@example.org\r\nTo: alice@example.test\r\nSubject: overload\r\n\r\nstill served\r\n"


@pytest.fixture(autouse=True)
def many_files():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, 3 * IDLE + 1000)
    if want < 2 * IDLE + 200:
        raise AssertionError(f"the open-file hard limit ({hard}) is too low for this test; raise it to {want}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def rss_kib(pid: int) -> int:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for {pid}")


def open_sockets(port: int, count: int, source_prefix: str = "127.0.9.") -> list[socket.socket]:
    """`count` connections, spread over 100 source addresses; their greetings are read later."""
    out = []
    for i in range(count):
        s = socket.create_connection(("127.0.0.1", port), timeout=30,
                                     source_address=(f"{source_prefix}{1 + i % 100}", 0))
        out.append(s)
    return out


def read_greeting(s: socket.socket) -> bytes:
    data = b""
    while not data.endswith(b"\r\n"):
        chunk = s.recv(512)
        if not chunk:
            break
        data += chunk
    return data


def served(port: int, source: str = "127.0.0.1") -> bool:
    with SmtpClient(port, source=source, timeout=30) as c:
        assert c.greeting.startswith("220 "), c.greeting
        assert c.cmd("EHLO client.test").startswith("250")
        assert c.cmd("MAIL FROM:<x@example.org>").startswith("250 ")
        assert c.cmd("RCPT TO:<alice@example.test>").startswith("250 ")
        assert c.cmd("DATA").startswith("354")
        c.send(MESSAGE + ".\r\n")
        return c.read_reply().startswith("250 ")


def test_thousands_of_idle_connections(tern_factory):
    tern = tern_factory(smtp={"max_connections": IDLE + 1, "max_connections_per_ip": IDLE + 1,
                              "max_connections_per_network": IDLE + 1})
    smtp = tern.child_pid("smtp")
    warm = open_sockets(tern.port, 50)  # first allocations of a session, not counted
    assert all(read_greeting(s).startswith(b"220 ") for s in warm)
    before = rss_kib(smtp)
    idle = open_sockets(tern.port, IDLE - 50)
    assert all(read_greeting(s).startswith(b"220 ") for s in idle)
    after = rss_kib(smtp)
    per_connection = (after - before) * 1024 / len(idle)
    print(f"\noverload: {IDLE} idle sessions; smtp RSS {before} KiB -> {after} KiB, "
          f"{per_connection / 1024:.1f} KiB per idle connection")
    # A session's state is a few KiB (its buffers grow only with what the client sends); under
    # ASan every allocation carries redzones, so the bound is generous but still catches a
    # per-connection buffer of the size of a message chunk (64 KiB).
    assert per_connection < 48 * 1024, f"{per_connection:.0f} bytes per idle connection"
    # Another client is still served, within the limits, while all of them wait.
    assert served(tern.port)
    tern.wait_messages("alice", 1)
    # The limit holds: of two more connections (one slot is free once the session above is
    # gone), at least one is refused.
    with SmtpClient(tern.port, greeting=False) as one, SmtpClient(tern.port, greeting=False) as two:
        replies = (one.read_reply(), two.read_reply())
    assert f"421 4.7.0 {HOSTNAME} Too many connections, try again later" in replies, replies
    for s in warm + idle:
        s.close()
    wait_until(lambda: served(tern.port), timeout=30, message="a new session once the idle ones are gone")
    assert tern.child_pid("smtp") == smtp  # never restarted


def test_slow_clients_do_not_hold_up_others(tern_factory):
    tern = tern_factory(smtp={"max_connections_per_ip": 1000, "max_connections_per_network": 1000})
    slow = open_sockets(tern.port, 300, "127.0.8.")
    for s in slow:
        assert read_greeting(s).startswith(b"220 ")
    started = time.monotonic()
    for step in range(5):  # each slow client dribbles a command, a byte at a time
        for s in slow:
            s.sendall(b"EHLO slow.test\r\n"[step:step + 1])
        if step == 2:
            assert served(tern.port)  # in the middle of it all
    assert time.monotonic() - started < 60
    for s in slow:
        s.close()
    tern.wait_messages("alice", 1)


def test_out_of_descriptors_the_service_survives(tern_factory):
    tern = tern_factory(start=False, smtp={"max_connections_per_ip": 1000, "max_connections_per_network": 1000})
    # tern under a hard limit of 150 open files (prlimit on a running process needs a capability
    # containers often lack; a wrapper sets it for itself and execs tern).
    wrapper = tern.base / "tern-150-files"
    wrapper.write_text(f'#!/bin/sh\nexec prlimit --nofile=150:150 -- {tern.binary} "$@"\n')
    wrapper.chmod(0o755)
    tern.binary = str(wrapper)
    tern.start()
    tern.wait_log(r"master warn the open-file limit is low for smtp\.max_connections; raise it .* limit=150 "
                  r"max_connections=500")
    smtp = tern.child_pid("smtp")
    held = open_sockets(tern.port, 250, "127.0.7.")  # more than the smtp process can open
    tern.wait_log(r"smtp warn accept failed error=\"Too many open files\"")
    # Some were greeted; the rest wait in the listen queue. Nothing died.
    greeted = 0
    for s in held[:100]:
        s.settimeout(5)
        greeted += read_greeting(s).startswith(b"220 ")
    assert greeted == 100
    assert tern.child_pid("smtp") == smtp
    for s in held:
        s.close()
    wait_until(lambda: served(tern.port), timeout=30, message="served again once descriptors are free")
    assert tern.child_pid("smtp") == smtp
    assert tern.log_count(r"service died|exited with") == 0
