#!/usr/bin/env python3
"""IMAP, tern against Dovecot on the same machine in one run, over the same mailbox.

Generates a Maildir of MESSAGES messages (default 100,000; seeded: the same bytes every run) for
alice@example.test, named and flagged the way tern's deliver writes them (",S=" but no ",W="),
and gives an identical copy to (a) a tern from build/release (`tern serve`, as root: the imap
service runs as tern-vmail) and (b) a private Dovecot instance this script configures in a
temporary directory (Debian's dovecot-imapd: its own config file, base_dir, state_dir and log, a
loopback port, a passwd-file user that owns its copy as tern-vmail), neither copy with any
index. Both listen on 127.0.0.1 without TLS (tern: plaintext_auth_without_tls; Dovecot: ssl = no,
disable_plaintext_auth = no). Then, with the same client (raw sockets, one command at a time,
timed with time.perf_counter from sending the command to the end of its tagged reply), each step
on tern and then on Dovecot:

  SELECT INBOX on the fresh mailbox (each server builds its index), SELECT again on a new
  connection (median of 3); FETCH 1:* (UID FLAGS RFC822.SIZE) twice (the CRLF sizes are counted
  by reading every file once: tern does it in its first SELECT, Dovecot in its first FETCH);
  FETCH 1:* (ENVELOPE BODYSTRUCTURE) twice (the second answered from each server's cache, and
  checked to be the same bytes as the first);
  SEARCH TEXT <a word planted in about 1% of the messages> twice, the second with a NOOP sent on
  another connection a third of the way in (how long another user waits); APPENDS APPENDs of a
  4096-octet message on one connection (LITERAL+, nothing selected) into the big INBOX and into a
  new empty folder; and the resident memory per idle session: SESSIONS connections logged in
  with INBOX selected, the servers' RSS and PSS before and after, over SESSIONS (tern: its
  `tern service imap` process; Dovecot: its imap and imap-login processes).

Every answer is checked against what the generator wrote (message count, sizes, \\Seen flags,
the messages holding the word); a wrong answer is printed as such and makes the exit status 1.
Prints a table with both figures and the ratio (> 1: tern better); asserts nothing about the
figures. Runs as root (Dovecot's master starts as root; tern then runs its services under their
own users, which it creates when missing).

  bench/imap_bench.py [--messages N] [--sessions N] [--appends N] [--seed N] [--keep]

TERN_BIN (or --tern) is the tern binary, default build/release/tern. The servers inherit the
script's niceness (`nice -n 19 bench/imap_bench.py --messages 2000` on a busy machine). The
work directory (about 2.2x the mailbox's size: two copies) is under $TMPDIR, removed at the end
unless --keep.
"""
import argparse
import base64
import os
import pwd
import random
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
USER = "alice@example.test"
PASSWORD = "bench-imap-password"
NEEDLE = "quokkaberry"  # no generated word contains a "q": SEARCH TEXT finds only the planted ones
DOVECOT = shutil.which("dovecot") or "/usr/sbin/dovecot"
DOVECONF = shutil.which("doveconf") or "/usr/bin/doveconf"
SERVICE_USERS = ["tern-smtp", "tern-queue", "tern-vmail", "tern-dir", "tern-relay"]


# --- the mailbox ----------------------------------------------------------------------------

SYLLABLES = ("ka lo mi ren to sa vel dor pin ta mor ely an gra fu be sil ton ver na chi pe ru lan dis co "
             "ment ing ler ba ho tri ven cal der op ul ex gen per sto mar ni bo hal wen tis").split()
COMMON = ("the of and to in is that for it as with was on be at by this have from or an but not are all "
          "were they we you he she which their there one had been has more if will would about what so "
          "can some other time than out like into only could do your its new then when who also after "
          "meeting report invoice project update schedule budget review team office account contract "
          "please thanks regards attached draft version server release customer order delivery price "
          "week month today tomorrow yesterday morning afternoon agenda notes call phone email list "
          "document proposal feedback topic answer issue problem solution plan idea group").split()
ACCENTED = ["café", "Grüße", "naïve", "résumé", "Zürich", "señor", "façade", "Ærø", "jalapeño", "Köln"]
FIRST = ("Anna Ben Clara David Emma Felix Greta Hugo Ida Jonas Karin Lars Mia Nils Olga Paul Rosa Sven "
         "Tilda Ulf Vera Walter Xenia Yvonne Zeno Marta Piet Linnea Oskar Helga").split()
LAST = ("Berg Holm Lind Falk Strand Dahl Nyberg Ek Sand Vik Moberg Lund Hall Stenberg Kvist Borg Wall "
        "Lindgren Fors Hagen").split()
DOMAINS = ["example.org", "example.net", "mail.example.com", "lists.example.org", "corp.example",
           "shop.example.net", "news.example.com", "uni.example.edu"]
MAILERS = ["Thunderbird 115.5", "Apple Mail (2.3731)", "Microsoft Outlook 16.0", "Roundcube Webmail/1.6",
           "mutt/2.2.9", "K-9 Mail 6.7"]


