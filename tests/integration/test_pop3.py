"""The pop3 service (RFC 1939, CAPA RFC 2449, STLS RFC 2595, AUTH PLAIN RFC 5034) over real
sockets, with clients written by others: Python's poplib and fetchmail. Exact replies are
asserted, and what the mail store holds afterwards.

Every server gets two free ports: `pop3` (port 110 style, STLS) and `pop3s` (port 995 style,
implicit TLS). Mail reaches the mailbox through tern's SMTP port, or is written into the Maildir
as another server (qmail, vpopmail) left it.
"""
from __future__ import annotations

import base64
import os
import poplib
import shutil
import smtplib
import socket
import ssl
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

import tlslib
from ternlib import HOSTNAME, IS_ROOT, free_port, wait_until

PASSWORD = "pw"  # ternlib.PASSWORD_HASH is the hash of "pw"
ALICE = "alice@example.test"
CAPA_BEFORE_TLS = [b"TOP", b"UIDL", b"RESP-CODES", b"AUTH-RESP-CODE", b"PIPELINING", b"STLS",
                   b"IMPLEMENTATION tern"]
CAPA_IN_TLS = [b"TOP", b"UIDL", b"USER", b"SASL PLAIN", b"RESP-CODES", b"AUTH-RESP-CODE", b"PIPELINING",
               b"IMPLEMENTATION tern"]


class Pki:
    """A throwaway CA and a server certificate whose key the smtp and pop3 users can both read
    (owner tern-smtp, group tern-vmail, mode 0640), as docs/pop3.md asks of an installation."""

    def __init__(self, uids):
        self.dir = Path(tempfile.mkdtemp(prefix="tern-pop3-tls-"))
        os.chmod(self.dir, 0o755)
        self.ca = tlslib.make_ca(self.dir / "ca")
        os.chmod(self.dir / "ca", 0o755)
        self.main = self.ca.issue("main", [HOSTNAME, "localhost"])
        if uids is not None:
            import pwd
            os.chown(self.main.keyfile, uids["smtp"], pwd.getpwuid(uids["deliver"]).pw_gid)
            os.chmod(self.main.keyfile, 0o640)

    def context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=self.ca.certfile)
        ctx.check_hostname = False  # the tests connect to 127.0.0.1
        return ctx


@pytest.fixture(scope="module")
def pki(service_uids):
    p = Pki(service_uids)
    yield p
    shutil.rmtree(p.dir, ignore_errors=True)


def make_server(tern_factory, pki, **pop3):
    port, tls_port = free_port(), free_port()
    section = {"listen": [f"127.0.0.1:{port}"], "pop3s_listen": [f"127.0.0.1:{tls_port}"]}
    section.update(pop3)
    t = tern_factory(pop3=section, tls={"certificate": pki.main.chainfile, "key": pki.main.keyfile})
    t.pop3, t.pop3s = port, tls_port
    t.wait_log(" pop3 info started")
    return t


@pytest.fixture
def server(tern_factory, pki):
    return make_server(tern_factory, pki)


def send_mail(t, subject: str, body: str = "Hello.\n", to: str = ALICE) -> None:
    msg = f"From: bob@outside.test\r\nTo: {to}\r\nSubject: {subject}\r\n\r\n{body}".replace("\n", "\r\n")
    msg = msg.replace("\r\r\n", "\r\n")
    with smtplib.SMTP("127.0.0.1", t.port, timeout=10) as s:
        s.sendmail("bob@outside.test", [to], msg.encode())


def inbox(t, user: str = "alice") -> Path:
    return t.maildir(user).parent


def stored_files(t, user: str = "alice") -> list[Path]:
    root = inbox(t, user)
    return sorted(p for sub in ("new", "cur") for p in (root / sub).iterdir())


def login(t, pki, user: str = ALICE) -> poplib.POP3:
    p = poplib.POP3("127.0.0.1", t.pop3, timeout=10)
    p.stls(context=pki.context())
    p.user(user)
    p.pass_(PASSWORD)
    return p


def raw(t, tls: bool = False, pki=None) -> "RawPop3":
    return RawPop3(t.pop3s if tls else t.pop3, pki.context() if tls else None)


