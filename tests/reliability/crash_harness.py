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
   records each message's token (and whether its body is intact) in memory before its 250, and in
   sink.jsonl in the work directory.
2. --sessions client threads send messages over SMTP (1 to 5 per session, 1 to 4 recipients each:
   local users, the alias, remote addresses, bounce addresses; bodies of 100 bytes to 60 KB). Each
   message carries a unique token (X-Harness-Token, Message-ID, Subject) and the SHA-256 of its
   body (X-Harness-Digest). A message counts as accepted only when DATA got 250, and then only for
   the recipients whose RCPT got 250; a 4xx/5xx or a dropped connection means "not accepted".
3. Meanwhile one thread kills a tern process with SIGKILL every --kill-interval seconds (random
   within the range), taking the victims in shuffled rounds: the master (its children get
   SIGTERM from PR_SET_PDEATHSIG and stop; the harness waits until every one is gone, then starts
   `tern serve` again) or one child (smtp, queue, deliver, relay, directory), which the master
   restarts by itself.
4. After --duration seconds: killing and sending stop, the harness waits until every service runs
   again and the spool's msg/ and env/ are empty, stops tern with SIGTERM (exit status 0
   expected), and checks:
   - every accepted (message, recipient) reached each of its destinations at least once with an
     intact body (Maildir new/ or cur/ of the user, or the sink), or the sender got a DSN whose
     Final-Recipient is that recipient (expected for bounce-N@remote.test, reported as
     `unexpected_bounces` otherwise). Anything else is `missing`;
   - copies beyond the first are `duplicates` (allowed: delivery is at least once);
   - the spool holds nothing but `lock`, `msg/` and `env/` (both empty) and `free/` with spare
     files named sN: anything else (a msg/ID without env/ID, an env/ID without msg/ID, a *.tmp) is
     an `orphan`;
   - no sanitizer report in the log, every tern process gone.
