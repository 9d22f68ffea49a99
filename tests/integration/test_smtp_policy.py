"""The SMTP client policy (docs/smtp-policy.md): connection limits per address and per network,
tcprules-syntax access rules and [[smtp.access]], the greeting delay and early talkers, the sender
domain check (MFCHECK), bad_senders / bad_recipients, the unknown-recipient limit, DNS block and
allow lists (rblsmtpd) and greylisting (jgreylist). Clients are smtplib and raw sockets bound to
their own loopback addresses (all of 127.0.0.0/8 is local on Linux), so each test can play
several clients; the exact replies are asserted, and what was accepted is checked in the Maildir.
"""
from __future__ import annotations

import base64
import os
import smtplib
import socket
import subprocess
import time
from pathlib import Path

import pytest

import dnslib
from test_relay import dns, start_dns, world_readable_dir  # noqa: F401 (fixtures)
from ternlib import HOSTNAME, ConnectionClosed, SmtpClient, free_port, wait_until

pytestmark = pytest.mark.backend_independent

MESSAGE = "From: x@example.org\r\nTo: alice@example.test\r\nSubject: policy\r\n\r\nhello\r\n"


@pytest.fixture
def shared_dir(world_readable_dir):  # noqa: F811
    """A directory the smtp user can read: rules files, pattern files."""
    return world_readable_dir


def serve(dns: dnslib.DnsServer, records: str) -> dict:
    """Starts the test DNS server with `records`; the [dns] section that names it."""
    start_dns(dns, records)
    return {"forwarders": [dns.forwarder], "trust_anchor": str(dns.anchor)}


def write_file(path: Path, text: str) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def closed(c: SmtpClient) -> bool:
    try:
        c._fill()
    except ConnectionClosed:
        return True
    return False


def transaction(c: SmtpClient, sender: str = "x@example.org", rcpt: str = "alice@example.test") -> tuple[str, str]:
    assert c.cmd("EHLO client.test").startswith("250")
    return c.cmd(f"MAIL FROM:<{sender}>"), c.cmd(f"RCPT TO:<{rcpt}>")


def send_message(c: SmtpClient) -> str:
    assert c.cmd("DATA").startswith("354")
    c.send(MESSAGE + ".\r\n")
    return c.read_reply()


# ---------------------------------------------------------------------------------------------
# Connection limits


def test_flood_from_one_address_is_cut_while_another_is_served(tern_factory):
    tern = tern_factory(smtp={"max_connections_per_ip": 3, "too_many_per_ip_message": "Too many from you"})
    flood = [SmtpClient(tern.port, source="127.0.0.2") for _ in range(3)]
    assert all(c.greeting.startswith("220 ") for c in flood)
    for _ in range(5):  # every further connection from that address is cut at once
        with SmtpClient(tern.port, greeting=False, source="127.0.0.2") as extra:
            assert extra.read_reply() == "421 4.7.0 Too many from you"
            assert closed(extra)
    with SmtpClient(tern.port, source="127.0.0.3") as other:  # another address is still served
        assert other.greeting.startswith("220 ")
        assert transaction(other)[1].startswith("250 ")
        assert send_message(other).startswith("250 ")
    tern.wait_messages("alice", 1)
    flood.pop().close()  # a slot frees up
    wait_until(lambda: SmtpClient(tern.port, source="127.0.0.2").greeting.startswith("220 "), timeout=10)
    for c in flood:
        c.close()
    assert tern.log_count(r"smtp info connection refused client=\[127\.0\.0\.2\] .*rule=max_connections_per_ip "
                          r"reply=\"421 4\.7\.0\"") >= 5


def test_per_network_limit_counts_the_slash_24(tern_factory):
    tern = tern_factory(smtp={"max_connections_per_network": 2})
    held = [SmtpClient(tern.port, source="127.0.5.1"), SmtpClient(tern.port, source="127.0.5.2")]
    with SmtpClient(tern.port, greeting=False, source="127.0.5.3") as extra:
        assert extra.read_reply() == f"421 4.7.0 {HOSTNAME} Too many connections from your network, try again later"
    with SmtpClient(tern.port, source="127.0.6.1") as other:
        assert other.greeting.startswith("220 ")
    for c in held:
        c.close()


