"""Full disk (issue 7, item 3): tern's whole data directory (spool, Maildirs, the account
database, sockets) is on a 2 MiB tmpfs that a filler file fills up.

- When the spool cannot hold a message, DATA ends with exactly
  `452 4.3.1 Insufficient system storage, try again later`, never with a 250 whose message is
  lost afterwards: every message that got a 250 is delivered, once and whole.
- Messages accepted while there was room but that the full Maildirs cannot take are deferred
  (they stay in the spool, the log says why), never bounced or dropped.
- When the filler goes, the deferred messages are delivered by the ordinary retries and new
  transactions get 250 again, with no restart and no command.

Needs root (mount); tests run as root here and in CI.
"""
from __future__ import annotations

import errno
import os
import re
import subprocess
import time
import uuid
from collections import Counter
from pathlib import Path

import pytest

from ternlib import DOMAIN, QUEUED_RE, SmtpClient, send_message, wait_until

pytestmark = pytest.mark.backend_independent

TMPFS_SIZE = "2m"
PAGE = os.sysconf("SC_PAGE_SIZE")
FULL_REPLY = "452 4.3.1 Insufficient system storage, try again later"
SENDER = "sender@example.org"
NO_SPACE = "No space left on device"
USERS = ["alice", "dave", "erin"]  # ternlib.default_config's users
RECIPIENTS = [f"{u}@{DOMAIN}" for u in USERS]


