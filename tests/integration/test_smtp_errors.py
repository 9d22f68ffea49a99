"""Every SMTP reply tern sends, checked exactly with a raw socket client."""
from __future__ import annotations

import time

import pytest

from ternlib import HOSTNAME, QUEUED_RE, SmtpClient, send_message, wait_until

GREETING = f"220 {HOSTNAME} ESMTP tern"
EHLO_REPLY = "\n".join([
    f"250-{HOSTNAME} Hello [127.0.0.1]",
    "250-PIPELINING",
    "250-SIZE 100000",
    "250-8BITMIME",
    "250-ENHANCEDSTATUSCODES",
    "250-SMTPUTF8",
    "250 DSN",
])
OK = "250 2.0.0 Ok"
START_DATA = "354 End data with <CR><LF>.<CR><LF>"
SENDER_OK = "250 2.1.0 Sender <bob@example.org> OK"
ALICE_OK = "250 2.1.5 Recipient <alice@example.test> OK"
NOT_IMPLEMENTED = "502 5.5.1 Command not implemented"
NEED_MAIL = "503 5.5.1 Need MAIL command"
BARE_LINE_END = "554 5.6.0 Message contains bare CR or bare LF; lines must end with CRLF (RFC 5321 2.3.8)"
TOO_BIG = "552 5.3.4 Message size exceeds fixed maximum message size"
LINE_TOO_LONG = "500 5.5.2 Line too long (maximum 1000 characters)"
TOO_MANY_ERRORS = f"421 4.7.0 {HOSTNAME} Too many errors, closing connection"
QUIT_REPLY = f"221 2.0.0 {HOSTNAME} closing connection"


def open_transaction(port: int) -> SmtpClient:
    """A session after EHLO, MAIL FROM:<bob@example.org> and RCPT TO:<alice@example.test>."""
    c = SmtpClient(port)
    assert c.ehlo() == EHLO_REPLY
    assert c.cmd("MAIL FROM:<bob@example.org>") == SENDER_OK
    assert c.cmd("RCPT TO:<alice@example.test>") == ALICE_OK
    return c


# ---------------------------------------------------------------------------------------------
# Replies to single commands (one shared server: nothing here delivers mail)


def test_greeting_and_ehlo(shared_tern):
    with SmtpClient(shared_tern.port) as c:
        assert c.greeting == GREETING
        assert c.ehlo("client.test") == EHLO_REPLY
        assert c.cmd("QUIT") == QUIT_REPLY
        assert c.closed()


def test_helo(shared_tern):
    with SmtpClient(shared_tern.port) as c:
        assert c.cmd("HELO client.test") == f"250 {HOSTNAME}"
        assert c.cmd("MAIL FROM:<bob@example.org>") == SENDER_OK