def test_relay_networks_are_not_limited(tern_factory):
    tern = tern_factory(smtp={"max_connections_per_ip": 1, "relay_networks": ["127.0.0.7"]})
    clients = [SmtpClient(tern.port, source="127.0.0.7") for _ in range(4)]
    assert all(c.greeting.startswith("220 ") for c in clients)
    for c in clients:
        c.close()


def test_zero_refuses_every_connection(tern_factory):
    tern = tern_factory(smtp={"max_connections_per_ip": 0})
    with SmtpClient(tern.port, greeting=False) as c:
        assert c.read_reply() == f"421 4.7.0 {HOSTNAME} Too many connections from your address, try again later"


def load_average() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


def test_load_limit(tern_factory):
    # The 1-minute load average cannot be set; make sure it is clearly above the limit first
    # (it decays by about a fifth a minute, so it stays above for the rest of the test).
    deadline = time.monotonic() + 60
    spinners = []
    try:
        while load_average() < 0.05:
            assert time.monotonic() < deadline, "could not raise the load average to 0.05"
            if not spinners:
                spinners = [subprocess.Popen(["/usr/bin/python3", "-c", "while True: pass"]) for _ in range(2)]
            time.sleep(1)
    finally:
        for p in spinners:
            p.kill()
            p.wait()
    tern = tern_factory(smtp={"max_load": 0.01, "overloaded_message": "Too busy right now"})
    with SmtpClient(tern.port, greeting=False) as c:
        assert c.read_reply() == "421 4.7.0 Too busy right now"
        assert closed(c)
    tern.wait_log(r"connection refused client=\[127\.0\.0\.1\] .*rule=max_load reply=\"421 4\.7\.0\"")
    tern.reload(smtp={"max_load": 0})
    with SmtpClient(tern.port) as c:
        assert c.greeting.startswith("220 ")


def test_ipv6_clients_rules_and_limits(tern_factory, shared_dir):
    rules = shared_dir / "smtp.rules"
    write_file(rules, '::1:allow,MAXCONNIP="1",RBLSMTPD="-No IPv6 spam"\n:allow\n')
    port6 = free_port()
    tern = tern_factory(smtp={"access_rules": str(rules)})
    tern.reload(smtp={"listen": [f"127.0.0.1:{tern.port}", f"[::1]:{port6}"]})
    tern.stop()  # listen addresses take effect at a start
    tern.start()
    held = SmtpClient(port6, host="::1")
    assert held.greeting.startswith("220 ")
    with SmtpClient(port6, host="::1", greeting=False) as c:  # MAXCONNIP="1" for ::1
        assert c.read_reply() == f"421 4.7.0 {HOSTNAME} Too many connections from your address, try again later"
    with SmtpClient(tern.port) as c:  # IPv4 is served meanwhile
        assert transaction(c)[1].startswith("250 ")
    held.close()

    def rule_applies() -> bool:
        with SmtpClient(port6, host="::1") as c:
            return transaction(c)[1] == "553 5.7.1 No IPv6 spam"
    wait_until(rule_applies, timeout=10, message="the ::1 rule applies once the held connection is gone")
    write_file(rules, '::1/128:deny,DIEMSG="Not over IPv6"\n:allow\n')

    def denied() -> bool:
        with SmtpClient(port6, host="::1", greeting=False) as c:
            return c.read_reply() == "554 5.7.1 Not over IPv6"
    wait_until(denied, timeout=10, message="the CIDR rule for ::1/128 applies")
    tern.wait_log(r"connection refused client=\[::1\] name=\"\" listener=smtp rule=\S+smtp\.rules:1 ")


# ---------------------------------------------------------------------------------------------
# Access rules: the tcprules file and [[smtp.access]]

RULES = """\
# tcprules syntax, read as it is (no cdb)
127.0.0.9:deny
127.0.0.10:deny,DIEMSG="No mail from 127.0.0.10"
127.0.0.11:allow,RELAYCLIENT=""
127.0.0.12:allow,DATABYTES="2000",MAXRCPT="2"
127.0.0.13:allow,RBLSMTPD="-Blocked by rule"
127.0.0.14:allow,RBLSMTPD='Try later'
127.0.0.15:allow,REQUIRE_AUTH="1"
127.0.1.:allow,MAXCONNIP="1"
:allow
"""


