"""The master and its four children: restarts, reload, stop, crash recovery, privileges."""
from __future__ import annotations

import os
import pwd
import re
import signal
import struct
import subprocess
import sys

import pytest

from ternlib import (BACKEND, HOSTNAME, IS_ROOT, SERVICE_USERS, SERVICES, SmtpClient, is_running, proc_status,
                     send_message, wait_until)

SHUTTING_DOWN = f"421 4.3.2 {HOSTNAME} Service shutting down, closing connection"
HOLD = {"queue": {"concurrency_local": 0}}
RELEASE = {"queue": {"concurrency_local": 10}}


def held_message(server) -> str:
    """Sends one message to alice while deliveries are held; returns its queue id."""
    queue_id = send_message(server.port, "bob@example.org", ["alice@example.test"],
                            "Subject: held\r\n\r\nheld message\r\n")
    assert server.spool_entries() == [f"msg/{queue_id}", f"env/{queue_id}"]
    return queue_id


def assert_delivered_once(server, queue_id: str) -> None:
    server.wait_messages("alice", 1)
    server.wait_spool_empty()
    files = server.messages("alice")
    assert len(files) == 1, files
    assert f" id {queue_id}\n".encode() in files[0]
    assert files[0].endswith(b"\n\nheld message\n")
    assert server.log_count(rf" deliver info delivered to maildir id={re.escape(queue_id)} ") == 1
    assert server.log_count(rf" queue info delivered id={re.escape(queue_id)} ") == 1


@pytest.mark.parametrize("victim, ready_line", [("queue", " queue info spool scanned"),
                                                ("deliver", " deliver info started"),
                                                ("directory", " directory info account database open")],
                         ids=["queue", "deliver", "directory"])
def test_kept_connections_survive_a_restart(tern, victim, ready_line):
    """smtp keeps its connections to the queue and the directory, the queue its connections to
    deliver, and deliver its connections to the directory, open between requests. After the far
    end is killed and restarted, the next message is accepted (no 451) and delivered on its first
    attempt (the dead kept connection is replaced, not reported as a deferral), exactly once."""
    first = send_message(tern.port, "bob@example.org", ["alice@example.test"], "Subject: one\r\n\r\none\r\n")
    tern.wait_messages("alice", 1)
    tern.wait_spool_empty()
    old = tern.child_pid(victim)
    ready_before = tern.log_count(ready_line)
    os.kill(old, signal.SIGKILL)
    tern.wait_child_pid(victim, not_pid=old)
    tern.wait_log(ready_line, ready_before + 1)
    second = send_message(tern.port, "bob@example.org", ["alice@example.test"], "Subject: two\r\n\r\ntwo\r\n")
    tern.wait_messages("alice", 2)
    tern.wait_spool_empty()
    for queue_id in (first, second):
        # The log is read by a thread of the test: wait for the line, then count it.
        tern.wait_log(rf" queue info delivered id={re.escape(queue_id)} .*attempts=1\b")
        assert tern.log_count(rf" queue info delivered id={re.escape(queue_id)} .*attempts=1\b") == 1
        assert tern.log_count(rf" deliver info delivered to maildir id={re.escape(queue_id)} ") == 1
    assert tern.log_count(r" queue warn delivery deferred") == 0


def test_master_pid_is_logged(tern):
    assert tern.log_count(rf" master info tern started .*\bpid={tern.master_pid}$") == 1
    pids = {name: tern.child_pid(name) for name in SERVICES}
    assert all(pids.values()), pids
    for name, pid in pids.items():
        assert tern.log_count(rf" {name} info started pid={pid} ") == 1


@pytest.mark.parametrize("victim, ready_line", [("queue", " queue info spool scanned"),
                                                ("deliver", " deliver info started"),
                                                ("directory", " directory info account database open")],
                         ids=["queue", "deliver", "directory"])
def test_child_killed_while_holding(tern_factory, victim, ready_line):
    """SIGKILL of the queue, deliver or directory child after a 250 while deliveries are held:
    the master restarts it, and once a reload releases deliveries the message arrives exactly
    once (deliver asks the restarted directory where alice's mail goes)."""
    server = tern_factory(**HOLD)
    queue_id = held_message(server)
    old = server.child_pid(victim)
    assert old
    ready_before = server.log_count(ready_line)
    os.kill(old, signal.SIGKILL)
    new = server.wait_child_pid(victim, not_pid=old)
    assert not is_running(old)
    server.wait_log(ready_line, ready_before + 1)
    server.wait_log(rf" master error service died; restarting service={victim} ")
    if victim == "queue":
        assert server.log_count(r" queue info spool scanned messages=1$") == 1
    assert server.spool_entries() == [f"msg/{queue_id}", f"env/{queue_id}"]
    assert server.messages("alice") == []
    server.reload(**RELEASE)
    assert_delivered_once(server, queue_id)
    assert server.child_pid(victim) == new


