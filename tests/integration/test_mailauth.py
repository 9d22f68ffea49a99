"""Mail authentication on arrival: SPF, DKIM, ARC and DMARC checked by the smtp service on port
25, reported in Authentication-Results (RFC 8601), DMARC dispositions applied; forged
Authentication-Results removed. Messages are signed by dkimpy (python3-dkim), keys are served by
the test DNS server (scripts/test-dns.sh)."""
from __future__ import annotations

import base64
import re
import subprocess

import dkim
import pytest

import dnslib
from test_relay import dns, start_dns, world_readable_dir  # noqa: F401 (fixtures)
from ternlib import HOSTNAME, SmtpClient


@pytest.fixture(scope="module")
def rsa_key(tmp_path_factory) -> tuple[bytes, str]:
    """A 1024-bit RSA key (its base64 public key fits one TXT string): PEM and the p= value."""
    path = tmp_path_factory.mktemp("dkim") / "key.pem"
    subprocess.run(["openssl", "genrsa", "-out", str(path), "1024"], check=True, capture_output=True)
    der = subprocess.run(["openssl", "rsa", "-in", str(path), "-pubout", "-outform", "DER"], check=True,
                         capture_output=True).stdout
    return path.read_bytes(), base64.b64encode(der).decode()


def records(public_key: str, extra: str = "") -> str:
    return f"""
auth                       TXT "v=spf1 ip4:127.0.0.0/8 -all"
sel._domainkey.auth        TXT "v=DKIM1; k=rsa; p={public_key}"
elsewhere                  TXT "v=spf1 ip4:192.0.2.1 -all"
sel._domainkey.elsewhere   TXT "v=DKIM1; k=rsa; p={public_key}"
{extra}
"""


def serve(dns_server: dnslib.DnsServer, text: str) -> dict:
    start_dns(dns_server, text)
    return {"forwarders": [dns_server.forwarder], "trust_anchor": str(dns_server.anchor)}


def message(sender: str = "a@auth.tern-test", extra_headers: str = "", body: str = "Hello.\r\n") -> bytes:
    return (f"From: {sender}\r\nTo: alice@example.test\r\nSubject: checked\r\n"
            f"Message-ID: <1@auth.tern-test>\r\n{extra_headers}\r\n{body}").encode()


def sign(msg: bytes, key: bytes, domain: str = "auth.tern-test") -> bytes:
    return dkim.sign(msg, b"sel", domain.encode(), key, include_headers=[b"from", b"to", b"subject"]) + msg


def send(tern, data: bytes, sender: str = "a@auth.tern-test", rcpt: str = "alice@example.test") -> str:
    with SmtpClient(tern.port) as c:
        assert c.cmd("EHLO client.tern-test").startswith("250")
        assert c.cmd(f"MAIL FROM:<{sender}>").startswith("250")
        assert c.cmd(f"RCPT TO:<{rcpt}>").startswith("250")
        assert c.cmd("DATA").startswith("354")
        c.send(data.decode().replace("\r\n.", "\r\n..") + ".\r\n")
        return c.read_reply()


def fields(delivered: bytes, name: str) -> list[str]:
    """The header fields called `name` of a delivered message, folds kept (LF line ends)."""
    head = delivered.split(b"\n\n", 1)[0].decode()
    return [f for f in re.split(r"\n(?![ \t])", head) if f.lower().startswith(name.lower() + ":")]


def test_signed_mail_gets_authentication_results(tern_factory, dns, rsa_key):
    key, public = rsa_key
    tern = tern_factory(dns=serve(dns, records(public)))
    assert send(tern, sign(message(), key)).startswith("250 ")
    (delivered,) = tern.wait_messages("alice", 1)
    lines = delivered.split(b"\n")
    assert lines[2].decode() == f"Authentication-Results: {HOSTNAME};"  # on top, after Return-Path, Delivered-To
    assert fields(delivered, "Authentication-Results") == [
        f"Authentication-Results: {HOSTNAME};\n"
        "\tspf=pass (mechanism ip4:127.0.0.0/8) smtp.mailfrom=a@auth.tern-test;\n"
        "\tdkim=pass (1024-bit key) header.d=auth.tern-test header.i=@auth.tern-test header.s=sel "
        "header.a=rsa-sha256;\n"
        "\tdmarc=none reason=\"no DMARC record at _dmarc.auth.tern-test\" header.from=auth.tern-test"]
    assert fields(delivered, "Received-SPF") == []  # [spf] policy is "off": no Received-SPF
    tern.wait_log(r"message accepted .*checks=\"spf=pass dkim=pass/auth\.tern-test dmarc=none\"")