class RawPop3:
    """A line-level client for exact replies and the cases poplib will not send."""

    def __init__(self, port: int, context: ssl.SSLContext | None = None):
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.sock = context.wrap_socket(sock) if context else sock
        self.file = self.sock.makefile("rb")
        self.greeting = self.line()

    def line(self) -> str:
        data = self.file.readline()
        assert data.endswith(b"\r\n"), f"unterminated reply {data!r}"
        return data[:-2].decode()

    def cmd(self, text: str | bytes) -> str:
        self.sock.sendall((text.encode() if isinstance(text, str) else text) + b"\r\n")
        return self.line()

    def multiline(self) -> list[str]:
        out = []
        while (line := self.line()) != ".":
            out.append(line)
        return out

    def closed(self) -> bool:
        return self.file.readline() == b""

    def close(self):
        self.file.close()
        self.sock.close()


def test_full_session_stat_list_uidl_retr_top_dele_rset_quit(server, pki):
    for i in range(3):
        send_mail(server, f"message {i}", "line one\n.dotted line\nline three\n")
    server.wait_messages("alice", 3)
    files = stored_files(server)
    sizes = [len(f.read_bytes()) + f.read_bytes().count(b"\n") for f in files]  # bare LFs become CRLF

    p = login(server, pki)
    count, total = p.stat()
    assert (count, total) == (3, sum(sizes))
    resp, listing, _ = p.list()
    assert resp == b"+OK maildrop has 3 messages (%d octets)" % total
    assert listing == [b"%d %d" % (i + 1, s) for i, s in enumerate(sizes)]
    resp, uidls, _ = p.uidl()
    assert uidls == [b"%d %s" % (i + 1, f.name.split(":")[0].encode()) for i, f in enumerate(files)]
    assert p.uidl(2) == b"+OK 2 " + files[1].name.split(":")[0].encode()

    resp, lines, octets = p.retr(1)
    assert resp == b"+OK %d octets" % sizes[0]
    assert b"\r\n".join(lines) + b"\r\n" == files[0].read_bytes().replace(b"\n", b"\r\n")
    assert b"..dotted line" not in b"".join(lines)  # poplib removes the stuffing tern added
    resp, top, _ = p.top(2, 1)
    header, _, body = files[1].read_bytes().partition(b"\n\n")
    assert top == header.split(b"\n") + [b"", b"line one"]

    assert p.dele(1) == b"+OK message 1 deleted"
    with pytest.raises(poplib.error_proto, match=r"-ERR message 1 is deleted"):
        p.retr(1)
    assert p.rset().startswith(b"+OK")
    assert p.dele(2) == b"+OK message 2 deleted"
    assert p.stat() == (2, sizes[0] + sizes[2])
    assert p.quit() == b"+OK %s POP3 server signing off (2 messages left)" % HOSTNAME.encode()
    wait_until(lambda: len(stored_files(server)) == 2, message="the deleted message to be removed")
    assert [f.name for f in stored_files(server)] == [files[0].name, files[2].name]

    # A new session numbers what is left; the UIDLs are those of the first session.
    p = login(server, pki)
    _, uidls, _ = p.uidl()
    assert uidls == [b"1 " + files[0].name.split(":")[0].encode(), b"2 " + files[2].name.split(":")[0].encode()]
    p.quit()
    assert server.log_count(" pop3 info messages deleted ") == 1


def test_capabilities_and_plaintext_login_only_inside_tls(server, pki):
    c = raw(server)
    assert c.greeting == f"+OK {HOSTNAME} POP3 server ready (tern)"
    assert c.cmd("CAPA") == "+OK capability list follows"
    assert [x.encode() for x in c.multiline()] == CAPA_BEFORE_TLS
    assert c.cmd("USER alice@example.test") == \
        "-ERR [AUTH] plaintext authentication is disallowed without TLS; use STLS first"
    assert c.cmd("AUTH PLAIN " + base64.b64encode(b"\0alice@example.test\0pw").decode()) == \
        "-ERR [AUTH] plaintext authentication is disallowed without TLS; use STLS first"
    assert c.cmd("STAT") == "-ERR STAT is not valid before login (AUTHORIZATION state)"
    assert c.cmd("STLS") == "+OK begin TLS negotiation"
    c.sock = pki.context().wrap_socket(c.sock)
    c.file = c.sock.makefile("rb")
    assert c.cmd("CAPA") == "+OK capability list follows"
    assert [x.encode() for x in c.multiline()] == CAPA_IN_TLS
    assert c.cmd("STLS") == "-ERR TLS is already active"
    assert c.cmd("AUTH PLAIN " + base64.b64encode(b"\0alice@example.test\0pw").decode()).startswith(
        "+OK logged in, maildrop has 0 messages (0 octets)")
    assert c.cmd("QUIT") == f"+OK {HOSTNAME} POP3 server signing off (maildrop empty)"
    assert c.closed()


