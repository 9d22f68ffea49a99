"""Self-tests of the test helpers smtp_receiver (the scriptable SMTP peer) and tlslib (the
throwaway PKI), with Python's smtplib and ssl as the independent other side. No tern involved."""
from __future__ import annotations

import hashlib
import smtplib
import socket
import ssl
from pathlib import Path

import pytest

import tlslib
from ternlib import wait_until
from smtp_receiver import Received, SmtpReceiver, format_reply

pytestmark = pytest.mark.backend_independent

MESSAGE = b"Subject: hello\r\nFrom: a@client.test\r\n\r\nline one\r\n.starts with a dot\r\nend\r\n"


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    ca = tlslib.make_ca(tmp_path_factory.mktemp("pki"))
    return ca, ca.issue("mx", ["mx.test", "mx-alt.test"])


def client_context(ca: tlslib.Ca) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=ca.certfile)  # verifies the chain and the host name
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx


def connect(port: int, server_hostname: str = "mx.test") -> smtplib.SMTP:
    """An smtplib client connected to 127.0.0.1 that uses `server_hostname` for SNI and the
    certificate check in starttls() (smtplib takes those from the host it connected to)."""
    client = smtplib.SMTP(timeout=10)
    client.connect("127.0.0.1", port)
    client._host = server_hostname
    return client


class Raw:
    """A raw SMTP client: one sendall per send(), whole replies read back."""

    def __init__(self, port: int):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.buf = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def reply(self) -> str:
        lines = []
        while True:
            while b"\r\n" not in self.buf:
                chunk = self.sock.recv(65536)
                if not chunk:
                    raise ConnectionError(f"closed; unread {self.buf!r}")
                self.buf += chunk
            line, self.buf = self.buf.split(b"\r\n", 1)
            lines.append(line.decode())
            if len(line) < 4 or line[3:4] != b"-":
                return "\n".join(lines)

    def closed(self) -> bool:
        try:
            return self.sock.recv(1) == b""
        except ConnectionResetError:
            return True

    def close(self) -> None:
        self.sock.close()


# ---------------------------------------------------------------------------------------------
# The receiver


def test_format_reply():
    assert format_reply("250 2.0.0 Ok") == b"250 2.0.0 Ok\r\n"
    assert format_reply("250 mx.test\nPIPELINING\n250 SIZE") == b"250-mx.test\r\n250-PIPELINING\r\n250 SIZE\r\n"
    assert format_reply("334 ") == b"334 \r\n"


def test_plain_session():
    with SmtpReceiver(size=100000) as mx:
        with smtplib.SMTP("127.0.0.1", mx.port, local_hostname="client.test", timeout=10) as c:
            code, text = c.ehlo()
            assert code == 250 and text.decode().splitlines()[0] == "mx.test"
            for ext in ("pipelining", "8bitmime", "smtputf8", "dsn", "enhancedstatuscodes"):
                assert c.has_extn(ext), ext
            assert c.esmtp_features["size"] == "100000"
            assert not c.has_extn("starttls") and not c.has_extn("auth")
            refused = c.sendmail("a@client.test", ["b@mx.test", "c@mx.test"], MESSAGE,
                                 mail_options=["BODY=8BITMIME"], rcpt_options=["NOTIFY=SUCCESS,FAILURE"])
            assert refused == {}
            assert c.noop()[0] == 250
            assert c.rset()[0] == 250
            assert c.docmd("FROB")[0] == 500
        [msg] = mx.wait_for(1)
    assert isinstance(msg, Received)
    assert msg.mail_from == "a@client.test"
    assert msg.mail_params == {"SIZE": str(len(MESSAGE)), "BODY": "8BITMIME"}
    assert msg.rcpt_to == ["b@mx.test", "c@mx.test"]
    assert msg.rcpt_params == [{"NOTIFY": "SUCCESS,FAILURE"}] * 2
    assert msg.data == MESSAGE  # smtplib dot-stuffs ".starts", the receiver undoes it
    assert not msg.bare_lf and not msg.bare_cr
    assert msg.message()["Subject"] == "hello"
    assert (msg.tls, msg.tls_version, msg.sni, msg.auth_user, msg.helo) == (False, None, None, None, "client.test")
    assert mx.connections == 1
    assert f"mail FROM:<a@client.test> size={len(MESSAGE)} BODY=8BITMIME" in mx.commands  # as smtplib spells it
    assert mx.commands[-1] == "QUIT"
    assert not mx.errors and not mx.protocol_errors


