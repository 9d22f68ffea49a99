"""The SMTP front door's TLS and AUTH: STARTTLS (RFC 3207) on port 25 and on submission (RFC 6409,
port 587 style), implicit TLS (RFC 8314, port 465 style), AUTH PLAIN and LOGIN (RFC 4954), SNI,
the sender rule and a certificate reload on SIGHUP. Clients written by others: smtplib, swaks and
`openssl s_client`; the exact replies are asserted.

Every server here gets three free ports: `port` (port-25 style), `sub` (submission) and `smtps`.
The certificates come from a throwaway CA (tlslib) in a directory the smtp user can read; its
keys are handed to that user when the tests run as root (tern reads them after dropping rights).
"""
from __future__ import annotations

import os
import re
import shutil
import smtplib
import socket
import ssl
import subprocess
import tempfile
from pathlib import Path

import pytest

import tlslib
from ternlib import HOSTNAME, IS_ROOT, SmtpClient, free_port, wait_until

pytestmark = pytest.mark.backend_independent

PASSWORD = "pw"  # ternlib.PASSWORD_HASH is the hash of "pw"
ALICE = "alice@example.test"
SNI_NAME = "mx.other.test"


class Pki:
    def __init__(self, smtp_uid: int | None):
        self.dir = Path(tempfile.mkdtemp(prefix="tern-tls-"))
        os.chmod(self.dir, 0o755)
        self.ca = tlslib.make_ca(self.dir / "ca")
        os.chmod(self.dir / "ca", 0o755)
        self.smtp_uid = smtp_uid
        self.main = self.issue("main", [HOSTNAME, "localhost"])
        self.other = self.issue("other", [SNI_NAME, "*.wild.test"])

    def issue(self, name: str, names: list[str]) -> tlslib.Cert:
        cert = self.ca.issue(name, names)
        if self.smtp_uid is not None:
            os.chown(cert.keyfile, self.smtp_uid, -1)
        return cert

    def context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=self.ca.certfile)
        ctx.check_hostname = False  # the tests connect to 127.0.0.1
        return ctx


@pytest.fixture(scope="module")
def pki(service_uids):
    p = Pki(service_uids["smtp"] if service_uids else None)
    yield p
    shutil.rmtree(p.dir, ignore_errors=True)


def tls_section(pki: Pki, sni: bool = True, main: tlslib.Cert | None = None) -> dict:
    main = main or pki.main
    out = {"certificate": main.chainfile, "key": main.keyfile}
    if sni:
        out["sni"] = [{"names": [SNI_NAME, "*.wild.test"], "certificate": pki.other.chainfile,
                       "key": pki.other.keyfile}]
    return out


@pytest.fixture
def server(tern_factory, pki):
    sub, smtps = free_port(), free_port()
    t = tern_factory(smtp={"submission_listen": [f"127.0.0.1:{sub}"], "smtps_listen": [f"127.0.0.1:{smtps}"]},
                     tls=tls_section(pki))
    t.sub, t.smtps = sub, smtps
    return t


EHLO_BASE = [f"250-{HOSTNAME} Hello [127.0.0.1]", "250-PIPELINING", "250-SIZE 100000", "250-8BITMIME",
             "250-ENHANCEDSTATUSCODES", "250-SMTPUTF8"]
EHLO_BEFORE_TLS = "\n".join(EHLO_BASE + ["250-DSN", "250 STARTTLS"])
EHLO_IN_TLS = "\n".join(EHLO_BASE + ["250-DSN", "250 AUTH PLAIN LOGIN"])
AUTH_NEEDS_TLS = "538 5.7.11 Encryption required for requested authentication mechanism"
AUTH_REQUIRED = "530 5.7.0 Authentication required"
# base64("\0alice@example.test\0pw")
PLAIN_ALICE = "AGFsaWNlQGV4YW1wbGUudGVzdABwdw=="