def test_access_rules_file(tern_factory, shared_dir):
    rules = shared_dir / "smtp.rules"
    write_file(rules, RULES)
    tern = tern_factory(smtp={"access_rules": str(rules)})
    with SmtpClient(tern.port, greeting=False, source="127.0.0.9") as c:
        assert c.read_reply() == "554 5.7.1 Connections from [127.0.0.9] are refused by this server's policy"
        assert closed(c)
    with SmtpClient(tern.port, greeting=False, source="127.0.0.10") as c:
        assert c.read_reply() == "554 5.7.1 No mail from 127.0.0.10"
    with SmtpClient(tern.port, source="127.0.0.11") as c:  # RELAYCLIENT: may relay
        assert transaction(c, rcpt="someone@outside.example")[1] == "250 2.1.5 Recipient <someone@outside.example> OK"
    with SmtpClient(tern.port, source="127.0.0.12") as c:  # DATABYTES and MAXRCPT
        assert "250-SIZE 2000" in c.cmd("EHLO client.test").split("\n")
        assert c.cmd("MAIL FROM:<x@example.org> SIZE=2001") == \
            "552 5.3.4 Message size exceeds fixed maximum message size"
        assert c.cmd("MAIL FROM:<x@example.org>").startswith("250 ")
        assert c.cmd("RCPT TO:<alice@example.test>").startswith("250 ")
        assert c.cmd("RCPT TO:<dave@example.test>").startswith("250 ")
        assert c.cmd("RCPT TO:<erin@example.test>") == "452 4.5.3 Too many recipients"
    with SmtpClient(tern.port, source="127.0.0.13") as c:  # RBLSMTPD="-text": 553 at every RCPT
        assert transaction(c)[1] == "553 5.7.1 Blocked by rule"
        assert c.cmd("RCPT TO:<dave@example.test>") == "553 5.7.1 Blocked by rule"
    with SmtpClient(tern.port, source="127.0.0.14") as c:  # RBLSMTPD="text": 451
        assert transaction(c)[1] == "451 4.7.1 Try later"
    with SmtpClient(tern.port, source="127.0.0.15") as c:  # REQUIRE_AUTH
        assert c.cmd("EHLO client.test").startswith("250")
        assert c.cmd("MAIL FROM:<x@example.org>") == "530 5.7.0 Authentication required"
    held = SmtpClient(tern.port, source="127.0.1.5")  # MAXCONNIP from the 127.0.1. prefix rule
    with SmtpClient(tern.port, greeting=False, source="127.0.1.5") as c:
        assert c.read_reply() == f"421 4.7.0 {HOSTNAME} Too many connections from your address, try again later"
    held.close()
    with SmtpClient(tern.port, source="127.0.0.1") as c:  # the default rule
        assert transaction(c)[1].startswith("250 ")
    assert tern.log_count(rf"connection refused client=\[127\.0\.0\.9\] .*rule={rules}:2 ") == 1
    assert tern.log_count(rf"recipient refused client=\[127\.0\.0\.13\] .*rule=\"?{rules}:6 RBLSMTPD") == 2


def test_access_rules_reload_and_a_bad_file_keeps_the_old_rules(tern_factory, shared_dir):
    rules = shared_dir / "smtp.rules"
    write_file(rules, "127.0.0.11:allow,RELAYCLIENT=\"\"\n:allow\n")
    tern = tern_factory(smtp={"access_rules": str(rules)})
    with SmtpClient(tern.port, source="127.0.0.11") as c:
        assert transaction(c, rcpt="x@outside.example")[1].startswith("250 ")
    write_file(rules, "127.0.0.11:deny\n:allow\n")  # picked up without a restart or a cdb

    def denied() -> bool:
        with SmtpClient(tern.port, greeting=False, source="127.0.0.11") as c:
            return c.read_reply().startswith("554 ")
    wait_until(denied, timeout=10, message="the new rules apply")
    write_file(rules, "127.0.0.11:allow,RELAYCLIENT=\"\n:permit\n")  # broken: the previous rules stay
    time.sleep(1.1)  # files are looked at, at most once a second, when a client connects
    with SmtpClient(tern.port, greeting=False, source="127.0.0.11") as c:
        assert c.read_reply() == "554 5.7.1 Connections from [127.0.0.11] are refused by this server's policy"
    tern.wait_log(r"access rules not reloaded; the previous rules stay .*smtp\.rules:1: .*smtp\.rules:2: ")
    with SmtpClient(tern.port, source="127.0.0.12") as c:
        assert c.greeting.startswith("220 ")