# Each case: commands sent in order on a fresh connection and the exact reply to each.
SEQUENCES = {
    "relay_denied": [
        ("EHLO client.test", EHLO_REPLY),
        ("MAIL FROM:<bob@example.org>", SENDER_OK),
        ("RCPT TO:<bob@other.test>", "554 5.7.1 <bob@other.test>: Relay access denied"),
    ],
    "unknown_local_user": [
        ("EHLO client.test", EHLO_REPLY),
        ("MAIL FROM:<bob@example.org>", SENDER_OK),
        ("RCPT TO:<bob@example.test>", "550 5.1.1 <bob@example.test>: No such user here"),
    ],
    "mail_before_ehlo": [
        ("MAIL FROM:<bob@example.org>", "503 5.5.1 Send HELO or EHLO first"),
    ],
    "second_mail": [
        ("EHLO client.test", EHLO_REPLY),
        ("MAIL FROM:<bob@example.org>", SENDER_OK),
        ("MAIL FROM:<carl@example.org>", "503 5.5.1 Sender already specified"),
    ],
    "rcpt_before_mail": [
        ("EHLO client.test", EHLO_REPLY),
        ("RCPT TO:<alice@example.test>", NEED_MAIL),
    ],
    "data_before_mail": [
        ("EHLO client.test", EHLO_REPLY),
        ("DATA", NEED_MAIL),
    ],
    "data_without_rcpt": [
        ("EHLO client.test", EHLO_REPLY),
        ("MAIL FROM:<bob@example.org>", SENDER_OK),
        ("DATA", "503 5.5.1 Need RCPT command"),
    ],
    "data_when_every_rcpt_refused": [
        ("EHLO client.test", EHLO_REPLY),
        ("MAIL FROM:<bob@example.org>", SENDER_OK),
        ("RCPT TO:<bob@example.test>", "550 5.1.1 <bob@example.test>: No such user here"),
        ("RCPT TO:<bob@other.test>", "554 5.7.1 <bob@other.test>: Relay access denied"),
        ("DATA", "554 5.5.1 No valid recipients"),
    ],
    "rset_ends_transaction": [
        ("EHLO client.test", EHLO_REPLY),
        ("MAIL FROM:<bob@example.org>", SENDER_OK),
        ("RSET", OK),
        ("RCPT TO:<alice@example.test>", NEED_MAIL),
        ("MAIL FROM:<bob@example.org>", SENDER_OK),
    ],
    "unknown_command": [("FOO bar", "500 5.5.2 Command not recognized")],
    "expn": [("EXPN alice", NOT_IMPLEMENTED)],
    # Without [tls] STARTTLS is not offered, and AUTH needs TLS (test_smtp_tls_auth.py has the rest).
    "starttls": [("EHLO client.test", EHLO_REPLY), ("STARTTLS", NOT_IMPLEMENTED)],
    "auth": [("EHLO client.test", EHLO_REPLY),
             ("AUTH PLAIN AGFsaWNlAHB3", "538 5.7.11 Encryption required for requested authentication mechanism")],
    "bdat": [("EHLO client.test", EHLO_REPLY), ("BDAT 10 LAST", NOT_IMPLEMENTED)],
    "vrfy": [("VRFY alice", "252 2.5.2 Cannot VRFY user, but will accept message and attempt delivery")],
    "noop": [("NOOP", OK)],
    "rset": [("RSET", OK)],
    "help": [("HELP", "214-2.0.0 Commands: EHLO HELO MAIL RCPT DATA RSET NOOP QUIT VRFY HELP\n"
                      "214 2.0.0 See RFC 5321")],
    "mail_from_empty": [
        ("EHLO client.test", EHLO_REPLY),
        ("MAIL FROM:", "501 5.5.4 Syntax: MAIL FROM:<address>"),
    ],
    "bad_sender_syntax": [
        ("EHLO client.test", EHLO_REPLY),
        ("MAIL FROM:<not an address>", "501 5.1.7 Bad sender address syntax"),
    ],
    "bad_recipient_syntax": [
        ("EHLO client.test", EHLO_REPLY),
        ("MAIL FROM:<bob@example.org>", SENDER_OK),
        ("RCPT TO:<not an address>", "501 5.1.3 Bad recipient address syntax"),
    ],
    "unsupported_mail_parameter": [
        ("EHLO client.test", EHLO_REPLY),
        ("MAIL FROM:<a@b.test> FOO=1", "555 5.5.4 Unsupported parameter FOO"),
    ],
    "non_ascii_sender_without_smtputf8": [
        ("EHLO client.test", EHLO_REPLY),
        ("MAIL FROM:<jörg@example.org>", "553 5.6.7 Non-ASCII address requires the SMTPUTF8 parameter on MAIL"),
    ],
    "non_ascii_sender_with_smtputf8": [
        ("EHLO client.test", EHLO_REPLY),
        ("MAIL FROM:<jörg@example.org> SMTPUTF8", "250 2.1.0 Sender <jörg@example.org> OK"),
    ],
    "size_over_maximum": [
        ("EHLO client.test", EHLO_REPLY),
        ("MAIL FROM:<a@b.test> SIZE=100001", TOO_BIG),
    ],
    "size_at_maximum": [
        ("EHLO client.test", EHLO_REPLY),
        ("MAIL FROM:<a@b.test> SIZE=100000", "250 2.1.0 Sender <a@b.test> OK"),
    ],
    "ehlo_without_name": [("EHLO", "501 5.5.4 Syntax: EHLO hostname")],
    "bad_size_value": [
        ("EHLO client.test", EHLO_REPLY),
        ("MAIL FROM:<a@b.test> SIZE=abc", "501 5.5.4 Bad SIZE parameter"),
    ],
    "rcpt_parameter": [
        ("EHLO client.test", EHLO_REPLY),
        ("MAIL FROM:<bob@example.org>", SENDER_OK),
        ("RCPT TO:<alice@example.test> XNOTIFY=NEVER", "555 5.5.4 Unsupported parameter XNOTIFY"),
        ("RCPT TO:<alice@example.test> NOTIFY=NEVER,SUCCESS", "501 5.5.4 Bad NOTIFY parameter"),
        ("RCPT TO:<alice@example.test> NOTIFY=SOMETIMES", "501 5.5.4 Bad NOTIFY parameter"),
        ("RCPT TO:<alice@example.test> ORCPT=rfc822", "501 5.5.4 Bad ORCPT parameter"),
        ("RCPT TO:<alice@example.test> ORCPT=rfc822;a+ZZb@x.example", "501 5.5.4 Bad ORCPT parameter"),
    ],
    "dsn_mail_parameters": [
        ("EHLO client.test", EHLO_REPLY),
        ("MAIL FROM:<bob@example.org> RET=ALL", "501 5.5.4 Bad RET parameter"),
        ("MAIL FROM:<bob@example.org> RET=FULL RET=HDRS", "501 5.5.4 Bad RET parameter"),
        ("MAIL FROM:<bob@example.org> ENVID=a+zz", "501 5.5.4 Bad ENVID parameter"),
        ("MAIL FROM:<bob@example.org> ENVID=" + "x" * 101, "501 5.5.4 Bad ENVID parameter"),
        ("MAIL FROM:<bob@example.org> RET=HDRS ENVID=QQ+2B1", SENDER_OK),
        ("RCPT TO:<alice@example.test> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;alice+2Bx@example.test",
         "250 2.1.5 Recipient <alice@example.test> OK"),
    ],
    "ehlo_resets_transaction": [
        ("EHLO client.test", EHLO_REPLY),
        ("MAIL FROM:<bob@example.org>", SENDER_OK),
        ("EHLO client.test", EHLO_REPLY),
        ("RCPT TO:<alice@example.test>", NEED_MAIL),
    ],
    "nul_in_command": [
        ("EHLO client.test", EHLO_REPLY),
        (b"NOOP\0 x", "500 5.5.2 Syntax error: NUL character in command"),
        ("NOOP", OK),
    ],
}