def received_line(message: bytes) -> str:
    """The first Received header, unfolded."""
    head = message.split(b"\n\n", 1)[0].decode()
    m = re.search(r"^Received:.*(?:\n[ \t].*)*", head, re.M)
    assert m, head
    return re.sub(r"\n[ \t]+", " ", m.group(0))


def subject_of(output: bytes) -> str:
    """The subject of the server certificate `openssl s_client` printed."""
    pem = re.search(rb"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----", output, re.S)
    assert pem, output.decode(errors="replace")
    out = tlslib.openssl("x509", "-noout", "-subject", "-nameopt", "RFC2253", input=pem.group(0)).decode().strip()
    return out.removeprefix("subject=")


def s_client(*args: str, input: bytes = b"QUIT\r\n") -> subprocess.CompletedProcess:
    return subprocess.run([tlslib.OPENSSL, "s_client", *args], input=input, capture_output=True, timeout=30)


# ---- submission: STARTTLS, AUTH, relay --------------------------------------------------------

def test_submission_before_tls_offers_starttls_refuses_auth_and_mail(server):
    with SmtpClient(server.sub) as c:
        assert c.greeting == f"220 {HOSTNAME} ESMTP tern"
        assert c.ehlo() == EHLO_BEFORE_TLS
        assert c.cmd(f"AUTH PLAIN {PLAIN_ALICE}") == AUTH_NEEDS_TLS
        assert c.cmd("AUTH LOGIN") == AUTH_NEEDS_TLS
        assert c.cmd(f"MAIL FROM:<{ALICE}>") == AUTH_REQUIRED
        assert c.cmd("QUIT") == f"221 2.0.0 {HOSTNAME} closing connection"


def test_smtplib_starttls_login_relays_to_an_outside_domain(server, pki):
    with smtplib.SMTP("127.0.0.1", server.sub, timeout=10) as s:
        s.ehlo("client.test")
        assert s.has_extn("starttls") and not s.has_extn("auth")
        assert s.starttls(context=pki.context()) == (220, b"2.0.0 Ready to start TLS")
        s.ehlo("client.test")
        assert s.has_extn("auth") and not s.has_extn("starttls")
        assert s.esmtp_features["auth"] == " PLAIN LOGIN"
        # Unauthenticated MAIL inside TLS: still refused.
        assert s.mail(ALICE) == (530, b"5.7.0 Authentication required")
        s.rset()
        assert s.login(ALICE, PASSWORD) == (235, b"2.7.0 Authentication successful")
        refused = s.sendmail(ALICE, ["friend@elsewhere.example", "dave@example.test"],
                             b"Subject: relayed\r\n\r\nover submission\r\n")
        assert refused == {}
    # Queued for the outside domain (the test DNS knows no elsewhere.example: it stays queued).
    server.wait_log(r" smtp info message accepted .* to=friend@elsewhere\.example,dave@example\.test .*"
                    r"tls=TLSv1\.3 cipher=TLS_\S+ auth=alice@example\.test ")
    server.wait_log(r" smtp info connection closed client=\[127\.0\.0\.1\] name=\"\" listener=submission helo=client\.test "
                    r"tls=TLSv1\.3 cipher=TLS_\S+ auth=alice@example\.test messages=1$")
    [message] = server.wait_messages("dave")
    received = received_line(message)
    assert " with ESMTPSA id " in received, received
    assert "alice" not in received, received  # the AUTH user is in the log, not in the header
    assert any(e.startswith("env/") for e in server.spool_entries()), server.spool_entries()


