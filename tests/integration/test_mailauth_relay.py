"""Mail authentication as mail leaves: the relay DKIM-signs and ARC-seals.

- DKIM signing: a message from an authenticated SMTP user (AUTH on the submission port or on
  port 25) to a remote address reaches the remote server (smtp_receiver.SmtpReceiver) with two
  DKIM-Signature fields on top, rsa-sha256 at selector `tern` and ed25519-sha256 at
  `tern-ed25519`, d= the From domain, made with the keys `tern dkim keygen` put in
  data_dir/dkim. Both verify with dkimpy (its dnsfunc answers with the records keygen printed)
  and with OpenDKIM's opendkim-testmsg (run as in test_dkim_interop.py, in a namespace with its
  own DNS responder); a changed body byte makes them fail. `[dkim] selector` picks other keys.
- Not signed: with `[dkim] sign = false`; for an unauthenticated client of relay_networks; and
  when the From domain has no key (sent unsigned, logged).
- tern's own bounces: a relay client's message refused with 550 by the remote server comes back
  as a DSN to the (remote) sender through the relay, signed for the DSN's From domain (the
  server's hostname).
- ARC sealing: mail from outside (port 25, no AUTH, not a relay client) to a hosted address
  that forwards to a remote address (`tern user forward`, or an alias with a remote target)
  leaves with one ARC set (i=1, cv=none, d= the hosted domain, s=tern, rsa-sha256) whose
  ARC-Authentication-Results carries the Authentication-Results tern added on arrival. dkimpy's
  arc_verify passes it, and fails it after a body change. `[dkim] arc_seal = false` turns it off.

Keys for the hosted domains (example.test, mail.example.test) are not in the test DNS zone
(tern-test.): verifiers get them from the records keygen printed. The test DNS server serves
the MX of the remote domains and the SPF record of the outside sender.

Environment: TERN_BIN is the tern binary. Needs /usr/bin/python3 with python3-dkim (and PyNaCl
for Ed25519), and opendkim-tools for the OpenDKIM check.
"""
from __future__ import annotations

import re
import smtplib
import time

import pytest

from smtp_receiver import Received, SmtpReceiver
from test_dkim_interop import opendkim_verify, parse_zone_lines
from test_relay import dns, start_dns, world_readable_dir  # noqa: F401 (fixtures)
from ternlib import HOSTNAME, free_port, send_message

dkim = pytest.importorskip("dkim", reason="python3-dkim is not installed (apt-get install python3-dkim)")

pytestmark = pytest.mark.backend_independent  # the account backend plays no part

ALICE, PASSWORD = "alice@example.test", "pw"  # ternlib.PASSWORD_HASH is the hash of "pw"
OUTSIDER = "bob@sender.tern-test"
ZONE = """
remote   MX 10 mx1
sender   MX 10 mx1
mx1      A 127.0.0.1
sender   TXT "v=spf1 ip4:127.0.0.0/8 -all"
"""
BODY = "Hello from the relay tests.\r\n\r\nA second paragraph.\r\n"


# ---------------------------------------------------------------------------------------------
# Helpers


def relay_server(tern_factory, dns, mx: SmtpReceiver, **sections):
    """A tern whose relay delivers to `mx` (MX of remote.tern-test and sender.tern-test), with a
    submission port (`.sub`) and AUTH without TLS on both ports."""
    start_dns(dns, ZONE)
    sub = free_port()
    smtp = {"submission_listen": [f"127.0.0.1:{sub}"], "allow_insecure_auth": True, **sections.pop("smtp", {})}
    sections["mailauth"] = {"verify": True, **sections.get("mailauth", {})}  # ternlib's default is off
    tern = tern_factory(smtp=smtp, queue={"retry_initial": 1, "retry_max": 1},
                        relay={"port": mx.port, "connect_timeout": 5},
                        dns={"forwarders": [dns.forwarder], "trust_anchor": str(dns.anchor)}, **sections)
    tern.sub = sub
    return tern


def keygen(tern, domain: str, *args: str) -> dict[str, str]:
    """`tern dkim keygen DOMAIN` on the server's configuration: DNS name -> TXT text."""
    r = tern.cli("dkim", "keygen", domain, *args, check=True)
    return {name: "".join(strings) for name, strings in parse_zone_lines(r.stdout).items()}


