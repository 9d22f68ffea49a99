"""A protocol-level fuzzer for SMTP (issue 7, item 5): random and mutated command sequences over
real sockets against a running tern. Every line the server sends must be a well-formed reply,
no service may die or report a sanitizer error, every message that got a 250 after DATA must be
delivered, whole, exactly once, and a normal client must still be served at the end.

The sequence comes from a seed (printed; TERN_FUZZ_SEED repeats a run) and TERN_FUZZ_SESSIONS
sets how many sessions run (default 150, about half a minute).
"""
from __future__ import annotations

import base64
import os
import random
import re
import socket
import time

import pytest

from ternlib import SmtpClient, wait_until

pytestmark = pytest.mark.backend_independent

# Printable text; UTF-8 only where a client's SMTPUTF8 address is echoed (RFC 6531), so each
# line must also be valid UTF-8.
REPLY_LINE = re.compile(rb"^[2-5][0-9][0-9][ -][\x20-\x7e\x80-\xff]*$")
USERS = ["alice@example.test", "dave@example.test", "erin@example.test"]
VERBS = ["HELO", "EHLO", "MAIL FROM:", "RCPT TO:", "DATA", "RSET", "NOOP", "QUIT", "VRFY", "EXPN", "HELP",
         "STARTTLS", "AUTH PLAIN", "AUTH LOGIN", "AUTH CRAM-MD5", "BDAT 10", "TURN", "ETRN x", ""]
PATHS = ["<alice@example.test>", "<>", "<x@example.org>", "<@a,@b:x@example.org>", "<\"a b\"@example.test>",
         "<a@[127.0.0.1]>", "<a@[IPv6:::1]>", "alice@example.test", "<alice@example.test", "<" + "a" * 300 + "@x.org>",
         "<a@" + "b" * 300 + ".org>", "<ü@example.test>", "<a@xn--bcher-kva.example>", "<victim%outside@example.test>"]
PARAMS = ["", " SIZE=100", " SIZE=99999999999999999999", " BODY=8BITMIME", " BODY=BINARYMIME", " SMTPUTF8",
          " RET=FULL", " RET=HDRS RET=FULL", " ENVID=a+2Bb", " NOTIFY=SUCCESS,FAILURE", " NOTIFY=NEVER,DELAY",
          " ORCPT=rfc822;a+40b", " ORCPT=;", " FOO=BAR", " =", " SIZE="]


def mutate(rng: random.Random, line: bytes) -> bytes:
    choice = rng.randrange(10)
    if choice == 0 and line:
        i = rng.randrange(len(line))
        return line[:i] + bytes([rng.randrange(256)]) + line[i + 1:]
    if choice == 1:
        return line + b"\0" + line
    if choice == 2:
        return line * rng.randrange(2, 200)
    if choice == 3:
        return bytes(rng.randrange(256) for _ in range(rng.randrange(1, 80)))
    if choice == 4 and line:
        return line[:rng.randrange(len(line))]
    return line


def command(rng: random.Random) -> bytes:
    verb = rng.choice(VERBS)
    if verb in ("MAIL FROM:", "RCPT TO:"):
        path = rng.choice(USERS + USERS) if verb == "RCPT TO:" and rng.random() < 0.5 else rng.choice(PATHS)
        if verb == "RCPT TO:" and not path.startswith("<"):
            path = f"<{path}>"
        text = verb + path + rng.choice(PARAMS)
    elif verb.startswith("AUTH") and rng.random() < 0.5:
        text = verb + " " + base64.b64encode(os.urandom(rng.randrange(0, 40))).decode()
    elif verb in ("HELO", "EHLO"):
        text = verb + " " + rng.choice(["client.test", "", "[127.0.0.1]", "x" * 600, "a b c"])
    else:
        text = verb
    line = text.encode("utf-8")
    if rng.random() < 0.3:
        line = mutate(rng, line)
    ending = rng.choice([b"\r\n"] * 8 + [b"\n", b"\r", b""])
    return line + ending


