"""A protocol-level fuzzer for IMAP and POP3 (issue 7, item 5): random and mutated command
sequences over real sockets against a running tern with mail in the mailbox. No service may die
or report a sanitizer error; every tagged IMAP reply must be OK, NO or BAD with text; every POP3
status line +OK or -ERR; every message file still in the Maildir afterwards must hold exactly the
bytes delivered (flags may change, contents never); and a normal client must still be served.

The sequence comes from a seed (printed; TERN_FUZZ_SEED repeats a run) and TERN_FUZZ_SESSIONS
sets how many sessions run per protocol (default 60).
"""
from __future__ import annotations

import hashlib
import imaplib
import os
import poplib
import random
import re
import smtplib
import socket
import time

import pytest

from ternlib import free_port, wait_until

pytestmark = pytest.mark.backend_independent

ALICE = "alice@example.test"
IMAP_TAGGED = re.compile(rb"^[A-Za-z0-9.]+ (OK|NO|BAD) .+$")
POP3_STATUS = re.compile(rb"^(\+OK|-ERR)( .*)?$")
IMAP_COMMANDS = [
    "CAPABILITY", "NOOP", "ID NIL", "ENABLE CONDSTORE", "SELECT INBOX", "EXAMINE INBOX", "SELECT Nowhere",
    "CREATE Fuzz", "CREATE Fuzz.Sub", "DELETE Fuzz", "RENAME Fuzz Fuzz2", "SUBSCRIBE INBOX", "LSUB \"\" *",
    "LIST \"\" *", "LIST (SPECIAL-USE) \"\" *", "LIST \"\" % RETURN (STATUS (MESSAGES SIZE))", "NAMESPACE",
    "STATUS INBOX (MESSAGES UIDNEXT UNSEEN SIZE HIGHESTMODSEQ)", "FETCH 1:* (FLAGS UID RFC822.SIZE)",
    "FETCH 1 (BODY.PEEK[] BODYSTRUCTURE ENVELOPE)", "FETCH * (BODY[1.MIME] BINARY[1] BINARY.SIZE[1])",
    "FETCH 1:3 (BODY.PEEK[HEADER.FIELDS (SUBJECT FROM)]<0.10>)", "UID FETCH 1:* (FLAGS) (CHANGEDSINCE 1)",
    "STORE 1 +FLAGS (\\Seen Junk)", "STORE 1:* -FLAGS.SILENT (\\Flagged)", "STORE 2 FLAGS ($Forwarded)",
    "UID STORE 1:* (UNCHANGEDSINCE 1) +FLAGS (\\Answered)", "SEARCH TEXT fuzz", "SEARCH OR SEEN FLAGGED",
    "SEARCH RETURN (MIN MAX COUNT SAVE) ALL", "SEARCH NOT (UID 1:2 LARGER 10)", "UID SEARCH MODSEQ 1",
    "COPY 1 Archive", "UID MOVE 2 Trash", "COPY 1:* Nowhere", "CHECK", "UNSELECT", "CLOSE", "IDLE",
    "GETQUOTAROOT INBOX", "APPEND INBOX {10+}\r\nSubject: f", "APPEND Fuzz (\\Seen) {5}", "EXPUNGE",
    "FETCH 999 FLAGS", "FETCH 0 FLAGS", "FETCH $ (UID)", "STORE 1 +FLAGS (\\Recent)", "LOGIN a b", "STARTTLS",
    "AUTHENTICATE PLAIN", "BOGUS", "", "(((((((((((((((((((((((((((((((((((((",
]
POP3_COMMANDS = ["STAT", "LIST", "LIST 1", "LIST 99", "UIDL", "UIDL 2", "RETR 1", "RETR 2", "TOP 1 0", "TOP 2 5",
                 "DELE 1", "DELE 3", "RSET", "NOOP", "CAPA", "STLS", "APOP a b", "USER x", "PASS y", "AUTH PLAIN",
                 "AUTH FOO", "RETR 0", "RETR -1", "LIST 99999999999", "X" * 300, ""]


def mutate(rng: random.Random, line: bytes) -> bytes:
    choice = rng.randrange(8)
    if choice == 0 and line:
        i = rng.randrange(len(line))
        return line[:i] + bytes([rng.randrange(256)]) + line[i + 1:]
    if choice == 1:
        return line + b"\0" + line
    if choice == 2:
        return line * rng.randrange(2, 100)
    if choice == 3:
        return bytes(rng.randrange(256) for _ in range(rng.randrange(1, 60)))
    if choice == 4 and line:
        return line[:rng.randrange(len(line))]
    return line


