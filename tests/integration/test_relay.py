"""Outbound delivery: the queue hands remote recipients to the relay service, which finds the
destination in the DNS (unbound serving a signed test zone, dnslib) and speaks SMTP to it.

Peers: Postfix's smtp-sink (plain, fast, counts what it gets) and smtp_receiver.SmtpReceiver (a
scriptable server with STARTTLS and AUTH, for failures, TLS and DANE). Every server listens on
the one port the relay uses for MX deliveries (`[relay] port`), on 127.0.0.1; hosts that must
fail to connect resolve to addresses where nothing listens (127.0.0.3).

Bounces go to alice@example.test, a local user, so each DSN can be read from her Maildir and
checked with Python's email parser.
"""
from __future__ import annotations

import email
import email.policy
import os
import shutil
import signal
import smtplib
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

import dnslib
import tlslib
from smtp_receiver import SmtpReceiver
from ternlib import IS_ROOT, free_port, wait_until

# The account backend plays no part here: one run (SQLite) is enough.
pytestmark = pytest.mark.backend_independent

SENDER = "alice@example.test"


@pytest.fixture
def world_readable_dir():
    """A directory the service users can read (the trust anchor, certificates, passwords)."""
    path = Path(tempfile.mkdtemp(prefix="tern-relay-"))
    os.chmod(path, 0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def dns(world_readable_dir):
    server = dnslib.DnsServer(world_readable_dir / "dns")
    yield server
    server.stop()


def start_dns(dns: dnslib.DnsServer, records: str) -> None:
    dns.start(records)
    os.chmod(dns.directory, 0o755)
    os.chmod(dns.anchor, 0o644)


def relay_tern(tern_factory, dns, port: int, queue: dict | None = None, relay: dict | None = None,
               routes: list | None = None):
    sections = {
        "smtp": {"relay_networks": ["127.0.0.1"]},
        "queue": {"retry_initial": 1, "retry_max": 1, **(queue or {})},
        "relay": {"port": port, "connect_timeout": 5, **(relay or {})},
        "dns": {"forwarders": [dns.forwarder], "trust_anchor": str(dns.anchor)},
    }
    if routes is not None:
        sections["routes"] = routes
    return tern_factory(**sections)


def send(tern, recipients: list[str], subject: str = "outbound", sender: str = SENDER, body: str = "hello\r\n",
         mail_options: list[str] | None = None, rcpt_options: list[str] | None = None) -> str:
    msg = f"From: {sender or 'MAILER-DAEMON@x.test'}\r\nTo: {', '.join(recipients)}\r\nSubject: {subject}\r\n" \
          f"Message-ID: <{subject.replace(' ', '-')}@example.test>\r\n\r\n{body}"
    with smtplib.SMTP("127.0.0.1", tern.port, local_hostname="client.test", timeout=10) as s:
        s.ehlo()
        code, _ = s.mail(sender, mail_options or [])
        assert code == 250
        for r in recipients:
            code, text = s.rcpt(r, rcpt_options or [])
            assert code == 250, (r, code, text)
        code, text = s.data(msg.encode())
        assert code == 250, text
    return text.decode().rsplit(" ", 1)[-1]


def dsns(tern, count: int, timeout: float = 20.0) -> list[email.message.EmailMessage]:
    raw = tern.wait_messages("alice", count, timeout=timeout)
    out = []
    for content in raw:
        # Delivered-To/Received lines come first; the parser takes them as header fields.
        out.append(email.message_from_bytes(content, policy=email.policy.default))
    return out


def delivery_status(dsn: email.message.EmailMessage) -> list[dict[str, str]]:
    """The message/delivery-status part as a list of field groups (per-message first)."""
    assert dsn.get_content_type() == "multipart/report"
    assert dsn.get_param("report-type") == "delivery-status"
    parts = list(dsn.iter_parts())
    assert [p.get_content_type() for p in parts][:2] == ["text/plain", "message/delivery-status"]
    groups = []
    for block in parts[1].get_payload():
        groups.append({k.lower(): str(v) for k, v in block.items()})
    return groups


# ---------------------------------------------------------------------------------------------
# Success, retries, MX order


def test_mx_delivery_to_smtp_sink(tern_factory, dns, world_readable_dir):
    port = free_port()
    dump = world_readable_dir / "sink"
    dump.mkdir()
    os.chmod(dump, 0o777)
    start_dns(dns, "remote MX 10 mx1\nmx1 A 127.0.0.1\n")
    user = ["-u", "nobody"] if IS_ROOT else []
    sink = subprocess.Popen(["smtp-sink", *user, "-d", f"{dump}/%M.", f"127.0.0.1:{port}", "100"])
    try:
        wait_until(lambda: _port_open(port), message="smtp-sink to listen")
        tern = relay_tern(tern_factory, dns, port)
        queue_id = send(tern, ["bob@remote.tern-test", "carol@remote.tern-test"], subject="to the sink")
        tern.wait_log(rf"queue info delivered id={queue_id} to=bob@remote.tern-test attempts=1 "
                      r'relay="mx1.tern-test \[127\.0\.0\.1\]"')
        tern.wait_log(rf"queue info delivered id={queue_id} to=carol@remote.tern-test")
        # Both recipients share one transaction (one domain), so smtp-sink stored one message.
        files = wait_until(lambda: list(dump.iterdir()), message="the sink's dump file")
        text = files[0].read_text()
        assert "X-Helo-Args: mail.example.test\nX-Mail-Args: <alice@example.test>\n" in text
        assert "X-Rcpt-Args: <bob@remote.tern-test>\n" in text  # smtp-sink records the first RCPT
        time.sleep(0.5)
        assert len(list(dump.iterdir())) == 1
        assert "Subject: to the sink\n" in text
        assert tern.log_count(r"relay info relayed id=" + queue_id) == 2
        wait_until(lambda: not any((tern.data_dir / "spool" / "env").iterdir()), message="the spool to empty")
    finally:
        sink.terminate()
        sink.wait(timeout=5)


def _port_open(port: int) -> bool:
    import socket
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def test_temporary_failure_then_success(tern_factory, dns):
    with SmtpReceiver() as mx:
        mx.rules.append(("RCPT TO:<bob@", "451 4.3.0 greylisted, try again", 1))
        start_dns(dns, "remote MX 10 mx1\nmx1 A 127.0.0.1\n")
        tern = relay_tern(tern_factory, dns, mx.port)
        queue_id = send(tern, ["bob@remote.tern-test"])
        tern.wait_log(rf'queue warn delivery deferred id={queue_id} to=bob@remote.tern-test '
                      r'reason="451 4.3.0 greylisted, try again"')
        (msg,) = mx.wait_for(1, timeout=15)
        assert msg.rcpt_to == ["bob@remote.tern-test"]
        tern.wait_log(rf"queue info delivered id={queue_id} to=bob@remote.tern-test attempts=2")
        assert b"Subject: outbound\r\n" in msg.data


def test_first_mx_down_second_takes_it(tern_factory, dns):
    with SmtpReceiver() as mx:
        start_dns(dns, "remote MX 10 down\n MX 20 up\ndown A 127.0.0.3\nup A 127.0.0.1\n")
        tern = relay_tern(tern_factory, dns, mx.port)
        queue_id = send(tern, ["bob@remote.tern-test"])
        mx.wait_for(1)
        tern.wait_log(rf'queue info delivered id={queue_id} to=bob@remote.tern-test attempts=1 '
                      r'relay="up.tern-test \[127\.0\.0\.1\]"')
        assert tern.log_count(r"relay warn relay: server did not take the message .*cannot connect to "
                              r"down\.tern-test \[127\.0\.0\.3\]") == 1


def test_4xx_greeting_moves_to_next_mx(tern_factory, dns):
    with SmtpReceiver() as good, SmtpReceiver(host="127.0.0.2", port=0) as busy:
        busy.stop()  # only its address is wanted; the busy server must listen on the relay port
        with SmtpReceiver(host="127.0.0.2", port=good.port) as busy:
            busy.rules.append(("CONNECT", "421 4.3.2 too busy", None))
            start_dns(dns, "remote MX 10 busy\n MX 20 good\nbusy A 127.0.0.2\ngood A 127.0.0.1\n")
            tern = relay_tern(tern_factory, dns, good.port)
            send(tern, ["bob@remote.tern-test"])
            good.wait_for(1)
            assert busy.connections >= 1 and busy.messages == []


# ---------------------------------------------------------------------------------------------
# Bounces


def test_5xx_bounces_with_rfc3464_report(tern_factory, dns):
    with SmtpReceiver(hostname="mx1.tern-test") as mx:
        mx.rules.append(("RCPT TO:<nobody@", "550 5.1.1 <nobody@remote.tern-test>: no such user", None))
        start_dns(dns, "remote MX 10 mx1\nmx1 A 127.0.0.1\n")
        tern = relay_tern(tern_factory, dns, mx.port)
        queue_id = send(tern, ["nobody@remote.tern-test", "bob@remote.tern-test"], subject="partly bounced",
                        rcpt_options=[])
        mx.wait_for(1)
        (dsn,) = dsns(tern, 1)
        assert dsn["From"] == "Mail Delivery System <MAILER-DAEMON@mail.example.test>"
        assert dsn["Subject"] == "Undelivered Mail Returned to Sender"
        assert dsn["Auto-Submitted"] == "auto-replied"
        groups = delivery_status(dsn)
        assert groups[0]["reporting-mta"] == "dns; mail.example.test"
        assert len(groups) == 2  # only the failed recipient is reported
        rcpt = groups[1]
        assert rcpt["final-recipient"] == "rfc822;nobody@remote.tern-test"
        assert rcpt["action"] == "failed"
        assert rcpt["status"] == "5.1.1"
        assert rcpt["remote-mta"] == "dns; mx1.tern-test"
        assert rcpt["diagnostic-code"].startswith("smtp; 550 5.1.1 <nobody@remote.tern-test>: no such user")
        original = list(dsn.iter_parts())[2]
        # No RET: the whole message comes back (RFC 3461 4.3 leaves it to the MTA; tern returns headers only
        # when RET=HDRS or the message is large).
        assert original.get_content_type() in ("message/rfc822", "text/rfc822-headers")
        assert "Subject: partly bounced" in original.as_string()
        # The bounce itself comes from the null sender, so it can never be bounced back.
        assert tern.log_count(r"queue info report queued id=\S+ about=" + queue_id + " to=alice@example.test") == 1


def test_null_mx_bounces_at_once(tern_factory, dns):
    start_dns(dns, "nomail MX 0 .\n")
    tern = relay_tern(tern_factory, dns, free_port())
    queue_id = send(tern, ["bob@nomail.tern-test"])
    (dsn,) = dsns(tern, 1)
    rcpt = delivery_status(dsn)[1]
    assert rcpt["status"] == "5.1.10"
    assert "null MX" in rcpt["diagnostic-code"]
    assert tern.log_count(rf"queue warn delivery deferred id={queue_id}") == 0


def test_nonexistent_domain_bounces(tern_factory, dns):
    start_dns(dns, "other A 127.0.0.1\n")
    tern = relay_tern(tern_factory, dns, free_port())
    send(tern, ["bob@no-such-domain.tern-test"])
    (dsn,) = dsns(tern, 1)
    rcpt = delivery_status(dsn)[1]
    assert rcpt["status"] == "5.1.2"
    assert rcpt["diagnostic-code"] == "x-tern; 5.1.2 domain no-such-domain.tern-test does not exist " \
                                      "(DNS: no such domain)"


def test_lifetime_expiry_bounces_with_last_error(tern_factory, dns):
    with SmtpReceiver() as mx:
        mx.rules.append(("MAIL FROM", "451 4.3.0 try later", None))
        start_dns(dns, "remote MX 10 mx1\nmx1 A 127.0.0.1\n")
        tern = relay_tern(tern_factory, dns, mx.port, queue={"lifetime": 4})
        queue_id = send(tern, ["bob@remote.tern-test"])
        (dsn,) = dsns(tern, 1, timeout=30)
        rcpt = delivery_status(dsn)[1]
        assert rcpt["action"] == "failed"
        assert rcpt["status"] == "4.4.7"
        assert "451 4.3.0 try later" in rcpt["diagnostic-code"]
        tern.wait_log(rf"queue error delivery failed: queue lifetime reached id={queue_id}")


def test_delay_warning_then_delivery(tern_factory, dns):
    with SmtpReceiver() as mx:
        mx.rules.append(("MAIL FROM", "451 4.3.0 try later", None))
        start_dns(dns, "remote MX 10 mx1\nmx1 A 127.0.0.1\n")
        tern = relay_tern(tern_factory, dns, mx.port, queue={"delay_warning": 2, "lifetime": 3600})
        queue_id = send(tern, ["bob@remote.tern-test"], subject="slow")
        (notice,) = dsns(tern, 1, timeout=30)
        assert notice["Subject"] == "Delayed Mail (still being retried)"
        rcpt = delivery_status(notice)[1]
        assert rcpt["action"] == "delayed"
        assert rcpt["status"] == "4.3.0"
        assert "will-retry-until" in rcpt
        assert list(notice.iter_parts())[2].get_content_type() == "text/rfc822-headers"
        mx.rules.clear()
        tern.cli("queue", "flush", queue_id, check=True)
        mx.wait_for(1)
        time.sleep(6)  # one notice per message, however long it stays
        assert len(tern.messages("alice")) == 1


def test_no_bounce_to_null_sender_double_bounce_to_postmaster(tern_factory, dns):
    with SmtpReceiver() as mx:
        mx.rules.append(("RCPT TO:", "550 5.1.1 unknown", None))
        start_dns(dns, "remote MX 10 mx1\nmx1 A 127.0.0.1\n")
        tern = relay_tern(tern_factory, dns, mx.port, queue={"double_bounce_to": "dave@example.test"})
        queue_id = send(tern, ["bob@remote.tern-test"], sender="")
        (double,) = tern.wait_messages("dave", 1, timeout=20)
        report = email.message_from_bytes(double, policy=email.policy.default)
        rcpt = delivery_status(report)[1]
        assert rcpt["final-recipient"] == "rfc822;bob@remote.tern-test"
        # The original's header only, and nothing to alice or anyone else.
        assert list(report.iter_parts())[2].get_content_type() == "text/rfc822-headers"
        time.sleep(1)
        assert tern.messages("alice") == []
        assert tern.log_count(r"about=" + queue_id + " to=dave@example.test") == 1


def test_notify_never_and_success(tern_factory, dns):
    with SmtpReceiver(dsn=False) as mx:
        mx.rules.append(("RCPT TO:<gone@", "550 5.1.1 unknown", None))
        start_dns(dns, "remote MX 10 mx1\nmx1 A 127.0.0.1\n")
        tern = relay_tern(tern_factory, dns, mx.port)
        q1 = send(tern, ["gone@remote.tern-test"], subject="never", rcpt_options=["NOTIFY=NEVER"])
        tern.wait_log(rf"queue error delivery failed permanently id={q1}")
        # A server without DSN gets the message; the sender asked for success notices: "relayed".
        send(tern, ["bob@remote.tern-test"], subject="success", mail_options=["RET=HDRS", "ENVID=env+2Bid"],
             rcpt_options=["NOTIFY=SUCCESS", "ORCPT=rfc822;Bob@Remote.tern-test"])
        (dsn,) = dsns(tern, 1)
        assert dsn["Subject"] == "Successful Mail Delivery Report"
        groups = delivery_status(dsn)
        assert groups[0]["original-envelope-id"] == "env+id"  # decoded from xtext
        assert groups[1]["action"] == "relayed"
        assert groups[1]["original-recipient"] == "rfc822;Bob@Remote.tern-test"
        assert list(dsn.iter_parts())[2].get_content_type() == "text/rfc822-headers"


def test_dsn_parameters_are_passed_on(tern_factory, dns):
    with SmtpReceiver() as mx:
        start_dns(dns, "remote MX 10 mx1\nmx1 A 127.0.0.1\n")
        tern = relay_tern(tern_factory, dns, mx.port)
        send(tern, ["bob@remote.tern-test"], mail_options=["RET=FULL", "ENVID=abc+2Bdef"],
             rcpt_options=["NOTIFY=FAILURE,DELAY", "ORCPT=rfc822;bob+2Bx@remote.tern-test"])
        (msg,) = mx.wait_for(1)
        assert msg.mail_params["RET"] == "FULL"
        assert msg.mail_params["ENVID"] == "abc+2Bdef"
        assert msg.rcpt_params[0]["NOTIFY"] == "FAILURE,DELAY"
        assert msg.rcpt_params[0]["ORCPT"] == "rfc822;bob+2Bx@remote.tern-test"
        # The server supports DSN: it reports success itself, so tern sends no "relayed" notice.
        time.sleep(1)
        assert tern.messages("alice") == []


# ---------------------------------------------------------------------------------------------
# TLS and DANE


def test_opportunistic_starttls_is_used_and_logged(tern_factory, dns, world_readable_dir):
    cert = tlslib.self_signed(world_readable_dir, "mx1", ["mx1.tern-test"])
    with SmtpReceiver(starttls=(cert.certfile, cert.keyfile)) as mx:
        start_dns(dns, "remote MX 10 mx1\nmx1 A 127.0.0.1\n")
        tern = relay_tern(tern_factory, dns, mx.port)
        queue_id = send(tern, ["bob@remote.tern-test"])
        (msg,) = mx.wait_for(1)
        assert msg.tls and msg.sni == "mx1.tern-test"
        tern.wait_log(rf'relay info relayed id={queue_id} to=bob@remote.tern-test status=sent '
                      r'mta="mx1.tern-test \[127\.0\.0\.1\]" tls="TLSv1\.3 \S+ verified=no"')


def test_tls_required_but_not_offered_defers_then_bounces(tern_factory, dns):
    with SmtpReceiver() as mx:
        start_dns(dns, "secure MX 10 mx1\nmx1 A 127.0.0.1\n")
        tern = relay_tern(tern_factory, dns, mx.port, queue={"lifetime": 4},
                          routes=[{"domain": "secure.tern-test", "tls": "encrypt"}])
        queue_id = send(tern, ["bob@secure.tern-test"])
        tern.wait_log(rf'queue warn delivery deferred id={queue_id} to=bob@secure.tern-test '
                      r'reason="4\.7\.4 TLS is required for secure\.tern-test \(policy encrypt\) but '
                      r'mx1\.tern-test \[127\.0\.0\.1\] does not offer STARTTLS"')
        (dsn,) = dsns(tern, 1, timeout=30)
        rcpt = delivery_status(dsn)[1]
        assert rcpt["status"] == "4.4.7" and "4.7.4 TLS is required" in rcpt["diagnostic-code"]
        assert mx.messages == []


def test_dane_matching_certificate_is_verified(tern_factory, dns, world_readable_dir):
    cert = tlslib.self_signed(world_readable_dir, "mx1", ["mx1.tern-test"])
    with SmtpReceiver(starttls=(cert.certfile, cert.keyfile)) as mx:
        start_dns(dns, "remote MX 10 mx1\nmx1 A 127.0.0.1\n"
                  + tlslib.tlsa_record("mx1.tern-test.", 3, 1, 1, cert.tlsa_3_1_1(), port=mx.port) + "\n")
        tern = relay_tern(tern_factory, dns, mx.port)
        queue_id = send(tern, ["bob@remote.tern-test"])
        (msg,) = mx.wait_for(1)
        assert msg.tls
        tern.wait_log(rf'relay info relayed id={queue_id} .* tls="TLSv1\.3 \S+ verified=dane"')


def test_dane_mismatching_certificate_defers(tern_factory, dns, world_readable_dir):
    served = tlslib.self_signed(world_readable_dir, "mx1", ["mx1.tern-test"])
    published = tlslib.self_signed(world_readable_dir / "other" if (world_readable_dir / "other").mkdir() is None
                                   else world_readable_dir, "other", ["mx1.tern-test"])
    with SmtpReceiver(starttls=(served.certfile, served.keyfile)) as mx:
        start_dns(dns, "remote MX 10 mx1\nmx1 A 127.0.0.1\n"
                  + tlslib.tlsa_record("mx1.tern-test.", 3, 1, 1, published.tlsa_3_1_1(), port=mx.port) + "\n")
        tern = relay_tern(tern_factory, dns, mx.port)
        queue_id = send(tern, ["bob@remote.tern-test"])
        tern.wait_log(rf'queue warn delivery deferred id={queue_id} to=bob@remote.tern-test '
                      r'reason="4\.7\.5 TLS handshake with mx1\.tern-test \[127\.0\.0\.1\] failed '
                      r'\(certificate: .*\) \[DANE\]"')
        assert mx.messages == []


# ---------------------------------------------------------------------------------------------
# Routes (smtproutes)


def test_route_to_smarthost_with_auth(tern_factory, dns, world_readable_dir):
    cert = tlslib.self_signed(world_readable_dir, "smarthost", ["smarthost.tern-test"])
    password = world_readable_dir / "smarthost.pw"
    password.write_text("s3cret pass\n")
    os.chmod(password, 0o644)
    with SmtpReceiver(hostname="smarthost.tern-test", starttls=(cert.certfile, cert.keyfile),
                      auth={"relay-user": "s3cret pass"}) as smarthost:
        start_dns(dns, "smarthost A 127.0.0.1\n")
        tern = relay_tern(tern_factory, dns, free_port(),
                          routes=[{"domain": "*", "host": "smarthost.tern-test", "port": smarthost.port,
                                   "tls": "encrypt", "auth_user": "relay-user",
                                   "auth_password_file": str(password)}])
        queue_id = send(tern, ["someone@elsewhere.example", "other@another.example"])
        msgs = smarthost.wait_for(2)
        assert all(m.auth_user == "relay-user" and m.tls for m in msgs)
        assert sorted(r for m in msgs for r in m.rcpt_to) == ["other@another.example", "someone@elsewhere.example"]
        tern.wait_log(rf'queue info delivered id={queue_id} to=someone@elsewhere.example attempts=1 '
                      r'relay="smarthost\.tern-test \[127\.0\.0\.1\]"')


def test_route_with_wrong_password_defers(tern_factory, dns, world_readable_dir):
    password = world_readable_dir / "bad.pw"
    password.write_text("wrong\n")
    os.chmod(password, 0o644)
    with SmtpReceiver(auth={"relay-user": "right"}) as smarthost:
        start_dns(dns, "smarthost A 127.0.0.1\n")
        tern = relay_tern(tern_factory, dns, free_port(),
                          routes=[{"domain": "*", "host": "[127.0.0.1]", "port": smarthost.port, "tls": "none",
                                   "auth_user": "relay-user", "auth_password_file": str(password)}])
        queue_id = send(tern, ["someone@elsewhere.example"])
        tern.wait_log(rf'queue warn delivery deferred id={queue_id} to=someone@elsewhere.example '
                      r'reason="4\.7\.0 \[127\.0\.0\.1\] refused the login of relay-user: 535 5\.7\.8 ')
        assert smarthost.messages == []


# ---------------------------------------------------------------------------------------------
# Connection reuse and the queue commands


def test_connection_is_reused_for_the_next_message(tern_factory, dns):
    with SmtpReceiver() as mx:
        start_dns(dns, "remote MX 10 mx1\nmx1 A 127.0.0.1\n")
        tern = relay_tern(tern_factory, dns, mx.port, relay={"connection_cache_time": 30})
        send(tern, ["bob@remote.tern-test"], subject="first")
        mx.wait_for(1)
        send(tern, ["carol@remote.tern-test"], subject="second")
        mx.wait_for(2)
        assert mx.connections == 1
        assert [c for c in mx.commands if c.upper().startswith("RSET")] == ["RSET"]


@pytest.mark.parametrize("reply", ["", "421 4.4.2 idle too long, closing"], ids=["closed", "421"])
def test_dead_cached_connection_is_replaced_at_once(tern_factory, dns, reply):
    """The server drops a cached connection after RSET (no reply to MAIL, or 421): nothing was
    delivered on it, so the message goes out on a new connection in the same attempt, not a
    deferral."""
    with SmtpReceiver() as mx:
        start_dns(dns, "remote MX 10 mx1\nmx1 A 127.0.0.1\n")
        tern = relay_tern(tern_factory, dns, mx.port, relay={"connection_cache_time": 30})
        send(tern, ["bob@remote.tern-test"], subject="first")
        mx.wait_for(1)
        mx.rules.append(("MAIL FROM", reply, 1))
        second = send(tern, ["carol@remote.tern-test"], subject="second")
        (_, msg) = mx.wait_for(2)
        assert msg.message()["Subject"] == "second"
        assert mx.connections == 2
        tern.wait_log(rf"queue info delivered id={second} to=carol@remote.tern-test attempts=1 ")
        assert tern.log_count(r"relay info relay: a cached connection failed; trying a new one "
                              rf"id={second} ") == 1
        assert tern.log_count(r"delivery deferred") == 0


def test_queue_commands(tern_factory, dns):
    with SmtpReceiver() as mx:
        mx.rules.append(("MAIL FROM", "451 4.3.0 not now", None))
        start_dns(dns, "remote MX 10 mx1\nmx1 A 127.0.0.1\n")
        tern = relay_tern(tern_factory, dns, mx.port, queue={"retry_initial": 3600, "retry_max": 3600})
        queue_id = send(tern, ["bob@remote.tern-test"], subject="queued")
        tern.wait_log(rf"queue warn delivery deferred id={queue_id}")
        listing = tern.cli("queue", "list", check=True).stdout
        assert queue_id in listing and "bob@remote.tern-test  pending, 1 attempts, next in" in listing
        assert "451 4.3.0 not now" in listing
        summary = tern.cli("queue", "summary", check=True).stdout
        assert "messages:            1\n" in summary and "    1  remote.tern-test\n" in summary
        shown = tern.cli("queue", "show", queue_id, check=True).stdout
        assert "Subject: queued" in shown and "sender:    <alice@example.test>" in shown
        assert tern.cli("queue", "hold", queue_id, check=True).stdout == f"held {queue_id}\n"
        # The answer comes once the change is on disk.
        assert "\nhold\n" in (tern.data_dir / "spool" / "env" / queue_id).read_text()
        mx.rules.clear()
        assert tern.cli("queue", "flush", queue_id, check=True).stdout == f"flushing {queue_id}\n"
        time.sleep(1.5)
        assert mx.messages == []  # held: the flush does not deliver it
        assert tern.cli("queue", "release", queue_id, check=True).stdout == f"released {queue_id}\n"
        try:  # released: it may already be delivered and gone
            assert "\nhold\n" not in (tern.data_dir / "spool" / "env" / queue_id).read_text()
        except FileNotFoundError:
            pass
        tern.cli("queue", "flush", check=True)
        mx.wait_for(1)
        wait_until(lambda: tern.cli("queue", "list").stdout == "the queue is empty\n", message="an empty queue")
        missing = tern.cli("queue", "show", queue_id)
        assert missing.returncode == 1
        assert missing.stderr == f"tern: no message {queue_id} in the queue (see `tern queue list`)\n"


def test_queue_delete_removes_without_bounce(tern_factory, dns):
    with SmtpReceiver() as mx:
        mx.rules.append(("MAIL FROM", "451 4.3.0 not now", None))
        start_dns(dns, "remote MX 10 mx1\nmx1 A 127.0.0.1\n")
        tern = relay_tern(tern_factory, dns, mx.port, queue={"retry_initial": 3600, "retry_max": 3600})
        queue_id = send(tern, ["bob@remote.tern-test"])
        tern.wait_log(rf"queue warn delivery deferred id={queue_id}")
        assert tern.cli("queue", "delete", queue_id, check=True).stdout == f"deleted {queue_id}\n"
        assert not (tern.data_dir / "spool" / "env" / queue_id).exists()
        assert not (tern.data_dir / "spool" / "msg" / queue_id).exists()
        time.sleep(1)
        assert tern.messages("alice") == []


def test_queue_command_without_a_running_tern(tern_factory):
    tern = tern_factory(start=False)
    r = tern.cli("queue", "list")
    assert r.returncode == 75
    assert r.stderr.startswith("tern: cannot reach the queue service at ")
    assert "is tern running with this configuration?" in r.stderr


# ---------------------------------------------------------------------------------------------
# Crash safety


def try_send(tern, subject: str) -> bool:
    """One message; True on 250, False when tern answered 4xx or the connection failed (the
    client tries again later, as a real one would)."""
    try:
        with smtplib.SMTP("127.0.0.1", tern.port, local_hostname="client.test", timeout=30) as s:
            s.sendmail(SENDER, ["bob@remote.tern-test"],
                       f"From: {SENDER}\r\nTo: bob@remote.tern-test\r\nSubject: {subject}\r\n\r\nburst\r\n")
        return True
    except (smtplib.SMTPException, OSError):
        return False


def test_kill_queue_and_relay_during_a_burst_loses_nothing(tern_factory, dns):
    import threading
    with SmtpReceiver() as mx:
        start_dns(dns, "remote MX 10 mx1\nmx1 A 127.0.0.1\n")
        tern = relay_tern(tern_factory, dns, mx.port)
        # The client sends at least `least` messages and goes on until the kills are over, so a
        # fast machine cannot finish the burst between two kills.
        least, most, kills = 40, 1000, 0
        accepted: list[str] = []
        kills_over = threading.Event()
        done = threading.Event()

        def client():
            i = 0
            while i < most and (i < least or not kills_over.is_set()):
                while not try_send(tern, f"burst {i}"):
                    time.sleep(0.2)
                accepted.append(f"burst {i}")
                i += 1
            done.set()

        sender = threading.Thread(target=client, daemon=True)
        sender.start()
        # SIGKILL queue and relay together, four times, each time once both run again (the
        # master's restart back-off doubles: 1, 2, 4, 8 s).
        while kills < 4 and not done.is_set():
            wait_until(lambda: tern.child_pid("queue") and tern.child_pid("relay"), timeout=30,
                       message="the master to restart queue and relay")
            time.sleep(0.3)
            for name in ("queue", "relay"):
                pid = tern.child_pid(name)
                if pid:
                    os.kill(pid, signal.SIGKILL)
            kills += 1
        kills_over.set()
        assert done.wait(120), f"the client got only {len(accepted)} messages accepted"
        total = len(accepted)
        subjects = lambda: {m.message()["Subject"] for m in mx.messages}
        wait_until(lambda: subjects() >= set(accepted), timeout=90,
                   message=f"all {total} accepted messages to reach the receiver")
        duplicates = len(mx.messages) - len(subjects())
        print(f"crash test: {total} accepted, {len(subjects())} delivered, {duplicates} duplicates, "
              f"{kills} kills of queue and relay")
        assert kills == 4 and total >= least
        assert subjects() == set(accepted) == {f"burst {i}" for i in range(total)}
        wait_until(lambda: not any((tern.data_dir / "spool" / "env").iterdir()), timeout=30,
                   message="the spool to empty")
        assert not any((tern.data_dir / "spool" / "msg").iterdir())


def test_slow_domain_does_not_hold_up_others(tern_factory, dns, world_readable_dir):
    """concurrency_per_domain = 1: a destination that takes 3 s per message gets one connection,
    and mail for another destination queued after it goes out at once."""
    with SmtpReceiver() as fast:
        user = ["-u", "nobody"] if IS_ROOT else []
        slow = subprocess.Popen(["smtp-sink", *user, "-w", "3", f"127.0.0.2:{fast.port}", "100"])
        try:
            wait_until(lambda: _port_open_at("127.0.0.2", fast.port), message="smtp-sink to listen")
            start_dns(dns, "slow MX 10 mxs\nmxs A 127.0.0.2\nfast MX 10 mxf\nmxf A 127.0.0.1\n")
            tern = relay_tern(tern_factory, dns, fast.port,
                              queue={"concurrency_per_domain": 1, "concurrency_remote": 4})
            slow_ids = [send(tern, ["someone@slow.tern-test"], subject=f"slow {i}") for i in range(4)]
            fast_id = send(tern, ["someone@fast.tern-test"], subject="fast")
            fast.wait_for(1, timeout=10)
            done_slow = sum(tern.log_count(rf"queue info delivered id={i} ") for i in slow_ids)
            assert done_slow <= 1, "the fast destination waited behind the slow one"
            tern.wait_log(rf"queue info delivered id={fast_id} ")
            for i in slow_ids:
                tern.wait_log(rf"queue info delivered id={i} ", timeout=30)
            # One transaction at a time to the slow destination: each ends a full DATA delay (3 s)
            # after the one before it.
            from datetime import datetime
            ends = [datetime.fromisoformat(line.split(" ", 1)[0].rstrip("Z")) for line in tern.lines()
                    if "relay info relayed" in line and "slow.tern-test" in line]
            assert len(ends) == 4
            gaps = [(b - a).total_seconds() for a, b in zip(ends, ends[1:])]
            assert all(g >= 2.5 for g in gaps), gaps
        finally:
            slow.terminate()
            slow.wait(timeout=5)


def _port_open_at(host: str, port: int) -> bool:
    import socket
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def test_stop_does_not_wait_for_a_hung_relay_transaction(tern_factory, dns, world_readable_dir):
    """A server that never answers DATA: tern stops within seconds (the queue and the relay give
    transactions in progress 5 s each), the message stays queued, and after a restart it goes
    out to a server that answers."""
    with SmtpReceiver() as good:
        user = ["-u", "nobody"] if IS_ROOT else []
        hung = subprocess.Popen(["smtp-sink", *user, "-w", "600", f"127.0.0.2:{good.port}", "100"])
        try:
            wait_until(lambda: _port_open_at("127.0.0.2", good.port), message="smtp-sink to listen")
            start_dns(dns, "remote MX 10 mx1\nmx1 A 127.0.0.2\n")
            tern = relay_tern(tern_factory, dns, good.port)
            queue_id = send(tern, ["bob@remote.tern-test"], subject="hung")
            wait_until(lambda: tern.cli("queue", "list").stdout.count("delivering") == 1,
                       message="the relay transaction to start")
            started = time.monotonic()
            assert tern.stop(timeout=14) == 0
            assert time.monotonic() - started < 13
            tern.wait_log(r"queue warn stopping without the answers of relay transactions in progress; their "
                          r"recipients are tried again at the next start transactions=1$")
            assert (tern.data_dir / "spool" / "env" / queue_id).exists()
        finally:
            hung.terminate()
            hung.wait(timeout=5)
        start_dns(dns, "remote MX 10 mx1\nmx1 A 127.0.0.1\n")
        tern.start()
        (msg,) = good.wait_for(1, timeout=20)
        assert msg.message()["Subject"] == "hung"
        tern.wait_log(rf"queue info delivered id={queue_id} to=bob@remote.tern-test ")


def test_a_second_tern_as_the_next_hop(tern_factory, dns):
    """tern relays to another tern: one with the DSN extension and a Maildir user at the far
    end. The message lands in bob's Maildir there with both terns' Received lines, NOTIFY and
    ORCPT pass on (the far tern takes the success report over), and a recipient the far tern
    does not know is bounced with its 550 in the DSN."""
    far = tern_factory(domains=["remote.tern-test"], users=["bob@remote.tern-test"])
    start_dns(dns, "remote MX 10 mx1\nmx1 A 127.0.0.1\n")
    near = relay_tern(tern_factory, dns, far.port)
    queue_id = send(near, ["bob@remote.tern-test"], subject="tern to tern",
                    rcpt_options=["NOTIFY=SUCCESS,FAILURE", "ORCPT=rfc822;bob@remote.tern-test"])
    (content,) = far.wait_messages("bob@remote.tern-test", 1)
    text = content.decode()
    header = text.split("\n\n", 1)[0]
    assert header.count("\nReceived: from ") == 2, header  # the near tern's, then the far one's
    assert "Delivered-To: bob@remote.tern-test\n" in header
    assert "Subject: tern to tern" in text
    near.wait_log(rf"relay info relayed id={queue_id} to=bob@remote.tern-test status=sent ")
    near.wait_log(rf"queue info delivered id={queue_id} to=bob@remote.tern-test attempts=1 ")
    # The far tern said DSN: success notices are its job now, so the near one sends none.
    assert near.log_count(rf"report queued id=\S+ about={queue_id} ") == 0
    bad_id = send(near, ["nobody@remote.tern-test"], subject="unknown there")
    near.wait_log(rf"queue error delivery failed permanently id={bad_id} to=nobody@remote.tern-test "
                  r"reason=\"550 5\.1\.1 <nobody@remote\.tern-test>: No such user here\"")
    near.wait_log(rf"report queued id=\S+ about={bad_id} to=alice@example.test ")