@pytest.mark.parametrize("case", list(SEQUENCES))
def test_reply(shared_tern, case):
    with SmtpClient(shared_tern.port) as c:
        assert c.greeting == GREETING
        for command, expected in SEQUENCES[case]:
            assert c.cmd(command) == expected, f"reply to {command!r}"
        assert c.cmd("QUIT") == QUIT_REPLY
        assert c.closed()


def test_quit_closes_connection(shared_tern):
    with SmtpClient(shared_tern.port) as c:
        assert c.cmd("QUIT") == QUIT_REPLY
        assert c.closed()


# ---------------------------------------------------------------------------------------------
# Transactions


def test_transaction_replies(tern):
    with open_transaction(tern.port) as c:
        assert c.cmd("DATA") == START_DATA
        c.send("Subject: t\r\n\r\nhello\r\n.\r\n")
        reply = c.read_reply()
        m = QUEUED_RE.match(reply)
        assert m, reply
        assert c.cmd("QUIT") == QUIT_REPLY
    assert len(tern.wait_messages("alice", 1)) == 1
    assert f"with ESMTP id {m.group(1)}".encode() in tern.messages("alice")[0]


def test_pipelining(tern):
    with SmtpClient(tern.port) as c:
        assert c.ehlo() == EHLO_REPLY
        c.send("MAIL FROM:<bob@example.org>\r\nRCPT TO:<alice@example.test>\r\nDATA\r\n")
        assert c.read_replies(3) == [SENDER_OK, ALICE_OK, START_DATA]
        c.send("Subject: pipelined\r\n\r\nbody\r\n.\r\n")
        assert QUEUED_RE.match(c.read_reply())
        # A second transaction, and QUIT pipelined right after the message's final dot.
        c.send("MAIL FROM:<bob@example.org>\r\nRCPT TO:<dave@example.test>\r\nDATA\r\n")
        assert c.read_replies(3) == [SENDER_OK, "250 2.1.5 Recipient <dave@example.test> OK", START_DATA]
        c.send("Subject: second\r\n\r\nbody 2\r\n.\r\nQUIT\r\n")
        assert QUEUED_RE.match(c.read_reply())
        assert c.read_reply() == QUIT_REPLY
        assert c.closed()
    assert b"Subject: pipelined" in tern.wait_messages("alice", 1)[0]
    assert b"Subject: second" in tern.wait_messages("dave", 1)[0]
    tern.wait_spool_empty()