def test_broken_signature_and_unsigned_mail(tern_factory, dns, rsa_key):
    key, public = rsa_key
    tern = tern_factory(dns=serve(dns, records(public)))
    tampered = sign(message(), key).replace(b"Hello.", b"Hullo.")
    assert send(tern, tampered).startswith("250 ")
    assert send(tern, message(sender="b@elsewhere.tern-test"), sender="b@elsewhere.tern-test").startswith("250 ")
    delivered = sorted(tern.wait_messages("alice", 2), key=lambda m: b"b@elsewhere" in m)
    assert fields(delivered[0], "Authentication-Results") == [
        f"Authentication-Results: {HOSTNAME};\n"
        "\tspf=pass (mechanism ip4:127.0.0.0/8) smtp.mailfrom=a@auth.tern-test;\n"
        "\tdkim=fail (1024-bit key) reason=\"body hash did not verify (the body was changed after signing)\" header.d=auth.tern-test "
        "header.i=@auth.tern-test header.s=sel header.a=rsa-sha256;\n"
        "\tdmarc=none reason=\"no DMARC record at _dmarc.auth.tern-test\" header.from=auth.tern-test"]
    assert fields(delivered[1], "Authentication-Results") == [
        f"Authentication-Results: {HOSTNAME};\n"
        "\tspf=fail (mechanism -all) smtp.mailfrom=b@elsewhere.tern-test;\n"
        "\tdkim=none;\n"
        "\tdmarc=none reason=\"no DMARC record at _dmarc.elsewhere.tern-test\" header.from=elsewhere.tern-test"]


def test_forged_results_are_removed_and_foreign_ones_kept(tern_factory, dns, rsa_key):
    key, public = rsa_key
    tern = tern_factory(dns=serve(dns, records(public)))
    forged = (f"Authentication-Results: {HOSTNAME.upper()}; dkim=pass header.d=bank.example\r\n"
              f"Authentication-Results: (comment) {HOSTNAME};\r\n\tspf=pass smtp.mailfrom=bank.example\r\n"
              "Authentication-Results: other.example; spf=pass smtp.mailfrom=x@other.example\r\n")
    assert send(tern, sign(message(extra_headers=forged), key)).startswith("250 ")
    (delivered,) = tern.wait_messages("alice", 1)
    results = fields(delivered, "Authentication-Results")
    assert len(results) == 2
    assert results[0].startswith(f"Authentication-Results: {HOSTNAME};\n\tspf=pass")
    assert "dkim=pass (1024-bit key) header.d=auth.tern-test" in results[0]  # signed before the removal
    assert results[1] == "Authentication-Results: other.example; spf=pass smtp.mailfrom=x@other.example"
    tern.wait_log(r"forged Authentication-Results removed client=\[127\.0\.0\.1\] fields=2")


def test_verify_off_adds_nothing_but_still_removes_forgeries(tern_factory, dns, rsa_key):
    key, public = rsa_key
    tern = tern_factory(dns=serve(dns, records(public)), mailauth={"verify": False})
    forged = f"Authentication-Results: {HOSTNAME}; dkim=pass header.d=bank.example\r\n"
    assert send(tern, sign(message(extra_headers=forged), key)).startswith("250 ")
    (delivered,) = tern.wait_messages("alice", 1)
    assert fields(delivered, "Authentication-Results") == []
    assert delivered.split(b"\n")[2].startswith(b"Received: from client.tern-test")


def test_mail_larger_than_max_verify_size_is_passed_on_unchecked(tern_factory, dns, rsa_key):
    key, public = rsa_key
    tern = tern_factory(dns=serve(dns, records(public)), mailauth={"max_verify_size": 65536},
                        smtp={"max_message_size": 1000000})
    body = ("x" * 70 + "\r\n") * 2000  # 144 KB
    data = sign(message(body=body), key)
    assert send(tern, data).startswith("250 ")
    (delivered,) = tern.wait_messages("alice", 1)
    assert fields(delivered, "Authentication-Results") == [
        f"Authentication-Results: {HOSTNAME};\n"
        "\tspf=pass (mechanism ip4:127.0.0.0/8) smtp.mailfrom=a@auth.tern-test;\n"
        "\tdkim=neutral reason=\"not checked: the message is larger than mailauth.max_verify_size\";\n"
        "\tdmarc=none reason=\"no DMARC record at _dmarc.auth.tern-test\" header.from=auth.tern-test"]
    assert delivered.endswith(body.replace("\r\n", "\n").encode())  # whole, byte for byte