def test_wrong_password_is_535_and_the_third_failure_closes(server, pki):
    with smtplib.SMTP("127.0.0.1", server.sub, timeout=20) as s:
        s.starttls(context=pki.context())
        s.ehlo("client.test")
        with pytest.raises(smtplib.SMTPAuthenticationError) as e:
            s.login(ALICE, "wrong")
        # smtplib tries PLAIN then LOGIN: two failures already.
        assert (e.value.smtp_code, e.value.smtp_error) == (535, b"5.7.8 Authentication credentials invalid")
        code, text = s.docmd("AUTH", "PLAIN AGFsaWNlQGV4YW1wbGUudGVzdAB4")  # \0alice@example.test\0x
        assert (code, text) == (421, f"4.7.0 {HOSTNAME} Too many authentication failures, closing connection".encode())
    server.wait_log(r" smtp info AUTH failed client=\[127\.0\.0\.1\] user=alice@example\.test ", count=3)
    # The directory's reason stays in the log: the client only ever saw the 535 above.
    assert server.log_count(r"smtp info AUTH failed .*reason=\"wrong password\"") == 3


def test_auth_exchange_replies_cancel_and_bad_base64(server, pki):
    ctx = pki.context()
    with socket.create_connection(("127.0.0.1", server.smtps), timeout=10) as raw:
        with ctx.wrap_socket(raw) as tls:
            f = tls.makefile("rwb")

            def cmd(line: str) -> str:
                f.write(line.encode() + b"\r\n")
                f.flush()
                out = []
                while True:
                    got = f.readline().decode().rstrip("\r\n")
                    out.append(got)
                    if len(got) < 4 or got[3] != "-":
                        return "\n".join(out)

            assert f.readline() == f"220 {HOSTNAME} ESMTP tern\r\n".encode()
            assert cmd("EHLO client.test") == EHLO_IN_TLS
            assert cmd("MAIL FROM:<alice@example.test>") == AUTH_REQUIRED
            assert cmd("AUTH LOGIN") == "334 VXNlcm5hbWU6"
            assert cmd("*") == "501 5.0.0 Authentication cancelled"
            assert cmd("AUTH PLAIN") == "334 "
            assert cmd("%%%") == "501 5.5.2 Invalid base64 data"
            assert cmd("AUTH CRAM-MD5") == "504 5.5.4 Unrecognized authentication type"
            assert cmd("AUTH LOGIN YWxpY2VAZXhhbXBsZS50ZXN0") == "334 UGFzc3dvcmQ6"
            assert cmd("cHc=") == "235 2.7.0 Authentication successful"
            assert cmd(f"AUTH PLAIN {PLAIN_ALICE}") == "503 5.5.1 Already authenticated"
            assert cmd("STARTTLS") == "503 5.5.1 TLS already active"
            assert cmd("QUIT") == f"221 2.0.0 {HOSTNAME} closing connection"


def test_smtps_implicit_tls_with_smtplib(server, pki):
    with smtplib.SMTP_SSL("127.0.0.1", server.smtps, timeout=10, context=pki.context()) as s:
        code, _ = s.ehlo("client.test")
        assert code == 250 and s.esmtp_features["auth"] == " PLAIN LOGIN" and not s.has_extn("starttls")
        assert s.login(ALICE, PASSWORD) == (235, b"2.7.0 Authentication successful")
        assert s.sendmail(ALICE, [ALICE], b"Subject: over 465\r\n\r\nimplicit TLS\r\n") == {}
    [message] = server.wait_messages("alice")
    assert " with ESMTPSA id " in received_line(message)
    server.wait_log(r" smtp info connection closed .*listener=smtps .*tls=TLSv1\.3 .*auth=alice@example\.test "
                    r"messages=1$")


def test_sender_must_be_owned_by_the_authenticated_user(server, pki):
    assert server.cli("alias", "add", "sales@example.test", ALICE).returncode == 0
    with smtplib.SMTP_SSL("127.0.0.1", server.smtps, timeout=10, context=pki.context()) as s:
        s.login(ALICE, PASSWORD)
        assert s.mail("dave@example.test") == (
            553, b"5.7.1 Sender address <dave@example.test> is not owned by authenticated user alice@example.test "
                 b"(smtp.sender_login_match)")
        assert s.mail("someone@elsewhere.example")[0] == 553
        # Her address in any case, with an extension, or an alias of hers: allowed.
        for own in ("Alice@Example.TEST", "alice+lists@example.test", "sales@example.test"):
            assert s.mail(own) == (250, f"2.1.0 Sender <{own}> OK".encode()), own
            s.rset()
        assert s.mail("") == (250, b"2.1.0 Sender <> OK")
    server.wait_log(r" smtp info MAIL refused: sender not owned by the authenticated user .*from=dave@example\.test")


