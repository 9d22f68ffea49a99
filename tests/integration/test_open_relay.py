"""The open-relay battery: classic tricks for getting a server to relay, from a client that is
neither authenticated nor in smtp.relay_networks. None may be accepted; a hosted alias that
forwards outside is still accepted (and forwarded). Each RCPT gets a 5xx, and nothing for an
outside domain reaches the queue."""
from __future__ import annotations

import pytest

from ternlib import SmtpClient

# (RCPT argument, why it is a trick)
TRICKS = [
    ("<victim@outside.example>", "plain relay"),
    ("<VICTIM@OUTSIDE.EXAMPLE>", "upper case"),
    ("<victim@outside.example.>", "trailing dot"),
    ("<victim%outside.example@example.test>", "percent hack"),
    ("<victim%outside.example>", "percent hack without a domain"),
    ("<outside.example!victim@example.test>", "bang path"),
    ("<outside.example!victim>", "bang path without a domain"),
    ("<@example.test:victim@outside.example>", "source route through a hosted domain"),
    ("<@example.test,@mx.example.test:victim@outside.example>", "source route with two hops"),
    ('<"victim@outside.example"@example.test>', "quoted local part holding @"),
    ('<"victim@outside.example">', "quoted address without a domain"),
    ("<victim@outside.example@example.test>", "double @"),
    ("<victim@[192.0.2.1]>", "IPv4 address literal"),
    ("<victim@[IPv6:2001:db8::1]>", "IPv6 address literal"),
    ("<victim@192.0.2.1>", "bare IP address as domain"),
    ("<victim@localhost>", "localhost"),
    ("<victim@sub.example.test>", "subdomain of a hosted domain"),
    ("<victim@example.test.outside.example>", "hosted domain as a prefix"),
    ("<victim@outside.example%example.test>", "percent in the domain"),
    ("<victim@outside.example:25>", "port in the domain"),
    ("victim@outside.example", "no angle brackets"),
    ("<victim@outside.example> NOTIFY=NEVER", "with DSN parameters"),
    ("<postmaster@outside.example>", "postmaster elsewhere"),
]


@pytest.mark.parametrize("rcpt, why", TRICKS, ids=[w for _, w in TRICKS])
def test_relay_trick_is_refused(tern, rcpt, why):
    with SmtpClient(tern.port) as c:
        assert c.ehlo().startswith("250")
        assert c.cmd("MAIL FROM:<spammer@outside.example>").startswith("250 ")
        reply = c.cmd(f"RCPT TO:{rcpt}")
        assert reply[:1] == "5", f"{why}: {rcpt} got {reply!r}"
        assert c.cmd("DATA")[:3] in ("503", "554"), why
    assert tern.spool_entries() == []


def test_alias_forwarding_outside_is_still_accepted(tern):
    tern.cli("alias", "add", "fwd@example.test", "someone@outside.example", check=True)
    with SmtpClient(tern.port) as c:
        assert c.ehlo().startswith("250")
        assert c.cmd("MAIL FROM:<spammer@outside.example>").startswith("250 ")
        assert c.cmd("RCPT TO:<fwd@example.test>").startswith("250 ")
        assert c.cmd("RCPT TO:<victim@outside.example>") == "554 5.7.1 <victim@outside.example>: Relay access denied"
        assert c.cmd("DATA").startswith("354")
        c.send("Subject: forwarded\r\n\r\nhello\r\n.\r\n")
        assert c.read_reply().startswith("250 ")
    tern.wait_log(r" deliver info forwarded id=\S+ to=fwd@example\.test new_id=\S+ targets=someone@outside\.example ")