def test_unusable_rules_at_start_answer_421(tern_factory, shared_dir):
    rules = shared_dir / "smtp.rules"
    write_file(rules, "1.2.3.4:allow,RELAYCLIENT\n")
    tern = tern_factory(smtp={"access_rules": str(rules)})
    with SmtpClient(tern.port, greeting=False) as c:
        assert c.read_reply() == f"421 4.3.0 {HOSTNAME} Access policy temporarily unavailable, try again later"
    assert tern.log_count(r"access rules unusable; every connection gets 421 until the file is fixed") >= 1
    write_file(rules, ":allow\n")
    wait_until(lambda: SmtpClient(tern.port).greeting.startswith("220 "), timeout=10)


def test_access_rules_in_the_configuration(tern_factory):
    tern = tern_factory(smtp={"access": [
        {"networks": ["127.0.0.20"], "action": "deny", "message": "Not from the lab network"},
        {"networks": ["127.0.0.21/32", "::1"], "relay": True, "max_recipients": 1},
    ]})
    with SmtpClient(tern.port, greeting=False, source="127.0.0.20") as c:
        assert c.read_reply() == "554 5.7.1 Not from the lab network"
    with SmtpClient(tern.port, source="127.0.0.21") as c:
        assert transaction(c, rcpt="x@outside.example")[1].startswith("250 ")
        assert c.cmd("RCPT TO:<y@outside.example>") == "452 4.5.3 Too many recipients"
    with SmtpClient(tern.port, source="127.0.0.22") as c:
        assert transaction(c, rcpt="x@outside.example")[1] == "554 5.7.1 <x@outside.example>: Relay access denied"


# ---------------------------------------------------------------------------------------------
# Greeting delay


def test_greeting_delay_and_early_talkers(tern_factory):
    tern = tern_factory(smtp={"greeting_delay": 2})
    with SmtpClient(tern.port, greeting=False) as patient:
        patient.sock.settimeout(1.0)
        with pytest.raises(socket.timeout):  # nothing before the delay is over
            patient.sock.recv(100)
        patient.sock.settimeout(10)
        assert patient.read_reply().startswith("220 ")
        assert transaction(patient)[1].startswith("250 ")
    with SmtpClient(tern.port, greeting=False) as early:
        early.send("EHLO spam.test\r\n")
        assert early.read_reply() == \
            "554 5.5.1 SMTP protocol violation: commands sent before the greeting; closing connection"
        assert closed(early)
    tern.wait_log(r"connection refused client=\[127\.0\.0\.1\] rule=drop_early_talkers reply=\"554 5\.5\.1\"")


def test_early_talkers_kept_when_not_dropped(tern_factory):
    tern = tern_factory(smtp={"greeting_delay": 1, "drop_early_talkers": False})
    with SmtpClient(tern.port, greeting=False) as early:
        early.send("EHLO client.test\r\n")
        assert early.read_reply().startswith("220 ")
        assert early.read_reply().startswith("250")


# ---------------------------------------------------------------------------------------------
# Sender and recipient checks

DOMAINS = """
exists-mx      MX   10 mx1
mx1            A    192.0.2.1
exists-a       A    192.0.2.5
only-aaaa      AAAA 2001:db8::5
nullmx         MX   0 .
"""


def test_sender_domain_check(tern_factory, dns):
    tern = tern_factory(smtp={"sender_domain_check": "reject"}, dns=serve(dns, DOMAINS))
    with SmtpClient(tern.port) as c:
        assert c.cmd("EHLO client.test").startswith("250")
        for good in ("a@exists-mx.tern-test", "a@exists-a.tern-test", "a@only-aaaa.tern-test", "a@nullmx.tern-test"):
            assert c.cmd(f"MAIL FROM:<{good}>") == f"250 2.1.0 Sender <{good}> OK"
            assert c.cmd("RSET").startswith("250")
        assert c.cmd("MAIL FROM:<a@missing.tern-test>") == \
            "553 5.1.8 Sender address <a@missing.tern-test> rejected: its domain has no MX or address record"
        assert c.cmd("MAIL FROM:<a@mx1.tern-test.nosuchtld>")[:10] in ("553 5.1.8 ", "451 4.4.3 ")
        assert c.cmd("MAIL FROM:<>") == "250 2.1.0 Sender <> OK"
    assert tern.log_count(r"sender refused client=\[127\.0\.0\.1\] from=a@missing\.tern-test "
                          r"rule=sender_domain_check reply=\"553 5\.1\.8\"") == 1