def test_master_killed_while_holding(tern_factory):
    """SIGKILL of the master: the children exit; a new master on the same data directory
    delivers the held message exactly once."""
    server = tern_factory(**HOLD)
    queue_id = held_message(server)
    children = {name: server.child_pid(name) for name in SERVICES}
    assert all(children.values()), children
    server.signal(signal.SIGKILL)
    assert server.wait_exit() == -signal.SIGKILL
    wait_until(lambda: not any(is_running(pid) for pid in children.values()),
               message="every child of the killed master to exit")
    assert server.spool_entries() == [f"msg/{queue_id}", f"env/{queue_id}"]
    assert server.messages("alice") == []
    server.set_config(**RELEASE)
    server.start()
    assert server.log_count(r" master info tern started ") == 2
    assert_delivered_once(server, queue_id)


def test_sigterm_closes_sessions_and_keeps_queue(tern_factory):
    """SIGTERM: every open session (idle, mid-transaction, mid-DATA) gets 421 4.3.2, the
    master exits 0 within 10 s, the accepted message survives and is delivered after a
    restart; the message cut off in DATA is not."""
    server = tern_factory(**HOLD)
    queue_id = held_message(server)

    idle = SmtpClient(server.port)
    mid = SmtpClient(server.port)
    assert mid.ehlo().startswith("250-")
    assert mid.cmd("MAIL FROM:<bob@example.org>") == "250 2.1.0 Sender <bob@example.org> OK"
    assert mid.cmd("RCPT TO:<alice@example.test>") == "250 2.1.5 Recipient <alice@example.test> OK"
    in_data = SmtpClient(server.port)
    assert in_data.ehlo().startswith("250-")
    assert in_data.cmd("MAIL FROM:<bob@example.org>") == "250 2.1.0 Sender <bob@example.org> OK"
    assert in_data.cmd("RCPT TO:<alice@example.test>") == "250 2.1.5 Recipient <alice@example.test> OK"
    assert in_data.cmd("DATA") == "354 End data with <CR><LF>.<CR><LF>"
    in_data.send("Subject: cut by shutdown\r\n\r\npartial")

    server.signal(signal.SIGTERM)
    for name, client in [("idle", idle), ("mid-transaction", mid), ("in DATA", in_data)]:
        with client:
            assert client.read_reply() == SHUTTING_DOWN, f"{name} session"
            assert client.closed(), f"{name} session"
    assert server.wait_exit(10) == 0
    assert server.log_count(r" master info tern stopped$") == 1
    # smtp first, then queue, deliver and directory.
    lines = server.lines()
    smtp_gone = next(i for i, line in enumerate(lines) if " master info service stopped service=smtp " in line)
    for later in (" queue info stopping: ", " master info service stopped service=queue ",
                  " master info service stopped service=deliver ", " master info service stopped service=directory "):
        assert next(i for i, line in enumerate(lines) if later in line) > smtp_gone, later
    assert server.spool_entries() == [f"msg/{queue_id}", f"env/{queue_id}"]
    assert server.messages("alice") == []

    server.set_config(**RELEASE)
    server.start()
    assert_delivered_once(server, queue_id)


def test_user_added_while_running_is_accepted_at_once(tern):
    """Accounts live in the directory database: `tern user add` on a running server makes the
    very next RCPT succeed, with no reload and no restart; `tern user del` refuses the next one."""
    with SmtpClient(tern.port) as c:
        assert c.ehlo().startswith("250-")
        assert c.cmd("MAIL FROM:<bob@example.org>") == "250 2.1.0 Sender <bob@example.org> OK"
        assert c.cmd("RCPT TO:<carol@example.test>") == "550 5.1.1 <carol@example.test>: No such user here"
        # The same session, after the account appears.
        tern.add_user("carol@example.test")
        assert c.cmd("RCPT TO:<carol@example.test>") == "250 2.1.5 Recipient <carol@example.test> OK"
    queue_id = send_message(tern.port, "bob@example.org", ["carol@example.test"], "Subject: hi carol\r\n\r\nhi\r\n")
    (content,) = tern.wait_messages("carol", 1)
    assert content.startswith(b"Return-Path: <bob@example.org>\nDelivered-To: carol@example.test\n")
    assert f" id {queue_id}\n\tfor <carol@example.test>; ".encode() in content
    tern.wait_spool_empty()
    r = tern.cli("user", "del", "carol@example.test", check=True)
    assert r.stdout == (f"deleted user carol@example.test; the Maildir {tern.data_dir}/domains/example.test/carol/Maildir "
                        "was left on disk\n")
    with SmtpClient(tern.port) as c:
        assert c.ehlo().startswith("250-")
        assert c.cmd("MAIL FROM:<bob@example.org>") == "250 2.1.0 Sender <bob@example.org> OK"
        assert c.cmd("RCPT TO:<carol@example.test>") == "550 5.1.1 <carol@example.test>: No such user here"
    assert tern.log_count(r" configuration reloaded") == 0
    assert tern.log_count(r" service died") == 0