def dnsfunc(records: dict[str, str]):
    """dkimpy's TXT lookup, answered from `records`."""
    def lookup(name: bytes, timeout: int = 5) -> bytes | None:
        text = records.get(name.decode().rstrip("."))
        return text.encode() if text is not None else None
    return lookup


def message(subject: str, sender: str = ALICE, to: str = "carol@remote.tern-test") -> bytes:
    return (f"From: Sender <{sender}>\r\nTo: <{to}>\r\nSubject: {subject}\r\n"
            f"Date: Mon, 01 Jan 2024 00:00:00 +0000\r\nMessage-ID: <{subject.replace(' ', '-')}@relay.test>\r\n"
            f"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n{BODY}").encode()


def submit(port: int, data: bytes, recipient: str = "carol@remote.tern-test", sender: str = ALICE,
           login: bool = True) -> str:
    """One transaction with smtplib (AUTH PLAIN as alice when `login`); returns the queue id."""
    with smtplib.SMTP("127.0.0.1", port, local_hostname="client.test", timeout=10) as s:
        s.ehlo()
        if login:
            assert s.login(ALICE, PASSWORD) == (235, b"2.7.0 Authentication successful")
        assert s.mail(sender)[0] == 250
        assert s.rcpt(recipient)[0] == 250
        code, text = s.data(data)
        assert code == 250, text
    return text.decode().rsplit(" ", 1)[-1]


def header(data: bytes) -> list[str]:
    """The header fields of a received message, in order, each unfolded (CRLF line ends)."""
    head = data.split(b"\r\n\r\n", 1)[0].decode()
    return [re.sub(r"\r\n[ \t]+", " ", f) for f in re.split(r"\r\n(?![ \t])", head)]


def fields(data: bytes, name: str) -> list[str]:
    """The values of the header fields called `name` (unfolded)."""
    prefix = name.lower() + ":"
    return [f.split(":", 1)[1].strip() for f in header(data) if f.lower().startswith(prefix)]


def tags(value: str) -> dict[str, str]:
    """A DKIM/ARC tag list as a dict, white space removed from the values."""
    out = {}
    for item in value.split(";"):
        if item.strip():
            key, _, val = item.partition("=")
            out[key.strip()] = re.sub(r"\s+", "", val)
    return out


def tampered(data: bytes) -> bytes:
    """The message with the case of the body's first letter changed."""
    head, sep, body = data.partition(b"\r\n\r\n")
    at = re.search(rb"[A-Za-z]", body).start()
    return head + sep + body[:at] + body[at:at + 1].swapcase() + body[at + 1:]


def unfolded(data: bytes) -> bytes:
    """The message with the folds of its header undone."""
    head, sep, body = data.partition(b"\r\n\r\n")
    return re.sub(rb"\r\n[ \t]+", b" ", head) + sep + body


def dkimpy_verifies(data: bytes, idx: int, records: dict[str, str]) -> bool:
    try:
        return bool(dkim.DKIM(data).verify(idx=idx, dnsfunc=dnsfunc(records)))
    except dkim.ValidationError:  # dkimpy 1.1 raises for a body hash mismatch
        return False


def assert_signed(msg: Received, domain: str, records: dict[str, str], selector: str = "tern") -> None:
    """The message starts with tern's two DKIM-Signature fields for `domain`, and dkimpy verifies
    both (and neither after a body byte changed)."""
    names = [f.split(":", 1)[0] for f in header(msg.data)]
    assert names[:2] == ["DKIM-Signature", "DKIM-Signature"], names
    assert "DKIM-Signature" not in names[2:], names
    sigs = [tags(v) for v in fields(msg.data, "DKIM-Signature")]
    assert [(s["a"], s["s"], s["d"], s["c"]) for s in sigs] == [
        ("rsa-sha256", selector, domain, "relaxed/relaxed"),
        ("ed25519-sha256", f"{selector}-ed25519", domain, "relaxed/relaxed")]
    assert all("from" in s["h"].lower().split(":") for s in sigs), sigs
    for idx in (0, 1):
        assert dkimpy_verifies(msg.data, idx, records), f"dkimpy rejects signature {idx} ({sigs[idx]['a']})"
        assert not dkimpy_verifies(tampered(msg.data), idx, records), f"signature {idx} survives a body change"


def assert_unsigned(msg: Received) -> None:
    assert fields(msg.data, "DKIM-Signature") == [], header(msg.data)[:3]


# ---------------------------------------------------------------------------------------------
# DKIM signing of authenticated users' mail