def test_sender_domain_check_temporary_failure_and_log_mode(tern_factory, dns):
    cfg = serve(dns, DOMAINS)
    tern = tern_factory(smtp={"sender_domain_check": "reject"}, dns=cfg)
    dns.stop()  # no answers at all: temporary
    with SmtpClient(tern.port, timeout=60) as c:
        assert c.cmd("EHLO client.test").startswith("250")
        assert c.cmd("MAIL FROM:<a@exists-mx.tern-test>") == \
            "451 4.4.3 Sender address <a@exists-mx.tern-test> domain lookup failed temporarily, try again later"
    serve(dns, DOMAINS)
    tern.reload(smtp={"sender_domain_check": "log"})
    with SmtpClient(tern.port) as c:
        mail, rcpt = transaction(c, sender="a@missing.tern-test")
        assert mail == "250 2.1.0 Sender <a@missing.tern-test> OK"
        assert rcpt.startswith("250 ")
    tern.wait_log(r"sender domain check failed \(logged only\) client=\[127\.0\.0\.1\] from=a@missing\.tern-test")


def test_bad_senders_and_bad_recipients(tern_factory, shared_dir):
    recipients = shared_dir / "badrcptto"
    write_file(recipients, "# qmail's badrcptto, used as it is\ndave@example.test\n")
    tern = tern_factory(smtp={"bad_senders": ["@spam.test", "/^[0-9]+@/", "!12345@example.org"],
                              "bad_recipients_file": str(recipients)})
    with SmtpClient(tern.port) as c:
        assert c.cmd("EHLO client.test").startswith("250")
        assert c.cmd("MAIL FROM:<Someone@SPAM.test>") == \
            "553 5.7.1 Sender address <Someone@SPAM.test> is refused by this server's policy"
        assert c.cmd("MAIL FROM:<999@example.org>") == \
            "553 5.7.1 Sender address <999@example.org> is refused by this server's policy"
        assert c.cmd("MAIL FROM:<12345@example.org>").startswith("250 ")  # the exception
        assert c.cmd("RCPT TO:<dave@example.test>") == \
            "553 5.7.1 <dave@example.test>: Recipient address refused by this server's policy"
        assert c.cmd("RCPT TO:<alice@example.test>").startswith("250 ")
        assert send_message(c).startswith("250 ")
    tern.wait_messages("alice", 1)
    assert tern.messages("dave") == []
    write_file(recipients, "alice@example.test\n")  # the file is read again when it changes

    def alice_refused() -> bool:
        with SmtpClient(tern.port) as c:
            return transaction(c)[1].startswith("553 ")
    wait_until(alice_refused, timeout=10, message="the new bad_recipients file applies")
    tern.wait_log(r"recipient refused client=\[127\.0\.0\.1\] from=x@example\.org to=alice@example\.test "
                  r"rule=\"bad_recipients alice@example\.test\"")


