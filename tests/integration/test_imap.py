"""The imap service (RFC 9051/RFC 3501 with UIDPLUS, MOVE, IDLE, SPECIAL-USE, ESEARCH...) over
real sockets, with clients written by others: Python's imaplib, mbsync (isync) and mutt. Exact
replies are asserted, and what the Maildir holds afterwards.

Every server gets two free ports: `imap` (port 143 style, STARTTLS) and `imaps` (port 993 style).
"""
from __future__ import annotations

import imaplib
import os
import re
import shutil
import smtplib
import socket
import ssl
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import pytest

import tlslib
from ternlib import HOSTNAME, free_port, wait_until

PASSWORD = "pw"  # ternlib.PASSWORD_HASH is the hash of "pw"
ALICE = "alice@example.test"
CAPS = ("IMAP4rev1 IMAP4rev2 LITERAL+ SASL-IR ID ENABLE IDLE NAMESPACE UNSELECT UIDPLUS MOVE CHILDREN SPECIAL-USE LIST-EXTENDED LIST-STATUS QUOTA QUOTA=RES-STORAGE QUOTA=RES-MESSAGE ESEARCH "
        "SEARCHRES CONDSTORE QRESYNC STATUS=SIZE UTF8=ACCEPT APPENDLIMIT=67108864")


class Pki:
    """A throwaway CA and a server certificate whose key the smtp and imap users can read."""

    def __init__(self, uids):
        self.dir = Path(tempfile.mkdtemp(prefix="tern-imap-tls-"))
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
        ctx.check_hostname = False
        return ctx


@pytest.fixture(scope="module")
def pki(service_uids):
    p = Pki(service_uids)
    yield p
    shutil.rmtree(p.dir, ignore_errors=True)


def make_server(tern_factory, pki, **imap):
    port, tls_port = free_port(), free_port()
    section = {"listen": [f"127.0.0.1:{port}"], "imaps_listen": [f"127.0.0.1:{tls_port}"]}
    section.update(imap)
    t = tern_factory(imap=section, tls={"certificate": pki.main.chainfile, "key": pki.main.keyfile})
    t.imap, t.imaps = port, tls_port
    t.wait_log(" imap info started")
    return t


@pytest.fixture
def server(tern_factory, pki):
    return make_server(tern_factory, pki)


def send_mail(t, subject: str, body: str = "Hello.\n", to: str = ALICE, extra: str = "") -> None:
    msg = f"From: Bob <bob@outside.test>\nTo: {to}\nSubject: {subject}\n{extra}\n{body}".replace("\n", "\r\n")
    with smtplib.SMTP("127.0.0.1", t.port, timeout=10) as s:
        s.sendmail("bob@outside.test", [to], msg.encode())


def login(t, pki) -> imaplib.IMAP4:
    m = imaplib.IMAP4_SSL("127.0.0.1", t.imaps, ssl_context=pki.context(), timeout=10)
    m.login(ALICE, PASSWORD)
    return m


class Raw:
    """A line-level client for exact replies."""

    def __init__(self, port: int, context: ssl.SSLContext | None = None):
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.sock = context.wrap_socket(sock) if context else sock
        self.file = self.sock.makefile("rb")
        self.greeting = self.line()

    def line(self) -> str:
        data = self.file.readline()
        assert data.endswith(b"\r\n"), f"unterminated reply {data!r}"
        return data[:-2].decode()

    def send(self, text: str | bytes) -> None:
        self.sock.sendall((text.encode() if isinstance(text, str) else text) + b"\r\n")

    def cmd(self, text: str) -> list[str]:
        """Sends a tagged command; returns every line up to and including the tagged reply."""
        tag = text.split(" ", 1)[0]
        self.send(text)
        out = []
        while True:
            line = self.line()
            out.append(line)
            if line.startswith(tag + " "):
                return out

    def close(self):
        self.file.close()
        self.sock.close()


def inbox(t) -> Path:
    return t.maildir("alice").parent