@pytest.mark.parametrize("listener", ["submission", "port25"])
def test_authenticated_mail_is_signed_with_rsa_and_ed25519(tern_factory, dns, tmp_path, listener):
    with SmtpReceiver() as mx:
        tern = relay_server(tern_factory, dns, mx)
        records = keygen(tern, "example.test")
        queue_id = submit(tern.sub if listener == "submission" else tern.port, message("signed"))
        (msg,) = mx.wait_for(1, timeout=20)
        assert (msg.mail_from, msg.rcpt_to) == (ALICE, ["carol@remote.tern-test"])
        assert_signed(msg, "example.test", records)
        assert msg.data.endswith(BODY.encode())  # the body itself unchanged
        tern.wait_log(rf"relay info relayed id={queue_id} to=carol@remote\.tern-test status=sent")
        # OpenDKIM checks both signatures (it fails on any that does not verify).
        rc, err = opendkim_verify(tmp_path, records, msg.data)
        assert (rc, err) == (0, ""), f"opendkim-testmsg rejected the relay's signatures: {err}"
        rc, err = opendkim_verify(tmp_path, records, tampered(msg.data))
        assert rc != 0 and "Bad signature" in err, (rc, err)


def test_configured_selector_picks_the_keys(tern_factory, dns):
    with SmtpReceiver() as mx:
        tern = relay_server(tern_factory, dns, mx, dkim={"selector": "s2026"})
        records = keygen(tern, "example.test")  # keygen takes the selector from [dkim] too
        assert sorted(records) == ["s2026-ed25519._domainkey.example.test", "s2026._domainkey.example.test"]
        submit(tern.sub, message("other selector"))
        (msg,) = mx.wait_for(1, timeout=20)
        assert_signed(msg, "example.test", records, selector="s2026")


def test_sign_false_sends_unsigned(tern_factory, dns):
    with SmtpReceiver() as mx:
        tern = relay_server(tern_factory, dns, mx, dkim={"sign": False})
        keygen(tern, "example.test")
        queue_id = submit(tern.sub, message("sign off"))
        (msg,) = mx.wait_for(1, timeout=20)
        assert_unsigned(msg)
        assert msg.data.startswith(b"Received: ")
        tern.wait_log(rf"relay info relayed id={queue_id} ")
        assert tern.log_count("DKIM-signed") == 0


def test_unauthenticated_relay_client_is_not_signed(tern_factory, dns):
    with SmtpReceiver() as mx:
        tern = relay_server(tern_factory, dns, mx, smtp={"relay_networks": ["127.0.0.1"]})
        keygen(tern, "example.test")
        queue_id = submit(tern.port, message("relay client"), login=False)
        (msg,) = mx.wait_for(1, timeout=20)
        assert msg.mail_from == ALICE
        assert_unsigned(msg)
        tern.wait_log(rf"relay info relayed id={queue_id} ")
        assert tern.log_count("DKIM-signed") == 0  # not even tried


def test_no_key_for_the_from_domain_sends_unsigned_and_logs(tern_factory, dns):
    with SmtpReceiver() as mx:
        tern = relay_server(tern_factory, dns, mx)
        keygen(tern, "other.test")  # keys, but not for example.test
        queue_id = submit(tern.sub, message("no key"))
        (msg,) = mx.wait_for(1, timeout=20)
        assert_unsigned(msg)
        tern.wait_log(rf"relay info not DKIM-signed: no key for the From domain \(tern dkim keygen makes one\) "
                      rf"id={queue_id} domain=example\.test selector=tern$")


def test_a_from_domain_that_is_not_the_users_is_not_signed(tern_factory, dns):
    """alice@example.test may not have mail in another hosted domain's name signed with its key."""
    with SmtpReceiver() as mx:
        tern = relay_server(tern_factory, dns, mx)
        keygen(tern, "other.test")
        data = message("someone else's name").replace(f"From: Sender <{ALICE}>".encode(),
                                                      b"From: Boss <boss@other.test>")
        queue_id = submit(tern.sub, data)
        (msg,) = mx.wait_for(1, timeout=20)
        assert_unsigned(msg)
        tern.wait_log(rf"relay info not DKIM-signed: the From domain is neither the login's nor the envelope "
                      rf"sender's id={queue_id} from=other\.test auth=alice@example\.test sender=alice@example\.test$")


# ---------------------------------------------------------------------------------------------
# DKIM signing of tern's bounces