def test_too_many_recipients(tern):
    """1,000 accepted RCPTs (max_recipients), the 1,001st gets 452; duplicates deliver once."""
    with SmtpClient(tern.port) as c:
        assert c.ehlo() == EHLO_REPLY
        assert c.cmd("MAIL FROM:<bob@example.org>") == SENDER_OK
        replies = []
        for batch in range(10):
            c.send("RCPT TO:<alice@example.test>\r\n" * 100)
            replies += c.read_replies(100)
        assert replies == [ALICE_OK] * 1000
        assert c.cmd("RCPT TO:<alice@example.test>") == "452 4.5.3 Too many recipients"
        assert c.cmd("RCPT TO:<dave@example.test>") == "452 4.5.3 Too many recipients"
        assert c.cmd("DATA") == START_DATA
        c.send("Subject: many\r\n\r\nmany\r\n.\r\n")
        assert QUEUED_RE.match(c.read_reply())
        assert c.cmd("QUIT") == QUIT_REPLY
    tern.wait_messages("alice", 1)
    tern.wait_spool_empty()
    assert len(tern.messages("alice")) == 1
    assert tern.messages("dave") == []


def test_data_bigger_than_max_message_size(tern):
    with open_transaction(tern.port) as c:
        assert c.cmd("DATA") == START_DATA
        line = "x" * 99 + "\r\n"
        c.send("Subject: big\r\n\r\n" + line * 1500 + ".\r\n")  # 150 kB > 100000
        assert c.read_reply() == TOO_BIG
        assert c.cmd("NOOP") == OK
    tern.assert_nothing_delivered()


def test_data_with_nul(tern):
    with open_transaction(tern.port) as c:
        assert c.cmd("DATA") == START_DATA
        c.send(b"Subject: nul\r\n\r\nbefore\0after\r\n.\r\n")
        assert c.read_reply() == "554 5.6.0 Message contains NUL characters"
        assert c.cmd("NOOP") == OK
    tern.assert_nothing_delivered()


@pytest.mark.parametrize("length", [1001, 1100, 5000, 20000])
def test_command_line_too_long(shared_tern, length):
    """A command line over 1000 octets (CRLF included) gets 500 5.5.2; the session goes on."""
    with SmtpClient(shared_tern.port) as c:
        assert c.ehlo() == EHLO_REPLY
        line = "NOOP " + "x" * (length - len("NOOP ") - 2)
        assert len(line) + 2 == length
        assert c.cmd(line) == LINE_TOO_LONG
        assert c.cmd("NOOP") == OK
        assert c.cmd("MAIL FROM:<bob@example.org>") == SENDER_OK
        assert c.cmd("QUIT") == QUIT_REPLY


def test_command_line_of_1000_octets_is_accepted(shared_tern):
    with SmtpClient(shared_tern.port) as c:
        assert c.ehlo() == EHLO_REPLY
        line = "NOOP " + "x" * (1000 - len("NOOP ") - 2)
        assert c.cmd(line) == OK