def test_reload_with_bad_config_keeps_running_one(tern):
    good = tern.config
    tern.write_config("[server\nhostname = \n")
    tern.signal(signal.SIGHUP)
    tern.wait_log(r" master error configuration not reloaded; the running one stays problem=.*TOML syntax error")
    # The master keeps its configuration and does not pass the SIGHUP on.
    assert tern.log_count(r" configuration reloaded") == 0
    send_message(tern.port, "bob@example.org", ["alice@example.test"], "Subject: still\r\n\r\nstill here\r\n")
    tern.wait_messages("alice", 1)
    tern.write_config(good)
    assert all(tern.child_pid(name) for name in SERVICES)


def test_killed_smtp_child_is_restarted_and_logged(tern):
    old = tern.child_pid("smtp")
    assert old
    started_before = tern.log_count(r" smtp info started ")
    os.kill(old, signal.SIGKILL)
    tern.wait_log(r" master error service died; restarting service=smtp how=\"signal Killed\" restart_in_s=1$")
    new = tern.wait_child_pid("smtp", not_pid=old)
    tern.wait_log(r" smtp info started ", started_before + 1)
    assert tern.log_count(rf" smtp info started pid={new} ") == 1
    queue_id = send_message(tern.port, "bob@example.org", ["alice@example.test"], "Subject: after\r\n\r\nafter\r\n")
    (content,) = tern.wait_messages("alice", 1)
    assert f" id {queue_id}\n".encode() in content


def test_privileges(tern_factory, service_uids):
    if not IS_ROOT:
        pytest.skip("tern switches to the [run_as] users only when started as root")
    tern = tern_factory(start=False)
    tern.use_template = False  # the account database exactly as the CLI (run as root) leaves it
    tern.start()
    assert proc_status(tern.master_pid)["Uid"].split() == ["0"] * 4
    for name in SERVICES:
        pw = pwd.getpwnam(SERVICE_USERS[name])
        assert pw.pw_uid == service_uids[name]
        pid = tern.child_pid(name)
        status = proc_status(pid)
        assert status["Uid"].split() == [str(pw.pw_uid)] * 4, f"{name}: {status['Uid']}"
        assert status["Gid"].split() == [str(pw.pw_gid)] * 4, f"{name}: {status['Gid']}"
        assert status["Groups"].split() == [str(pw.pw_gid)], f"{name}: {status['Groups']}"
        assert tern.log_count(rf" {name} info started pid={pid} uid={pw.pw_uid}$") == 1
    run = tern.data_dir / "run"
    # queue.sock (smtp submits, deliver re-queues forwards) and directory.sock (smtp and deliver
    # resolve) have more than one kind of client: open to every local user, the service checks
    # each caller's uid (SO_PEERCRED; see test_unexpected_user_is_refused). deliver.sock has one.
    for sock in ("queue.sock", "directory.sock"):
        st = (run / sock).stat()
        assert (st.st_uid, st.st_gid, st.st_mode & 0o777) == (0, 0, 0o666), sock
    st = (run / "deliver.sock").stat()
    assert (st.st_uid, st.st_gid, st.st_mode & 0o777) == (0, pwd.getpwnam(SERVICE_USERS["queue"]).pw_gid, 0o660)
    # The account database belongs to the directory user alone, although the CLI (as root)
    # created it before the first start.
    accounts = pwd.getpwnam(SERVICE_USERS["directory"])
    st = (tern.data_dir / "directory").stat()
    assert (st.st_uid, st.st_gid, st.st_mode & 0o7777) == (accounts.pw_uid, accounts.pw_gid, 0o700)
    if BACKEND == "sqlite":
        db = tern.data_dir / "directory" / "accounts.db"
        tern.add_user("carol@example.test")  # the CLI writes while the service has it open
        for path in sorted((tern.data_dir / "directory").iterdir()):
            st = path.stat()
            assert (st.st_uid, st.st_gid) == (accounts.pw_uid, accounts.pw_gid), path
        assert db.exists()
        for name in ("smtp", "queue", "deliver"):
            r = subprocess.run(["runuser", "-u", SERVICE_USERS[name], "--", "cat", str(db)], capture_output=True,
                               timeout=30)
            assert r.returncode != 0 and r.stdout == b"", name
            assert b"Permission denied" in r.stderr, (name, r.stderr)
    # What each service must not reach: the mail store (smtp, queue, relay, directory), the spool
    # (smtp, deliver, relay, directory), smtp's greylisting state (all but smtp).
    forbidden = {
        tern.data_dir / "domains": ("smtp", "queue", "relay", "directory"),
        tern.data_dir / "spool": ("smtp", "deliver", "relay", "directory"),
        tern.data_dir / "smtp": ("queue", "deliver", "relay", "directory"),
    }
    for path, names in forbidden.items():
        for name in names:
            r = subprocess.run(["runuser", "-u", SERVICE_USERS[name], "--", "ls", str(path)], capture_output=True,
                               timeout=30)
            assert r.returncode != 0 and b"Permission denied" in r.stderr, (name, str(path), r.stderr)
    send_message(tern.port, "bob@example.org", ["alice@example.test"], "Subject: owner\r\n\r\nowner\r\n")
    tern.wait_messages("alice", 1)
    (path,) = tern.maildir_files("alice")
    vmail = pwd.getpwnam(SERVICE_USERS["deliver"])
    st = path.stat()
    assert (st.st_uid, st.st_gid) == (vmail.pw_uid, vmail.pw_gid)
    assert st.st_mode & 0o777 == 0o600