def test_strict_parameters_and_sequence():
    with SmtpReceiver(eightbitmime=False, dsn=False, size=50) as mx:
        with smtplib.SMTP("127.0.0.1", mx.port, timeout=10) as c:
            assert c.docmd("MAIL FROM:<a@b>")[0] == 503  # no EHLO yet
            c.ehlo("client.test")
            assert not c.has_extn("8bitmime") and not c.has_extn("dsn")
            assert c.docmd("MAIL FROM:<a@b> BODY=8BITMIME")[0] == 555
            assert c.docmd("MAIL FROM:<a@b> RET=HDRS")[0] == 555
            assert c.docmd("MAIL FROM:<a@b> SIZE=51")[0] == 552
            c.command_encoding = "utf-8"
            assert c.docmd("MAIL FROM:<ä@b>")[0] == 553  # no SMTPUTF8 parameter
            assert c.docmd("RCPT TO:<x@y>")[0] == 503
            assert c.docmd("MAIL FROM:<>")[0] == 250
            assert c.docmd("MAIL FROM:<a@b>")[0] == 503
            assert c.docmd("RCPT TO:<x@y> NOTIFY=NEVER")[0] == 555
            assert c.docmd("DATA")[0] == 554  # no valid recipients
            assert c.docmd("RCPT TO:<x@y>")[0] == 250
            assert c.data(b"x" * 60 + b"\r\n")[0] == 552  # over SIZE 50
        assert mx.messages == [] and len(mx.rejected) == 1


def test_starttls_with_ca_certificate(pki):
    ca, cert = pki
    with SmtpReceiver(starttls=(cert.chainfile, cert.keyfile), require_tls=True) as mx:
        with connect(mx.port) as c:
            c.ehlo("client.test")
            assert c.has_extn("starttls")
            assert c.docmd("MAIL FROM:<a@client.test>") == (530, b"5.7.0 Must issue a STARTTLS command first")
            c.starttls(context=client_context(ca))
            c.ehlo("client.test")
            assert not c.has_extn("starttls")
            c.sendmail("a@client.test", ["b@mx.test"], MESSAGE)
        [msg] = mx.wait_for(1)
        assert msg.tls and msg.tls_version in ("TLSv1.2", "TLSv1.3")
        assert msg.sni == "mx.test"
        assert msg.helo == "client.test"

        # The certificate does not cover this name: the client's check fails.
        with connect(mx.port, server_hostname="other.test") as c:
            c.ehlo("client.test")
            with pytest.raises(ssl.SSLCertVerificationError):
                c.starttls(context=client_context(ca))
        mx.wait_connections(2)
        assert len(mx.messages) == 1
        wait_until(lambda: mx.tls_errors, message="the server noticing the aborted handshake")
        assert not mx.errors


def test_mail_after_starttls_needs_ehlo_again(pki):
    ca, cert = pki
    with SmtpReceiver(starttls=(cert.chainfile, cert.keyfile)) as mx:
        with connect(mx.port) as c:
            c.ehlo("client.test")
            c.starttls(context=client_context(ca))
            assert c.docmd("MAIL FROM:<a@b>")[0] == 503
            assert c.docmd("STARTTLS")[0] == 554


@pytest.mark.parametrize("mechanism, initial_response", [
    ("PLAIN", True), ("PLAIN", False), ("LOGIN", True), ("LOGIN", False)])
def test_auth(mechanism, initial_response):
    with SmtpReceiver(auth={"relay-user": "s3cret pw"}) as mx:
        with smtplib.SMTP("127.0.0.1", mx.port, timeout=10) as c:
            c.ehlo("client.test")
            assert c.esmtp_features["auth"].split() == ["PLAIN", "LOGIN"]
            assert c.docmd("MAIL FROM:<a@b>") == (530, b"5.7.0 Authentication required")
            c.user, c.password = "relay-user", "wrong"
            with pytest.raises(smtplib.SMTPAuthenticationError) as e:
                c.auth(mechanism, getattr(c, "auth_" + mechanism.lower()), initial_response_ok=initial_response)
            assert e.value.smtp_code == 535 and e.value.smtp_error.startswith(b"5.7.8")
            c.password = "s3cret pw"
            code, _ = c.auth(mechanism, getattr(c, "auth_" + mechanism.lower()), initial_response_ok=initial_response)
            assert code == 235
            c.sendmail("a@client.test", ["b@mx.test"], MESSAGE)
        [msg] = mx.wait_for(1)
        assert msg.auth_user == "relay-user"
        expected = f"AUTH {mechanism}" if not initial_response else f"AUTH {mechanism} "
        assert any(cmd.startswith(expected) for cmd in mx.commands)


