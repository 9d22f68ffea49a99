#!/usr/bin/python3
"""Crash harness (issue 7, item 1): no message that got a 250 is lost when tern's processes die.

    TERN_BIN=build/release/tern tests/reliability/crash_harness.py --duration 60 [--seed N] [--sessions N]

What it does:

1. Starts `tern serve` with ternlib.TernServer (the integration tests' configuration, accounts and
   run_as users) plus: the users alice, dave, erin (recipients), fwdbox, sender-a and sender-b (the
   senders, so every file in their Maildirs is a delivery report); the alias fwd@example.test ->
   fwdbox@example.test + fwd-remote@remote.test (deliver hands the remote part back to the queue
   as a new message); smtp.relay_networks = 127.0.0.1; and a [[route]] sending remote.test to a
   sink on 127.0.0.1 (smtp_receiver.SmtpReceiver), so no DNS is involved. The sink accepts every
   recipient except bounce-N@remote.test (550 5.1.1 at RCPT: those must come back as DSNs) and
   records each message's token and whether its body is intact before its 250 (in memory, and in
   sink.jsonl in the work directory).
2. --sessions client threads send messages over SMTP (1 to 5 per session, 1 to 4 recipients each:
   local users, the alias, remote addresses, bounce addresses; bodies of 100 bytes to 60 KB). Each
   message carries a unique token (X-Harness-Token, Message-ID, Subject) and the SHA-256 of its
   body (X-Harness-Digest). A message counts as accepted only when DATA got 250, and then only for
   the recipients whose RCPT got 250; a 4xx/5xx or a dropped connection means "not accepted".
3. Meanwhile one thread kills a tern process with SIGKILL every --kill-interval seconds (random
   within the range), taking the victims in shuffled rounds: the master (its children get
   SIGTERM from PR_SET_PDEATHSIG and stop; the harness waits until every one is gone, then starts
   `tern serve` again) or one child (smtp, queue, deliver, relay, directory), which the master
   restarts by itself. Every few seconds a collector reads the Maildirs as a mail client would:
   it records each file's token and removes the file (so a long soak does not fill the disk).
4. After --duration seconds: killing and sending stop, the harness waits until every service runs
   again and the spool's msg/ and env/ are empty, stops tern with SIGTERM (exit status 0
   expected), reads what is left in the Maildirs, and checks:
   - every accepted (message, recipient) reached each of its destinations at least once with an
     intact body (the user's Maildir, or the sink), or the sender got a DSN whose
     Final-Recipient is that recipient (expected for bounce-N@remote.test, reported as
     `unexpected_bounces` otherwise). Anything else is `missing`; a copy whose body does not
     match its digest is `corrupt`;
   - copies beyond the first are `duplicates` (allowed: delivery is at least once);
   - the spool holds nothing but `lock`, `msg/` and `env/` (both empty) and `free/` with spare
     files named sN: anything else (a msg/ID without env/ID, an env/ID without msg/ID, a *.tmp) is
     an `orphan`;
   - no sanitizer report in the log, no service died but those killed, tern stopped cleanly.
5. Prints the totals and one line starting with "CRASH-HARNESS RESULT" (key=value pairs); the exit
   status is 0 when all of the above held, 1 otherwise, 2 when the harness could not run (tern
   would not start again). On failure the work directory (tern's data with what is left in the
   Maildirs, tern.log with every log line, sink.jsonl, attempts.jsonl with each message's token, recipients and reply) is kept and named.

--sabotage delete-maildir-file|corrupt-maildir-file|orphan-spool-file spoils one thing just before
the final check, to show that the check catches it (the run must then fail).
"""
from __future__ import annotations

import argparse
import base64
import collections
import email
import email.policy
import hashlib
import json
import os
import random
import re
import signal
import smtplib
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration"))

import ternlib  # noqa: E402
from smtp_receiver import SmtpReceiver  # noqa: E402

DOMAIN = ternlib.DOMAIN
REMOTE = "remote.test"
LOCAL_USERS = ["alice", "dave", "erin"]
ALIAS = f"fwd@{DOMAIN}"
ALIAS_MAILBOX = "fwdbox"
ALIAS_REMOTE = f"fwd-remote@{REMOTE}"
SENDERS = [f"sender-a@{DOMAIN}", f"sender-b@{DOMAIN}"]
CHILDREN = ("smtp", "queue", "deliver", "relay", "directory")
VICTIMS = ("master",) + CHILDREN
RESULT_PREFIX = "CRASH-HARNESS RESULT"
TOKEN_RE = re.compile(rb"^X-Harness-Token: (\S+)\r?$", re.M)
DIGEST_RE = re.compile(rb"^X-Harness-Digest: (\S+)\r?$", re.M)
# Per-message log lines: written to tern.log but not kept in memory (a long soak makes millions).
CHATTER_RE = re.compile(r" (smtp|queue|deliver|relay) info (message accepted|message refused|connection closed|"
                        r"queued|delivered|relayed|forwarded|relay transaction|report queued)\b")