class Generator:
    def __init__(self, seed):
        self.rng = random.Random(seed)
        rng = self.rng
        words = set()
        while len(words) < 4000:
            words.add("".join(rng.choice(SYLLABLES) for _ in range(rng.choice((1, 2, 2, 3, 3, 4)))))
        self.vocab = COMMON + sorted(words)
        assert not any("q" in w for w in self.vocab)
        weights = [1.0 / (rank + 8) for rank in range(len(self.vocab))]  # Zipf-like
        self.cum = []
        total = 0.0
        for w in weights:
            total += w
            self.cum.append(total)

    def words(self, n):
        return self.rng.choices(self.vocab, cum_weights=self.cum, k=n)

    def sentence(self, needle=False):
        w = self.words(self.rng.randint(5, 18))
        if self.rng.random() < 0.08:
            w[self.rng.randrange(len(w))] = self.rng.choice(ACCENTED)
        if needle:
            w.insert(self.rng.randrange(len(w) + 1), self.rng.choice((NEEDLE, NEEDLE, NEEDLE.capitalize())))
        s = " ".join(w)
        return s[0].upper() + s[1:] + self.rng.choice((".", ".", ".", "?", "!"))

    def paragraphs(self, needle):
        rng = self.rng
        count = max(1, min(30, int(rng.lognormvariate(1.0, 0.8))))
        paras = []
        for _ in range(count):
            paras.append(" ".join(self.sentence() for _ in range(rng.randint(1, 6))))
        if needle:
            k = rng.randrange(len(paras))
            paras[k] = paras[k] + " " + self.sentence(needle=True)
        return paras

    @staticmethod
    def wrap(text, width=72):
        lines, line = [], ""
        for word in text.split(" "):
            if line and len(line) + 1 + len(word) > width:
                lines.append(line)
                line = word
            else:
                line = f"{line} {word}" if line else word
        if line:
            lines.append(line)
        return "\n".join(lines)

    @staticmethod
    def qp(text):
        # quoted-printable of UTF-8 or Latin-1 text with LF lines; soft breaks only at spaces so
        # that a word is never split.
        out = []
        for line in text.split("\n"):
            enc = "".join(c if (33 <= ord(c) <= 126 and c != "=") or c == " " else
                          "".join(f"={b:02X}" for b in c.encode("iso-8859-1", "replace")) for c in line)
            if enc.endswith(" "):
                enc = enc[:-1] + "=20"
            while len(enc) > 76:
                cut = enc.rfind(" ", 0, 75)
                if cut <= 0:
                    break
                out.append(enc[:cut + 1] + "=")
                enc = enc[cut + 1:]
            out.append(enc)
        return "\n".join(out)

    def message(self, i, when, needle):
        """One message with LF line ends: (bytes, where the needle went or None)."""
        rng = self.rng
        place = None
        if needle:
            place = rng.choices(["subject", "plain", "qp", "base64", "html"], [30, 40, 10, 10, 10])[0]
        sender_first, sender_last = rng.choice(FIRST), rng.choice(LAST)
        domain = rng.choice(DOMAINS)
        sender = f"{sender_first.lower()}.{sender_last.lower()}@{domain}"
        date = time.strftime("%a, %d %b %Y %H:%M:%S +0000", time.gmtime(when))
        subj_words = self.words(rng.randint(3, 9))
        if place == "subject":
            subj_words.insert(rng.randrange(len(subj_words) + 1), NEEDLE)
        subject = " ".join(subj_words).capitalize()
        r = rng.random()
        if r < 0.25:
            subject = "Re: " + subject
        elif r < 0.30:
            subject = "Fwd: " + subject
        if rng.random() < 0.03 and place != "subject":
            word = rng.choice(ACCENTED)
            subject_header = "=?UTF-8?Q?" + "".join(
                f"={b:02X}" if b > 126 or b in (61, 63, 95, 32) else chr(b) for b in (subject + " " + word).encode()
            ) + "?="
        else:
            subject_header = subject
        h = [f"Return-Path: <{sender}>", f"Delivered-To: {USER}"]
        for hop in range(rng.randint(1, 3)):
            ip = f"192.0.2.{rng.randint(1, 254)}"
            h.append(f"Received: from mx{hop}.{domain} (mx{hop}.{domain} [{ip}])\n"
                     f"\tby mail.example.test with ESMTPS id {rng.getrandbits(48):012x}\n"
                     f"\tfor <{USER}>; {date}")
        if rng.random() < 0.4:
            sig = base64.b64encode(rng.randbytes(256)).decode()
            h.append(f"DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed; d={domain}; s=sel1;\n"
                     f"\th=from:to:subject:date:message-id; bh={base64.b64encode(rng.randbytes(32)).decode()};\n"
                     "\tb=" + "\n\t  ".join(sig[k:k + 70] for k in range(0, len(sig), 70)))
        h.append(f"Date: {date}")
        h.append(f"From: {sender_first} {sender_last} <{sender}>")
        h.append(f"To: Alice Example <{USER}>")
        if rng.random() < 0.2:
            h.append("Cc: " + ", ".join(f"{rng.choice(FIRST).lower()}@{rng.choice(DOMAINS)}"
                                        for _ in range(rng.randint(1, 4))))
        h.append(f"Subject: {subject_header}")
        h.append(f"Message-ID: <{i}.{rng.getrandbits(40):010x}@{domain}>")
        if subject.startswith("Re: "):
            h.append(f"In-Reply-To: <{rng.getrandbits(40):010x}@{domain}>")
        if rng.random() < 0.15:
            h.append(f"List-Id: <team.{domain}>")
            h.append(f"List-Unsubscribe: <mailto:leave-team@{domain}>")
        if rng.random() < 0.3:
            h.append(f"X-Mailer: {rng.choice(MAILERS)}")
        h.append("MIME-Version: 1.0")

        paras = self.paragraphs(place in ("plain", "qp", "base64", "html"))
        text = "\n\n".join(self.wrap(p) for p in paras) + f"\n\n-- \n{sender_first} {sender_last}\n"
        if rng.random() < 0.2:
            quoted_text = self.wrap(" ".join(self.sentence() for _ in range(4)))
            quoted = "\n".join("> " + line for line in quoted_text.split("\n"))
            text = text + "\n" + quoted + "\n"
        kind = rng.choices(["plain", "latin1", "alternative", "mixed"], [65, 10, 15, 10])[0]
        if place in ("qp",):
            kind = "latin1"
        elif place == "base64":
            kind = "plain64"
        elif place == "html":
            kind = "alternative"
        body = ""
        if kind == "plain":
            h.append("Content-Type: text/plain; charset=utf-8; format=flowed")
            h.append("Content-Transfer-Encoding: 8bit")
            body = text
        elif kind == "plain64":
            h.append("Content-Type: text/plain; charset=utf-8")
            h.append("Content-Transfer-Encoding: base64")
            body = base64.encodebytes(text.encode()).decode()
        elif kind == "latin1":
            h.append("Content-Type: text/plain; charset=iso-8859-1")
            h.append("Content-Transfer-Encoding: quoted-printable")
            body = self.qp(text) + "\n"
        else:
            boundary = f"----=_Part_{i}_{rng.getrandbits(32):08x}"
            h.append(f'Content-Type: multipart/{kind}; boundary="{boundary}"')
            parts = []
            plain_text = text if place != "html" else "\n\n".join(
                self.wrap(p.replace(NEEDLE, "").replace(NEEDLE.capitalize(), "")) for p in paras) + "\n"
            parts.append("Content-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: 8bit\n\n" + plain_text)
            if kind == "alternative":
                html = "<html><body>\n" + "\n".join(f"<p>{self.wrap(p)}</p>" for p in paras) + "\n</body></html>\n"
                parts.append("Content-Type: text/html; charset=utf-8\nContent-Transfer-Encoding: 8bit\n\n" + html)
            else:
                size = int(min(200_000, rng.lognormvariate(9.3, 0.9)))
                name = f"{rng.choice(('report', 'invoice', 'scan', 'slides', 'photo'))}-{i}"
                ctype, ext = rng.choice((("application/pdf", "pdf"), ("image/jpeg", "jpg"), ("application/zip", "zip")))
                data = base64.encodebytes(rng.randbytes(size)).decode()
                parts.append(f'Content-Type: {ctype}; name="{name}.{ext}"\nContent-Transfer-Encoding: base64\n'
                             f'Content-Disposition: attachment; filename="{name}.{ext}"\n\n' + data)
            body = "This is a multi-part message in MIME format.\n\n" + "".join(
                f"--{boundary}\n{p}\n" for p in parts) + f"--{boundary}--\n"
        data = ("\n".join(h) + "\n\n" + body).encode("utf-8")
        return data, place