SMUGGLING_VARIANTS = {
    "LF.LF": b"\n.\n",
    "CR.CR": b"\r.\r",
    "LF.CRLF": b"\n.\r\n",
    "CRLF.LF": b"\r\n.\n",
    "CR.CRLF": b"\r.\r\n",
    "CRLF.CR": b"\r\n.\r",
}


@pytest.mark.parametrize("variant", list(SMUGGLING_VARIANTS))
def test_smtp_smuggling(tern, variant):
    """A fake end of data followed by a second transaction is content, not a second message:
    exactly one reply (the 554) for the whole input, and nothing delivered."""
    with open_transaction(tern.port) as c:
        assert c.cmd("DATA") == START_DATA
        c.send(b"From: bob@example.org\r\nSubject: first\r\n\r\nfirst body"
               + SMUGGLING_VARIANTS[variant]
               + b"MAIL FROM:<x@y.test>\r\nRCPT TO:<alice@example.test>\r\nDATA\r\n"
                 b"From: x@y.test\r\nSubject: smuggled\r\n\r\nsmuggled\r\n"
               + b"\r\n.\r\n")
        assert c.read_reply() == BARE_LINE_END
        assert c.extra_data() == b"", "more than one reply for one message"
        assert c.cmd("NOOP") == OK
        assert c.cmd("QUIT") == QUIT_REPLY
    tern.assert_nothing_delivered()
    assert tern.log_count(r"smtp info message accepted .*from=x@y\.test") == 0


@pytest.mark.parametrize("data", [b"line one\nline two\r\n", b"line one\rline two\r\n", b"ends with bare LF\n\r\n"],
                         ids=["bare_LF", "bare_CR", "bare_LF_then_CRLF"])
def test_bare_line_end(tern, data):
    with open_transaction(tern.port) as c:
        assert c.cmd("DATA") == START_DATA
        c.send(b"Subject: bare\r\n\r\n" + data + b".\r\n")
        assert c.read_reply() == BARE_LINE_END
        assert c.cmd("NOOP") == OK
    tern.assert_nothing_delivered()


def test_data_line_longer_than_998(tern):
    with open_transaction(tern.port) as c:
        assert c.cmd("DATA") == START_DATA
        c.send("Subject: long\r\n\r\n" + "y" * 999 + "\r\n.\r\n")
        assert c.read_reply() == "554 5.6.0 Message contains a line longer than 998 characters (RFC 5322 2.1.1)"
        assert c.cmd("NOOP") == OK
    tern.assert_nothing_delivered()


def test_too_many_hops_is_a_loop(tern):
    # 100 Received/Delivered-To header lines mean a mail loop (qmail-smtpd's rule); 99 pass.
    with open_transaction(tern.port) as c:
        assert c.cmd("DATA") == START_DATA
        hops = "Received: from a by b; Wed, 25 Nov 2026 00:00:00 +0000\r\n" * 60
        hops += "Delivered-To: alice@example.test\r\n" * 40
        c.send(hops + "Subject: loop\r\n\r\nbody\r\n.\r\n")
        assert c.read_reply() == "554 5.4.6 Too many hops: mail loop suspected"
        assert c.cmd("NOOP") == OK
    tern.assert_nothing_delivered()


def test_ninety_nine_hops_are_accepted(tern):
    with open_transaction(tern.port) as c:
        assert c.cmd("DATA") == START_DATA
        hops = "Received: from a by b; Wed, 25 Nov 2026 00:00:00 +0000\r\n" * 99
        c.send(hops + "Subject: far\r\n\r\nReceived: in the body\r\n.\r\n")
        assert QUEUED_RE.match(c.read_reply())


def test_data_line_of_998_is_accepted(tern):
    body = "z" * 998
    send_message(tern.port, "bob@example.org", ["alice@example.test"], f"Subject: long\r\n\r\n{body}\r\n")
    (msg,) = tern.wait_messages("alice", 1)
    assert msg.endswith(f"\n\n{body}\n".encode())