5. Prints the totals and one line starting with "CRASH-HARNESS RESULT" (key=value pairs); the exit
   status is 0 when nothing was lost, corrupted or orphaned and everything above held, 1
   otherwise, 2 when the harness could not run (tern would not start again). On failure the work
   directory (tern's data, tern.log with every log line, sink.jsonl) is kept and named.

--sabotage delete-maildir-file|orphan-spool-file spoils one thing before the check, to show that
the check catches it (the run must then fail).
"""
from __future__ import annotations

import argparse
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
import socket
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
CHATTER_RE = re.compile(r" (smtp|queue|deliver|relay) info (message accepted|connection closed|queued|delivered|"
                        r"relayed|forwarded|relay transaction|report queued)\b")
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


# ---------------------------------------------------------------------------------------------
# The remote side


class Sink(SmtpReceiver):
    """SmtpReceiver that keeps (token, recipient, intact) per accepted message instead of the
    whole message (a soak accepts hundreds of thousands), in memory and in a JSON-lines file,
    before it answers 250."""

    def __init__(self, journal: Path):
        super().__init__(hostname="sink.remote.test")
        self.rules.append(("RCPT TO:<bounce-", "550 5.1.1 no such user here", None))
        self.records: list[tuple[str | None, str, bool, str]] = []  # token, rcpt, intact, mail_from
        self._journal = open(journal, "a", buffering=1)

    def _record_message(self, msg) -> str:
        token, intact = token_and_integrity(msg.data)
        with self._cond:
            n = len(self.records)
            for rcpt in msg.rcpt_to:
                self.records.append((token, rcpt, intact, msg.mail_from))
                self._journal.write(json.dumps({"token": token, "rcpt": rcpt, "intact": intact,
                                                "from": msg.mail_from}) + "\n")
            self._cond.notify_all()
        return f"S{n:07d}"

    def close_journal(self) -> None:
        with self._cond:
            self._journal.close()


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
        self.binary = os.path.abspath(os.environ.get("TERN_BIN") or ternlib.tern_binary())  # tern runs in its work dir
        self.stop_sending = threading.Event()
        self.stop_killing = threading.Event()
        self.lock = threading.Lock()
        # token -> {"sender", "rcpts" (RCPT 250), "outcome": accepted/refused/dropped, "reply"}
        self.attempts: dict[str, dict] = {}
        self.client_counts = collections.Counter()
        self.kills = collections.Counter()
        self.kill_log: list[str] = []
        self.findings: list[str] = []  # things that are not losses but deserve a look
        self.server: HarnessServer | None = None
        self.sink: Sink | None = None
        self.fatal: str | None = None

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
        self.server.start()
        log(f"tern {self.binary} started, work directory {self.server.base}, sink on port {self.sink.port}")

    # -- clients --------------------------------------------------------------------------------
    def make_message(self, rng: random.Random, token: str, sender: str, rcpts: list[str]) -> bytes:
        size = rng.choice([rng.randint(100, 2000)] * 4 + [rng.randint(2000, 60000)])
        alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 "
        lines, total = [], 0
        while total < size:
            line = "x" + "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 76))).rstrip()
            lines.append(line)
            total += len(line) + 2
        body = ("\r\n".join(lines) + "\r\n").encode()
        header = (f"From: {sender}\r\nTo: {', '.join(rcpts)}\r\nSubject: crash harness {token}\r\n"
                  f"Message-ID: <{token}@harness.test>\r\nX-Harness-Token: {token}\r\n"
                  f"X-Harness-Digest: {body_digest(body)}\r\n\r\n")
        return header.encode() + body

    def pick_recipients(self, rng: random.Random) -> list[str]:
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
        while not self.stop_sending.is_set():
            try:
                s = smtplib.SMTP("127.0.0.1", self.server.port, local_hostname="client.test",
                                 timeout=self.args.client_timeout)
            except (OSError, smtplib.SMTPException):
                self.client_counts["connect failed"] += 1
                self.stop_sending.wait(rng.uniform(0.05, 0.3))  # a client's pause before it tries again
                continue
            try:
                code, _ = s.ehlo()
                if code != 250:
                    self.client_counts[f"EHLO {code}"] += 1
                    continue
                for _ in range(rng.randint(1, 5)):
                    if self.stop_sending.is_set():
                        break
                    seq += 1
                    token = f"t{self.args.seed}-{n}-{seq}"
                    if not self.transaction(s, rng, token):
                        break
                try:
                    s.quit()
                except (OSError, smtplib.SMTPException):
                    pass
            except (OSError, smtplib.SMTPException):
                self.client_counts["session dropped"] += 1
            finally:
                s.close()

    def transaction(self, s: smtplib.SMTP, rng: random.Random, token: str) -> bool:
        """One message; False when the session should end."""
        sender = rng.choice(SENDERS)
        rcpts = self.pick_recipients(rng)
        record = {"sender": sender, "rcpts": [], "outcome": "dropped", "reply": ""}
        with self.lock:
            self.attempts[token] = record
        code, text = s.mail(sender)
        if code != 250:
            record["outcome"], record["reply"] = "refused", f"MAIL {code} {text[:80]!r}"
            self.client_counts[f"MAIL {code}"] += 1
            s.rset()
            return code != 421
        for r in rcpts:
            code, _ = s.rcpt(r)
            if code == 250:
                record["rcpts"].append(r)
            else:
                self.client_counts[f"RCPT {code}"] += 1
        if not record["rcpts"]:
            record["outcome"] = "refused"
            s.rset()
            return True
        message = self.make_message(rng, token, sender, record["rcpts"])
        code, text = s.data(message)
        if code == 250:
            record["outcome"], record["reply"] = "accepted", text.decode(errors="replace")
            self.client_counts["accepted"] += 1
            return True
        record["outcome"], record["reply"] = "refused", f"DATA {code} {text[:80]!r}"
        self.client_counts[f"DATA {code}"] += 1
        return code != 421

    # -- killer ---------------------------------------------------------------------------------
    def killer(self) -> None:
        lo, hi = self.args.kill_interval
        victims = [v for v in self.args.victims]
        cycle: list[str] = []
        try:
            while not self.stop_killing.wait(self.rng.uniform(lo, hi)):  # the random moment
                if not cycle:
                    cycle = victims[:]
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
            self.findings.append(f"the master exited by itself with status {code}")
            self.server.wait_exit()
            self.restart_master()

    def kill_master(self) -> None:
        self.check_master_alive()
        pid = self.server.master_pid
        os.kill(pid, signal.SIGKILL)
        self.kills["master"] += 1
        self.kill_log.append(f"{time.strftime('%H:%M:%S')} master pid={pid}")
        code = self.server.wait_exit(30)
        if code != -signal.SIGKILL:
            self.findings.append(f"killed master {pid} exited with {code}, not by SIGKILL")
        # The children get SIGTERM (PR_SET_PDEATHSIG) and shut down; a new master cannot bind the
        # port or take the spool lock before they are gone.
        try:
            ternlib.wait_until(lambda: not self.server.stray_pids(), timeout=60,
                               message="the children of the killed master to exit")
        except AssertionError:
            left = {p: " ".join(ternlib.read_cmdline(p)[1:3]) for p in self.server.stray_pids()}
            self.findings.append(f"children of killed master {pid} still ran 60 s later, killed: {left}")
            for p in left:
                try:
                    os.kill(p, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            ternlib.wait_until(lambda: not self.server.stray_pids(), timeout=30,
                               message="the leftover children to die")
        self.restart_master()

    def restart_master(self) -> None:
        for attempt in range(3):
            try:
                self.server.start()
                return
            except AssertionError as e:
                self.findings.append(f"tern serve did not start again (attempt {attempt + 1}): {str(e)[-2000:]}")
                if self.server.proc.poll() is None:
                    self.server.proc.kill()
                self.server.wait_exit(30)
                ternlib.wait_until(lambda: not self.server.stray_pids(), timeout=60,
                                   message="the processes of the failed start to exit")
        raise Fatal("tern serve did not start again after 3 attempts")

    # -- the end --------------------------------------------------------------------------------
    def spool_busy(self) -> list[str]:
        spool = self.server.data_dir / "spool"
        return [f"{d}/{p.name}" for d in ("msg", "env") for p in (spool / d).iterdir()]

    def drain(self) -> bool:
        """Waits until every service runs and the spool is empty; False on timeout."""
        for name in CHILDREN:
            self.server.wait_child_pid(name, timeout=60)
        accepted = sum(1 for a in self.attempts.values() if a["outcome"] == "accepted")
        timeout = 120 + accepted / 20
        started = time.monotonic()
        try:
            ternlib.wait_until(lambda: not self.spool_busy(), timeout=timeout, interval=0.2,
                               message="an empty spool")
        except AssertionError:
            left = self.spool_busy()
            self.findings.append(f"spool not empty {timeout:.0f} s after the end: {len(left)} files, e.g. {left[:6]}")
            for name in left[:6]:
                if name.startswith("env/"):
                    path = self.server.data_dir / "spool" / name
                    try:
                        self.findings.append(f"{name}:\n{path.read_text(errors='replace')}")
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
        began = time.monotonic()
        for t in clients:
            t.start()
        killer.start()
        next_report = began + args.progress
        deadline = began + args.duration
        while not self.stop_sending.is_set() and time.monotonic() < deadline:
            self.stop_sending.wait(min(deadline, next_report) - time.monotonic())
            if time.monotonic() >= next_report:
                next_report += args.progress
                log(f"{time.monotonic() - began:.0f}s: accepted={self.client_counts['accepted']} "
                    f"kills={sum(self.kills.values())} ({dict(self.kills)})")
        self.stop_killing.set()
        killer.join()
        self.stop_sending.set()
        for t in clients:
            t.join(args.client_timeout * 3)
        if any(t.is_alive() for t in clients):
            self.findings.append("a client thread did not finish")
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
            self.findings.append(str(e))
        if stop_status not in (0, None):
            self.findings.append(f"tern serve exited with status {stop_status} after SIGTERM")
        leftovers = server.stray_pids()
        if leftovers:
            self.findings.append(f"tern processes left after the stop: {leftovers}")
        server.cleanup()
        self.sink.stop()
        self.sink.close_journal()
        server.close_log()
        if self.args.sabotage:
            self.sabotage(self.args.sabotage)
        result = self.verify(traffic_seconds, drained, fatal)
        if result == 0 and not self.args.keep:
            server.remove_files()
        else:
            log(f"work directory kept: {server.base} (tern.log, sink.jsonl, data/)")
        return result

    def sabotage(self, what: str) -> None:
        if what == "delete-maildir-file":
            for user in LOCAL_USERS:
                files = sorted((self.server.maildir_root(user) / "new").iterdir())
                if files:
                    log(f"SABOTAGE: deleting {files[0]}")
                    files[0].unlink()
                    return
        elif what == "orphan-spool-file":
            path = self.server.data_dir / "spool" / "msg" / "0661FFFFFFFFFF-abcdef"
            log(f"SABOTAGE: creating {path}")
            path.write_bytes(b"Subject: orphan\n\norphan\n")

    # -- the check ------------------------------------------------------------------------------
    def verify(self, traffic_seconds: float, drained: bool, fatal: bool) -> int:
        server = self.server
        arrivals: collections.Counter = collections.Counter()  # (token, destination) -> copies
        corrupt: list[str] = []
        unknown: list[str] = []  # arrivals whose token was never sent
        maildir_tmp = 0
        for user in LOCAL_USERS + [ALIAS_MAILBOX]:
            root = server.maildir_root(user)
            maildir_tmp += sum(1 for _ in (root / "tmp").iterdir()) if (root / "tmp").is_dir() else 0
            for sub in ("new", "cur"):
                d = root / sub
                if not d.is_dir():
                    continue
                for path in d.iterdir():
                    token, intact = token_and_integrity(path.read_bytes())
                    if token is None or token not in self.attempts:
                        unknown.append(str(path))
                    elif not intact:
                        corrupt.append(str(path))
                    else:
                        arrivals[(token, f"maildir:{user}")] += 1
        for token, rcpt, intact, _ in self.sink.records:
            if token is None or token not in self.attempts:
                unknown.append(f"sink: {rcpt} {token}")
            elif not intact:
                corrupt.append(f"sink: {token} to {rcpt}")
            else:
                arrivals[(token, f"sink:{rcpt}")] += 1
        # Delivery reports in the senders' Maildirs: (token, failed recipient).
        bounced: collections.Counter = collections.Counter()
        reports = 0
        other_reports: list[str] = []
        for sender in SENDERS:
            root = server.maildir_root(sender.split("@")[0])
            for sub in ("new", "cur"):
                d = root / sub
                if not d.is_dir():
                    continue
                for path in d.iterdir():
                    reports += 1
                    found = self.parse_dsn(path.read_bytes())
                    if not found:
                        other_reports.append(str(path))
                    for item in found:
                        bounced[item] += 1

        # Expected destinations of each accepted recipient.
        def destinations(rcpt: str) -> list[str]:
            if rcpt == ALIAS:
                return [f"maildir:{ALIAS_MAILBOX}", f"sink:{ALIAS_REMOTE}"]
            if rcpt.endswith(f"@{DOMAIN}"):
                return [f"maildir:{rcpt.split('@')[0]}"]
            if rcpt.startswith("bounce-"):
                return []  # the sink refuses it: a DSN must come back
            return [f"sink:{rcpt}"]

        accepted = {t: a for t, a in self.attempts.items() if a["outcome"] == "accepted"}
        missing: list[str] = []
        duplicates = 0
        delivered = collections.Counter()  # destination kind -> (message, destination) pairs reached
        expected_bounces = unexpected_bounces = 0
        unexpected_bounce_list: list[str] = []
        expected_pairs = set()
        for token, a in accepted.items():
            for rcpt in a["rcpts"]:
                dests = destinations(rcpt)
                if not dests:
                    if bounced[(token, rcpt)]:
                        expected_bounces += 1
                    else:
                        missing.append(f"{token} to {rcpt}: no DSN to {a['sender']} ({a['reply']})")
                    continue
                for dest in dests:
                    expected_pairs.add((token, dest))
                    copies = arrivals[(token, dest)]
                    if copies:
                        delivered[dest.split(":", 1)[1] if dest.startswith("maildir:") else "sink"] += 1
                        duplicates += copies - 1
                    elif bounced[(token, rcpt)]:
                        unexpected_bounces += 1
                        unexpected_bounce_list.append(f"{token} to {rcpt} ({dest})")
                    else:
                        missing.append(f"{token} to {rcpt} via {dest} ({a['reply']})")
        # Arrivals of messages that never got a 250 (allowed; the client would send them again).
        not_acked = {t for (t, dest) in arrivals if t not in accepted}
        refused_but_arrived = sorted(f"{t} ({self.attempts[t]['reply']})" for t in not_acked
                                     if self.attempts[t]["outcome"] == "refused")
        extra_dest = [(t, d) for (t, d) in arrivals if t in accepted and (t, d) not in expected_pairs]

        orphans, spares = self.spool_orphans()
        sanitizer = server.sanitizer_reports()
        log_summary = self.log_summary()

        # Report.
        c = self.client_counts
        refused = sum(1 for a in self.attempts.values() if a["outcome"] == "refused")
        dropped = sum(1 for a in self.attempts.values() if a["outcome"] == "dropped")
        print()
        print("== crash harness totals")
        print(f"traffic:    {traffic_seconds:.0f} s, {self.args.sessions} sessions, seed {self.args.seed}, "
              f"binary {self.binary}")
        print(f"messages:   attempted {len(self.attempts)}, accepted (250) {len(accepted)}, refused {refused}, "
              f"dropped {dropped}")
        print(f"client:     {dict(sorted(c.items()))}")
        print(f"kills:      {sum(self.kills.values())} " + " ".join(f"{k}={self.kills[k]}" for k in VICTIMS))
        print(f"restarts:   {log_summary['restarts']}")
        print(f"delivered:  " + " ".join(f"{k}={v}" for k, v in sorted(delivered.items()))
              + f" (message/destination pairs; expected {len(expected_pairs)})")
        print(f"bounces:    expected {expected_bounces}, unexpected {unexpected_bounces}, "
              f"reports in the senders' Maildirs {reports}")
        print(f"duplicates: {duplicates}")
        print(f"arrived without a 250: {len(not_acked)} (of them refused with a reply: {len(refused_but_arrived)})")
        print(f"missing:    {len(missing)}")
        print(f"corrupt:    {len(corrupt)}")
        print(f"unknown:    {len(unknown) + len(extra_dest)}")
        print(f"spool:      orphans {len(orphans)}, spare files in free/ {spares}, drained {drained}")
        print(f"maildir tmp/ leftovers: {maildir_tmp}")
        print(f"log:        warn/error kinds: {log_summary['kinds'] or 'none'}")
        for title, items in (("MISSING", missing), ("CORRUPT", corrupt), ("UNKNOWN", unknown),
                             ("DELIVERED TO A DESTINATION NOT ADDRESSED", extra_dest),
                             ("ORPHANED SPOOL FILES", orphans), ("UNEXPECTED BOUNCES", unexpected_bounce_list),
                             ("REPORTS THAT ARE NOT DSNS OF HARNESS MESSAGES", other_reports),
                             ("REFUSED BUT DELIVERED", refused_but_arrived), ("SANITIZER", sanitizer),
                             ("FINDINGS", self.findings)):
            if items:
                print(f"-- {title} ({len(items)}):")
                for item in list(items)[:30]:
                    print(f"   {item}")
        ok = (not fatal and drained and not missing and not corrupt and not unknown and not extra_dest
              and not orphans and not sanitizer and len(accepted) > 0
              and not any(f.startswith(("tern serve exited", "tern processes left", "tern master did not stop"))
                          for f in self.findings))
        fields = {
            "status": "PASS" if ok else "FAIL", "seconds": round(traffic_seconds), "seed": self.args.seed,
            "accepted": len(accepted), "attempted": len(self.attempts),
            "kills": sum(self.kills.values()), **{f"kills_{k}": self.kills[k] for k in VICTIMS},
            "delivered": sum(delivered.values()), "expected": len(expected_pairs),
            "missing": len(missing), "duplicates": duplicates, "corrupt": len(corrupt),
            "unknown": len(unknown) + len(extra_dest), "bounces": expected_bounces,
            "unexpected_bounces": unexpected_bounces, "orphans": len(orphans), "drained": int(drained),
            "unacked_arrivals": len(not_acked), "maildir_tmp": maildir_tmp, "findings": len(self.findings),
        }
        print(RESULT_PREFIX + " " + " ".join(f"{k}={v}" for k, v in fields.items()), flush=True)
        if fatal:
            return 2
        return 0 if ok else 1

    @staticmethod
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
                        rcpt = str(block.get("Final-Recipient", "")).split(";", 1)[-1].strip()
                        failed.append(rcpt)
            elif ctype in ("text/rfc822-headers", "message/rfc822"):
                raw = part.get_payload(decode=True) if ctype == "text/rfc822-headers" else part.as_bytes()
                m = TOKEN_RE.search(raw or b"")
                if m:
                    token = m.group(1).decode()
        return [(token, r) for r in failed] if token else []

    def spool_orphans(self) -> tuple[list[str], int]:
        """Everything in the stopped tern's spool that is not lock, an empty msg/ and env/, or
        a spare file free/sN."""
        spool = self.server.data_dir / "spool"
        orphans: list[str] = []
        spares = 0
        for entry in sorted(spool.iterdir()):
            if entry.name == "lock" and entry.is_file():
                continue
            if entry.name in ("msg", "env") and entry.is_dir():
                orphans += [f"{entry.name}/{p.name}" for p in sorted(entry.iterdir())]
                continue
            if entry.name == "free" and entry.is_dir():
                for p in entry.iterdir():
                    if SPARE_RE.match(p.name) and p.is_file() and not p.is_symlink():
                        spares += 1
                    else:
                        orphans.append(f"free/{p.name}")
                continue
            orphans.append(entry.name)
        return orphans, spares

    def log_summary(self) -> dict:
        """Restarts per service, and every warn/error kind (message text without its fields)."""
        restarts = collections.Counter()
        kinds = collections.Counter()
        rx = re.compile(r"^\S+ (\S+) (warn|error) (.*?)(?= \w+=|$)")
        with open(self.server.log_path, errors="replace") as f:
            for line in f:
                m = re.search(r" master error service died; restarting service=(\w+) how=\"([^\"]*)\"", line)
                if m:
                    restarts[f"{m.group(1)}({m.group(2)})"] += 1
                m = rx.match(line)
                if m:
                    kinds[f"{m.group(1)} {m.group(2)} {m.group(3)}"] += 1
        return {"restarts": dict(sorted(restarts.items())),
                "kinds": "; ".join(f"{k} x{v}" for k, v in kinds.most_common())}


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
    p.add_argument("--progress", type=float, default=30, help="seconds between progress lines (default 30)")
    p.add_argument("--keep", action="store_true", help="keep the work directory even when the run passes")
    p.add_argument("--sabotage", choices=["delete-maildir-file", "orphan-spool-file"],
                   help="spoil one thing before the check, to see the check fail")
    args = p.parse_args(argv)
    if args.seed is None:
        args.seed = int(time.time()) % 1000000
    lo, _, hi = args.kill_interval.partition(":")
    args.kill_interval = (float(lo), float(hi or lo))
    args.victims = [v for v in args.victims.split(",") if v]
    unknown = set(args.victims) - set(VICTIMS)
    if unknown:
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