def test_implicit_tls_port_and_auth_plain_exchange(server, pki):
    send_mail(server, "over 995")
    server.wait_messages("alice", 1)
    c = raw(server, tls=True, pki=pki)
    assert c.greeting == f"+OK {HOSTNAME} POP3 server ready (tern)"
    assert c.cmd("AUTH PLAIN") == "+ "
    assert c.cmd("*") == "-ERR authentication cancelled"
    assert c.cmd("AUTH PLAIN") == "+ "
    assert c.cmd("not base64!") == "-ERR [AUTH] invalid base64 data in authentication response"
    assert c.cmd("AUTH PLAIN") == "+ "
    assert c.cmd(base64.b64encode(b"\0alice@example.test\0pw").decode()) == \
        "+OK logged in, maildrop has 1 message (%d octets)" % (
            len(stored_files(server)[0].read_bytes()) + stored_files(server)[0].read_bytes().count(b"\n"))
    assert c.cmd("QUIT").startswith("+OK")


def test_wrong_password_is_delayed_then_the_connection_closes(server, pki):
    c = raw(server, tls=True, pki=pki)
    started = time.monotonic()
    assert c.cmd("USER alice@example.test") == "+OK send your password"
    assert c.cmd("PASS wrong") == "-ERR [AUTH] authentication failed"
    assert time.monotonic() - started >= 1.9  # 2 s after the first failure
    assert c.cmd("USER nobody@example.test") == "+OK send your password"
    assert c.cmd("PASS pw") == "-ERR [AUTH] authentication failed"  # unknown user: the same answer
    assert c.cmd("USER alice@example.test") == "+OK send your password"
    assert c.cmd("PASS wrong") == "-ERR [AUTH] authentication failed; too many failures, closing connection"
    assert c.closed()
    assert server.log_count(" pop3 info login failed ") == 3


def test_deletions_happen_only_at_quit(server, pki):
    for i in range(2):
        send_mail(server, f"keep {i}")
    server.wait_messages("alice", 2)
    c = raw(server, tls=True, pki=pki)
    c.cmd("USER alice@example.test")
    assert c.cmd("PASS pw").startswith("+OK logged in, maildrop has 2 messages")
    assert c.cmd("DELE 1") == "+OK message 1 deleted"
    assert c.cmd("DELE 1") == "-ERR message 1 already deleted"
    c.close()  # no QUIT: nothing is deleted
    server.wait_log(" pop3 info logout ")
    assert len(stored_files(server)) == 2


def test_messages_removed_by_another_session_meanwhile(server, pki):
    for i in range(2):
        send_mail(server, f"shared {i}")
    server.wait_messages("alice", 2)
    first, second = login(server, pki), login(server, pki)
    first.dele(1)
    first.quit()
    with pytest.raises(poplib.error_proto, match=r"-ERR \[SYS/PERM\] message 1 was removed by another session"):
        second.retr(1)
    # Deleting it again is not an error: it is gone either way, and the other one goes too.
    second.dele(1)
    second.dele(2)
    assert second.quit() == b"+OK %s POP3 server signing off (maildrop empty)" % HOSTNAME.encode()
    assert stored_files(server) == []


def test_a_message_renamed_by_a_flag_change_is_still_served(server, pki):
    send_mail(server, "renamed")
    server.wait_messages("alice", 1)
    p = login(server, pki)
    [path] = stored_files(server)
    # An IMAP client marks it seen: the file moves from new/ to cur/ with :2,S.
    os.rename(path, inbox(server) / "cur" / (path.name + ":2,S"))
    resp, lines, _ = p.retr(1)
    assert b"Subject: renamed" in lines
    p.quit()