def test_greeting_capabilities_and_login_only_inside_tls(server, pki):
    c = Raw(server.imap)
    assert c.greeting == f"* OK [CAPABILITY {CAPS} STARTTLS LOGINDISABLED] {HOSTNAME} IMAP server ready (tern)"
    assert c.cmd(f"a1 LOGIN {ALICE} {PASSWORD}") == [
        "a1 NO [PRIVACYREQUIRED] LOGIN is disabled without TLS; use STARTTLS first"]
    assert c.cmd("a2 SELECT INBOX") == ["a2 BAD command not allowed before login; use LOGIN or AUTHENTICATE first"]
    assert c.cmd("a3 STARTTLS") == ["a3 OK Begin TLS negotiation now"]
    c.sock = pki.context().wrap_socket(c.sock)
    c.file = c.sock.makefile("rb")
    assert c.cmd("a4 CAPABILITY") == [f"* CAPABILITY {CAPS} AUTH=PLAIN", "a4 OK CAPABILITY completed"]
    assert c.cmd("a5 STARTTLS") == ["a5 BAD TLS is already active"]
    assert c.cmd(f"a6 LOGIN {ALICE} wrong") == ["a6 NO [AUTHENTICATIONFAILED] Authentication failed"]
    assert c.cmd(f"a7 LOGIN {ALICE} {PASSWORD}") == [f"a7 OK [CAPABILITY {CAPS}] Logged in"]
    assert c.cmd("a8 LOGOUT") == [f"* BYE {HOSTNAME} IMAP server logging out", "a8 OK LOGOUT completed"]
    c.close()


def test_new_account_gets_special_use_folders(server, pki):
    m = login(server, pki)
    typ, folders = m.list()
    assert typ == "OK"
    assert folders == [b'(\\HasNoChildren) "." "INBOX"', b'(\\HasNoChildren \\Archive) "." "Archive"',
                       b'(\\HasNoChildren \\Drafts) "." "Drafts"', b'(\\HasNoChildren \\Junk) "." "Junk"',
                       b'(\\HasNoChildren \\Sent) "." "Sent"', b'(\\HasNoChildren \\Trash) "." "Trash"']
    for name in ("Sent", "Drafts", "Trash", "Junk", "Archive"):
        assert (inbox(server) / f".{name}" / "maildirfolder").exists()
    # A folder the user deletes is not made again at the next login.
    assert m.delete("Junk") == ("OK", [b"DELETE completed"])
    m.logout()
    m = login(server, pki)
    assert b'"Junk"' not in b" ".join(m.list()[1])
    m.logout()


