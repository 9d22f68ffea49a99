"""The master and its three children: restarts, reload, stop, crash recovery, privileges."""
from __future__ import annotations

import os
import pwd
import re
import signal

import pytest

from ternlib import (HOSTNAME, IS_ROOT, SERVICE_USERS, SERVICES, SmtpClient, is_running, proc_status,
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


def test_master_pid_is_logged(tern):
    assert tern.log_count(rf" master info tern started .*\bpid={tern.master_pid}$") == 1
    pids = {name: tern.child_pid(name) for name in SERVICES}
    assert all(pids.values()), pids
    for name, pid in pids.items():
        assert tern.log_count(rf" {name} info started pid={pid} ") == 1


@pytest.mark.parametrize("victim, ready_line", [("queue", " queue info spool scanned"),
                                                ("deliver", " deliver info started")],
                         ids=["queue", "deliver"])
def test_child_killed_while_holding(tern_factory, victim, ready_line):
    """SIGKILL of the queue or deliver child after a 250 while deliveries are held: the master
    restarts it, and once a reload releases deliveries the message arrives exactly once."""
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
    # smtp first, then queue and deliver.
    lines = server.lines()
    smtp_gone = next(i for i, line in enumerate(lines) if " master info service stopped service=smtp " in line)
    for later in (" queue info stopping: ", " master info service stopped service=queue ",
                  " master info service stopped service=deliver "):
        assert next(i for i, line in enumerate(lines) if later in line) > smtp_gone, later
    assert server.spool_entries() == [f"msg/{queue_id}", f"env/{queue_id}"]
    assert server.messages("alice") == []

    server.set_config(**RELEASE)
    server.start()
    assert_delivered_once(server, queue_id)


def test_reload_adds_user(tern):
    with SmtpClient(tern.port) as c:
        assert c.ehlo().startswith("250-")
        assert c.cmd("MAIL FROM:<bob@example.org>") == "250 2.1.0 Sender <bob@example.org> OK"
        assert c.cmd("RCPT TO:<carol@example.test>") == "550 5.1.1 <carol@example.test>: No such user here"
    tern.reload(users=tern.config["users"] + ["carol@example.test"])
    queue_id = send_message(tern.port, "bob@example.org", ["carol@example.test"], "Subject: hi carol\r\n\r\nhi\r\n")
    (content,) = tern.wait_messages("carol", 1)
    assert content.startswith(b"Return-Path: <bob@example.org>\nDelivered-To: carol@example.test\n")
    assert f" id {queue_id}\n\tfor <carol@example.test>; ".encode() in content
    tern.wait_spool_empty()


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


def test_privileges(tern, service_uids):
    if not IS_ROOT:
        pytest.skip("tern switches to the [run_as] users only when started as root")
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
    # Each service's socket: root owns it, only its one client's group may connect.
    for sock, client in (("queue.sock", "smtp"), ("deliver.sock", "queue")):
        st = (tern.data_dir / "run" / sock).stat()
        assert (st.st_uid, st.st_gid, st.st_mode & 0o777) == (0, pwd.getpwnam(SERVICE_USERS[client]).pw_gid, 0o660)
    send_message(tern.port, "bob@example.org", ["alice@example.test"], "Subject: owner\r\n\r\nowner\r\n")
    tern.wait_messages("alice", 1)
    (path,) = tern.maildir_files("alice")
    vmail = pwd.getpwnam(SERVICE_USERS["deliver"])
    st = path.stat()
    assert (st.st_uid, st.st_gid) == (vmail.pw_uid, vmail.pw_gid)
    assert st.st_mode & 0o777 == 0o600