def generate_maildir(maildir, n, seed, uid, gid):
    """Writes n messages into maildir (new/, cur/, tmp/) the way tern's deliver names them
    ("<sec>.M<usec>P<pid>Q<n>.<host>,S=<size>", flags after ":2,"), mtime = the Date. Returns
    what the answers must say."""
    gen = Generator(seed)
    rng = gen.rng
    for sub in ("", "new", "cur", "tmp"):
        (maildir / sub).mkdir(parents=True, exist_ok=True)
        os.chown(maildir / sub, uid, gid)
        os.chmod(maildir / sub, 0o700)
    start = 1672531200  # 2023-01-01
    span = 3 * 365 * 86400
    expect = {"messages": n, "bytes": 0, "vsize": 0, "seen": 0, "needle": 0, "needle_places": {}}
    sizes = []
    for i in range(n):
        when = start + int(span * i / n) + rng.randint(0, 600)
        needle = rng.random() < 0.01
        data, place = gen.message(i, when, needle)
        if place:
            expect["needle"] += 1
            expect["needle_places"][place] = expect["needle_places"].get(place, 0) + 1
        r = rng.random()
        base = f"{when}.M{rng.randrange(1000000)}P{rng.randint(300, 65000)}Q{i + 1}.mx.example.test,S={len(data)}"
        if r < 0.07:
            name, seen = f"new/{base}", False
        elif r < 0.22:
            name, seen = f"cur/{base}:2,", False
        elif r < 0.27:
            name, seen = f"cur/{base}:2,RS", True
        elif r < 0.30:
            name, seen = f"cur/{base}:2,FS", True
        else:
            name, seen = f"cur/{base}:2,S", True
        path = maildir / name
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.write(fd, data)
        os.fchown(fd, uid, gid)
        os.close(fd)
        os.utime(path, (when, when))
        expect["bytes"] += len(data)
        vsize = len(data) + data.count(b"\n")
        expect["vsize"] += vsize
        sizes.append(vsize)
        expect["seen"] += seen
    expect["sizes"] = sorted(sizes)
    return expect