def message_body(rng: random.Random, token: str) -> bytes:
    lines = [f"Subject: {token}".encode(), b""]
    for _ in range(rng.randrange(0, 20)):
        # Lines that make the message refused (bare LF, over 998 octets) are rare, so that most
        # messages are accepted and their delivery can be checked.
        kind = rng.choice([0, 1, 4, 5] * 8 + [2, 3])
        if kind == 0:
            lines.append(b"." * rng.randrange(1, 4) + b"dotted")
        elif kind == 1:
            lines.append(bytes(rng.randrange(32, 127) for _ in range(rng.randrange(0, 120))))
        elif kind == 2:
            lines.append(b"x" * rng.randrange(990, 1010))
        elif kind == 3:
            lines.append(b"bare\nlf")
        elif kind == 4:
            lines.append("ünïcödé".encode())
        else:
            lines.append(b"line")
    return b"\r\n".join(lines) + b"\r\n"


class Session:
    def __init__(self, port: int):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.buf = b""
        self.lines: list[bytes] = []

    def drain(self, wait: float) -> bool:
        """Reads what the server sends within `wait` seconds, returning early once it has sent
        whole lines and then paused; False once the server closed."""
        self.sock.settimeout(wait)
        try:
            while True:
                chunk = self.sock.recv(65536)
                if not chunk:
                    return False
                self.buf += chunk
                *complete, self.buf = self.buf.split(b"\r\n")
                self.lines += complete
                if complete and not self.buf:
                    self.sock.settimeout(0.01)  # more only if it follows at once
        except (socket.timeout, BlockingIOError):
            return True
        except (ConnectionResetError, BrokenPipeError):
            return False


def script(rng: random.Random) -> list[bytes]:
    """A mostly sensible session (greeting, MAIL, RCPTs, DATA, more) with random commands put in
    and lines mutated now and then, so the fuzz reaches deep states as well as shallow ones."""
    steps = [rng.choice([b"EHLO client.test\r\n", b"HELO client.test\r\n"])]
    for _ in range(rng.randrange(1, 3)):
        steps.append(b"MAIL FROM:" + rng.choice(PATHS[:4]).encode() + rng.choice(PARAMS[:5]).encode() + b"\r\n")
        for _ in range(rng.randrange(1, 4)):
            steps.append(b"RCPT TO:<" + rng.choice(USERS).encode() + b">" + rng.choice(PARAMS[8:13]).encode() + b"\r\n")
        steps.append(b"DATA\r\n")
    steps.append(b"QUIT\r\n")
    out = []
    for step in steps:
        while rng.random() < 0.2:
            out.append(command(rng))
        out.append(mutate(rng, step) if rng.random() < 0.08 else step)
    return out


def run_session(rng: random.Random, port: int, accepted: set[str]) -> int:
    s = Session(port)
    open_ = s.drain(0.2)
    silent = 0  # full lines in a row that got no answer (inside DATA, a SASL exchange, a long line)
    for cmd in script(rng):
        if not open_:
            break
        upper = cmd.upper()
        try:
            s.sock.sendall(cmd)
        except (BrokenPipeError, ConnectionResetError):
            break
        before = len(s.lines)
        pipelined = rng.random() < 0.3 and not upper.startswith(b"DATA")
        open_ = s.drain(0.002 if pipelined else 0.03)
        if not pipelined and open_ and len(s.lines) == before and cmd.endswith(b"\n") and silent < 2:
            open_ = s.drain(0.5)  # a full line usually gets its answer; wait for it
        replies = s.lines[before:]
        silent = silent + 1 if not replies and cmd.endswith(b"\n") else 0
        if upper == b"DATA\r\n" and replies and replies[-1].startswith(b"354"):
            token = f"fuzz-{rng.getrandbits(64):016x}"
            body = message_body(rng, token)
            complete = rng.random() < 0.9
            s.sock.sendall(body + (b".\r\n" if complete else b""))
            if complete:
                # The answer to the message is the last line before the server waits for the
                # next command (earlier pipelined answers may come first).
                before = len(s.lines)
                while open_ and len(s.lines) == before:
                    open_ = s.drain(2.0)
                if open_:
                    open_ = s.drain(0.05)
                if s.lines[before:] and s.lines[-1].startswith(b"250 ") and b"queued as" in s.lines[-1]:
                    accepted.add(token)
            else:
                break  # the client goes away mid-message: nothing may be kept
    s.drain(0.05)
    s.sock.close()
    for line in s.lines:
        assert REPLY_LINE.match(line), f"malformed reply line {line!r}"
        line.decode("utf-8")  # raises on bytes that are not UTF-8
    return len(s.lines)