def test_sender_rule_can_be_turned_off(tern_factory, pki):
    sub = free_port()
    t = tern_factory(smtp={"submission_listen": [f"127.0.0.1:{sub}"], "sender_login_match": False},
                     tls=tls_section(pki, sni=False))
    with smtplib.SMTP("127.0.0.1", sub, timeout=10) as s:
        s.starttls(context=pki.context())
        s.login(ALICE, PASSWORD)
        assert s.mail("dave@example.test") == (250, b"2.1.0 Sender <dave@example.test> OK")


# ---- port 25: STARTTLS and the injection rule --------------------------------------------------

def test_port25_starttls_then_unauthenticated_local_delivery(server, pki):
    with smtplib.SMTP("127.0.0.1", server.port, timeout=10) as s:
        s.ehlo("client.test")
        s.starttls(context=pki.context())
        s.ehlo("client.test")
        # No AUTH, no relay, but local mail is accepted as always.
        assert s.mail("bob@example.org") == (250, b"2.1.0 Sender <bob@example.org> OK")
        assert s.rcpt("x@elsewhere.example") == (554, b"5.7.1 <x@elsewhere.example>: Relay access denied")
        assert s.rcpt(ALICE)[0] == 250
        assert s.data(b"Subject: tls\r\n\r\nhello\r\n")[0] == 250
    [message] = server.wait_messages("alice")
    assert " with ESMTPS id " in received_line(message)


def test_commands_pipelined_after_starttls_are_never_executed(server):
    with SmtpClient(server.port) as c:
        assert c.ehlo() == EHLO_BEFORE_TLS
        c.send(b"STARTTLS\r\nNOOP\r\n")  # one packet: the NOOP was "sent in plaintext before TLS"
        assert c.read_reply() == "554 5.5.0 Commands pipelined after STARTTLS are not allowed; closing connection"
        assert c.closed()
        assert c.buf == b""  # no 220, no 250 for the NOOP
    server.wait_log(r" smtp warn commands pipelined after STARTTLS; discarded, connection closed "
                    r"client=\[127\.0\.0\.1\] bytes=6$")


def test_starttls_then_clean_handshake_does_not_answer_later_plaintext(server, pki):
    """The well-behaved order still works on the same listener after the refusal above."""
    with SmtpClient(server.port) as c:
        c.ehlo()
        assert c.cmd("STARTTLS") == "220 2.0.0 Ready to start TLS"
        tls = pki.context().wrap_socket(c.sock)
        tls.sendall(b"NOOP\r\n")
        assert tls.recv(4096) == b"250 2.0.0 Ok\r\n"
        tls.sendall(b"MAIL FROM:<a@b.example>\r\n")  # EHLO needed again after STARTTLS
        assert tls.recv(4096) == b"503 5.5.1 Send HELO or EHLO first\r\n"
        tls.close()


# ---- other clients: swaks and openssl s_client ------------------------------------------------