APPEND_BODY = None


def append_message(k):
    """A message of exactly 4096 octets with CRLF line ends (as a client sends it); its Message-ID
    differs per k."""
    global APPEND_BODY
    head = ("Date: Mon, 07 Dec 2026 12:00:00 +0000\r\nFrom: Alice Example <alice@example.test>\r\n"
            f"To: Bob <bob@example.org>\r\nSubject: Sent from the bench\r\nMessage-ID: <{k:08d}.bench@example.test>\r\n"
            "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n").encode()
    if APPEND_BODY is None:
        gen = Generator(99)
        room = 4096 - len(head)
        lines = []
        while sum(len(x) + 2 for x in lines) < room:
            lines += gen.wrap(gen.sentence()).split("\n")
        body = b""
        for line in lines:
            piece = line.encode() + b"\r\n"
            if len(body) + len(piece) > room - 2:
                break
            body += piece
        APPEND_BODY = body + b"x" * (room - len(body) - 2) + b"\r\n"
    msg = head + APPEND_BODY
    assert len(msg) == 4096, len(msg)
    return msg


# --- a small IMAP client --------------------------------------------------------------------

class ImapError(Exception):
    pass


class Client:
    """One connection; command() sends a command and returns (seconds, the whole response)."""

    def __init__(self, port, timeout=3600):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.count = 0
        self.pending = bytearray()
        greeting = self._read_until(None)
        if not greeting.startswith(b"* OK"):
            raise ImapError(f"greeting: {greeting[:200]!r}")

    def _read_until(self, tag):
        """Reads until the tagged line of `tag` (or, with None, one line). The commands timed here
        have no literals in their answers."""
        buf = self.pending
        self.pending = bytearray()
        if tag is None:
            marker_mid = None
        else:
            marker_start = tag.encode() + b" "
            marker_mid = b"\r\n" + marker_start
        scanned = 0
        while True:
            if tag is None:
                end = buf.find(b"\r\n")
                if end >= 0:
                    self.pending = buf[end + 2:]
                    return bytes(buf[:end + 2])
            else:
                start = 0 if buf.startswith(marker_start) else -1
                if start < 0:
                    at = buf.find(marker_mid, max(0, scanned - len(marker_mid)))
                    if at >= 0:
                        start = at + 2
                if start >= 0:
                    end = buf.find(b"\r\n", start)
                    if end >= 0:
                        self.pending = buf[end + 2:]
                        return bytes(buf[:end + 2])
                scanned = len(buf)
            chunk = self.sock.recv(1 << 20)
            if not chunk:
                raise ImapError(f"connection closed; last bytes: {bytes(buf[-300:])!r}")
            buf += chunk

    def command(self, text, literal=None, expect_ok=True):
        self.count += 1
        tag = f"b{self.count}"
        if literal is None:
            wire = f"{tag} {text}\r\n".encode()
        else:
            wire = f"{tag} {text} {{{len(literal)}+}}\r\n".encode() + literal + b"\r\n"
        t0 = time.perf_counter()
        self.sock.sendall(wire)
        response = self._read_until(tag)
        seconds = time.perf_counter() - t0
        last = response[response.rfind(b"\r\n", 0, len(response) - 2) + 2:] if response.count(b"\r\n") > 1 else response
        if expect_ok and not last.startswith(f"{tag} OK".encode()):
            raise ImapError(f"{text[:60]!r}: {last.decode(errors='replace').strip()}")
        return seconds, response

    def login(self):
        self.command(f'LOGIN "{USER}" "{PASSWORD}"')

    def close(self):
        try:
            self.command("LOGOUT", expect_ok=False)
        except (OSError, ImapError):
            pass
        self.sock.close()


def exists_of(response):
    m = re.search(rb"^\* (\d+) EXISTS\r$", response, re.M)
    return int(m.group(1)) if m else None


def fetch_summary(response):
    """(messages, sum of RFC822.SIZE, \\Seen count, sorted sizes, distinct UIDs) of a FETCH answer."""
    n = total = seen = 0
    sizes, uids = [], set()
    size_re = re.compile(rb"RFC822\.SIZE (\d+)")
    uid_re = re.compile(rb"UID (\d+)")
    flags_re = re.compile(rb"FLAGS \(([^)]*)\)")
    for line in response.split(b"\r\n"):
        if not line.startswith(b"* ") or b" FETCH (" not in line:
            continue
        n += 1
        s = size_re.search(line)
        u = uid_re.search(line)
        f = flags_re.search(line)
        if s:
            sizes.append(int(s.group(1)))
            total += int(s.group(1))
        if u:
            uids.add(int(u.group(1)))
        if f and b"\\Seen" in f.group(1).split():
            seen += 1
    return n, total, seen, sorted(sizes), len(uids)


def search_hits(response):
    hits = []
    for line in response.split(b"\r\n"):
        if line.startswith(b"* SEARCH"):
            hits += [int(x) for x in line[8:].split()]
    return hits


# --- servers --------------------------------------------------------------------------------

def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_port(port, seconds=30):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port}")


def children(pid):
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(x) for x in f.read().split()]
    except OSError:
        return []


def descendants(pid):
    out, todo = [], [pid]
    while todo:
        for c in children(todo.pop()):
            out.append(c)
            todo.append(c)
    return out


