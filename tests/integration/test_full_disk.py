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
    """The Maildir file holds tern's lines, then exactly the message sent (LF line ends)."""
    assert re.search(rb"\tby mail\.example\.test \(tern\) with ESMTP id " + re.escape(queue_id.encode()), content), \
        content[:600]
    assert content.endswith(b"\n\n" + message.replace(b"\r\n", b"\n").split(b"\n\n", 1)[1]), content[:600]
    assert content.count(b"\nSubject: ") == 1 and content.split(b"\nFrom: ", 1)[1] == \
        message.replace(b"\r\n", b"\n").split(b"From: ", 1)[1]


def assert_no_crash_no_bounce(server) -> None:
    assert server.log_count(r" service died") == 0, server.log_text()
    assert server.log_count(r" delivery failed") == 0, "a message was failed instead of deferred"
    assert server.log_count(r" report queued") == 0, "a delivery report (bounce) was queued"


def test_full_spool_answers_452_and_loses_nothing(full_disk):
    server, disk = full_disk
    # No room at all: the message cannot be spooled, whatever its size.
    disk.fill()
    with SmtpClient(server.port) as c:
        assert c.ehlo().startswith("250-mail.example.test Hello [127.0.0.1]")
        for size in (300, 20_000, 90_000):
            marker = f"refused-{uuid.uuid4().hex}"
            assert transaction(c, [f"alice@{DOMAIN}"], make_message(marker, size)) == FULL_REPLY
        # The session goes on after a 452 (the transaction was reset).
        assert c.cmd("NOOP") == "250 2.0.0 OK"
    assert server.log_count(rf" queue error cannot commit message id=\S+ error=\"{NO_SPACE}\"") == 3
    assert server.log_count(r" smtp info message refused .* reply=\"452 4\.3\.1\"") == 3
    assert server.spool_entries() == []

    # Room for a few messages: every DATA gets either a 250 or the 452, until the disk is full
    # again (the deliveries of accepted messages fill it too, and are deferred when it is).
    disk.fill(leave=160 * 1024)
    accepted: dict[str, tuple[str, bytes]] = {}  # marker -> (queue id, message)
    refused: list[str] = []
    with SmtpClient(server.port) as c:
        assert c.ehlo().startswith("250-mail.example.test Hello [127.0.0.1]")
        for n in range(30):
            marker = f"m{n}-{uuid.uuid4().hex}"
            message = make_message(marker, 30_000)
            reply = transaction(c, [f"alice@{DOMAIN}"], message)
            m = QUEUED_RE.match(reply)
            if m:
                accepted[marker] = (m.group(1), message)
            else:
                assert reply == FULL_REPLY
                refused.append(marker)
                if len(refused) == 3:
                    break
        assert c.cmd("QUIT") == "221 2.0.0 mail.example.test closing connection"
    assert accepted and len(refused) == 3, (accepted.keys(), refused)
    assert server.log_count(r" smtp info message refused .* reply=\"452 4\.3\.1\"") == 3 + len(refused)

    # Space comes back: every accepted message is delivered exactly once, and whole; the
    # refused ones never appear.
    disk.release()
    wait_until(lambda: sum(delivered(server, "alice").values()) >= len(accepted), timeout=30,
               message=f"{len(accepted)} accepted messages in alice's Maildir")
    server.wait_spool_empty()
    assert delivered(server, "alice") == Counter({marker: 1 for marker in accepted})
    for content in server.messages("alice"):
        marker = re.search(rb"^Subject: (\S+)$", content, re.M).group(1).decode()
        assert_whole(content, *accepted[marker])

    # New transactions get 250 again and are delivered.
    marker = f"after-{uuid.uuid4().hex}"
    queue_id = send_message(server.port, SENDER, [f"alice@{DOMAIN}"], make_message(marker, 30_000).decode())
    server.wait_messages("alice", len(accepted) + 1)
    server.wait_spool_empty()
    assert delivered(server, "alice")[marker] == 1
    assert server.log_count(rf" queue info delivered id={queue_id} to=alice@example\.test attempts=1") == 1
    assert_no_crash_no_bounce(server)


def test_deliveries_defer_while_the_store_is_full_and_resume(full_disk):
    server, disk = full_disk
    users = ["alice", "dave", "erin"]
    recipients = [f"{u}@{DOMAIN}" for u in users]
    # Room for the message in the spool (60 KB and its envelope), not for one more copy of it.
    disk.fill(leave=100 * 1024)
    marker = f"deferred-{uuid.uuid4().hex}"
    message = make_message(marker, 60_000)
    with SmtpClient(server.port) as c:
        assert c.ehlo().startswith("250-mail.example.test Hello [127.0.0.1]")
        m = QUEUED_RE.match(transaction(c, recipients, message))
        assert m
        queue_id = m.group(1)
        assert c.cmd("QUIT") == "221 2.0.0 mail.example.test closing connection"

    # Each recipient is tried, fails for want of space, and is deferred; and again at the retry.
    for r in recipients:
        server.wait_log(rf" deliver warn maildir delivery failed id={queue_id} to={re.escape(r)} "
                        rf"error=\"cannot write \S+/Maildir/tmp/\S+: {NO_SPACE}\"", count=2)
        server.wait_log(rf" queue warn delivery deferred id={queue_id} to={re.escape(r)} "
                        rf"reason=\"cannot write \S+: {NO_SPACE}\" retry_in=\d+", count=2)
    assert sorted(server.spool_entries()) == [f"env/{queue_id}", f"msg/{queue_id}"]
    for u in users:
        assert server.messages(u) == []
        tmp = server.maildir(u).parent / "tmp"
        assert not tmp.is_dir() or not list(tmp.iterdir()), "a partial Maildir file was left in tmp/"
    assert_no_crash_no_bounce(server)

    # Space comes back: the next retries deliver, with no restart and no command.
    disk.release()
    for u in users:
        (content,) = server.wait_messages(u, 1, timeout=15)
        assert_whole(content, queue_id, message)
    server.wait_spool_empty()
    for r in recipients:
        assert server.log_count(rf" queue info delivered id={queue_id} to={re.escape(r)} attempts=([3-9]|\d\d+)$") == 1

    # And new mail flows as before.
    marker = f"after-{uuid.uuid4().hex}"
    send_message(server.port, SENDER, recipients, make_message(marker, 30_000).decode())
    for u in users:
        server.wait_messages(u, 2)
        assert delivered(server, u) == Counter({message.split(b"Subject: ")[1].split(b"\r\n")[0].decode(): 1,
                                                marker: 1})
    server.wait_spool_empty()
    assert_no_crash_no_bounce(server)