def test_swaks_sees_the_policy_replies(tern_factory):
    tern = tern_factory(smtp={"bad_senders": ["@spam.test"], "bad_recipients": ["dave@example.test"]})
    base = ["swaks", "--server", "127.0.0.1", "--port", str(tern.port), "--timeout", "20", "--helo", "client.test"]
    r = subprocess.run(base + ["--from", "x@spam.test", "--to", "alice@example.test"], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode != 0
    assert "<** 553 5.7.1 Sender address <x@spam.test> is refused by this server's policy" in r.stdout, r.stdout
    r = subprocess.run(base + ["--from", "x@example.org", "--to", "dave@example.test"], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode != 0
    assert "<** 553 5.7.1 <dave@example.test>: Recipient address refused by this server's policy" in r.stdout
    r = subprocess.run(base + ["--from", "x@example.org", "--to", "alice@example.test"], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "<-  250 2.0.0 Ok: queued as " in r.stdout
    tern.wait_messages("alice", 1)
    assert tern.messages("dave") == []


def test_unknown_recipient_limit(tern_factory):
    tern = tern_factory(smtp={"max_unknown_recipients": 3})
    with SmtpClient(tern.port) as c:
        assert c.cmd("EHLO client.test").startswith("250")
        assert c.cmd("MAIL FROM:<x@example.org>").startswith("250 ")
        assert c.cmd("RCPT TO:<alice@example.test>").startswith("250 ")
        assert c.cmd("RCPT TO:<nobody1@example.test>") == "550 5.1.1 <nobody1@example.test>: No such user here"
        assert c.cmd("RCPT TO:<nobody2@example.test>") == "550 5.1.1 <nobody2@example.test>: No such user here"
        assert c.cmd("RCPT TO:<nobody3@example.test>") == \
            f"421 4.7.0 {HOSTNAME} Too many unknown recipients, closing connection"
        assert closed(c)
    assert tern.spool_entries() == []  # the open transaction was dropped, nothing queued


# ---------------------------------------------------------------------------------------------
# DNS block lists

LISTS = """
2.0.0.127.bl      A    127.0.0.2
2.0.0.127.bl      TXT  "Listed for spam, see https://bl.example/127.0.0.2"
3.0.0.127.bl      A    127.255.255.254
4.0.0.127.bl      A    127.0.0.3
4.0.0.127.wl      A    127.0.0.2
5.0.0.127.bl      A    127.0.0.4
"""


def test_dnsbl(tern_factory, dns):
    tern = tern_factory(dnsbl={"zones": ["bl.tern-test"], "allow_zones": ["wl.tern-test"]},
                        smtp={"allow_insecure_auth": True}, dns=serve(dns, LISTS))
    with SmtpClient(tern.port, source="127.0.0.2") as c:
        mail, rcpt = transaction(c)
        assert mail.startswith("250 ")  # HELO and MAIL pass; the block shows at RCPT, naming the target
        assert rcpt == ("554 5.7.1 Service unavailable; client [127.0.0.2] blocked using bl.tern-test: "
                        "Listed for spam, see https://bl.example/127.0.0.2")
        assert c.cmd("RCPT TO:<dave@example.test>").startswith("554 5.7.1 Service unavailable")
    with SmtpClient(tern.port, source="127.0.0.5") as c:  # listed without a TXT record
        assert transaction(c)[1] == "554 5.7.1 Service unavailable; client [127.0.0.5] blocked using bl.tern-test"
    with SmtpClient(tern.port, source="127.0.0.3") as c:  # the list's error code is no listing
        assert transaction(c)[1].startswith("250 ")
    with SmtpClient(tern.port, source="127.0.0.4") as c:  # listed, but on the allow list
        assert transaction(c)[1].startswith("250 ")
    with SmtpClient(tern.port, source="127.0.0.2") as c:  # AUTH lifts the block
        assert c.cmd("EHLO client.test").startswith("250")
        plain = base64.b64encode(b"\0alice@example.test\0pw").decode()
        assert c.cmd(f"AUTH PLAIN {plain}").startswith("235 ")
        assert c.cmd("MAIL FROM:<alice@example.test>").startswith("250 ")
        assert c.cmd("RCPT TO:<dave@example.test>").startswith("250 ")
    tern.wait_log(r"recipient refused client=\[127\.0\.0\.2\] from=x@example\.org to=alice@example\.test "
                  r"rule=\"dnsbl bl\.tern-test\" reply=\"554 5\.7\.1\"")
    tern.reload(dnsbl={"zones": ["bl.tern-test"], "permanent": False, "allow_networks": ["127.0.0.5"]})
    with SmtpClient(tern.port, source="127.0.0.2") as c:
        assert transaction(c)[1].startswith("451 4.7.1 Service unavailable; client [127.0.0.2] blocked")
    with SmtpClient(tern.port, source="127.0.0.5") as c:
        assert transaction(c)[1].startswith("250 ")


def test_dnsbl_skipped_by_rule_and_fail_closed(tern_factory, dns, shared_dir):
    rules = shared_dir / "smtp.rules"
    write_file(rules, '127.0.0.2:allow,RBLSMTPD=""\n:allow\n')
    cfg = serve(dns, LISTS)
    tern = tern_factory(dnsbl={"zones": ["bl.tern-test"], "fail_closed": True}, smtp={"access_rules": str(rules)},
                        dns=cfg)
    with SmtpClient(tern.port, source="127.0.0.2") as c:  # RBLSMTPD="": no lookups for this client
        assert transaction(c)[1].startswith("250 ")
    dns.stop()
    with SmtpClient(tern.port, source="127.0.0.6", timeout=60) as c:
        assert transaction(c)[1] == "451 4.7.1 Block list lookup failed temporarily, try again later"


# ---------------------------------------------------------------------------------------------
# Greylisting


def greylist_send(tern, source: str, sender: str = "x@example.org", rcpt: str = "alice@example.test") -> str:
    with SmtpClient(tern.port, source=source) as c:
        mail, reply = transaction(c, sender=sender, rcpt=rcpt)
        if reply.startswith("250 "):
            assert send_message(c).startswith("250 ")
        return reply


def test_greylisting(tern_factory):
    tern = tern_factory(greylist={"enabled": True, "hold": 2, "key": "address", "auto_allow": 2,
                                  "allow_networks": ["127.0.0.40"]},
                        smtp={"relay_networks": ["127.0.0.41"]})
    first = greylist_send(tern, "127.0.0.30")
    assert first == ("450 4.2.0 <alice@example.test>: Greylisted, try again in 2 seconds "
                     "(first delivery attempts from new senders are deferred)")
    assert greylist_send(tern, "127.0.0.30") == \
        "450 4.2.0 <alice@example.test>: Greylisted, you retried too early; try again later"
    assert tern.spool_entries() == [] and tern.messages("alice") == []
    time.sleep(2.5)
    assert greylist_send(tern, "127.0.0.30").startswith("250 ")
    tern.wait_messages("alice", 1)
    # Another sender from the same client is a new triplet; exempt clients are never held.
    assert greylist_send(tern, "127.0.0.30", sender="y@example.org").startswith("450 4.2.0 ")
    assert greylist_send(tern, "127.0.0.40").startswith("250 ")  # greylist.allow_networks
    assert greylist_send(tern, "127.0.0.41").startswith("250 ")  # relay_networks
    tern.wait_messages("alice", 3)
    # The state survives a restart: the passed triplet passes at once, the pending one still waits.
    tern.stop()
    tern.start()
    assert greylist_send(tern, "127.0.0.30").startswith("250 ")
    time.sleep(2.5)
    assert greylist_send(tern, "127.0.0.30", sender="y@example.org").startswith("250 ")
    # Two triplets passed from 127.0.0.30 (auto_allow = 2): now anything from it passes at once.
    assert greylist_send(tern, "127.0.0.30", sender="new@example.org").startswith("250 ")
    tern.wait_messages("alice", 6)
    assert tern.log_count(r"recipient refused client=\[127\.0\.0\.30\] from=x@example\.org "
                          r"to=alice@example\.test rule=\"greylist first attempt\" reply=\"450 4\.2\.0\"") == 1


# ---------------------------------------------------------------------------------------------
# The message log line


def test_message_log_line_names_everything(tern_factory):
    tern = tern_factory()
    with smtplib.SMTP("127.0.0.1", tern.port, local_hostname="client.test", timeout=10) as s:
        s.ehlo()
        s.mail("x@example.org")
        assert s.rcpt("alice@example.test")[0] == 250
        assert s.rcpt("nobody@example.test")[0] == 550
        code, text = s.data(MESSAGE.encode())
        assert code == 250
    queue_id = text.decode().rsplit(" ", 1)[-1]
    tern.wait_log(rf"smtp info message accepted client=\[127\.0\.0\.1\] name=\"\" helo=client\.test id={queue_id} "
                  r"from=x@example\.org to=alice@example\.test refused=\"nobody@example\.test 550\" size=\d+ "
                  r"tls=no cipher=\"\" auth=\"\" checks=\"\" reply=\"250 2\.0\.0\"")


# ---------------------------------------------------------------------------------------------
# SPF at MAIL FROM (RFC 7208; SPFBEHAVIOR)

SPF_RECORDS = """
spf-pass       TXT  "v=spf1 ip4:127.0.0.0/8 -all"
spf-fail       TXT  "v=spf1 ip4:192.0.2.1 -all exp=why.%{d}"
why.spf-fail   TXT  "Mail for %{d} comes only from its own servers"
spf-soft       TXT  "v=spf1 ~all"
helo-ok        TXT  "v=spf1 ip4:127.0.0.1 -all"
"""


def spf_message(c: SmtpClient, sender: str) -> tuple[str, str | None]:
    mail = c.cmd(f"MAIL FROM:<{sender}>")
    if not mail.startswith("250 "):
        return mail, None
    assert c.cmd("RCPT TO:<alice@example.test>").startswith("250 ")
    return mail, send_message(c)


def test_spf_policies_and_received_spf(tern_factory, dns):
    tern = tern_factory(spf={"policy": "reject_fail"}, dns=serve(dns, SPF_RECORDS))
    with SmtpClient(tern.port) as c:
        assert c.cmd("EHLO helo-ok.tern-test").startswith("250")
        mail, _ = spf_message(c, "a@spf-fail.tern-test")
        assert mail == ("550-5.7.23 SPF fail: spf-fail.tern-test does not designate 127.0.0.1 as a permitted sender\n"
                        "550 5.7.23 Mail for spf-fail.tern-test comes only from its own servers")
        assert spf_message(c, "a@spf-soft.tern-test")[1].startswith("250 ")  # softfail: header only
        assert spf_message(c, "a@spf-pass.tern-test")[1].startswith("250 ")
        assert spf_message(c, "")[1].startswith("250 ")  # the null sender: the HELO name is checked
    messages = tern.wait_messages("alice", 3)
    first_lines = sorted(m.split(b"\n")[2].decode() for m in messages)  # after Return-Path, Delivered-To
    assert first_lines == [
        'Received-SPF: pass (mail.example.test: domain of a@spf-pass.tern-test designates 127.0.0.1 as permitted '
        'sender) client-ip=127.0.0.1; envelope-from="a@spf-pass.tern-test"; helo=helo-ok.tern-test; '
        'receiver=mail.example.test; identity=mailfrom; mechanism="ip4:127.0.0.0/8"',
        'Received-SPF: pass (mail.example.test: domain of postmaster@helo-ok.tern-test designates 127.0.0.1 as '
        'permitted sender) client-ip=127.0.0.1; envelope-from=""; helo=helo-ok.tern-test; '
        'receiver=mail.example.test; '
        'identity=helo; mechanism="ip4:127.0.0.1"',
        'Received-SPF: softfail (mail.example.test: domain of transitioning a@spf-soft.tern-test does not '
        'designate 127.0.0.1 as permitted sender) client-ip=127.0.0.1; envelope-from="a@spf-soft.tern-test"; '
        'helo=helo-ok.tern-test; receiver=mail.example.test; identity=mailfrom; mechanism=~all',
    ]
    assert all(m.split(b"\n")[3].startswith(b"Received: from helo-ok.tern-test") for m in messages)
    tern.wait_log(r"sender refused client=\[127\.0\.0\.1\] from=a@spf-fail\.tern-test rule=\"spf fail\" "
                  r"reply=\"550 5\.7\.23\"")
    tern.reload(spf={"policy": "reject_softfail"})
    with SmtpClient(tern.port) as c:
        assert c.cmd("EHLO helo-ok.tern-test").startswith("250")
        assert spf_message(c, "a@spf-soft.tern-test")[0] == \
            "550 5.7.23 SPF softfail: spf-soft.tern-test does not designate 127.0.0.1 as a permitted sender"
    # Relay clients are not checked.
    tern.reload(smtp={"relay_networks": ["127.0.0.1"]})
    with SmtpClient(tern.port) as c:
        assert c.cmd("EHLO helo-ok.tern-test").startswith("250")
        assert spf_message(c, "a@spf-fail.tern-test")[1].startswith("250 ")


def test_spf_temperror_deferred_by_choice(tern_factory, dns, shared_dir):
    rules = shared_dir / "smtp.rules"
    write_file(rules, '127.0.0.2:allow,SPFBEHAVIOR="2"\n:allow\n')
    tern = tern_factory(spf={"policy": "header"}, smtp={"access_rules": str(rules)},
                        dns=serve(dns, SPF_RECORDS))
    dns.stop()
    with SmtpClient(tern.port, timeout=60) as c:  # header only: accepted with "temperror"
        assert c.cmd("EHLO helo-ok.tern-test").startswith("250")
        assert spf_message(c, "a@spf-pass.tern-test")[1].startswith("250 ")
    (message,) = tern.wait_messages("alice", 1)
    assert message.split(b"\n")[2].startswith(b"Received-SPF: temperror (mail.example.test: ")
    with SmtpClient(tern.port, timeout=60, source="127.0.0.2") as c:  # SPFBEHAVIOR=2: 451
        assert c.cmd("EHLO helo-ok.tern-test").startswith("250")
        assert spf_message(c, "a@spf-pass.tern-test")[0] == \
            "451 4.4.3 SPF: temporary DNS error checking spf-pass.tern-test, try again later"