def test_auth_only_after_starttls(pki):
    ca, cert = pki
    with SmtpReceiver(starttls=(cert.chainfile, cert.keyfile), auth={"u": "p"}) as mx:
        with connect(mx.port) as c:
            c.ehlo("client.test")
            assert not c.has_extn("auth")
            assert c.docmd("AUTH PLAIN AHUAcA==")[0] == 538
            c.starttls(context=client_context(ca))
            c.ehlo("client.test")
            assert c.has_extn("auth")
            c.login("u", "p")
            c.sendmail("a@client.test", ["b@mx.test"], MESSAGE)
        [msg] = mx.wait_for(1)
        assert msg.tls and msg.auth_user == "u"


def test_scripted_replies():
    with SmtpReceiver() as mx:
        mx.rules = [("RCPT TO:<bad@", "550 5.1.1 no such user", None),
                    ("MAIL FROM", "451 4.3.0 try later", 1)]
        with smtplib.SMTP("127.0.0.1", mx.port, timeout=10) as c:
            with pytest.raises(smtplib.SMTPSenderRefused) as e:
                c.sendmail("a@client.test", ["good@mx.test"], MESSAGE)
            assert e.value.smtp_code == 451
            assert len(mx.rules) == 1  # the MAIL rule is used up
            c.rset()
            refused = c.sendmail("a@client.test", ["good@mx.test", "BAD@mx.test"], MESSAGE)
            assert refused == {"BAD@mx.test": (550, b"5.1.1 no such user")}
            # DATA-END: the message is refused after the dot, and recorded as rejected.
            mx.rules.append(("DATA-END", "554 5.7.1 spam", 1))
            with pytest.raises(smtplib.SMTPDataError) as e:
                c.sendmail("a@client.test", ["good@mx.test"], MESSAGE)
            assert e.value.smtp_code == 554
            # A positive scripted reply only changes the text.
            mx.rules.append(("DATA-END", "250 2.0.0 fine, thanks", 1))
            c.mail("a@client.test")
            c.rcpt("good@mx.test")
            assert c.data(MESSAGE) == (250, b"2.0.0 fine, thanks")
        msgs = mx.wait_for(2)
    assert [m.rcpt_to for m in msgs] == [["good@mx.test"]] * 2
    assert len(mx.rejected) == 1 and mx.rejected[0].data == MESSAGE
    assert mx.rules == [("RCPT TO:<bad@", "550 5.1.1 no such user", None)]


def test_scripted_hangup_after_data_end():
    with SmtpReceiver() as mx:
        mx.rules.append(("DATA-END", "", 1))
        with smtplib.SMTP("127.0.0.1", mx.port, timeout=10) as c:
            with pytest.raises(smtplib.SMTPServerDisconnected):
                c.sendmail("a@client.test", ["b@mx.test"], MESSAGE)
        assert mx.messages == [] and len(mx.rejected) == 1


