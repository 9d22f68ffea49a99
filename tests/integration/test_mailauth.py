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
from ternlib import HOSTNAME, SmtpClient, wait_until


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


def checking(tern_factory, dns_section: dict, mailauth: dict | None = None, **sections):
    """A tern with the arrival checks on (ternlib's default configuration turns them off)."""
    return tern_factory(dns=dns_section, mailauth={"verify": True, **(mailauth or {})}, **sections)


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
    tern = checking(tern_factory, serve(dns, records(public)))
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
    tern = checking(tern_factory, serve(dns, records(public)))
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
    tern = checking(tern_factory, serve(dns, records(public)))
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
    tern = checking(tern_factory, serve(dns, records(public)), mailauth={"verify": False})
    forged = f"Authentication-Results: {HOSTNAME}; dkim=pass header.d=bank.example\r\n"
    assert send(tern, sign(message(extra_headers=forged), key)).startswith("250 ")
    (delivered,) = tern.wait_messages("alice", 1)
    assert fields(delivered, "Authentication-Results") == []
    assert delivered.split(b"\n")[2].startswith(b"Received: from client.tern-test")


def test_mail_larger_than_max_verify_size_is_passed_on_unchecked(tern_factory, dns, rsa_key):
    key, public = rsa_key
    tern = checking(tern_factory, serve(dns, records(public)), mailauth={"max_verify_size": 65536},
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


# ---------------------------------------------------------------------------------------------
# DMARC (RFC 7489): dispositions

DMARC_RECORDS = """
_dmarc.auth                TXT "v=DMARC1; p=reject"
quar                       TXT "v=spf1 ip4:127.0.0.0/8 -all"
_dmarc.quar                TXT "v=DMARC1; p=quarantine"
_dmarc.org                 TXT "v=DMARC1; p=none; sp=reject"
sub.org                    TXT "v=spf1 -all"
sampled                    TXT "v=spf1 -all"
_dmarc.sampled             TXT "v=DMARC1; p=reject; pct=0"
"""


def junk(tern, user: str = "alice") -> list[bytes]:
    folder = tern.maildir(user).parent / ".Junk"
    new = folder / "new"
    return [p.read_bytes() for p in sorted(new.iterdir())] if new.is_dir() else []


def dmarc_clause(delivered: bytes) -> str:
    (results,) = fields(delivered, "Authentication-Results")
    return results.split("\n\t")[-1]


def test_dmarc_reject_pass_and_subdomain_policy(tern_factory, dns, rsa_key):
    key, public = rsa_key
    tern = checking(tern_factory, serve(dns, records(public, DMARC_RECORDS)))
    # From auth.tern-test (p=reject), MAIL FROM a domain whose SPF fails, no signature: rejected.
    reply = send(tern, message(sender="x@auth.tern-test"), sender="b@elsewhere.tern-test")
    assert reply == "550 5.7.1 Message rejected by the DMARC policy of auth.tern-test"
    tern.wait_log(r"message refused .*checks=\"spf=fail dkim=none dmarc=fail \(rejected\)\" reply=\"550 5\.7\.1\"")
    # The same From with an aligned DKIM signature passes, whatever SPF says.
    assert send(tern, sign(message(sender="x@auth.tern-test"), key), sender="b@elsewhere.tern-test").startswith("250 ")
    # sp=reject of the organisational domain applies to sub.org.tern-test, which has no record.
    reply = send(tern, message(sender="x@sub.org.tern-test"), sender="x@sub.org.tern-test")
    assert reply == "550 5.7.1 Message rejected by the DMARC policy of sub.org.tern-test"
    (delivered,) = tern.wait_messages("alice", 1)
    assert dmarc_clause(delivered) == "dmarc=pass (p=reject dis=none) header.from=auth.tern-test"
    wait_until(lambda: tern.spool_entries() == [], message="an empty spool")  # nothing refused was kept
    assert len(tern.messages("alice")) == 1


def test_dmarc_quarantine_delivers_to_junk(tern_factory, dns, rsa_key):
    key, public = rsa_key
    tern = checking(tern_factory, serve(dns, records(public, DMARC_RECORDS)))
    assert send(tern, message(sender="x@quar.tern-test"), sender="b@elsewhere.tern-test").startswith("250 ")
    assert send(tern, message(sender="x@sampled.tern-test"), sender="x@sampled.tern-test").startswith("250 ")
    tern.wait_log(r"delivered to maildir .*to=alice@example\.test", count=2)
    assert tern.messages("alice") == []
    delivered = junk(tern)
    assert len(delivered) == 2
    clauses = sorted(dmarc_clause(m) for m in delivered)
    assert clauses[0].startswith("dmarc=fail (p=quarantine dis=quarantine; delivered to Junk) reason=")
    assert clauses[0].endswith(" header.from=quar.tern-test")
    # pct=0: the reject policy is sampled out, so the failure gets the next milder disposition.
    assert clauses[1].startswith("dmarc=fail (p=reject dis=quarantine pct=0 sampled out; delivered to Junk) reason=")
    maildir = tern.maildir("alice").parent
    assert (maildir / ".Junk" / "maildirfolder").is_file()
    assert {p.name for p in (maildir / ".Junk").iterdir()} == {"tmp", "new", "cur", "maildirfolder"}


def test_dmarc_dispositions_chosen_by_configuration(tern_factory, dns, rsa_key):
    key, public = rsa_key
    tern = checking(tern_factory, serve(dns, records(public, DMARC_RECORDS)),
                        mailauth={"dmarc_reject": "junk", "dmarc_quarantine": "none"})
    assert send(tern, message(sender="x@auth.tern-test"), sender="b@elsewhere.tern-test").startswith("250 ")
    assert send(tern, message(sender="x@quar.tern-test"), sender="b@elsewhere.tern-test").startswith("250 ")
    tern.wait_log(r"delivered to maildir .*to=alice@example\.test", count=2)
    (inbox,) = tern.messages("alice")
    assert dmarc_clause(inbox).startswith("dmarc=fail (p=quarantine dis=quarantine; not applied by local policy)")
    (junked,) = junk(tern)
    assert dmarc_clause(junked).startswith("dmarc=fail (p=reject dis=reject; delivered to Junk)")
    tern.reload(mailauth={"dmarc_reject": "none"})
    assert send(tern, message(sender="x@auth.tern-test"), sender="b@elsewhere.tern-test").startswith("250 ")
    inbox = tern.wait_messages("alice", 2)
    assert len(junk(tern)) == 1
    assert any(dmarc_clause(m).startswith("dmarc=fail (p=reject dis=reject; not applied by local policy)")
               for m in inbox)


def arc_sealed(key: bytes, sender: str) -> bytes:
    """A message as forwarder.tern-test would pass it on: its own results, sealed (i=1, cv=none)."""
    msg = (b"Authentication-Results: forwarder.tern-test; spf=pass smtp.mailfrom=x@auth.tern-test\r\n" +
           message(sender=sender))
    seal = dkim.arc_sign(msg, b"sel", b"forwarder.tern-test", key, b"forwarder.tern-test",
                         include_headers=[b"from", b"to", b"subject"])
    return b"".join(seal) + msg


def test_arc_chain_from_a_trusted_sealer_excuses_a_dmarc_failure(tern_factory, dns, rsa_key):
    key, public = rsa_key
    extra = DMARC_RECORDS + f'sel._domainkey.forwarder     TXT "v=DKIM1; k=rsa; p={public}"\n'
    tern = checking(tern_factory, serve(dns, records(public, extra)))
    sealed = arc_sealed(key, "x@auth.tern-test")
    reply = send(tern, sealed, sender="b@elsewhere.tern-test")
    assert reply == "550 5.7.1 Message rejected by the DMARC policy of auth.tern-test"  # not trusted yet
    tern.reload(mailauth={"arc_trusted_sealers": ["forwarder.tern-test"]})
    assert send(tern, sealed, sender="b@elsewhere.tern-test").startswith("250 ")
    (delivered,) = tern.wait_messages("alice", 1)
    ours, theirs = fields(delivered, "Authentication-Results")
    assert theirs == "Authentication-Results: forwarder.tern-test; spf=pass smtp.mailfrom=x@auth.tern-test"
    clauses = ours.split("\n\t")[1:]
    assert clauses[2] == "arc=pass (i=1 d=forwarder.tern-test) smtp.remote-ip=127.0.0.1;"
    assert clauses[3].startswith("dmarc=fail (p=reject dis=reject; not applied: arc=pass sealed by "
                                 "forwarder.tern-test, a trusted sealer) reason=")
    # A broken chain is reported as such and excuses nothing.
    broken = sealed.replace(b"Hello.", b"Hullo.")
    assert send(tern, broken, sender="b@elsewhere.tern-test") == \
        "550 5.7.1 Message rejected by the DMARC policy of auth.tern-test"
    tern.wait_log(r"message refused .*checks=\"spf=fail dkim=none arc=fail dmarc=fail \(rejected\)\"")


ALIGNMENT_RECORDS = """
strict                     TXT "v=spf1 -all"
_dmarc.strict              TXT "v=DMARC1; p=reject; aspf=s; adkim=s"
mail.strict                TXT "v=spf1 ip4:127.0.0.0/8 -all"
relaxed                    TXT "v=spf1 -all"
_dmarc.relaxed             TXT "v=DMARC1; p=reject"
mail.relaxed               TXT "v=spf1 ip4:127.0.0.0/8 -all"
sel._domainkey.mail.strict TXT "v=DKIM1; k=rsa; p={public}"
"""


def test_dmarc_relaxed_and_strict_alignment(tern_factory, dns, rsa_key):
    key, public = rsa_key
    tern = checking(tern_factory, serve(dns, records(public, ALIGNMENT_RECORDS.format(public=public))))
    # SPF passes for mail.relaxed.tern-test: the same organisational domain as relaxed.tern-test.
    assert send(tern, message(sender="x@relaxed.tern-test"), sender="a@mail.relaxed.tern-test").startswith("250 ")
    # aspf=s: SPF for a subdomain does not align with strict.tern-test.
    assert send(tern, message(sender="x@strict.tern-test"), sender="a@mail.strict.tern-test") == \
        "550 5.7.1 Message rejected by the DMARC policy of strict.tern-test"
    # adkim=s: a signature of mail.strict.tern-test does not align either.
    signed = sign(message(sender="x@strict.tern-test"), key, domain="mail.strict.tern-test")
    assert send(tern, signed, sender="a@mail.strict.tern-test") == \
        "550 5.7.1 Message rejected by the DMARC policy of strict.tern-test"
    (delivered,) = tern.wait_messages("alice", 1)
    assert dmarc_clause(delivered) == "dmarc=pass (p=reject dis=none) header.from=relaxed.tern-test"