def test_select_fetch_store_search_and_flags_on_disk(server, pki):
    send_mail(server, "first", "alpha body\n")
    send_mail(server, "second", "beta body\n", extra="Cc: carol@example.test\n")
    server.wait_messages("alice", 2)
    m = login(server, pki)
    typ, data = m.select("INBOX")
    assert (typ, data) == ("OK", [b"2"])
    assert m.untagged_responses.get("FLAGS") == [b"(\\Answered \\Flagged \\Deleted \\Seen \\Draft $Forwarded)"]
    uidvalidity = int(m.untagged_responses["UIDVALIDITY"][0])
    typ, data = m.fetch("1:2", "(UID FLAGS RFC822.SIZE)")
    files = sorted((inbox(server) / "new").iterdir())
    sizes = [len(f.read_bytes()) + f.read_bytes().count(b"\n") for f in files]
    assert data == [b"1 (UID 1 FLAGS () RFC822.SIZE %d)" % sizes[0], b"2 (UID 2 FLAGS () RFC822.SIZE %d)" % sizes[1]]
    typ, data = m.fetch("1", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
    assert data[0][1] == b"Subject: first\r\n\r\n"
    typ, data = m.fetch("2", "(BODY[TEXT])")
    assert data[0][0] == b"2 (FLAGS (\\Seen) BODY[TEXT] {11}" and data[0][1] == b"beta body\r\n"
    assert m.fetch("2", "(BODY[]<0.4>)")[1][0][1] == b"Retu"  # Return-Path: first
    assert m.search(None, "BODY", "ALPHA") == ("OK", [b"1"])
    assert m.search(None, "CC", "carol") == ("OK", [b"2"])
    assert m.search(None, "SEEN") == ("OK", [b"2"])
    assert m.search(None, "OR", "SUBJECT", "first", "SUBJECT", "second") == ("OK", [b"1 2"])
    assert m.search(None, "NOT", "FROM", "bob") == ("OK", [b""])
    assert m.uid("SEARCH", "UID", "2:*") == ("OK", [b"2"])
    # Flags are listed in the order of their Maildir letters (F, R).
    assert m.store("1", "+FLAGS", "(\\Flagged \\Answered)") == ("OK", [b"1 (FLAGS (\\Flagged \\Answered))"])
    # The flags are the Maildir's letters: another server reading the Maildir sees them.
    assert [p.name.split(":2,")[1] for p in sorted((inbox(server) / "cur").iterdir())] == ["FR", "S"]
    assert m.store("1", "-FLAGS.SILENT", "(\\Answered)") == ("OK", [None])
    assert m.fetch("1", "(FLAGS)")[1] == [b"1 (FLAGS (\\Flagged))"]
    assert m.status("INBOX", "(MESSAGES UNSEEN UIDVALIDITY SIZE)") == (
        "OK", [b'"INBOX" (MESSAGES 2 UIDVALIDITY %d UNSEEN 1 SIZE %d)' % (uidvalidity, sum(sizes))])
    m.logout()


def test_append_copy_move_expunge_with_uidplus(server, pki):
    send_mail(server, "to be moved")
    server.wait_messages("alice", 1)
    m = login(server, pki)
    typ, data = m.append("Drafts", "(\\Draft \\Seen)", imaplib.Time2Internaldate(1700000000),
                         b"Subject: draft\r\n\r\nunfinished\r\n")
    assert typ == "OK" and re.fullmatch(rb"\[APPENDUID \d+ 1\] APPEND completed", data[0])
    [draft] = list((inbox(server) / ".Drafts" / "cur").iterdir())
    assert draft.name.endswith(":2,DS") and draft.read_bytes() == b"Subject: draft\n\nunfinished\n"
    assert int(draft.stat().st_mtime) == 1700000000
    m.select("INBOX")
    typ, data = m.copy("1", "Archive")
    assert typ == "OK" and re.fullmatch(rb"\[COPYUID \d+ 1 1\] COPY completed", data[0])
    typ, data = m.uid("MOVE", "1", "Trash")
    assert typ == "OK"
    assert m.untagged_responses.get("EXPUNGE") == [b"1"]
    assert list((inbox(server) / "new").iterdir()) == [] and list((inbox(server) / "cur").iterdir()) == []
    with pytest.raises(imaplib.IMAP4.error, match="BAD.*invalid message number or set"):
        m.copy("1", "Archive")  # no message 1 any more
    m.select("Trash")
    assert m.store("1", "+FLAGS", "(\\Deleted)")[0] == "OK"
    assert m.expunge() == ("OK", [b"1"])
    assert list((inbox(server) / ".Trash" / "cur").iterdir()) == []
    typ, data = m.append("Nowhere", None, None, b"Subject: x\r\n\r\ny\r\n")
    assert (typ, data) == ("NO", [b"[TRYCREATE] mailbox does not exist"])
    m.logout()


def test_create_rename_delete_subscribe_and_hierarchy(server, pki):
    m = login(server, pki)
    assert m.create("Lists") == ("OK", [b"CREATE completed"])
    assert m.create("Lists.tern") == ("OK", [b"CREATE completed"])
    assert m.create("Lists") == ("NO", [b"[ALREADYEXISTS] mailbox already exists"])
    assert m.create("INBOX.sub") == ("NO", [b"[CANNOT] mailboxes inside INBOX are not supported; create it at the "
                                            b"top level"])
    assert m.create("&AOk-t&AOk-") == ("OK", [b"CREATE completed"])  # "été" in modified UTF-7
    assert (inbox(server) / ".&AOk-t&AOk-").is_dir()
    assert m.list('""', "Lists*")[1] == [b'(\\HasChildren) "." "Lists"', b'(\\HasNoChildren) "." "Lists.tern"']
    assert m.list('""', "%")[1][-1] == b'(\\HasNoChildren) "." "&AOk-t&AOk-"'
    assert m.rename("Lists", "Groups") == ("OK", [b"RENAME completed"])
    assert (inbox(server) / ".Groups.tern").is_dir()
    assert m.subscribe("Groups.tern") == ("OK", [b"SUBSCRIBE completed"])
    assert m.lsub('""', "*")[1] == [b'() "." "Groups.tern"']
    assert m.delete("INBOX") == ("NO", [b"[CANNOT] INBOX cannot be deleted"])
    assert m.delete("Missing") == ("NO", [b"[NONEXISTENT] mailbox does not exist"])
    assert m.select("Missing") == ("NO", [b"[NONEXISTENT] mailbox does not exist"])
    m.logout()


def test_idle_announces_new_mail_within_a_second(server, pki):
    m = login(server, pki)
    m.select("INBOX")
    tag = m._new_tag().decode()
    m.send(f"{tag} IDLE\r\n".encode())
    assert m.readline() == b"+ idling\r\n"
    started = time.monotonic()
    send_mail(server, "during idle")
    line = m.readline()
    elapsed = time.monotonic() - started
    assert line == b"* 1 EXISTS\r\n"
    assert elapsed < 2.5, f"EXISTS after {elapsed:.2f}s (delivery included)"
    m.send(b"DONE\r\n")
    assert m.readline() == f"{tag} OK IDLE terminated\r\n".encode()
    m.logout()


def test_two_sessions_expunging_concurrently(server, pki):
    for i in range(4):
        send_mail(server, f"shared {i}")
    server.wait_messages("alice", 4)
    a, b = login(server, pki), login(server, pki)
    a.select("INBOX")
    b.select("INBOX")
    a.store("1:2", "+FLAGS", "(\\Deleted)")
    b.store("2:3", "+FLAGS", "(\\Deleted)")
    assert a.expunge()[0] == "OK"
    assert b.expunge()[0] == "OK"
    # Each session's view: a told about 1:3 going, b too; both now see one message, UID 4.
    assert a.noop()[0] == "OK" and b.noop()[0] == "OK"
    a.untagged_responses.clear()  # imaplib keeps earlier FETCH FLAGS reports (of UID 3, flagged by b)
    b.untagged_responses.clear()
    assert a.fetch("1:*", "(UID)")[1] == [b"1 (UID 4)"]
    assert b.fetch("1:*", "(UID)")[1] == [b"1 (UID 4)"]
    assert len(list((inbox(server) / "new").iterdir()) + list((inbox(server) / "cur").iterdir())) == 1
    a.logout()
    b.logout()


def test_bad_input_gets_exact_replies(server, pki):
    c = Raw(server.imaps, pki.context())
    assert c.cmd("a1 FROB") == ["a1 BAD unknown command FROB"]
    assert c.cmd(f"a2 LOGIN {ALICE} {PASSWORD}")[-1].startswith("a2 OK")
    assert c.cmd("a3 FETCH 1 (FLAGS)") == ["a3 BAD command not allowed without a selected mailbox; SELECT one first"]
    assert c.cmd("a4 SELECT INBOX")[-1] == "a4 OK [READ-WRITE] SELECT completed"
    assert c.cmd("a5 FETCH 5 (FLAGS)") == ["a5 BAD invalid message number or set"]
    c.send("a6 APPEND INBOX {99999999999}")
    assert c.line().startswith("a6 NO [TOOBIG]")
    assert c.cmd("a7 NOOP") == ["a7 OK NOOP completed"]
    c.close()


def test_mbsync_syncs_a_folder_tree_both_ways(server, pki, tmp_path):
    send_mail(server, "from the server")
    server.wait_messages("alice", 1)
    local = tmp_path / "mail"
    local.mkdir()
    rc = tmp_path / "mbsyncrc"
    rc.write_text(f"""IMAPAccount tern
Host localhost
Port {server.imaps}
User {ALICE}
Pass {PASSWORD}
SSLType IMAPS
CertificateFile {pki.ca.certfile}
SystemCertificates no

IMAPStore tern-remote
Account tern

MaildirStore tern-local
Path {local}/
Inbox {local}/INBOX
SubFolders Verbatim

Channel tern
Far :tern-remote:
Near :tern-local:
Patterns *
Create Both
Expunge Both
SyncState *
""")
    env = dict(os.environ, HOME=str(tmp_path))
    run = lambda: subprocess.run(["mbsync", "-c", str(rc), "-a"], capture_output=True, text=True, timeout=120,
                                 env=env)
    first = run()
    assert first.returncode == 0, first.stdout + first.stderr
    local_inbox = list((local / "INBOX" / "new").iterdir()) + list((local / "INBOX" / "cur").iterdir())
    assert len(local_inbox) == 1 and b"Subject: from the server" in local_inbox[0].read_bytes()
    assert (local / "Sent").is_dir() and (local / "Archive").is_dir()
    # A message and a folder made locally reach the server.
    (local / "Projects" / "cur").mkdir(parents=True)
    (local / "Projects" / "new").mkdir()
    (local / "Projects" / "tmp").mkdir()
    (local / "Projects" / "cur" / "1700000000.1.local:2,S").write_bytes(b"Subject: local\n\nmade here\n")
    second = run()
    assert second.returncode == 0, second.stdout + second.stderr
    m = login(server, pki)
    assert b'"Projects"' in b" ".join(m.list()[1])
    m.select("Projects")
    assert m.fetch("1", "(FLAGS BODY.PEEK[HEADER.FIELDS (SUBJECT)])")[1][0][1] == b"Subject: local\r\n\r\n"
    m.logout()


def test_mutt_reads_and_moves_mail_in_batch_mode(server, pki, tmp_path):
    """mutt, driven by pushed keys under a pseudo-terminal: it opens INBOX over IMAPS, reads the
    first message (which marks it \\Seen), moves the ones whose subject says so to Archive
    (COPY/MOVE, then EXPUNGE) and quits."""
    send_mail(server, "keep me", "first\n")
    send_mail(server, "move-me one", "second\n")
    send_mail(server, "move-me two", "third\n")
    server.wait_messages("alice", 3)
    rc = tmp_path / "muttrc"
    rc.write_text(f"""set imap_user = "{ALICE}"
set imap_pass = "{PASSWORD}"
set folder = "imaps://127.0.0.1:{server.imaps}/"
set spoolfile = "+INBOX"
set ssl_ca_certificates_file = "{pki.ca.certfile}"
set ssl_verify_host = no
set certificate_file = "{tmp_path}/certificates"
set header_cache = ""
set message_cachedir = ""
set confirmappend = no
set confirmcreate = no
set delete = yes
set quit = yes
set mark_old = no
set move = no
set sort = date-sent
set pager_stop = yes
set wait_key = no
""")
    keys = ("<display-message><exit><tag-pattern>~s move-me<enter><tag-prefix><save-message>=Archive<enter>"
            "<sync-mailbox><quit>")
    command = f"mutt -n -F {rc} -e 'push \"{keys}\"'"
    env = dict(os.environ, HOME=str(tmp_path), TERM="xterm", COLUMNS="120", LINES="40")
    proc = subprocess.run(["script", "-qec", command, "/dev/null"], capture_output=True, timeout=60, env=env,
                          stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stdout[-2000:]
    m = login(server, pki)
    m.select("INBOX")
    typ, data = m.fetch("1:*", "(FLAGS BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
    subjects = [part[1] for part in data if isinstance(part, tuple)]
    assert subjects == [b"Subject: keep me\r\n\r\n"]
    assert b"\\Seen" in data[0][0]
    m.select("Archive")
    typ, data = m.fetch("1:*", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
    assert sorted(part[1] for part in data if isinstance(part, tuple)) == [b"Subject: move-me one\r\n\r\n",
                                                                           b"Subject: move-me two\r\n\r\n"]
    m.logout()


def test_quota_from_the_account_is_reported_and_enforced(tern_factory, pki):
    t = make_server(tern_factory, pki)
    t.cli("user", "quota", ALICE, "20000", "--messages", "100", check=True)
    send_mail(t, "counted", ("x" * 70 + "\n") * 40)
    t.wait_messages("alice", 1)
    size = len(t.messages("alice")[0])
    m = login(t, pki)
    typ, data = m.getquotaroot("INBOX")
    assert typ == "OK"
    assert data == [[b'"INBOX" ""'], [b'"" (STORAGE %d 19 MESSAGE 1 100)' % ((size + 1023) // 1024)]]
    typ, data = m.append("INBOX", None, None, b"Subject: big\r\n\r\n" + b"y" * 30000 + b"\r\n")
    assert (typ, data) == ("NO", [b"[OVERQUOTA] the mailbox is over its quota; delete some mail first"])
    assert m.setquota('""', "(STORAGE 1)")[0] == "NO"
    m.logout()
    lines = (inbox(t) / "maildirsize").read_text().splitlines()
    assert lines[0] == "20000S,100C" and sum(int(l.split()[0]) for l in lines[1:]) == size


def test_condstore_with_imaplib(server, pki):
    send_mail(server, "one")
    send_mail(server, "two")
    server.wait_messages("alice", 2)
    m = login(server, pki)
    assert m.enable("CONDSTORE") == ("OK", [b"ENABLE completed"])
    m.select("INBOX")
    highest = int(m.untagged_responses["HIGHESTMODSEQ"][0])
    assert m.store("2", "+FLAGS", "(\\Flagged)")[1] == [b"2 (FLAGS (\\Flagged) MODSEQ (%d))" % (highest + 1)]
    assert m.fetch("1:*", "(UID) (CHANGEDSINCE %d)" % highest)[1] == [b"2 (UID 2 MODSEQ (%d))" % (highest + 1)]
    typ, data = m._simple_command("STORE", "1:2", "(UNCHANGEDSINCE %d)" % highest, "+FLAGS", "(\\Seen)")
    assert typ == "OK" and data == [b"[MODIFIED 2] Conditional STORE failed"]
    # QRESYNC: expunges become VANISHED with UIDs, and a reselect learns what it missed.
    uidvalidity = int(m.untagged_responses.get("UIDVALIDITY", [b"0"])[0])
    assert m.unselect()[0] == "OK"  # RFC 5161: ENABLE before any SELECT
    assert m.enable("QRESYNC") == ("OK", [b"ENABLE completed"])
    m.select("INBOX")
    m.store("1", "+FLAGS", "(\\Deleted)")
    m.untagged_responses.clear()
    assert m.expunge()[0] == "OK"
    assert m.untagged_responses.get("VANISHED") == [b"1"]
    m.untagged_responses.clear()
    typ, data = m._simple_command("SELECT", "INBOX", "(QRESYNC (%d %d))" % (uidvalidity, highest))
    assert typ == "OK"
    assert m.untagged_responses.get("VANISHED") == [b"(EARLIER) 1"]
    m.logout()


def test_imap_and_pop3_run_as_the_mail_store_user_and_cannot_reach_the_spool(tern_factory, pki, service_uids):
    if service_uids is None:
        pytest.skip("tern switches to the [run_as] users only when started as root")
    import pwd
    from ternlib import proc_status
    t = make_server(tern_factory, pki)
    t.set_config(pop3={"listen": [f"127.0.0.1:{free_port()}"]})
    t.stop()
    t.start()
    t.wait_log(" pop3 info started")
    vmail = pwd.getpwnam("tern-vmail")
    for name in ("imap", "pop3"):
        status = proc_status(t.child_pid(name))
        assert status["Uid"].split() == [str(vmail.pw_uid)] * 4, name
        assert status["Groups"].split() == [str(vmail.pw_gid)], name
    # The user they run as cannot list the spool, the smtp state or the account database.
    for path in (t.data_dir / "spool", t.data_dir / "smtp", t.data_dir / "directory"):
        r = subprocess.run(["runuser", "-u", "tern-vmail", "--", "ls", str(path)], capture_output=True, timeout=30)
        assert r.returncode != 0 and b"Permission denied" in r.stderr, (str(path), r.stderr)


def test_login_timeout_and_connection_limit(tern_factory, pki):
    t = make_server(tern_factory, pki, login_timeout=1, max_connections_per_ip=2)
    first, second = Raw(t.imap), Raw(t.imap)
    third = socket.create_connection(("127.0.0.1", t.imap), timeout=10)
    assert third.makefile("rb").readline() == \
        b"* BYE [UNAVAILABLE] too many connections from your address, try again later\r\n"
    assert first.line() == "* BYE disconnected for inactivity"
    assert first.file.readline() == b""
    second.close()
    t.wait_log(" imap info idle timeout; connection closed ")
    # Other clients are served meanwhile and afterwards.
    m = login(t, pki)
    assert m.noop()[0] == "OK"
    m.logout()