def proc_comm(pid):
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def proc_cmdline(pid):
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return []


def memory_kib(pids):
    """(RSS, PSS) in KiB summed over pids."""
    rss = pss = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Rss:"):
                    rss += int(line.split()[1])
                elif line.startswith("Pss:"):
                    pss += int(line.split()[1])
        except OSError:
            pass
    return rss, pss


def cpu_seconds(pids):
    ticks = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            ticks += int(fields[11]) + int(fields[12])
        except (OSError, IndexError):
            pass
    return ticks / os.sysconf("SC_CLK_TCK")


class Tern:
    name = "tern"

    def __init__(self, binary, work, maildir_source):
        self.binary = binary
        self.dir = work / "tern"
        self.data = self.dir / "data"
        self.conf = self.dir / "tern.toml"
        self.log = self.dir / "tern.log"
        self.port = free_port()
        self.maildir = self.data / "domains" / "example.test" / "alice" / "Maildir"
        self.proc = None
        self.dir.mkdir()
        self.conf.write_text(f"""# bench/imap_bench.py: tern's side
[server]
hostname = "bench.example.test"
data_dir = "{self.data}"

[smtp]
listen = ["127.0.0.1:{free_port()}"]

[imap]
listen = ["127.0.0.1:{self.port}"]
plaintext_auth_without_tls = true   # Dovecot runs without TLS too
max_connections = 1000
max_connections_per_ip = 0

[mailauth]
verify = false
""")
        run([binary, "domain", "add", "example.test", "--config", str(self.conf)])
        run([binary, "user", "add", USER, "--config", str(self.conf), "--password-stdin"], input=PASSWORD + "\n")
        vmail = pwd.getpwnam("tern-vmail")
        # The Maildir is in place before tern first touches it (the tree tern would make, owned by
        # tern-vmail).
        for p in (self.data / "domains", self.data / "domains" / "example.test", self.maildir.parent):
            p.mkdir(parents=True, exist_ok=True)
            os.chown(p, vmail.pw_uid, vmail.pw_gid)
            os.chmod(p, 0o700)
        copy_tree(maildir_source, self.maildir)

    def start(self):
        self.logf = open(self.log, "wb")
        self.proc = subprocess.Popen([self.binary, "serve", "--config", str(self.conf)], stdout=self.logf,
                                     stderr=subprocess.STDOUT)
        wait_port(self.port)

    def pids(self):
        """The `tern service imap` process."""
        return [p for p in descendants(self.proc.pid) if proc_cmdline(p)[1:3] == [b"service", b"imap"]]

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def log_problems(self):
        lines = self.log.read_text(errors="replace").splitlines() if self.log.exists() else []
        return [line for line in lines if re.match(r"\S+ \S+ (warn|error)\b", line)]


class Dovecot:
    name = "dovecot"

    def __init__(self, work, maildir_source):
        self.dir = work / "dc"
        self.port = free_port()
        self.conf = self.dir / "dovecot.conf"
        self.log = self.dir / "dovecot.log"
        self.home = self.dir / "home" / "alice"
        self.maildir = self.home / "Maildir"
        self.proc = None
        for d in (self.dir, self.dir / "run", self.dir / "state", self.home.parent):
            d.mkdir()
            os.chmod(d, 0o755)
        vmail = pwd.getpwnam("tern-vmail")
        self.home.mkdir()
        os.chown(self.home, vmail.pw_uid, vmail.pw_gid)
        os.chmod(self.home, 0o700)
        copy_tree(maildir_source, self.maildir)
        users = self.dir / "users"
        users.write_text(f"{USER}:{{PLAIN}}{PASSWORD}:{vmail.pw_uid}:{vmail.pw_gid}::{self.home}::\n")
        os.chmod(users, 0o644)
        self.conf.write_text(f"""# bench/imap_bench.py: a private Dovecot instance (none of /etc/dovecot is read)
protocols = imap
listen = 127.0.0.1
base_dir = {self.dir}/run
state_dir = {self.dir}/state
instance_name = tern-bench-dovecot
log_path = {self.log}
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
default_internal_user = dovecot
default_login_user = dovenull
first_valid_uid = {min(vmail.pw_uid, 500)}
mail_location = maildir:~/Maildir
# Debian's defaults, written out: fsync a saved message and its directory before the APPEND's OK
# (optimized), indexes in the Maildir.
mail_fsync = optimized
default_client_limit = 5000
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {users}
}}
userdb {{
  driver = passwd-file
  args = username_format=%u {users}
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {self.port}
  }}
  inet_listener imaps {{
    port = 0
  }}
  process_limit = 1000
}}
service imap {{
  process_limit = 1000
}}
protocol imap {{
  mail_max_userip_connections = 1000
}}
""")
        check = subprocess.run([DOVECONF, "-c", str(self.conf), "-n"], capture_output=True, text=True)
        if check.returncode != 0:
            raise RuntimeError("doveconf rejects the bench configuration:\n" + check.stderr)

    def start(self):
        self.logf = open(self.dir / "dovecot.stderr", "wb")
        self.proc = subprocess.Popen([DOVECOT, "-F", "-c", str(self.conf)], stdout=self.logf,
                                     stderr=subprocess.STDOUT)
        wait_port(self.port)

    def pids(self):
        """Its imap and imap-login processes."""
        return [p for p in descendants(self.proc.pid) if proc_comm(p) in ("imap", "imap-login")]

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def log_problems(self):
        text = ""
        for f in (self.log, self.dir / "dovecot.stderr"):
            if f.exists():
                text += f.read_text(errors="replace")
        # "Time moved forwards" is the master noticing a busy machine's scheduling delays.
        return [line for line in text.splitlines()
                if re.search(r"\b(Warning|Error|Fatal|Panic)\b", line) and "Time moved forwards" not in line]