def test_random_command_sequences(tern_factory):
    seed = int(os.environ.get("TERN_FUZZ_SEED", random.SystemRandom().randrange(2**32)))
    sessions = int(os.environ.get("TERN_FUZZ_SESSIONS", "150"))
    print(f"\nsmtp protocol fuzz: seed {seed}, {sessions} sessions (TERN_FUZZ_SEED={seed} repeats it)")
    rng = random.Random(seed)
    tern = tern_factory(smtp={"max_errors": 50, "command_timeout": 10, "max_connections_per_ip": 1000})
    pids = {name: tern.child_pid(name) for name in ("smtp", "queue", "deliver", "directory", "relay")}
    accepted: set[str] = set()
    replies = 0
    started = time.monotonic()
    for _ in range(sessions):
        replies += run_session(rng, tern.port, accepted)
    print(f"smtp protocol fuzz: sessions took {time.monotonic() - started:.1f} s")
    print(f"smtp protocol fuzz: {replies} reply lines, {len(accepted)} messages seen accepted by the client")
    # Every message the client saw accepted is in the Maildirs, at most once per user.
    def delivered() -> dict[str, list[str]]:
        found: dict[str, list[str]] = {}
        for user in USERS:
            for content in tern.messages(user.split("@")[0]):
                header = content.split(b"\n\n", 1)[0]  # not a DSN quoting the message's headers
                m = re.search(rb"(?m)^Subject: (fuzz-[0-9a-f]{16})", header)
                if m:
                    found.setdefault(m.group(1).decode(), []).append(user)
        return found
    # (Which recipients a message has is taken from the server's log below: with pipelining the
    # client cannot always tell which answer belongs to which RCPT.)
    wait_until(lambda: all(t in delivered() for t in accepted), timeout=60,
               message=f"the {len(accepted)} accepted messages in the Maildirs")
    for token, users in delivered().items():
        assert len(users) == len(set(users)), f"{token} delivered twice: {users}"
    # The server's own account (the client may miss a reply it pipelined past): every message
    # it logged as accepted was delivered to each of its recipients exactly once.
    accepted_ids = re.findall(r"smtp info message accepted .* id=(\S+) from=\S* to=(\S+) ", tern.log_text())
    def all_delivered() -> bool:
        return all(tern.log_count(rf"deliver info delivered to maildir id={re.escape(i)} to={re.escape(r)} ") == 1
                   for i, rcpts in accepted_ids for r in rcpts.split(","))
    wait_until(all_delivered, timeout=60, message="every message the server accepted, delivered once")
    print(f"smtp protocol fuzz: the server accepted {len(accepted_ids)} messages, all delivered once")
    # Nothing died, and a plain client is still served.
    assert {name: tern.child_pid(name) for name in pids} == pids
    with SmtpClient(tern.port) as c:
        assert c.cmd("EHLO client.test").startswith("250")
        assert c.cmd("MAIL FROM:<x@example.org>").startswith("250 ")
        assert c.cmd("RCPT TO:<alice@example.test>").startswith("250 ")
        assert c.cmd("DATA").startswith("354")
        c.send("Subject: after the fuzz\r\n\r\nfine\r\n.\r\n")
        assert c.read_reply().startswith("250 ")