def test_bounce_to_a_remote_sender_is_signed_for_the_hostname(tern_factory, dns):
    with SmtpReceiver() as mx:
        mx.rules.append(("RCPT TO:<bad@", "550 5.1.1 <bad@remote.tern-test>: no such user", None))
        tern = relay_server(tern_factory, dns, mx, smtp={"relay_networks": ["127.0.0.1"]})
        records = keygen(tern, HOSTNAME)  # the DSN's From: MAILER-DAEMON@HOSTNAME
        keygen(tern, "sender.tern-test")  # the original's From domain: not signed all the same
        queue_id = submit(tern.port, message("bounced", sender=OUTSIDER, to="bad@remote.tern-test"),
                          recipient="bad@remote.tern-test", sender=OUTSIDER, login=False)
        (dsn,) = mx.wait_for(1, timeout=20)
        assert (dsn.mail_from, dsn.rcpt_to) == ("", [OUTSIDER])
        assert fields(dsn.data, "From") == [f"Mail Delivery System <MAILER-DAEMON@{HOSTNAME}>"]
        assert b"Subject: bounced" in dsn.data  # the original comes back in it
        assert_signed(dsn, HOSTNAME, records)
        tern.wait_log(rf"queue info report queued id=\S+ about={queue_id} to={OUTSIDER}")


# ---------------------------------------------------------------------------------------------
# ARC sealing of forwards


def set_up_forward(tern, how: str) -> str:
    """dave@example.test (a user) or list@example.test (an alias) forwards to carol@remote."""
    if how == "user forward":
        tern.cli("user", "forward", "dave@example.test", "carol@remote.tern-test", check=True)
        return "dave@example.test"
    tern.cli("alias", "add", "list@example.test", "carol@remote.tern-test", check=True)
    return "list@example.test"


def send_from_outside(tern, recipient: str, subject: str) -> str:
    data = message(subject, sender=OUTSIDER, to=recipient).decode()
    return send_message(tern.port, OUTSIDER, [recipient], data)


@pytest.mark.parametrize("how", ["user forward", "alias"])
def test_forward_to_a_remote_address_is_arc_sealed(tern_factory, dns, how):
    with SmtpReceiver() as mx:
        tern = relay_server(tern_factory, dns, mx)
        records = keygen(tern, "example.test")
        hosted = set_up_forward(tern, how)
        send_from_outside(tern, hosted, "forwarded")
        (msg,) = mx.wait_for(1, timeout=20)
        assert (msg.mail_from, msg.rcpt_to) == (hosted, ["carol@remote.tern-test"])  # sender rewritten
        names = [f.split(":", 1)[0] for f in header(msg.data)]
        assert names[:3] == ["ARC-Seal", "ARC-Message-Signature", "ARC-Authentication-Results"], names
        assert "DKIM-Signature" not in names  # not an authenticated user's mail: not DKIM-signed
        (seal,), (ams,), (aar,) = (fields(msg.data, n) for n in
                                   ("ARC-Seal", "ARC-Message-Signature", "ARC-Authentication-Results"))
        seal, ams = tags(seal), tags(ams)
        assert (seal["i"], seal["cv"], seal["a"], seal["d"], seal["s"]) == ("1", "none", "rsa-sha256", "example.test",
                                                                              "tern")
        assert (ams["i"], ams["a"], ams["d"], ams["s"]) == ("1", "rsa-sha256", "example.test", "tern")
        # The AAR carries the Authentication-Results tern added when the message arrived.
        (results,) = fields(msg.data, "Authentication-Results")
        assert results.startswith(f"{HOSTNAME}; spf=pass (mechanism ip4:127.0.0.0/8) smtp.mailfrom={OUTSIDER};")
        assert aar == f"i=1; {results}"
        # The signatures themselves: dkimpy on the header with its folds undone (the same under
        # relaxed canonicalisation, which the seal and the AMS use).
        cv, _, reason = dkim.arc_verify(unfolded(msg.data), dnsfunc=dnsfunc(records))
        assert cv == b"pass", reason
        cv, _, _ = dkim.arc_verify(tampered(unfolded(msg.data)), dnsfunc=dnsfunc(records))
        assert cv == b"fail"
        # The message as it arrived: dkimpy finds the AMS of instance N by the text " i=N;", so
        # a fold right before i= makes it fail (IndexError) whatever the signature says.
        assert re.search(rb"^ARC-Message-Signature:(?:.|\r\n[ \t])* i=1;", msg.data, re.M), \
            "dkimpy cannot find this AMS: its i= tag comes right after a fold"
        cv, _, reason = dkim.arc_verify(msg.data, dnsfunc=dnsfunc(records))
        assert cv == b"pass", reason