def run(cmd, input=None):
    r = subprocess.run(cmd, input=input, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, cmd))} failed ({r.returncode}): {r.stderr.strip()}")
    return r.stdout


def copy_tree(source, target):
    subprocess.run(["cp", "-a", str(source), str(target)], check=True)


# --- the measurements -----------------------------------------------------------------------

class Results:
    def __init__(self):
        self.rows = []  # (label, tern, dovecot, unit, better) better: "low" or "high"
        self.problems = []

    def add(self, label, values, unit, better):
        self.rows.append((label, values.get("tern"), values.get("dovecot"), unit, better))

    def problem(self, server, text):
        self.problems.append(f"{server}: {text}")
        print(f"  !! {server}: {text}", flush=True)


def fmt(value, unit):
    if value is None:
        return "-"
    if unit == "s":
        return f"{value * 1000:.1f} ms" if value < 1 else f"{value:.2f} s"
    if unit == "msg/s":
        return f"{value:,.0f} msg/s" if value >= 100 else f"{value:.1f} msg/s"
    if unit == "KiB":
        return f"{value:,.0f} KiB"
    return f"{value} {unit}"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--messages", type=int, default=100_000)
    ap.add_argument("--sessions", type=int, default=200, help="idle sessions for the memory figure")
    ap.add_argument("--appends", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=5)
    ap.add_argument("--tern", default=os.environ.get("TERN_BIN", str(REPO / "build/release/tern")))
    ap.add_argument("--keep", action="store_true", help="keep the work directory (printed) for a look")
    args = ap.parse_args()

    if os.geteuid() != 0:
        sys.exit("imap_bench.py runs as root (it starts a Dovecot master; tern's services switch users)")
    tern_bin = os.path.realpath(args.tern)
    if not os.access(tern_bin, os.X_OK):
        sys.exit(f"tern binary not found: {tern_bin} (make build, or set TERN_BIN)")
    if not Path(DOVECOT).exists() or not Path("/usr/lib/dovecot/imap").exists():
        sys.exit("dovecot missing: apt-get install dovecot-imapd")
    for u in SERVICE_USERS:
        try:
            pwd.getpwnam(u)
        except KeyError:
            subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", u], check=True)
    vmail = pwd.getpwnam("tern-vmail")

    work = Path(tempfile.mkdtemp(prefix="tern-imapbench."))
    os.chmod(work, 0o755)
    servers = []
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    status = 1
    try:
        status = bench(args, tern_bin, work, vmail, servers)
    except KeyboardInterrupt:
        status = 130
    except Exception as e:  # noqa: BLE001: print the logs of both servers, then fail
        print(f"imap_bench.py failed: {type(e).__name__}: {e}", file=sys.stderr)
        for s in servers:
            if s.log.exists():
                print(f"--- last lines of {s.log}", file=sys.stderr)
                print("\n".join(s.log.read_text(errors="replace").splitlines()[-20:]), file=sys.stderr)
        status = 1
    finally:
        for s in servers:
            s.stop()
        if args.keep:
            print(f"work directory kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    return status


def bench(args, tern_bin, work, vmail, servers):
    n = args.messages
    t = time.perf_counter()
    print(f"generating {n:,} messages (seed {args.seed}) ...", flush=True)
    source = work / "Maildir"
    expect = generate_maildir(source, n, args.seed, vmail.pw_uid, vmail.pw_gid)
    print(f"  {expect['bytes'] / 1e6:.1f} MB, {expect['vsize'] / 1e6:.1f} MB with CRLF, {expect['seen']:,} \\Seen, "
          f"'{NEEDLE}' in {expect['needle']:,} ({expect['needle_places']}), {time.perf_counter() - t:.0f} s",
          flush=True)

    tern = Tern(tern_bin, work, source)
    servers.append(tern)
    dovecot = Dovecot(work, source)
    servers.append(dovecot)
    shutil.rmtree(source)
    # Both copies are in the page cache (just written); flush them to disk so that no write-back
    # runs during the measurements.
    os.sync()
    tern.start()
    dovecot.start()
    both = (tern, dovecot)
    res = Results()
    cpu_model = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
                      if line.startswith("model name")), "?")
    dovecot_version = run([DOVECOT, "--version"]).strip()
    tern_version = subprocess.run([tern_bin, "--version"], capture_output=True, text=True).stdout.strip() or "?"
    print(f"{tern_version} ({tern_bin}) on 127.0.0.1:{tern.port}; "
          f"Dovecot {dovecot_version} on 127.0.0.1:{dovecot.port}")
    print(f"machine: {os.cpu_count()} cores ({cpu_model}), load average {os.getloadavg()[0]:.2f} at the start",
          flush=True)

    def check_exists(server, response, want, what):
        got = exists_of(response)
        if got != want:
            res.problem(server.name, f"{what}: EXISTS {got}, expected {want}")

    # SELECT on the fresh mailbox, then on new connections.
    first, again = {}, {}
    for s in both:
        c = Client(s.port)
        c.login()
        first[s.name], r = c.command("SELECT INBOX")
        check_exists(s, r, n, "first SELECT")
        c.close()
        print(f"  {s.name}: first SELECT {fmt(first[s.name], 's')}", flush=True)
    for s in both:
        times = []
        for _ in range(3):
            c = Client(s.port)
            c.login()
            secs, r = c.command("SELECT INBOX")
            times.append(secs)
            check_exists(s, r, n, "SELECT")
            c.close()
        again[s.name] = statistics.median(times)
        print(f"  {s.name}: SELECT again {', '.join(fmt(x, 's') for x in times)}", flush=True)
    res.add("SELECT INBOX, first (index built)", first, "s", "low")
    res.add("SELECT INBOX again, new connection (median of 3)", again, "s", "low")

    # FETCH and SEARCH on one selected connection per server.
    conns = {}
    for s in both:
        c = Client(s.port)
        c.login()
        c.command("SELECT INBOX")
        conns[s.name] = c
    fetch1, fetch2, search1, search2 = {}, {}, {}, {}
    for label, store in (("first", fetch1), ("again", fetch2)):
        for s in both:
            secs, r = conns[s.name].command("FETCH 1:* (UID FLAGS RFC822.SIZE)")
            store[s.name] = secs
            got_n, total, seen, sizes, uids = fetch_summary(r)
            print(f"  {s.name}: FETCH 1:* {label} {fmt(secs, 's')} ({len(r) / 1e6:.1f} MB of answer)", flush=True)
            if got_n != n or uids != n:
                res.problem(s.name, f"FETCH 1:* answered {got_n} messages ({uids} distinct UIDs), expected {n}")
            if total != expect["vsize"]:
                res.problem(s.name, f"FETCH RFC822.SIZE sum {total}, expected {expect['vsize']} (CRLF size)")
                if sizes != expect["sizes"]:
                    wrong = sum(1 for a, b in zip(sizes, expect["sizes"]) if a != b)
                    res.problem(s.name, f"  {wrong} sizes differ from the generator's after sorting")
            if seen != expect["seen"]:
                res.problem(s.name, f"FETCH FLAGS: {seen} \\Seen, expected {expect['seen']}")
    res.add("FETCH 1:* (UID FLAGS RFC822.SIZE), first", fetch1, "s", "low")
    # tern counts the CRLF sizes while it builds its index (first SELECT), Dovecot at the first
    # FETCH of RFC822.SIZE: the sum is the first-use cost of both.
    res.add("first SELECT + first FETCH", {k: first[k] + fetch1[k] for k in first}, "s", "low")
    res.add("FETCH 1:* (UID FLAGS RFC822.SIZE), again", fetch2, "s", "low")
    # ENVELOPE and BODYSTRUCTURE of every message (a client's first look at a folder): both
    # servers parse every message the first time and answer the second from their caches
    # (tern's tern-cache, Dovecot's dovecot.index.cache). The second answer must be the first.
    structure1, structure2, first_answer = {}, {}, {}
    for label, store in (("first", structure1), ("again", structure2)):
        for s in both:
            secs, r = conns[s.name].command("FETCH 1:* (ENVELOPE BODYSTRUCTURE)")
            store[s.name] = secs
            got = r.count(b" FETCH (ENVELOPE (")
            print(f"  {s.name}: FETCH 1:* (ENVELOPE BODYSTRUCTURE) {label} {fmt(secs, 's')} "
                  f"({len(r) / 1e6:.1f} MB of answer)", flush=True)
            if got != n:
                res.problem(s.name, f"FETCH ENVELOPE answered {got} messages, expected {n}")
            untagged = r[:r.rfind(b"\r\n", 0, len(r) - 2) + 2]  # the tagged line differs
            if label == "first":
                first_answer[s.name] = untagged
            elif untagged != first_answer[s.name]:
                res.problem(s.name, "FETCH ENVELOPE BODYSTRUCTURE answered differently the second time")
    first_answer.clear()
    res.add("FETCH 1:* (ENVELOPE BODYSTRUCTURE), first", structure1, "s", "low")
    res.add("FETCH 1:* (ENVELOPE BODYSTRUCTURE), again", structure2, "s", "low")
    noop = {}
    for label, store in (("first", search1), ("again", search2)):
        for s in both:
            # During the second SEARCH another session (logged in, nothing selected) sends a NOOP
            # a third of the way into it: how long does a command of another user wait?
            other = probe = None
            if label == "again":
                other = Client(s.port)
                other.login()

                def probe_noop(c=other, delay=search1[s.name] / 3, name=s.name):
                    time.sleep(delay)
                    noop[name] = c.command("NOOP")[0]

                probe = threading.Thread(target=probe_noop)
                probe.start()
            cpu0 = cpu_seconds(s.pids())
            secs, r = conns[s.name].command(f"SEARCH TEXT {NEEDLE}")
            store[s.name] = secs
            hits = search_hits(r)
            extra = ""
            if probe:
                probe.join()
                other.close()
                extra = f"; NOOP on another connection meanwhile: {fmt(noop[s.name], 's')}"
            print(f"  {s.name}: SEARCH TEXT {label} {fmt(secs, 's')}, {len(hits)} hits, "
                  f"server CPU {cpu_seconds(s.pids()) - cpu0:.2f} s{extra}", flush=True)
            if len(hits) != expect["needle"]:
                res.problem(s.name, f"SEARCH TEXT {NEEDLE}: {len(hits)} messages, expected {expect['needle']}")
    res.add(f"SEARCH TEXT (word in {expect['needle']:,} messages), first", search1, "s", "low")
    res.add(f"SEARCH TEXT (word in {expect['needle']:,} messages), again", search2, "s", "low")
    res.add("NOOP of another session during that SEARCH", noop, "s", "low")
    for c in conns.values():
        c.close()

    # APPEND: one connection, no mailbox selected, one message per command (LITERAL+).
    k = args.appends
    rate_inbox, rate_empty = {}, {}
    for s in both:
        c = Client(s.port)
        c.login()
        c.command("CREATE BenchAppend")
        for folder, store in (("INBOX", rate_inbox), ("BenchAppend", rate_empty)):
            t0 = time.perf_counter()
            for i in range(k):
                c.command(f"APPEND {folder} (\\Seen)", literal=append_message(i))
            secs = time.perf_counter() - t0
            store[s.name] = k / secs
            print(f"  {s.name}: {k} APPENDs into {folder}: {secs:.2f} s, {k / secs:.1f} msg/s", flush=True)
        for folder, want in (("INBOX", n + k), ("BenchAppend", k)):
            _, r = c.command(f"STATUS {folder} (MESSAGES)")
            m = re.search(rb"MESSAGES (\d+)", r)
            if not m or int(m.group(1)) != want:
                res.problem(s.name, f"STATUS {folder} after the APPENDs: {m and int(m.group(1))}, expected {want}")
        c.close()
    res.add(f"APPEND 4 KB into INBOX ({n:,} messages), {k} on one connection", rate_inbox, "msg/s", "high")
    res.add(f"APPEND 4 KB into an empty folder, {k} on one connection", rate_empty, "msg/s", "high")

    # Memory per idle session.
    per_rss, per_pss, totals = {}, {}, {}
    for s in both:
        time.sleep(2)  # let the earlier sessions' processes (Dovecot) exit
        rss0, pss0 = memory_kib(s.pids())
        t0 = time.perf_counter()
        idle = []
        try:
            for _ in range(args.sessions):
                c = Client(s.port)
                c.login()
                _, r = c.command("SELECT INBOX")
                if not idle:
                    check_exists(s, r, n + k, "idle session's SELECT")
                idle.append(c)
            opened = time.perf_counter() - t0
            time.sleep(2)
            pids = s.pids()
            rss1, pss1 = memory_kib(pids)
        finally:
            for c in idle:
                c.sock.close()
        per_rss[s.name] = (rss1 - rss0) / args.sessions
        per_pss[s.name] = (pss1 - pss0) / args.sessions
        totals[s.name] = (rss0, rss1, pss0, pss1, len(pids))
        print(f"  {s.name}: {args.sessions} sessions opened (LOGIN, SELECT) in {opened:.1f} s; "
              f"RSS {rss0:,} -> {rss1:,} KiB, "
              f"PSS {pss0:,} -> {pss1:,} KiB over {len(pids)} processes", flush=True)
    res.add(f"memory per idle session (RSS; {args.sessions} with INBOX selected)", per_rss, "KiB", "low")
    res.add(f"memory per idle session (PSS; {args.sessions} with INBOX selected)", per_pss, "KiB", "low")

    # The table.
    print()
    print(f"IMAP, tern vs Dovecot {dovecot_version}: INBOX of {n:,} messages ({expect['bytes'] / 1e6:.0f} MB), "
          f"{os.cpu_count()} cores, plain text on 127.0.0.1")
    w = max(len(r[0]) for r in res.rows)
    print(f"{'figure':<{w}}  {'tern':>14}  {'Dovecot':>14}  {'ratio':>7}")
    for label, tv, dv, unit, better in res.rows:
        ratio = "-"
        if tv and dv:
            r = dv / tv if better == "low" else tv / dv
            ratio = f"{r:.2f}x" if r >= 0.1 else f"{r:.2g}x"
        print(f"{label:<{w}}  {fmt(tv, unit):>14}  {fmt(dv, unit):>14}  {ratio:>7}")
    print("ratio: how many times better tern is (Dovecot's time or memory / tern's; tern's rate / Dovecot's)")
    for s in both:
        rss0, rss1, pss0, pss1, procs = totals[s.name]
        print(f"{s.name} memory: RSS {rss0 / 1024:.1f} -> {rss1 / 1024:.1f} MiB, PSS {pss0 / 1024:.1f} -> "
              f"{pss1 / 1024:.1f} MiB ({procs} processes with the sessions open)")
    for s in both:
        lines = s.log_problems()
        if lines:
            print(f"{s.name} log: {len(lines)} warning/error lines, the first:")
            for line in lines[:5]:
                print("  " + line[:300])
    if res.problems:
        print("WRONG ANSWERS:")
        for p in res.problems:
            print("  " + p)
        return 1
    print("answers: both servers' counts, sizes, flags and search hits match the generated mailbox")
    return 0


if __name__ == "__main__":
    sys.exit(main())