SPARE_RE = re.compile(r"^s[0-9]+$")


def log(msg: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} crash-harness: {msg}", flush=True)


def body_digest(body: bytes) -> str:
    return hashlib.sha256(body.replace(b"\r\n", b"\n")).hexdigest()


def split_message(data: bytes) -> tuple[bytes, bytes]:
    """Header and body of a message with CRLF (sink) or LF (Maildir) line ends."""
    for sep in (b"\r\n\r\n", b"\n\n"):
        i = data.find(sep)
        if i >= 0:
            return data[:i + len(sep)], data[i + len(sep):]
    return data, b""


def token_and_integrity(data: bytes) -> tuple[str | None, bool]:
    """The message's token and whether its body matches its digest header."""
    header, body = split_message(data)
    t, d = TOKEN_RE.search(header), DIGEST_RE.search(header)
    if not t:
        return None, False
    return t.group(1).decode(), bool(d) and d.group(1).decode() == body_digest(body)


def parse_dsn(data: bytes) -> list[tuple[str, str]]:
    """(token, recipient) for each failed recipient of a DSN about a harness message."""
    msg = email.message_from_bytes(data, policy=email.policy.compat32)
    if msg.get_content_type() != "multipart/report":
        return []
    token = None
    failed = []
    for part in msg.walk():
        ctype = part.get_content_type()
        if ctype == "message/delivery-status":
            for block in part.get_payload():
                if str(block.get("Action", "")).strip().lower() == "failed":
                    failed.append(str(block.get("Final-Recipient", "")).split(";", 1)[-1].strip())
        elif ctype in ("text/rfc822-headers", "message/rfc822"):
            raw = part.get_payload(decode=True) if ctype == "text/rfc822-headers" else part.as_bytes()
            m = TOKEN_RE.search(raw or b"")
            if m:
                token = m.group(1).decode()
    return [(token, r) for r in failed] if token else []


class Attempt:
    """One message a client tried to send."""
    __slots__ = ("sender", "rcpts", "outcome", "reply")

    def __init__(self, sender: str):
        self.sender = sender
        self.rcpts: list[str] = []  # those that got 250 at RCPT
        self.outcome = "dropped"  # "accepted" (250 after DATA), "refused" (a reply other than 250)
        self.reply = ""


# ---------------------------------------------------------------------------------------------
# Where messages arrive


class Sink(SmtpReceiver):
    """SmtpReceiver that keeps (token, recipient, intact) per accepted message instead of the
    whole message (a soak accepts hundreds of thousands), in memory and in a JSON-lines file,
    before it answers 250."""

    def __init__(self, journal: Path):
        super().__init__(hostname="sink.remote.test")
        self.rules.append(("RCPT TO:<bounce-", "550 5.1.1 no such user here", None))
        self.records: list[tuple[str | None, str, bool]] = []
        self._journal = open(journal, "a", buffering=1)

    def _record_message(self, msg) -> str:
        token, intact = token_and_integrity(msg.data)
        with self._cond:
            n = len(self.records)
            for rcpt in msg.rcpt_to:
                self.records.append((token, rcpt, intact))
                self._journal.write(json.dumps({"token": token, "rcpt": rcpt, "intact": intact,
                                                "from": msg.mail_from}) + "\n")
            self._cond.notify_all()
        return f"S{n:07d}"

    def close_journal(self) -> None:
        with self._cond:
            self._journal.close()


class Mailboxes:
    """Reads the recipients' and the senders' Maildirs (new/ and cur/) like a mail client: each
    file's token (or, for a sender, each failed recipient of a DSN) is recorded, then the file is
    removed when `remove` is set. Files that are corrupt or unknown are moved to BASE/evidence/."""

    def __init__(self, server: "HarnessServer", known):
        self.server = server
        self.known = known  # token -> Attempt
        self.arrivals: collections.Counter = collections.Counter()  # (token, "maildir:USER") -> copies
        self.bounced: collections.Counter = collections.Counter()  # (token, recipient) -> DSNs
        self.reports = 0
        self.corrupt: list[str] = []
        self.unknown: list[str] = []
        self.not_dsn: list[str] = []
        self.evidence = server.base / "evidence"
        self.lock = threading.Lock()

    def _keep(self, path: Path, why: list[str]) -> None:
        self.evidence.mkdir(exist_ok=True)
        target = self.evidence / f"{path.parent.parent.parent.name}-{path.name}"
        os.replace(path, target)
        why.append(str(target))

    def collect(self, remove: bool) -> int:
        with self.lock:
            n = 0
            for user in LOCAL_USERS + [ALIAS_MAILBOX] + [s.split("@")[0] for s in SENDERS]:
                for sub in ("new", "cur"):
                    d = self.server.maildir_root(user) / sub
                    if not d.is_dir():
                        continue
                    for path in list(d.iterdir()):
                        n += 1
                        data = path.read_bytes()
                        if user.startswith("sender-"):
                            self.reports += 1
                            found = parse_dsn(data)
                            for item in found:
                                self.bounced[item] += 1
                            if not found:
                                self._keep(path, self.not_dsn)
                                continue
                        else:
                            token, intact = token_and_integrity(data)
                            if token is None or token not in self.known:
                                self._keep(path, self.unknown)
                                continue
                            if not intact:
                                self._keep(path, self.corrupt)
                                continue
                            self.arrivals[(token, f"maildir:{user}")] += 1
                        if remove:
                            path.unlink()
            return n

    def tmp_leftovers(self) -> int:
        total = 0
        for user in LOCAL_USERS + [ALIAS_MAILBOX] + [s.split("@")[0] for s in SENDERS]:
            d = self.server.maildir_root(user) / "tmp"
            total += sum(1 for _ in d.iterdir()) if d.is_dir() else 0
        return total