def test_swaks_tls_and_auth(server, pki):
    common = ["swaks", "--server", "127.0.0.1", "--from", ALICE, "--to", "dave@example.test",
              "--auth", "LOGIN", "--auth-user", ALICE, "--auth-password", PASSWORD, "--timeout", "20"]
    r = subprocess.run(common + ["--port", str(server.sub), "--tls"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "<-  220 2.0.0 Ready to start TLS" in r.stdout
    assert "<~  235 2.7.0 Authentication successful" in r.stdout
    r = subprocess.run(common + ["--port", str(server.smtps), "--tlsc"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "<~  235 2.7.0 Authentication successful" in r.stdout
    server.wait_messages("dave", 2)
    # Without TLS no AUTH is offered, so swaks gives up before MAIL.
    r = subprocess.run(common + ["--port", str(server.sub)], capture_output=True, text=True, timeout=60)
    assert r.returncode != 0
    assert "<-  250 STARTTLS" in r.stdout and "AUTH" not in r.stdout, r.stdout
    assert "*** Host did not advertise authentication" in r.stderr
    assert "MAIL FROM" not in r.stdout


def test_openssl_s_client_sni_picks_the_certificate(server):
    for args, subject in [
        (["-connect", f"127.0.0.1:{server.smtps}"], f"CN={HOSTNAME}"),
        (["-connect", f"127.0.0.1:{server.smtps}", "-servername", SNI_NAME], f"CN={SNI_NAME}"),
        (["-connect", f"127.0.0.1:{server.smtps}", "-servername", "a.wild.test"], f"CN={SNI_NAME}"),
        (["-connect", f"127.0.0.1:{server.smtps}", "-servername", "unknown.test"], f"CN={HOSTNAME}"),
        (["-connect", f"127.0.0.1:{server.sub}", "-starttls", "smtp", "-servername", SNI_NAME], f"CN={SNI_NAME}"),
        (["-connect", f"127.0.0.1:{server.port}", "-starttls", "smtp"], f"CN={HOSTNAME}"),
    ]:
        r = s_client(*args)
        assert r.returncode == 0, r.stderr.decode(errors="replace")
        assert subject_of(r.stdout) == subject, args


def test_tls_below_1_2_is_refused(server):
    r = s_client("-connect", f"127.0.0.1:{server.smtps}", "-tls1_1", "-cipher", "DEFAULT@SECLEVEL=0")
    assert r.returncode != 0
    assert b"BEGIN CERTIFICATE" not in r.stdout
    # The server saw the TLS 1.1 hello and refused it (not the client refusing to send it).
    server.wait_log(r" smtp info TLS handshake failed client=\[127\.0\.0\.1\] listener=smtps "
                    r"error=\"unsupported protocol")
    r = s_client("-connect", f"127.0.0.1:{server.smtps}", "-tls1_2")
    assert r.returncode == 0 and b"Protocol  : TLSv1.2" in r.stdout, r.stdout.decode(errors="replace")


# ---- reload ------------------------------------------------------------------------------------

def test_sighup_serves_a_new_certificate_while_open_sessions_go_on(server, pki):
    with smtplib.SMTP_SSL("127.0.0.1", server.smtps, timeout=10, context=pki.context()) as s:
        s.ehlo("client.test")
        s.login(ALICE, PASSWORD)
        assert subject_of(s_client("-connect", f"127.0.0.1:{server.smtps}").stdout) == f"CN={HOSTNAME}"
        renewed = pki.issue("renewed", ["renewed.example.test"])
        server.reload(tls=tls_section(pki, main=renewed))
        server.wait_log(r" smtp info TLS certificates loaded certificate=\S+renewed\.chain\.pem ")
        assert subject_of(s_client("-connect", f"127.0.0.1:{server.smtps}").stdout) == "CN=renewed.example.test"
        # The session opened before the reload still works, inside its TLS session.
        assert s.noop() == (250, b"2.0.0 Ok")
        assert s.sendmail(ALICE, [ALICE], b"Subject: after reload\r\n\r\nstill here\r\n") == {}
    server.wait_messages("alice")


def test_smtps_and_submission_need_a_certificate(tern_factory):
    t = tern_factory(start=False, smtp={"smtps_listen": [f"127.0.0.1:{free_port()}"]})
    r = subprocess.run([t.binary, "check-config", str(t.config_path)], capture_output=True, text=True, timeout=60)
    assert r.returncode != 0
    assert ("smtp.smtps_listen: port 465 is implicit TLS and needs a certificate: add certificate and key "
            "under [tls]") in r.stdout + r.stderr