# Connects to a Unix socket, sends a frame (hex in argv[2]) and prints what came back (hex)
# before the connection ended, or "no-connect".
_PEER = r"""
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.settimeout(10)
try:
    s.connect(sys.argv[1])
except OSError as e:
    print("no-connect", e)
    sys.exit(0)
data = b""
try:
    s.sendall(bytes.fromhex(sys.argv[2]))
    s.shutdown(socket.SHUT_WR)
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
except (BrokenPipeError, ConnectionResetError):
    pass
print("answer", data.hex())
"""


def _frame(type_: int, *fields) -> bytes:
    """An IPC frame (src/core/ipc.h): u32 length, u16 type, strings as u32 length + bytes,
    lists of strings as u32 count + strings; bytes go in as they are (u8 and other fields)."""
    payload = b""
    for f in fields:
        if isinstance(f, bytes):
            payload += f
        elif isinstance(f, list):
            payload += struct.pack(">I", len(f)) + b"".join(struct.pack(">I", len(x)) + x.encode() for x in f)
        else:
            payload += struct.pack(">I", len(f)) + f.encode()
    return struct.pack(">IH", 2 + len(payload), type_) + payload


def _ask(sock, frame: bytes, user: str | None) -> str:
    argv = [sys.executable, "-c", _PEER, str(sock), frame.hex()]
    if user:
        argv = ["runuser", "-u", user, "--"] + argv
    r = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


def test_unexpected_user_is_refused(tern):
    """queue.sock and directory.sock are mode 0666: a local user other than the services' and
    root's may connect, but gets no answer, and the refusal is logged. root (the CLI) is
    answered the same requests, so the frames themselves are valid."""
    if not IS_ROOT:
        pytest.skip("the sockets are open to every user, and checked by uid, only when tern runs as root")
    run = tern.data_dir / "run"
    resolve = _frame(20, "alice@example.test")
    auth = _frame(22, "alice@example.test", "wrong password", "[test]", "test")
    # SubmitBegin: client, helo, sender, recipients, envid, ret (u8), notify (empty list of u64),
    # orcpt (empty list), body_8bit (u8), smtputf8 (u8), auth, forwarded_by, sign (u8).
    submit = _frame(1, "127.0.0.1", "client.test", "bob@example.org", ["alice@example.test"], "", b"\x00",
                    struct.pack(">I", 0), [], b"\x00", b"\x00", "", "", b"\x00")
    nobody = pwd.getpwnam("nobody").pw_uid

    assert _ask(run / "directory.sock", resolve, None).startswith("answer 00000"), "root gets a resolution"
    assert _ask(run / "queue.sock", submit, None).startswith("answer 00000"), "root gets SubmitReady"

    for sock, frame, log in [
        ("directory.sock", resolve, rf" directory warn refused a resolve request from an unexpected user uid={nobody}$"),
        ("directory.sock", auth, rf" directory warn refused a password check from an unexpected user uid={nobody}$"),
        ("queue.sock", submit, r" queue warn refused a submission from an unexpected user"),
    ]:
        before = tern.log_count(log)
        assert _ask(run / sock, frame, "nobody") == "answer", f"{sock} answered nobody"
        tern.wait_log(log, before + 1)
    # Nothing was queued for nobody, and the services are still fine.
    send_message(tern.port, "bob@example.org", ["alice@example.test"], "Subject: after\r\n\r\nafter\r\n")
    tern.wait_messages("alice", 1)
    tern.wait_spool_empty()
    assert len(tern.messages("alice")) == 1
    assert tern.log_count(r" service died") == 0