def test_arc_seal_false_forwards_without_arc(tern_factory, dns):
    with SmtpReceiver() as mx:
        tern = relay_server(tern_factory, dns, mx, dkim={"arc_seal": False})
        keygen(tern, "example.test")
        send_from_outside(tern, set_up_forward(tern, "user forward"), "not sealed")
        (msg,) = mx.wait_for(1, timeout=20)
        assert [f for f in header(msg.data) if f.lower().startswith("arc-")] == []
        assert len(fields(msg.data, "Authentication-Results")) == 1  # tern's own, still there
        assert tern.log_count("ARC-sealed") == 0


# ---------------------------------------------------------------------------------------------
# DMARC aggregate reports (RFC 7489 7.2): recorded at arrival, sent at the end of the period


REPORT_ZONE = ZONE + """
reporting    MX 10 mx1
_dmarc.sender TXT "v=DMARC1; p=none; rua=mailto:agg@reporting.tern-test,mailto:nobody@remote.tern-test"
sender.tern-test._report._dmarc.reporting TXT "v=DMARC1"
"""


def test_dmarc_aggregate_report_is_sent_signed_to_authorised_destinations(tern_factory, dns):
    import gzip
    import xml.etree.ElementTree as ET
    from email import message_from_bytes
    from email import policy as email_policy

    with SmtpReceiver() as mx:
        tern = relay_server(tern_factory, dns, mx,
                            mailauth={"dmarc_reports": True, "report_interval": 10, "report_org": "Tern Test"})
        start_dns(dns, REPORT_ZONE)
        records = keygen(tern, HOSTNAME)  # reports come from dmarc-reports@HOSTNAME: signed for it
        if time.time() % 10 > 6:  # the three messages belong to one 10-second period
            time.sleep(10.2 - time.time() % 10)
        for n in range(3):
            send_from_outside(tern, "alice@example.test", f"report {n}")
        tern.wait_log(r"DMARC aggregate report queued domain=sender\.tern-test .*to=agg@reporting\.tern-test "
                      r"messages=3", timeout=40)
        # remote.tern-test is another organisation and does not authorise the reports: left out.
        tern.wait_log(r"DMARC report destination not authorised; not sent there domain=sender\.tern-test "
                      r"to=mailto:nobody@remote\.tern-test check=unauthorized")
        (report,) = mx.wait_for(1, timeout=20)
        assert report.mail_from == f"dmarc-reports@{HOSTNAME}"
        assert report.rcpt_to == ["agg@reporting.tern-test"]
        assert_signed(report, HOSTNAME, records)
        parsed = message_from_bytes(report.data, policy=email_policy.default)
        assert re.fullmatch(r"Report Domain: sender\.tern-test Submitter: Tern Test Report-ID: <\d+\.\d+>",
                            parsed["Subject"])
        (attachment,) = [p for p in parsed.iter_attachments()]
        assert attachment.get_content_type() == "application/gzip"
        assert re.fullmatch(rf"{re.escape(HOSTNAME)}!sender\.tern-test!\d+!\d+\.xml\.gz", attachment.get_filename())
        feedback = ET.fromstring(gzip.decompress(attachment.get_content()))
        assert feedback.findtext("report_metadata/org_name") == "Tern Test"
        assert feedback.findtext("report_metadata/email") == f"dmarc-reports@{HOSTNAME}"
        assert feedback.findtext("policy_published/domain") == "sender.tern-test"
        assert feedback.findtext("policy_published/p") == "none"
        (record,) = feedback.findall("record")  # three identical rows, grouped
        assert record.findtext("row/source_ip") == "127.0.0.1"
        assert record.findtext("row/count") == "3"
        assert record.findtext("row/policy_evaluated/disposition") == "none"
        assert record.findtext("row/policy_evaluated/spf") == "pass"
        assert record.findtext("identifiers/header_from") == "sender.tern-test"
        assert record.findtext("auth_results/spf/domain") == "sender.tern-test"
        assert record.findtext("auth_results/spf/result") == "pass"
    journal = tern.data_dir / "smtp" / "dmarc-reports.sending"
    assert not journal.exists()  # everything was queued: the period's journal is gone