def test_pipelined_group_in_one_write():
    with SmtpReceiver() as mx:
        c = Raw(mx.port)
        try:
            assert c.reply() == "220 mx.test ESMTP test"
            c.send(b"EHLO client.test\r\n")
            assert "PIPELINING" in c.reply()
            c.send(b"MAIL FROM:<a@client.test> BODY=8BITMIME RET=HDRS ENVID=q+2B1\r\n"
                   b"RCPT TO:<b@mx.test> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;b@mx.test\r\n"
                   b"RCPT TO:<c@mx.test>\r\n"
                   b"DATA\r\n")
            assert [c.reply() for _ in range(4)] == [
                "250 2.1.0 Ok", "250 2.1.5 Ok", "250 2.1.5 Ok", "354 End data with <CR><LF>.<CR><LF>"]
            c.send(b"Subject: pipelined\r\n\r\n..dot\r\nbare\nlf\r\n.\r\nQUIT\r\n")
            assert c.reply().startswith("250 2.0.0 Ok: queued as ")
            assert c.reply() == "221 2.0.0 Bye"
            assert c.closed()
        finally:
            c.close()
        [msg] = mx.wait_for(1)
    assert msg.mail_params == {"BODY": "8BITMIME", "RET": "HDRS", "ENVID": "q+2B1"}
    assert msg.rcpt_to == ["b@mx.test", "c@mx.test"]
    assert msg.rcpt_params == [{"NOTIFY": "SUCCESS,FAILURE", "ORCPT": "rfc822;b@mx.test"}, {}]
    assert msg.data == b"Subject: pipelined\r\n\r\n.dot\r\nbare\nlf\r\n"
    assert msg.bare_lf and not msg.bare_cr
    assert mx.commands == ["EHLO client.test",
                           "MAIL FROM:<a@client.test> BODY=8BITMIME RET=HDRS ENVID=q+2B1",
                           "RCPT TO:<b@mx.test> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;b@mx.test",
                           "RCPT TO:<c@mx.test>", "DATA", "QUIT"]
    assert not mx.protocol_errors  # the group ended with DATA as it must


def test_protocol_errors_are_noted():
    with SmtpReceiver(pipelining=False) as mx:
        c = Raw(mx.port)
        try:
            c.reply()
            c.send(b"EHLO client.test\r\n")
            assert "PIPELINING" not in c.reply()
            c.send(b"MAIL FROM:<a@client.test>\r\nRCPT TO:<b@mx.test>\r\n")
            assert [c.reply() for _ in range(2)] == ["250 2.1.0 Ok", "250 2.1.5 Ok"]
        finally:
            c.close()
        mx.wait_connections(1)
    assert len(mx.protocol_errors) == 1 and "MAIL FROM" in mx.protocol_errors[0]


def test_scripted_greeting():
    with SmtpReceiver() as mx:
        mx.rules.append(("CONNECT", "421 4.3.2 busy", 1))
        with pytest.raises(smtplib.SMTPConnectError) as e:
            smtplib.SMTP("127.0.0.1", mx.port, timeout=10)
        assert (e.value.smtp_code, e.value.smtp_error) == (421, b"4.3.2 busy")
        with smtplib.SMTP("127.0.0.1", mx.port, timeout=10) as c:  # the rule is used up
            assert c.noop()[0] == 250
        mx.rules.append(("CONNECT", "554 5.3.2 go away", None))
        c = Raw(mx.port)
        try:
            assert c.reply() == "554 5.3.2 go away"
            c.send(b"EHLO client.test\r\n")
            assert c.reply().startswith("503 ")
            c.send(b"QUIT\r\n")
            assert c.reply().startswith("221 ")
        finally:
            c.close()
        assert mx.connections == 3


def test_client_vanishing_mid_session_does_not_hurt():
    with SmtpReceiver() as mx:
        for partial in (b"", b"EHLO client.test\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\nSubject: cut",
                        b"EHLO client.test\r\nMAIL FROM:<a@b"):
            c = Raw(mx.port)
            c.send(partial)
            c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            c.close()  # with linger 0: a reset
        with smtplib.SMTP("127.0.0.1", mx.port, timeout=10) as s:
            s.sendmail("a@client.test", ["b@mx.test"], MESSAGE)
        mx.wait_for(1)
        assert mx.connections == 4 and not mx.errors


def test_stop_ends_open_sessions(pki):
    ca, cert = pki
    mx = SmtpReceiver(starttls=(cert.chainfile, cert.keyfile)).start()
    plain = Raw(mx.port)
    try:
        with connect(mx.port) as tls:
            tls.ehlo("client.test")
            tls.starttls(context=client_context(ca))  # the server may still be in the handshake
            mx.wait_connections(2)
            mx.stop()
            assert plain.reply().startswith("220")
            assert plain.closed()
            with pytest.raises((smtplib.SMTPServerDisconnected, OSError)):
                tls.noop()
    finally:
        plain.close()
        mx.stop()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", mx.port), timeout=2)


# ---------------------------------------------------------------------------------------------
# tlslib, checked against a small DER reader and the ssl module