class SmallDisk:
    """The tmpfs under the data directory and a filler file (root's, so tern cannot remove it)."""

    def __init__(self, root: Path):
        self.root = root
        self.filler = root / "filler"

    def free(self) -> int:
        st = os.statvfs(self.root)
        return st.f_bavail * st.f_frsize

    def fill(self, leave: int = 0) -> None:
        """Grows the filler until the filesystem is full, then gives back `leave` bytes (whole
        pages) so that about that much stays free."""
        fd = os.open(self.filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            for chunk in (b"\0" * 65536, b"\0" * PAGE):
                while True:
                    try:
                        os.write(fd, chunk)
                    except OSError as e:
                        assert e.errno == errno.ENOSPC, e
                        break
            if leave:
                size = os.fstat(fd).st_size
                os.ftruncate(fd, max(0, size - (leave + PAGE - 1) // PAGE * PAGE))
        finally:
            os.close(fd)

    def release(self) -> None:
        self.filler.unlink()


@pytest.fixture
def full_disk(tern_factory):
    """A started server whose data directory is a fresh tmpfs, and the SmallDisk for it. The
    server is stopped and the tmpfs unmounted at teardown, whatever happened; tern_factory then
    prints the log and checks it for sanitizer reports."""
    server = tern_factory(start=False)
    server.data_dir.mkdir(mode=0o755)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={TMPFS_SIZE},mode=0755", "tern-full-disk",
                    str(server.data_dir)], check=True)
    try:
        server.start()  # provision() copies the account database onto the tmpfs
        yield server, SmallDisk(server.data_dir)
    finally:
        try:
            server.cleanup()
        finally:
            unmount(server.data_dir)


def unmount(path: Path) -> None:
    for _ in range(50):  # processes killed at cleanup may take a moment to let go of their files
        if subprocess.run(["umount", str(path)], capture_output=True).returncode == 0:
            return
        time.sleep(0.1)
    subprocess.run(["umount", "--lazy", str(path)], check=True)


def make_message(marker: str, size: int) -> bytes:
    """A message of about `size` bytes on the wire (CRLF, no line starting with a dot)."""
    head = f"From: {SENDER}\r\nTo: alice@{DOMAIN}\r\nSubject: {marker}\r\n\r\n{marker}\r\n"
    line = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ-full-disk\r\n"
    return (head + line * max(0, (size - len(head)) // len(line))).encode()


def transaction(c: SmtpClient, recipients: list[str], message: bytes) -> str:
    """MAIL, RCPT and DATA with exact replies; returns the reply to the final dot."""
    assert c.cmd(f"MAIL FROM:<{SENDER}>") == f"250 2.1.0 Sender <{SENDER}> OK"
    for r in recipients:
        assert c.cmd(f"RCPT TO:<{r}>") == f"250 2.1.5 Recipient <{r}> OK"
    assert c.cmd("DATA") == "354 End data with <CR><LF>.<CR><LF>"
    c.send(message + b".\r\n")
    return c.read_reply()


def delivered(server, user: str) -> Counter:
    """How many copies of each message (by its Subject marker) are in the user's Maildir."""
    out = Counter()
    for content in server.messages(user):
        m = re.search(rb"^Subject: (\S+)$", content, re.M)
        assert m, content[:400]
        out[m.group(1).decode()] += 1
    return out


def assert_whole(content: bytes, queue_id: str, message: bytes) -> None:
    """The Maildir file holds tern's lines for this queue id, then exactly the message sent
    (with LF line ends)."""
    body = message.replace(b"\r\n", b"\n")
    assert content.endswith(body), content[:600]
    prefix = content[:-len(body)]
    assert re.fullmatch(rb"Return-Path: <sender@example\.org>\nDelivered-To: \S+\n"
                        rb"Received: from client\.test \(\[127\.0\.0\.1\]\)\n"
                        rb"\tby mail\.example\.test \(tern\) with ESMTP id " + re.escape(queue_id.encode())
                        + rb"(\n\tfor <\S+>)?; [^\n]+\n", prefix), prefix


def assert_log_count(server, pattern: str, count: int) -> None:
    """Exactly `count` log lines match `pattern`, once they have come through the master's pipe."""
    server.wait_log(pattern, count)
    assert server.log_count(pattern) == count, pattern


def assert_no_crash_no_bounce(server) -> None:
    assert server.log_count(r" service died") == 0, server.log_text()
    assert server.log_count(r" queue error delivery failed") == 0, "a recipient failed instead of being deferred"
    assert server.log_count(r" report queued") == 0, "a delivery report (bounce) was queued"


def test_full_spool_answers_452_and_loses_nothing(full_disk):
    server, disk = full_disk
    # No room at all: no message can be spooled, whatever its size.
    disk.fill()
    with SmtpClient(server.port) as c:
        assert c.ehlo().startswith("250-mail.example.test Hello [127.0.0.1]")
        for size in (300, 20_000, 90_000):
            marker = f"refused-{uuid.uuid4().hex}"
            assert transaction(c, RECIPIENTS, make_message(marker, size)) == FULL_REPLY
        assert c.cmd("NOOP") == "250 2.0.0 Ok"  # the session goes on
    assert_log_count(server, rf" queue error cannot commit message id=\S+ error=\"{NO_SPACE}\"$", 3)
    assert_log_count(server, r" smtp info message refused .* reply=\"452 4\.3\.1\"", 3)
    assert server.spool_entries() == []

    # Room for a few messages: every DATA gets either a 250 or the 452, until the disk is full
    # again. The three Maildir copies of each accepted message compete for the same space, so
    # deliveries are deferred too (how many depends on timing; the next test makes sure of it).
    disk.fill(leave=160 * 1024)
    accepted: dict[str, tuple[str, bytes]] = {}  # marker -> (queue id, message)
    refused = 0
    with SmtpClient(server.port) as c:
        assert c.ehlo().startswith("250-mail.example.test Hello [127.0.0.1]")
        for n in range(30):
            marker = f"m{n}-{uuid.uuid4().hex}"
            message = make_message(marker, 30_000)
            reply = transaction(c, RECIPIENTS, message)
            m = QUEUED_RE.match(reply)
            if m:
                accepted[marker] = (m.group(1), message)
            else:
                assert reply == FULL_REPLY
                refused += 1
                if refused == 3:
                    break
        assert c.cmd("QUIT") == "221 2.0.0 mail.example.test closing connection"
    assert accepted and refused == 3, f"{len(accepted)} accepted, {refused} refused"
    assert_log_count(server, r" smtp info message refused .* reply=\"452 4\.3\.1\"", 3 + refused)
    assert_log_count(server, rf" queue error cannot commit message id=\S+ error=\"{NO_SPACE}\"$", 3 + refused)
    # What the spool holds (accepted messages not delivered yet) is accepted mail only.
    ids = {qid for qid, _ in accepted.values()}
    assert {e.split("/", 1)[1] for e in server.spool_entries()} <= ids

    # Space comes back: every accepted message reaches every recipient exactly once, and whole;
    # the refused ones never appear.
    disk.release()
    for u in USERS:
        wait_until(lambda: len(server.maildir_files(u)) >= len(accepted), timeout=30,
                   message=f"{len(accepted)} accepted messages in the Maildir of {u}")
    server.wait_spool_empty()
    for u in USERS:
        assert delivered(server, u) == Counter({marker: 1 for marker in accepted})
        for content in server.messages(u):
            marker = re.search(rb"^Subject: (\S+)$", content, re.M).group(1).decode()
            assert_whole(content, *accepted[marker])

    # New transactions get 250 again and are delivered at once.
    marker = f"after-{uuid.uuid4().hex}"
    queue_id = send_message(server.port, SENDER, RECIPIENTS, make_message(marker, 30_000).decode())
    for u in USERS:
        server.wait_messages(u, len(accepted) + 1)
        assert delivered(server, u)[marker] == 1
    server.wait_spool_empty()
    for r in RECIPIENTS:
        assert_log_count(server, rf" queue info delivered id={queue_id} to={re.escape(r)} attempts=1$", 1)
    assert_no_crash_no_bounce(server)


def test_deliveries_defer_while_the_store_is_full_and_resume(full_disk):
    server, disk = full_disk
    # Room for the message in the spool (60 KB and its envelope), not for one more copy of it.
    disk.fill(leave=100 * 1024)
    first = f"deferred-{uuid.uuid4().hex}"
    message = make_message(first, 60_000)
    with SmtpClient(server.port) as c:
        assert c.ehlo().startswith("250-mail.example.test Hello [127.0.0.1]")
        m = QUEUED_RE.match(transaction(c, RECIPIENTS, message))
        assert m
        queue_id = m.group(1)
        assert c.cmd("QUIT") == "221 2.0.0 mail.example.test closing connection"

    def deferrals(r: str) -> int:
        """Attempts for recipient r that deliver reported as failed for want of space and the
        queue deferred (both lines are needed)."""
        return min(
            server.log_count(rf" deliver warn maildir delivery failed id={queue_id} to={re.escape(r)} "
                             rf"error=\"cannot write \S+/Maildir/tmp/\S+: {NO_SPACE}\"$"),
            server.log_count(rf" queue warn delivery deferred id={queue_id} to={re.escape(r)} "
                             rf"reason=\"cannot write \S+/Maildir/tmp/\S+: {NO_SPACE}\" retry_in=[12]$"))

    def assert_deferred() -> None:
        assert sorted(server.spool_entries()) == [f"env/{queue_id}", f"msg/{queue_id}"]
        for u in USERS:
            assert server.messages(u) == []
            tmp = server.maildir(u).parent / "tmp"
            assert not tmp.is_dir() or not list(tmp.iterdir()), "a partial Maildir file was left in tmp/"
        assert_no_crash_no_bounce(server)

    # Each recipient is tried, fails for want of space and is deferred; and again at the retry.
    for r in RECIPIENTS:
        wait_until(lambda: deferrals(r) >= 2, message=f"two deferrals of {r} for want of space")
    assert_deferred()
    # Now not a byte left: still deferred, nothing failed.
    disk.fill()
    for r in RECIPIENTS:
        wait_until(lambda: deferrals(r) >= 3, message=f"a third deferral of {r}")
    assert_deferred()

    # Space comes back: the next retries deliver, with no restart and no command.
    disk.release()
    for u in USERS:
        (content,) = server.wait_messages(u, 1, timeout=15)
        assert_whole(content, queue_id, message)
    server.wait_spool_empty()
    for r in RECIPIENTS:
        assert_log_count(server, rf" queue info delivered id={queue_id} to={re.escape(r)} attempts=([4-9]|\d\d+)$", 1)

    # And new mail flows as before.
    marker = f"after-{uuid.uuid4().hex}"
    send_message(server.port, SENDER, RECIPIENTS, make_message(marker, 30_000).decode())
    for u in USERS:
        server.wait_messages(u, 2)
        assert delivered(server, u) == Counter({first: 1, marker: 1})
    server.wait_spool_empty()
    assert_no_crash_no_bounce(server)


def test_no_inode_for_the_spool_file_answers_452_at_data(tern_factory):
    """When the spool cannot even create the message's file (no inode left), the queue refuses
    the message before DATA; smtp passes its exact reply on (not a 451 "queue unavailable"), and
    the connection to the queue stays usable for the next message once there is room again."""
    server = tern_factory(start=False)
    server.data_dir.mkdir(mode=0o755)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m,nr_inodes=400,mode=0755", "tern-no-inodes",
                    str(server.data_dir)], check=True)
    hog = server.data_dir / "inodes"
    try:
        server.start()
        hog.mkdir()
        n = 0
        while True:  # use up every inode left
            try:
                (hog / str(n)).touch()
            except OSError as e:
                assert e.errno == errno.ENOSPC, e
                break
            n += 1
        with SmtpClient(server.port) as c:
            assert c.cmd("EHLO client.test").startswith("250")
            assert c.cmd(f"MAIL FROM:<{SENDER}>").startswith("250 ")
            assert c.cmd(f"RCPT TO:<alice@{DOMAIN}>").startswith("250 ")
            assert c.cmd("DATA") == FULL_REPLY
            assert c.cmd("NOOP") == "250 2.0.0 Ok"  # the session goes on, the transaction is gone
            assert c.cmd("RCPT TO:<alice@example.test>") == "503 5.5.1 Need MAIL command"
            for f in list(hog.iterdir())[:50]:
                f.unlink()
            message = make_message("after-inodes", 300)
            assert transaction(c, [f"alice@{DOMAIN}"], message).startswith("250 ")
        server.wait_messages("alice", 1)
        server.wait_log(r"smtp warn queue refused the message before DATA client=\[127\.0\.0\.1\] "
                        r"reply=\"452 4\.3\.1\" reason=\"452 4\.3\.1 Insufficient system storage")
        assert server.log_count("queue service unavailable") == 0
    finally:
        try:
            server.cleanup()
        finally:
            unmount(server.data_dir)