def send_mail(t, subject: str, body: str) -> None:
    msg = f"From: bob@outside.test\r\nTo: {ALICE}\r\nSubject: {subject}\r\n\r\n{body}"
    with smtplib.SMTP("127.0.0.1", t.port, timeout=10) as s:
        s.sendmail("bob@outside.test", [ALICE], msg.encode())


def contents(t) -> dict[str, str]:
    """base name -> SHA-256 of every message file in every folder of alice's Maildir."""
    root = t.maildir("alice").parent
    out = {}
    for path in root.rglob("*"):
        if path.is_file() and path.parent.name in ("new", "cur"):
            out[path.name.split(":")[0]] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def read_lines(sock: socket.socket, deadline: float) -> list[bytes]:
    data = b""
    sock.settimeout(0.2)
    while time.monotonic() < deadline:
        try:
            chunk = sock.recv(65536)
        except socket.timeout:
            break
        except OSError:
            break
        if not chunk:
            break
        data += chunk
    return data.split(b"\r\n")


@pytest.fixture
def server(tern_factory):
    imap_port, pop3_port = free_port(), free_port()
    t = tern_factory(imap={"listen": [f"127.0.0.1:{imap_port}"], "plaintext_auth_without_tls": True},
                     pop3={"listen": [f"127.0.0.1:{pop3_port}"], "plaintext_auth_without_tls": True})
    t.imap, t.pop3 = imap_port, pop3_port
    t.wait_log(" imap info started")
    t.wait_log(" pop3 info started")
    for i in range(5):
        send_mail(t, f"fuzz {i}", f"fuzz body {i}\r\n" * (i + 1))
    t.wait_messages("alice", 5)
    return t


def test_random_imap_and_pop3_sessions_keep_mail_whole(server):
    seed = int(os.environ.get("TERN_FUZZ_SEED", random.randrange(1 << 30)))
    sessions = int(os.environ.get("TERN_FUZZ_SESSIONS", "60"))
    print(f"seed {seed}, {sessions} sessions per protocol")
    rng = random.Random(seed)
    before = contents(server)
    pids = {name: server.child_pid(name) for name in ("imap", "pop3", "directory")}
    for n in range(sessions):
        # IMAP: log in (mostly), then a run of commands, some mutated.
        s = socket.create_connection(("127.0.0.1", server.imap), timeout=10)
        out = [f"a0 LOGIN {ALICE} pw".encode()] if rng.random() < 0.9 else []
        for i in range(rng.randrange(1, 25)):
            line = f"a{i + 1} {rng.choice(IMAP_COMMANDS)}".encode()
            out.append(mutate(rng, line) if rng.random() < 0.3 else line)
        s.sendall(b"\r\n".join(out) + b"\r\nz LOGOUT\r\n")
        for line in read_lines(s, time.monotonic() + 3):
            if line[:1].isalnum() and re.match(rb"^[A-Za-z0-9.]+ (OK|NO|BAD)\b", line):
                assert IMAP_TAGGED.match(line), (seed, line)
        s.close()
        # POP3: USER/PASS (mostly), then commands; QUIT only sometimes (deletions need QUIT).
        s = socket.create_connection(("127.0.0.1", server.pop3), timeout=10)
        out = [f"USER {ALICE}".encode(), b"PASS pw"] if rng.random() < 0.9 else []
        for _ in range(rng.randrange(1, 15)):
            line = rng.choice(POP3_COMMANDS).encode()
            out.append(mutate(rng, line) if rng.random() < 0.3 else line)
        if rng.random() < 0.3:
            out.append(b"QUIT")
        s.sendall(b"\r\n".join(out) + b"\r\n")
        lines = read_lines(s, time.monotonic() + 2)
        assert lines and POP3_STATUS.match(lines[0]), (seed, lines[:3])
        s.close()
        if n % 20 == 19:  # keep some mail to work on
            send_mail(server, f"refill {n}", "refill body\r\n")
    # Nobody died, nothing leaked, and what is left is whole.
    for name, pid in pids.items():
        assert server.child_pid(name) == pid, f"{name} restarted (seed {seed})"
    assert server.log_count(" died") == 0, f"a service died (seed {seed})"
    after = contents(server)
    for base, digest in after.items():
        if base in before:
            assert digest == before[base], f"{base} changed (seed {seed})"
    # A normal client is still served.
    m = imaplib.IMAP4("127.0.0.1", server.imap, timeout=10)
    m.login(ALICE, "pw")
    assert m.select("INBOX")[0] == "OK"
    m.logout()
    p = poplib.POP3("127.0.0.1", server.pop3, timeout=10)
    p.user(ALICE)
    p.pass_("pw")
    assert p.stat()[0] >= 0
    p.quit()