def der_element(data: bytes, pos: int = 0) -> tuple[int, int, int]:
    """(tag, start of the contents, end of the element) of the DER element at `pos`."""
    tag, length = data[pos], data[pos + 1]
    pos += 2
    if length & 0x80:
        n = length & 0x7F
        length = int.from_bytes(data[pos:pos + n], "big")
        pos += n
    return tag, pos, pos + length


def der_children(data: bytes, start: int, end: int) -> list[tuple[int, int, int]]:
    """[(tag, element start, element end)] of the elements between start and end."""
    out = []
    while start < end:
        tag, _, elem_end = der_element(data, start)
        out.append((tag, start, elem_end))
        start = elem_end
    return out


def tbs_fields(cert_der: bytes) -> dict[str, bytes]:
    """issuer, subject and spki (whole DER elements) of an X.509 certificate."""
    _, cert_start, cert_end = der_element(cert_der)
    _, tbs_start, tbs_end = der_element(cert_der, cert_start)
    fields = der_children(cert_der, tbs_start, tbs_end)
    if fields[0][0] == 0xA0:  # [0] version
        fields = fields[1:]
    # serialNumber, signature, issuer, validity, subject, subjectPublicKeyInfo, ...
    names = ("serial", "signature", "issuer", "validity", "subject", "spki")
    return {name: cert_der[s:e] for name, (_, s, e) in zip(names, fields)}


def pem_der(path: str) -> bytes:
    return ssl.PEM_cert_to_DER_cert(Path(path).read_text())


def test_tlsa_helpers(pki, tmp_path):
    ca, cert = pki
    leaf_der = pem_der(cert.certfile)
    ca_der = pem_der(ca.certfile)
    assert cert.tlsa_3_0_1() == hashlib.sha256(leaf_der).hexdigest()
    assert cert.tlsa_3_1_1() == hashlib.sha256(tbs_fields(leaf_der)["spki"]).hexdigest()
    assert ca.tlsa_2_0_1() == hashlib.sha256(ca_der).hexdigest()
    assert ca.tlsa_2_1_1() == hashlib.sha256(tbs_fields(ca_der)["spki"]).hexdigest()
    assert cert.tlsa_data(0, 0) == leaf_der.hex()
    assert cert.tlsa_data(1, 2) == hashlib.sha512(tbs_fields(leaf_der)["spki"]).hexdigest()
    assert cert.tlsa_3_0_1() != cert.tlsa_3_1_1() != ca.tlsa_2_0_1()

    # The leaf is issued by the CA; the chain file is leaf + CA.
    assert tbs_fields(leaf_der)["issuer"] == tbs_fields(ca_der)["subject"]
    chain = Path(cert.chainfile).read_text()
    assert chain.count("BEGIN CERTIFICATE") == 2
    assert chain.startswith(Path(cert.certfile).read_text()) and chain.endswith(Path(ca.certfile).read_text())

    other = tlslib.self_signed(tmp_path, "lonely", ["lonely.test"])
    other_der = pem_der(other.certfile)
    assert tbs_fields(other_der)["issuer"] == tbs_fields(other_der)["subject"] != tbs_fields(ca_der)["subject"]
    assert other.tlsa_3_0_1() == hashlib.sha256(other_der).hexdigest()
    assert Path(other.chainfile).read_text().count("BEGIN CERTIFICATE") == 1

    assert tlslib.tlsa_record("mx.tern-test", 3, 1, 1, cert.tlsa_3_1_1()) == \
        f"_25._tcp.mx.tern-test. 3600 IN TLSA 3 1 1 {cert.tlsa_3_1_1()}"
    assert tlslib.tlsa_record("_465._tcp.smtp.tern-test.", 2, 0, 1, "AB") == \
        "_465._tcp.smtp.tern-test. 3600 IN TLSA 2 0 1 ab"


def test_self_signed_certificate_serves_tls(tmp_path):
    """A self-signed leaf works for the receiver; a client trusting only it verifies it."""
    cert = tlslib.self_signed(tmp_path, "self", ["self.test"])
    with SmtpReceiver(starttls=(cert.chainfile, cert.keyfile)) as mx:
        ctx = ssl.create_default_context(cafile=cert.certfile)
        with connect(mx.port, server_hostname="self.test") as c:
            c.ehlo("client.test")
            c.starttls(context=ctx)
            c.ehlo("client.test")
            c.sendmail("a@client.test", ["b@self.test"], MESSAGE)
        [msg] = mx.wait_for(1)
        assert msg.sni == "self.test"