def test_qmail_pop3d_uidls_are_kept_after_migration(server, pki):
    """qmail-pop3d's UIDL was the Maildir file name (before ':'): a migrated mailbox gives the
    same UIDLs, so clients that "leave mail on the server" do not download everything again."""
    root = inbox(server)
    for sub in ("new", "cur", "tmp"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    names = ["1262304000.12345.oldhost:2,S", "1262304001.12346.oldhost:2,", "1262304002.12347.oldhost"]
    for name in names:
        target = root / ("new" if ":" not in name else "cur") / name
        target.write_bytes(b"Subject: old\n\nmigrated\n")
        if IS_ROOT:
            os.chown(target, *_vmail_ids())
    if IS_ROOT:
        for d in [root, root / "new", root / "cur", root / "tmp", root.parent, root.parent.parent]:
            os.chown(d, *_vmail_ids())
    p = login(server, pki)
    _, uidls, _ = p.uidl()
    assert sorted(u.split(b" ")[1] for u in uidls) == sorted(n.split(":")[0].encode() for n in names)
    p.quit()


def _vmail_ids() -> tuple[int, int]:
    import pwd
    entry = pwd.getpwnam("tern-vmail")
    return entry.pw_uid, entry.pw_gid


def test_quota_usage_drops_when_messages_are_deleted(tern_factory, pki):
    t = make_server(tern_factory, pki)
    t.cli("user", "quota", ALICE, "100000", check=True)
    # A delivery that finds no maildirsize creates it by counting the Maildir; another delivery
    # running at that moment would be counted and then add its own line too (Maildir++ tolerates
    # that until the next recount). One at a time, the sum below is exact.
    for i in range(3):
        send_mail(t, f"counted {i}")
        t.wait_messages("alice", i + 1)
    maildirsize = inbox(t) / "maildirsize"
    wait_until(maildirsize.exists, message="maildirsize to be written")
    sizes = [len(f.read_bytes()) for f in stored_files(t)]
    p = login(t, pki)
    p.dele(1)
    p.dele(3)
    p.quit()
    lines = maildirsize.read_text().splitlines()
    assert lines[0] == "100000S"
    assert lines[-1] == f"-{sizes[0] + sizes[2]} -2"
    usage = sum(int(line.split()[0]) for line in lines[1:])
    assert usage == sizes[1]


def test_bad_commands_get_exact_errors_and_the_session_goes_on(server, pki):
    c = raw(server, tls=True, pki=pki)
    assert c.cmd("FOO") == "-ERR unknown command FOO"
    assert c.cmd("X" * 300) == "-ERR command line too long (maximum 255 octets including CRLF)"
    assert c.cmd("APOP alice@example.test 0123456789abcdef0123456789abcdef") == \
        "-ERR APOP is not supported; use USER/PASS or AUTH PLAIN"
    assert c.cmd("USER alice@example.test") == "+OK send your password"
    assert c.cmd("PASS pw").startswith("+OK logged in")
    assert c.cmd("RETR 1") == "-ERR no such message, only 0 messages in maildrop"
    assert c.cmd("RETR x") == "-ERR invalid message number x (expected 1 to 2147483647)"
    assert c.cmd("USER bob") == "-ERR USER is not valid after login (TRANSACTION state)"
    assert c.cmd("NOOP") == "+OK"
    assert c.cmd("QUIT").startswith("+OK")


def test_idle_login_timeout_and_connection_limit(tern_factory, pki):
    t = make_server(tern_factory, pki, login_timeout=1, max_connections_per_ip=2)
    first = raw(t)
    second = raw(t)
    third = socket.create_connection(("127.0.0.1", t.pop3), timeout=10)
    assert third.makefile("rb").readline() == \
        b"-ERR [SYS/TEMP] too many connections from your address, try again later\r\n"
    assert first.line() == "-ERR disconnected for inactivity"
    assert first.closed()
    second.close()
    t.wait_log(" pop3 info idle timeout; closed without deleting ")


def test_fetchmail_downloads_and_removes_over_stls(server, pki, tmp_path):
    for i in range(5):
        send_mail(server, f"fetch {i}", f"body {i}\n")
    server.wait_messages("alice", 5)
    out = tmp_path / "mbox"
    rc = tmp_path / "fetchmailrc"
    rc.write_text(
        f"set no syslog\n"
        f"poll 127.0.0.1 service {server.pop3} protocol pop3 auth password timeout 20:\n"
        f"  user '{ALICE}' there with password '{PASSWORD}' is 'local' here\n"
        f"  sslproto tls1.2+ sslcertck sslcommonname '{HOSTNAME}' sslcertfile '{pki.ca.certfile}' sslcertpath '{tmp_path}'\n"
        f"  nokeep mda '/bin/sh -c \"cat >> {out}\"'\n")
    rc.chmod(0o600)
    env = dict(os.environ, HOME=str(tmp_path), FETCHMAILHOME=str(tmp_path))
    proc = subprocess.run(["fetchmail", "-f", str(rc), "-v", "--nosyslog"], capture_output=True, text=True,
                          timeout=60, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "STLS" in proc.stdout + proc.stderr
    text = out.read_text()
    for i in range(5):
        assert f"Subject: fetch {i}" in text and f"body {i}" in text
    assert stored_files(server) == []
    again = subprocess.run(["fetchmail", "-f", str(rc), "--nosyslog"], capture_output=True, text=True, timeout=60,
                           env=env)
    assert again.returncode == 1, again.stdout + again.stderr  # 1: no mail