def test_disconnect_mid_data(tern):
    with open_transaction(tern.port) as c:
        assert c.cmd("DATA") == START_DATA
        c.send("Subject: cut\r\n\r\nthe client goes away in the middle of")
    # The connection is closed now: the smtp service discards the message.
    tern.wait_log(r" smtp info client lost during DATA; message discarded")
    tern.wait_spool_empty()
    tern.assert_nothing_delivered()
    assert tern.log_count(r" queue info queued ") == 1  # the sentinel only


def test_too_many_errors(shared_tern):
    with SmtpClient(shared_tern.port) as c:
        for _ in range(10):
            assert c.cmd("FOO") == "500 5.5.2 Command not recognized"
        assert c.cmd("FOO") == TOO_MANY_ERRORS
        assert c.closed()


def test_too_many_errors_counts_every_5xx(shared_tern):
    sequence = [
        ("FOO", "500 5.5.2 Command not recognized"),                                  # 1
        ("MAIL FROM:<a@b.test>", "503 5.5.1 Send HELO or EHLO first"),               # 2
        ("EHLO client.test", EHLO_REPLY),
        ("RCPT TO:<alice@example.test>", NEED_MAIL),                                  # 3
        ("MAIL FROM:<bob@example.org>", SENDER_OK),
        ("RCPT TO:<bob@example.test>", "550 5.1.1 <bob@example.test>: No such user here"),  # 4
        ("RCPT TO:<x@other.test>", "554 5.7.1 <x@other.test>: Relay access denied"),        # 5
        ("RCPT TO:<alice@example.test>", ALICE_OK),
        ("MAIL FROM:<a@b.test>", "503 5.5.1 Sender already specified"),              # 6
        ("EXPN x", NOT_IMPLEMENTED),                                                  # 7
        ("RCPT TO:<bad address>", "501 5.1.3 Bad recipient address syntax"),          # 8
        (b"NOOP\0", "500 5.5.2 Syntax error: NUL character in command"),              # 9
        ("NOOP " + "n" * 20000, LINE_TOO_LONG),                                       # 10
        ("NOOP", OK),
        ("STARTTLS", TOO_MANY_ERRORS),                                                # 11
    ]
    with SmtpClient(shared_tern.port) as c:
        for command, expected in sequence:
            assert c.cmd(command) == expected, f"reply to {command!r}"
        assert c.closed()


def test_command_timeout(tern_factory):
    server = tern_factory(smtp={"command_timeout": 2})
    with SmtpClient(server.port) as c:
        assert c.ehlo() == EHLO_REPLY
        assert c.cmd("MAIL FROM:<bob@example.org>") == SENDER_OK
        started = time.monotonic()
        assert c.read_reply() == f"421 4.4.2 {HOSTNAME} Timeout exceeded, closing connection"
        waited = time.monotonic() - started
        assert c.closed()
    assert 1.5 <= waited <= 6, f"timeout reply after {waited:.1f}s with command_timeout = 2"


def test_data_timeout(tern_factory):
    server = tern_factory(smtp={"data_timeout": 2})
    with open_transaction(server.port) as c:
        assert c.cmd("DATA") == START_DATA
        c.send("Subject: slow\r\n\r\nthe rest never comes")
        assert c.read_reply() == f"421 4.4.2 {HOSTNAME} Timeout exceeded, closing connection"
        assert c.closed()
    server.wait_log(r" smtp info client lost during DATA; message discarded")
    server.assert_nothing_delivered()


def test_max_connections(tern_factory):
    server = tern_factory(smtp={"max_connections": 2})
    first, second = SmtpClient(server.port), SmtpClient(server.port)
    with first, second:
        with SmtpClient(server.port, greeting=False) as third:
            assert third.read_reply() == f"421 4.7.0 {HOSTNAME} Too many connections, try again later"
            assert third.closed()
        assert first.cmd("NOOP") == OK
        assert second.cmd("QUIT") == QUIT_REPLY
        assert second.closed()
    # Both slots are free again once the sessions are gone.
    def accepts():
        with SmtpClient(server.port) as a, SmtpClient(server.port) as b:
            return a.greeting == GREETING and b.greeting == GREETING
    wait_until(accepts, message="two new sessions to be accepted")