# ---------------------------------------------------------------------------------------------
# tern


class HarnessServer(ternlib.TernServer):
    """TernServer that writes every log line to BASE/tern.log and keeps only the lines that are
    not per-message chatter in memory (start-up, warnings, errors, restarts)."""

    def __init__(self, binary: str, config_changes: dict):
        super().__init__(binary, config_changes)
        self.log_path = self.base / "tern.log"
        self._log_file = open(self.log_path, "a", buffering=1)

    def _read(self, stream) -> None:
        for raw in iter(stream.readline, b""):
            line = raw.decode("utf-8", "replace").rstrip("\n")
            with self._lock:
                self._log_file.write(line + "\n")
                if not CHATTER_RE.search(line):
                    self._lines.append(line)
        stream.close()

    def close_log(self) -> None:
        with self._lock:
            self._log_file.close()

    def maildir_root(self, user: str) -> Path:
        return self.data_dir / "domains" / DOMAIN / user / "Maildir"


class Fatal(Exception):
    """The harness cannot go on (tern does not start again)."""


# ---------------------------------------------------------------------------------------------
# The run


class Harness:
    def __init__(self, args):
        self.args = args
        self.rng = random.Random(args.seed)
        # Absolute: tern runs in its work directory.
        self.binary = os.path.abspath(os.environ.get("TERN_BIN") or ternlib.tern_binary())
        self.stop_sending = threading.Event()
        self.stop_killing = threading.Event()
        self.lock = threading.Lock()
        self.attempts: dict[str, Attempt] = {}  # token -> Attempt
        self.client_counts = collections.Counter()
        self.kills = collections.Counter()
        self.kill_log: list[str] = []
        self.master_restarts: list[tuple[float, float]] = []  # seconds until the children were gone, until ready
        self.findings: list[str] = []  # not losses, but worth a look
        self.server: HarnessServer | None = None
        self.sink: Sink | None = None
        self.mailboxes: Mailboxes | None = None
        self.fatal: str | None = None

    def count(self, key: str) -> None:
        with self.lock:
            self.client_counts[key] += 1

    def finding(self, text: str) -> None:
        with self.lock:
            self.findings.append(text)

    # -- set-up ---------------------------------------------------------------------------------
    def start(self) -> None:
        config = {
            "smtp": {"relay_networks": ["127.0.0.1"], "max_connections_per_ip": 1000,
                     "max_connections_per_network": 1000},
            # All remote mail goes to one domain: let it have every remote connection.
            "queue": {"retry_initial": 1, "retry_max": 2, "concurrency_remote": 20, "concurrency_per_domain": 20},
            "relay": {"connect_timeout": 5},
            "directory": {"backend": "sqlite"},  # the account backend is not what this tests
            "users": [f"{u}@{DOMAIN}" for u in LOCAL_USERS + [ALIAS_MAILBOX]] + SENDERS,
        }
        self.server = HarnessServer(self.binary, config)
        self.sink = Sink(self.server.base / "sink.jsonl")
        self.sink.start()
        self.server.set_config(routes=[{"domain": REMOTE, "host": "[127.0.0.1]", "port": self.sink.port,
                                        "tls": "none"}])
        self.server.use_template = False  # no template database to clean up afterwards
        self.server.provision()
        self.server.cli("alias", "add", ALIAS, f"{ALIAS_MAILBOX}@{DOMAIN}", ALIAS_REMOTE, check=True)
        self.mailboxes = Mailboxes(self.server, self.attempts)
        self.server.start()
        log(f"tern {self.binary} started, work directory {self.server.base}, sink on port {self.sink.port}")

    # -- clients --------------------------------------------------------------------------------
    @staticmethod
    def make_message(rng: random.Random, token: str, sender: str, rcpts: list[str]) -> bytes:
        size = rng.randint(2000, 60000) if rng.random() < 0.2 else rng.randint(100, 2000)
        text = base64.b64encode(rng.randbytes(size * 3 // 4 + 1)).decode()
        lines = [text[i:i + rng.randint(40, 76)] for i in range(0, len(text), 76)]
        body = ("\r\n".join(lines) + "\r\n").encode()
        header = (f"From: {sender}\r\nTo: {', '.join(rcpts)}\r\nSubject: crash harness {token}\r\n"
                  f"Message-ID: <{token}@harness.test>\r\nX-Harness-Token: {token}\r\n"
                  f"X-Harness-Digest: {body_digest(body)}\r\n\r\n")
        return header.encode() + body

    @staticmethod
    def pick_recipients(rng: random.Random) -> list[str]:
        out: list[str] = []
        for _ in range(rng.randint(1, 4)):
            x = rng.random()
            if x < 0.45:
                r = f"{rng.choice(LOCAL_USERS)}@{DOMAIN}"
            elif x < 0.55:
                r = ALIAS
            elif x < 0.92:
                r = f"user{rng.randint(0, 99)}@{REMOTE}"
            else:
                r = f"bounce-{rng.randint(0, 9)}@{REMOTE}"
            if r not in out:
                out.append(r)
        return out

    def client(self, n: int) -> None:
        rng = random.Random(f"{self.args.seed}-{n}")
        seq = 0
        try:
            while not self.stop_sending.is_set():
                try:
                    s = smtplib.SMTP("127.0.0.1", self.server.port, local_hostname="client.test",
                                     timeout=self.args.client_timeout)
                except (OSError, smtplib.SMTPException):
                    self.count("connect failed")
                    self.stop_sending.wait(rng.uniform(0.05, 0.3))  # a client's pause before it tries again
                    continue
                try:
                    code, _ = s.ehlo()
                    if code != 250:
                        self.count(f"EHLO {code}")
                        continue
                    for _ in range(rng.randint(1, 5)):
                        if self.stop_sending.is_set():
                            break
                        seq += 1
                        if not self.transaction(s, rng, f"t{self.args.seed}-{n}-{seq}"):
                            break
                    try:
                        s.quit()
                    except (OSError, smtplib.SMTPException):
                        pass
                except (OSError, smtplib.SMTPException):
                    self.count("session dropped")
                finally:
                    s.close()
        except Exception as e:  # a broken harness must not look like a pass
            self.fatal = f"client thread {n}: {e!r}"
            self.stop_sending.set()

    def transaction(self, s: smtplib.SMTP, rng: random.Random, token: str) -> bool:
        """One message; False when the session should end."""
        attempt = Attempt(rng.choice(SENDERS))
        rcpts = self.pick_recipients(rng)
        with self.lock:
            self.attempts[token] = attempt
        code, text = s.mail(attempt.sender)
        if code != 250:
            attempt.outcome, attempt.reply = "refused", f"MAIL {code} {text[:80]!r}"
            self.count(f"MAIL {code}")
            s.rset()
            return code != 421
        for r in rcpts:
            code, _ = s.rcpt(r)
            if code == 250:
                attempt.rcpts.append(r)
            else:
                self.count(f"RCPT {code}")
        if not attempt.rcpts:
            attempt.outcome = "refused"
            s.rset()
            return True
        code, text = s.data(self.make_message(rng, token, attempt.sender, attempt.rcpts))
        if code == 250:
            attempt.outcome, attempt.reply = "accepted", text.decode(errors="replace")
            self.count("accepted")
            return True
        attempt.outcome, attempt.reply = "refused", f"DATA {code} {text[:80]!r}"
        self.count(f"DATA {code}")
        return code != 421

    def collector(self) -> None:
        try:
            while not self.stop_sending.wait(self.args.collect_interval):
                self.mailboxes.collect(remove=True)
        except Exception as e:
            self.fatal = f"collector thread: {e!r}"
            self.stop_sending.set()

    # -- killer ---------------------------------------------------------------------------------
    def killer(self) -> None:
        lo, hi = self.args.kill_interval
        cycle: list[str] = []
        try:
            while not self.stop_killing.wait(self.rng.uniform(lo, hi)):  # the random moment
                if not cycle:
                    cycle = list(self.args.victims)
                    self.rng.shuffle(cycle)
                victim = cycle.pop()
                if victim == "master":
                    self.kill_master()
                else:
                    self.kill_child(victim)
        except Fatal as e:
            self.fatal = str(e)
            self.stop_sending.set()
        except Exception as e:  # a broken harness must not look like a pass
            self.fatal = f"killer thread: {e!r}"
            self.stop_sending.set()

    def kill_child(self, name: str) -> None:
        self.check_master_alive()
        try:
            pid = self.server.wait_child_pid(name, timeout=60)  # it may be waiting for its restart
        except AssertionError as e:
            raise Fatal(f"no {name} child 60 s after its last kill: {e}")
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            return
        self.kills[name] += 1
        self.kill_log.append(f"{time.strftime('%H:%M:%S')} {name} pid={pid}")

    def check_master_alive(self) -> None:
        """A master that died without our SIGKILL is a finding; start it again."""
        code = self.server.proc.poll()
        if code is not None:
            self.finding(f"the master exited by itself with status {code}")
            self.server.wait_exit()
            self.wait_processes_gone(self.server.proc.pid)
            self.restart_master()

    def wait_processes_gone(self, master: int) -> None:
        """The children of a dead master get SIGTERM (PR_SET_PDEATHSIG) and stop; a new master
        can neither bind the port nor take the spool lock before they are gone."""
        try:
            ternlib.wait_until(lambda: not self.server.stray_pids(), timeout=60,
                               message="the children of the dead master to exit")
        except AssertionError:
            left = {p: " ".join(ternlib.read_cmdline(p)[1:3]) for p in self.server.stray_pids()}
            self.finding(f"children of the dead master {master} still ran 60 s later, killed: {left}")
            for p in left:
                try:
                    os.kill(p, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            ternlib.wait_until(lambda: not self.server.stray_pids(), timeout=30,
                               message="the leftover children to die")

    def kill_master(self) -> None:
        self.check_master_alive()
        pid = self.server.master_pid
        killed = time.monotonic()
        os.kill(pid, signal.SIGKILL)
        self.kills["master"] += 1
        self.kill_log.append(f"{time.strftime('%H:%M:%S')} master pid={pid}")
        code = self.server.wait_exit(30)
        if code != -signal.SIGKILL:
            self.finding(f"killed master {pid} exited with {code}, not by SIGKILL")
        self.wait_processes_gone(pid)
        gone = time.monotonic()
        self.restart_master()
        self.master_restarts.append((gone - killed, time.monotonic() - killed))

    def restart_master(self) -> None:
        for attempt in range(3):
            try:
                self.server.start()
                return
            except AssertionError as e:
                self.finding(f"tern serve did not start again (attempt {attempt + 1}): {str(e)[-2000:]}")
                if self.server.proc.poll() is None:
                    self.server.proc.kill()
                self.server.wait_exit(30)
                self.wait_processes_gone(self.server.proc.pid)
        raise Fatal("tern serve did not start again after 3 attempts")

    # -- the end --------------------------------------------------------------------------------
    def spool_busy(self) -> list[str]:
        spool = self.server.data_dir / "spool"
        return [f"{d}/{p.name}" for d in ("msg", "env") for p in (spool / d).iterdir()]

    def drain(self) -> bool:
        """Waits until every service runs and the spool is empty; False on timeout. (msg/ is
        listed before env/, and a queued message has msg/ID from before its env/ID until after
        its successors, DSNs and forwards, are queued: two empty listings mean nothing is left.)"""
        for name in CHILDREN:
            self.server.wait_child_pid(name, timeout=60)
        accepted = sum(1 for a in self.attempts.values() if a.outcome == "accepted")
        timeout = 120 + accepted / 20
        started = time.monotonic()
        try:
            ternlib.wait_until(lambda: not self.spool_busy(), timeout=timeout, interval=0.2,
                               message="an empty spool")
        except AssertionError:
            left = self.spool_busy()
            self.finding(f"spool not empty {timeout:.0f} s after the end: {len(left)} files, e.g. {left[:6]}")
            for name in left[:3]:
                if name.startswith("env/"):
                    try:
                        self.finding(f"{name}:\n{(self.server.data_dir / 'spool' / name).read_text(errors='replace')}")
                    except OSError:
                        pass
            return False
        log(f"spool empty {time.monotonic() - started:.1f} s after the end of the traffic")
        return True

    def run(self) -> int:
        args = self.args
        self.start()
        clients = [threading.Thread(target=self.client, args=(i,), daemon=True) for i in range(args.sessions)]
        killer = threading.Thread(target=self.killer, daemon=True)
        collector = threading.Thread(target=self.collector, daemon=True)
        began = time.monotonic()
        for t in clients + [killer, collector]:
            t.start()
        next_report = began + args.progress
        deadline = began + args.duration
        while not self.stop_sending.is_set() and time.monotonic() < deadline:
            self.stop_sending.wait(min(deadline, next_report) - time.monotonic())
            if time.monotonic() >= next_report:
                next_report += args.progress
                log(f"{time.monotonic() - began:.0f}s: accepted={self.client_counts['accepted']} "
                    f"kills={sum(self.kills.values())} {dict(self.kills)}")
        self.stop_killing.set()
        killer.join()
        self.stop_sending.set()
        for t in clients + [collector]:
            t.join(args.client_timeout * 3)
        if any(t.is_alive() for t in clients):
            self.finding("a client thread did not finish")
        traffic_seconds = time.monotonic() - began
        if self.fatal:
            log(f"FATAL: {self.fatal}")
            return self.finish(traffic_seconds, drained=False, fatal=True)
        self.check_master_alive()
        drained = self.drain()
        return self.finish(traffic_seconds, drained)

    def finish(self, traffic_seconds: float, drained: bool, fatal: bool = False) -> int:
        server = self.server
        stop_status = None
        try:
            stop_status = server.stop(60)
        except AssertionError as e:
            self.finding(str(e))
        if stop_status not in (0, None):
            self.finding(f"tern serve exited with status {stop_status} after SIGTERM")
        leftovers = server.stray_pids()
        if leftovers:
            self.finding(f"tern processes left after the stop: {leftovers}")
        server.cleanup()
        self.sink.stop()
        self.sink.close_journal()
        server.close_log()
        if self.args.sabotage:
            self.sabotage(self.args.sabotage)
        self.mailboxes.collect(remove=False)  # what is left stays, for a look after a failure
        with open(server.base / "attempts.jsonl", "w") as f:  # for a post-mortem: token -> queue id
            for token, a in self.attempts.items():
                f.write(json.dumps({"token": token, "sender": a.sender, "rcpts": a.rcpts, "outcome": a.outcome,
                                    "reply": a.reply}) + "\n")
        result = self.verify(traffic_seconds, drained, fatal)
        if result == 0 and not self.args.keep:
            server.remove_files()
        else:
            log(f"work directory kept: {server.base} (tern.log, sink.jsonl, attempts.jsonl, data/, evidence/)")
        return result

    def sabotage(self, what: str) -> None:
        """Spoils one delivered copy that the collector has not seen yet (deleting every copy of
        that message in that Maildir), or adds a stray spool file."""
        if what == "orphan-spool-file":
            path = self.server.data_dir / "spool" / "msg" / "0661FFFFFFFFFF-abcdef"
            log(f"SABOTAGE: creating {path}")
            path.write_bytes(b"Subject: orphan\n\norphan\n")
            return
        for user in LOCAL_USERS:
            d = self.server.maildir_root(user) / "new"
            by_token = collections.defaultdict(list)
            for path in sorted(d.iterdir()):
                by_token[token_and_integrity(path.read_bytes())[0]].append(path)
            for token, paths in by_token.items():
                if token and not self.mailboxes.arrivals[(token, f"maildir:{user}")]:
                    if what == "delete-maildir-file":
                        log(f"SABOTAGE: deleting {[str(p) for p in paths]} (message {token} to {user})")
                        for p in paths:
                            p.unlink()
                    else:
                        log(f"SABOTAGE: changing the last body byte of {paths[0]} (message {token} to {user})")
                        data = bytearray(paths[0].read_bytes())
                        data[-2] = ord("A") if data[-2] != ord("A") else ord("B")
                        paths[0].write_bytes(bytes(data))
                    return
        log("SABOTAGE: no uncollected Maildir file to spoil")

    # -- the check ------------------------------------------------------------------------------
    def verify(self, traffic_seconds: float, drained: bool, fatal: bool) -> int:
        mb = self.mailboxes
        arrivals = collections.Counter(mb.arrivals)  # (token, destination) -> copies
        corrupt = list(mb.corrupt)
        unknown = list(mb.unknown)
        for token, rcpt, intact in self.sink.records:
            if token is None or token not in self.attempts:
                unknown.append(f"sink: {token} to {rcpt}")
            elif not intact:
                corrupt.append(f"sink: {token} to {rcpt}")
            else:
                arrivals[(token, f"sink:{rcpt}")] += 1

        def destinations(rcpt: str) -> list[str]:
            if rcpt == ALIAS:
                return [f"maildir:{ALIAS_MAILBOX}", f"sink:{ALIAS_REMOTE}"]
            if rcpt.endswith(f"@{DOMAIN}"):
                return [f"maildir:{rcpt.split('@')[0]}"]
            if rcpt.startswith("bounce-"):
                return []  # the sink refuses it: a DSN must come back
            return [f"sink:{rcpt}"]

        accepted = {t: a for t, a in self.attempts.items() if a.outcome == "accepted"}
        missing: list[str] = []
        duplicates = 0
        delivered = collections.Counter()  # mailbox or "sink" -> (message, destination) pairs reached
        expected_bounces = 0
        unexpected_bounces: list[str] = []
        expected_pairs = set()
        for token, a in accepted.items():
            for rcpt in a.rcpts:
                dests = destinations(rcpt)
                if not dests:
                    if mb.bounced[(token, rcpt)]:
                        expected_bounces += 1
                    else:
                        missing.append(f"{token} to {rcpt}: no DSN to {a.sender} ({a.reply})")
                    continue
                for dest in dests:
                    expected_pairs.add((token, dest))
                    copies = arrivals[(token, dest)]
                    if copies:
                        delivered[dest.split(":", 1)[1] if dest.startswith("maildir:") else "sink"] += 1
                        duplicates += copies - 1
                    elif mb.bounced[(token, rcpt)]:
                        unexpected_bounces.append(f"{token} to {rcpt} ({dest})")
                    else:
                        missing.append(f"{token} to {rcpt} via {dest} ({a.reply})")
        # Arrivals of messages that never got a 250 (allowed: the client would send them again).
        not_acked = {t for (t, _) in arrivals if t not in accepted}
        refused_but_arrived = collections.defaultdict(list)  # reply -> tokens
        for t in sorted(not_acked):
            if self.attempts[t].outcome == "refused":
                refused_but_arrived[self.attempts[t].reply].append(t)
        extra = [f"{t} at {d}" for (t, d) in arrivals if t in accepted and (t, d) not in expected_pairs]
        unknown += extra

        orphans, spares = self.spool_orphans()
        sanitizer = self.server.sanitizer_reports()
        restarts, kinds = self.log_summary()
        unexpected_deaths = [f"{name}: {restarts[name]} restarts, {self.kills[name]} kills" for name in CHILDREN
                             if sum(restarts[name].values()) != self.kills[name]]
        for what, items in (("sink protocol errors", self.sink.protocol_errors), ("sink errors", self.sink.errors)):
            if items:
                self.finding(f"{what}: {items[:5]}")

        refused = sum(1 for a in self.attempts.values() if a.outcome == "refused")
        dropped = sum(1 for a in self.attempts.values() if a.outcome == "dropped")
        print()
        print("== crash harness totals")
        print(f"traffic:    {traffic_seconds:.0f} s, {self.args.sessions} sessions, seed {self.args.seed}, "
              f"binary {self.binary}")
        print(f"messages:   attempted {len(self.attempts)}, accepted (250) {len(accepted)}, refused {refused}, "
              f"dropped {dropped}")
        print(f"client:     {dict(sorted(self.client_counts.items()))}")
        print(f"kills:      {sum(self.kills.values())}: " + " ".join(f"{k}={self.kills[k]}" for k in VICTIMS))
        print("restarts:   " + " ".join(f"{k}={dict(v)}" for k, v in sorted(restarts.items())))
        if self.master_restarts:
            print(f"master:     after its SIGKILL the children were gone within "
                  f"{max(g for g, _ in self.master_restarts):.1f} s (mean "
                  f"{sum(g for g, _ in self.master_restarts) / len(self.master_restarts):.1f}), a new tern was ready "
                  f"within {max(r for _, r in self.master_restarts):.1f} s")
        print(f"delivered:  {sum(delivered.values())} of {len(expected_pairs)} (message, destination) pairs: "
              + " ".join(f"{k}={v}" for k, v in sorted(delivered.items())))
        print(f"bounces:    {expected_bounces} (message, bounce-N@) pairs reported to the sender; "
              f"{len(unexpected_bounces)} unexpected; {mb.reports} reports read")
        print(f"duplicates: {duplicates}")
        print(f"arrived without a 250: {len(not_acked)} messages, refused with a reply among them: "
              + (", ".join(f"{len(ts)} after {reply} (e.g. {' '.join(ts[:3])})"
                           for reply, ts in refused_but_arrived.items()) or "none"))
        print(f"missing:    {len(missing)}")
        print(f"corrupt:    {len(corrupt)}")
        print(f"unknown:    {len(unknown)}")
        print(f"spool:      {len(orphans)} orphans, {spares} spare files in free/, drained: {drained}")
        print(f"maildir:    {mb.tmp_leftovers()} files left in tmp/ (deliveries cut by a kill)")
        print(f"log:        warn/error lines: {kinds or 'none'}")
        for title, items in (("MISSING", missing), ("CORRUPT", corrupt), ("UNKNOWN", unknown),
                             ("ORPHANED SPOOL FILES", orphans), ("UNEXPECTED BOUNCES", unexpected_bounces),
                             ("SENDER MAIL THAT IS NO DSN OF A HARNESS MESSAGE", mb.not_dsn),
                             ("SERVICES THAT DIED UNKILLED", unexpected_deaths), ("SANITIZER", sanitizer),
                             ("FINDINGS", self.findings)):
            if items:
                print(f"-- {title} ({len(items)}):")
                for item in list(items)[:30]:
                    print(f"   {item}")
        unclean = any(f.startswith(("tern serve exited", "tern processes left", "tern master did not stop"))
                      for f in self.findings)
        ok = (not fatal and drained and not missing and not corrupt and not unknown and not orphans
              and not sanitizer and not unexpected_deaths and not unclean and len(accepted) > 0)
        fields = {
            "status": "PASS" if ok else "FAIL", "seconds": round(traffic_seconds), "seed": self.args.seed,
            "accepted": len(accepted), "attempted": len(self.attempts),
            "kills": sum(self.kills.values()), **{f"kills_{k}": self.kills[k] for k in VICTIMS},
            "delivered": sum(delivered.values()), "expected": len(expected_pairs),
            "missing": len(missing), "duplicates": duplicates, "corrupt": len(corrupt), "unknown": len(unknown),
            "bounces": expected_bounces, "unexpected_bounces": len(unexpected_bounces), "orphans": len(orphans),
            "drained": int(drained), "unexpected_deaths": len(unexpected_deaths), "sanitizer": len(sanitizer),
            "unacked_arrivals": len(not_acked), "findings": len(self.findings),
        }
        print(RESULT_PREFIX + " " + " ".join(f"{k}={v}" for k, v in fields.items()), flush=True)
        if fatal:
            return 2
        return 0 if ok else 1

    def spool_orphans(self) -> tuple[list[str], int]:
        """Everything in the stopped tern's spool but `lock`, an empty msg/ and env/, and spare
        files free/sN."""
        spool = self.server.data_dir / "spool"
        orphans: list[str] = []
        spares = 0
        for entry in sorted(spool.iterdir()):
            if entry.name == "lock" and entry.is_file():
                continue
            if entry.name in ("msg", "env") and entry.is_dir() and not entry.is_symlink():
                orphans += [f"{entry.name}/{p.name}" for p in sorted(entry.iterdir())]
                continue
            if entry.name == "free" and entry.is_dir() and not entry.is_symlink():
                for p in entry.iterdir():
                    if SPARE_RE.match(p.name) and p.is_file() and not p.is_symlink():
                        spares += 1
                    else:
                        orphans.append(f"free/{p.name}")
                continue
            orphans.append(entry.name)
        return orphans, spares

    def log_summary(self) -> tuple[dict, str]:
        """Restarts per service and how it died; every warn/error kind (text without fields)."""
        restarts: dict = collections.defaultdict(collections.Counter)
        kinds = collections.Counter()
        died = re.compile(r" master error service died; restarting service=(\w+) how=\"([^\"]*)\"")
        level = re.compile(r"^\S+ (\S+) (warn|error) (.*?)(?= [\w.]+=|$)")
        with open(self.server.log_path, errors="replace") as f:
            for line in f:
                m = died.search(line)
                if m:
                    restarts[m.group(1)][m.group(2)] += 1
                m = level.match(line)
                if m:
                    kinds[f"{m.group(1)} {m.group(2)} {m.group(3)}"] += 1
        return restarts, "; ".join(f"{k} x{v}" for k, v in kinds.most_common())


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--duration", type=float, default=60, help="seconds of traffic and kills (default 60)")
    p.add_argument("--seed", type=int, default=None, help="random seed (default: from the clock; printed)")
    p.add_argument("--sessions", type=int, default=8, help="concurrent SMTP client threads (default 8)")
    p.add_argument("--kill-interval", default="1.0:3.0",
                   help="MIN:MAX seconds between two kills, chosen at random in the range (default 1.0:3.0)")
    p.add_argument("--victims", default=",".join(VICTIMS),
                   help=f"comma-separated processes to kill (default {','.join(VICTIMS)})")
    p.add_argument("--client-timeout", type=float, default=30, help="SMTP client timeout in seconds (default 30)")
    p.add_argument("--collect-interval", type=float, default=5,
                   help="seconds between two reads (and removals) of the Maildirs (default 5)")
    p.add_argument("--progress", type=float, default=30, help="seconds between progress lines (default 30)")
    p.add_argument("--keep", action="store_true", help="keep the work directory even when the run passes")
    p.add_argument("--sabotage", choices=["delete-maildir-file", "corrupt-maildir-file", "orphan-spool-file"],
                   help="spoil one thing before the final check, to see the check fail")
    args = p.parse_args(argv)
    if args.seed is None:
        args.seed = int(time.time()) % 1000000
    lo, _, hi = args.kill_interval.partition(":")
    args.kill_interval = (float(lo), float(hi or lo))
    args.victims = [v for v in args.victims.split(",") if v]
    unknown = set(args.victims) - set(VICTIMS)
    if unknown or not args.victims:
        p.error(f"unknown victims {sorted(unknown)}; choose from {','.join(VICTIMS)}")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    binary = os.environ.get("TERN_BIN") or ternlib.tern_binary()
    if not os.access(binary, os.X_OK):
        print(f"crash-harness: tern binary not found or not executable: {binary} (set TERN_BIN)", file=sys.stderr)
        return 2
    if ternlib.IS_ROOT:
        ternlib.ensure_service_users()
    log(f"seed {args.seed}, {args.duration:g} s, {args.sessions} sessions, victims {','.join(args.victims)}")
    harness = Harness(args)
    try:
        return harness.run()
    except BaseException:
        if harness.server is not None:
            log(f"aborted; work directory kept: {harness.server.base}")
            harness.server.cleanup()
        if harness.sink is not None:
            harness.sink.stop()
        raise


if __name__ == "__main__":
    sys.exit(main())
