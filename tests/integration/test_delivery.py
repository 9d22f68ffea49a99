"""End-to-end delivery: SMTP in, spool, Maildir out, with exact file contents."""
from __future__ import annotations

import re
import smtplib
import subprocess
import threading

from ternlib import HOSTNAME, QUEUED_RE, SmtpClient, send_message

DATE = r"[A-Z][a-z]{2}, \d{2} [A-Z][a-z]{2} \d{4} \d{2}:\d{2}:\d{2} \+0000"


def prefix_re(sender: str, recipient: str, helo: str, queue_id: str, with_: str = "ESMTP",
              for_: str | None = "") -> str:
    """Regular expression for the lines tern puts before the message. for_ "" means `recipient`,
    None means no "for" clause (several recipients)."""
    for_clause = "" if for_ is None else r"\n\tfor <" + re.escape(for_ or recipient) + ">"
    return (r"Return-Path: <" + re.escape(sender) + r">\n"
            r"Delivered-To: " + re.escape(recipient) + r"\n"
            r"Received: from " + re.escape(helo) + r" \(\[127\.0\.0\.1\]\)\n"
            r"\tby " + re.escape(HOSTNAME) + r" \(tern\) with " + with_ + " id " + re.escape(queue_id)
            + for_clause + "; " + DATE + r"\n")


def assert_delivered(content: bytes, expected_prefix_re: str, body: bytes) -> None:
    text = content.decode("utf-8")
    m = re.match(expected_prefix_re, text)
    assert m, f"unexpected delivery lines:\n{text[:600]}"
    assert content[len(m.group(0).encode()):] == body


class RecordingSMTP(smtplib.SMTP):
    """smtplib.SMTP that keeps the reply to DATA (sendmail() does not return it)."""
    data_reply = None

    def data(self, msg):
        self.data_reply = super().data(msg)
        return self.data_reply


def test_smtplib_sendmail(tern):
    message = ("From: bob@example.org\r\n"
               "To: alice@example.test\r\n"
               "Subject: via smtplib\r\n"
               "\r\n"
               "first line\r\n"
               ".x starts with a dot\r\n"
               "..y starts with two dots\r\n"
               ".\r\n"
               "last line\r\n")
    with RecordingSMTP("127.0.0.1", tern.port, local_hostname="smtplib.test", timeout=10) as s:
        refused = s.sendmail("bob@example.org", ["alice@example.test"], message)
        assert refused == {}
        code, text = s.data_reply
    assert code == 250
    m = re.fullmatch(r"2\.0\.0 Ok: queued as (\S+)", text.decode())
    assert m, text
    queue_id = m.group(1)
    (content,) = tern.wait_messages("alice", 1)
    # smtplib dot-stuffs on the wire; tern unstuffs and turns CRLF into LF.
    assert_delivered(content, prefix_re("bob@example.org", "alice@example.test", "smtplib.test", queue_id),
                     message.replace("\r\n", "\n").encode())
    tern.wait_spool_empty()


def test_swaks(tern):
    result = subprocess.run(
        ["swaks", "--server", f"127.0.0.1:{tern.port}", "--to", "alice@example.test", "--from", "bob@example.org",
         "--helo", "swaks.test", "--header", "Subject: via swaks",
         "--body", "hello from swaks\n.leading dot\nbye"],
        capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stdout + result.stderr
    m = re.search(r"^<-  250 2\.0\.0 Ok: queued as (\S+)$", result.stdout, re.M)
    assert m, result.stdout
    queue_id = m.group(1)
    (content,) = tern.wait_messages("alice", 1)
    text = content.decode()
    assert re.match(prefix_re("bob@example.org", "alice@example.test", "swaks.test", queue_id), text), text
    # What swaks sent after its 354, line by line, as its transcript shows (" -> " lines).
    transcript = result.stdout.splitlines()
    start = next(i for i, line in enumerate(transcript) if line.startswith("<-  354 "))
    end = transcript.index(" -> .", start)
    wire_lines = [line[4:] for line in transcript[start + 1:end]]
    assert all(line.startswith(" -> ") for line in transcript[start + 1:end])
    assert "..leading dot" in wire_lines  # swaks stuffs the leading dot
    expected_body = "".join((line[1:] if line.startswith(".") else line) + "\n" for line in wire_lines)
    assert text[len(re.match(prefix_re("bob@example.org", "alice@example.test", "swaks.test", queue_id), text)
                     .group(0)):] == expected_body
    assert "\nSubject: via swaks\n" in text
    assert "\n\nhello from swaks\n.leading dot\nbye\n" in text
    tern.wait_spool_empty()


def test_wire_format_crlf_and_dot_unstuffing(tern):
    wire = (b"From: bob@example.org\r\n"
            b"Subject: raw\r\n"
            b"\r\n"
            b"plain\r\n"
            b"..x\r\n"        # stuffed ".x"
            b"...\r\n"        # stuffed ".."
            b"..\r\n"         # stuffed "."
            b" .not stuffed\r\n"
            b"tab\there\r\n"
            b"\r\n"
            b"end\r\n")
    queue_id = send_message(tern.port, "bob@example.org", ["alice@example.test"], wire)
    (content,) = tern.wait_messages("alice", 1)
    assert_delivered(content, prefix_re("bob@example.org", "alice@example.test", "client.test", queue_id),
                     b"From: bob@example.org\nSubject: raw\n\nplain\n.x\n..\n.\n .not stuffed\ntab\there\n\nend\n")
    tern.wait_spool_empty()


def test_multiple_recipients_with_duplicates(tern):
    with SmtpClient(tern.port) as c:
        assert c.ehlo().startswith("250-")
        assert c.cmd("MAIL FROM:<bob@example.org>") == "250 2.1.0 Sender <bob@example.org> OK"
        for r in ["alice@example.test", "dave@example.test", "ALICE@EXAMPLE.TEST", "alice@example.test",
                  "Dave@Example.Test"]:
            assert c.cmd(f"RCPT TO:<{r}>") == f"250 2.1.5 Recipient <{r}> OK"
        assert c.cmd("DATA") == "354 End data with <CR><LF>.<CR><LF>"
        c.send("Subject: to two\r\n\r\nfor both\r\n.\r\n")
        m = QUEUED_RE.match(c.read_reply())
        assert m
        assert c.cmd("QUIT") == f"221 2.0.0 {HOSTNAME} closing connection"
    queue_id = m.group(1)
    tern.wait_messages("alice", 1)
    tern.wait_messages("dave", 1)
    tern.wait_spool_empty()
    (alice,) = tern.messages("alice")
    (dave,) = tern.messages("dave")
    body = b"Subject: to two\n\nfor both\n"
    assert_delivered(alice, prefix_re("bob@example.org", "alice@example.test", "client.test", queue_id, for_=None),
                     body)
    assert_delivered(dave, prefix_re("bob@example.org", "dave@example.test", "client.test", queue_id, for_=None),
                     body)
    assert tern.messages("erin") == []
    assert tern.log_count(rf" queue info queued id={re.escape(queue_id)} .*recipients=2\b") == 1
    assert tern.log_count(rf" deliver info delivered to maildir id={re.escape(queue_id)} ") == 2


def test_null_sender_and_helo(tern):
    with SmtpClient(tern.port) as c:
        assert c.cmd("HELO old.client.test") == f"250 {HOSTNAME}"
        assert c.cmd("MAIL FROM:<>") == "250 2.1.0 Sender <> OK"
        assert c.cmd("RCPT TO:<alice@example.test>") == "250 2.1.5 Recipient <alice@example.test> OK"
        assert c.cmd("DATA") == "354 End data with <CR><LF>.<CR><LF>"
        c.send("Subject: bounce\r\n\r\nreturned\r\n.\r\n")
        m = QUEUED_RE.match(c.read_reply())
        assert m
    (content,) = tern.wait_messages("alice", 1)
    assert_delivered(content, prefix_re("", "alice@example.test", "old.client.test", m.group(1), with_="SMTP"),
                     b"Subject: bounce\n\nreturned\n")


def test_8bit_body(tern):
    body = "Subject: 8bit\r\n\r\nGrüße, naïve café — ✓\r\n".encode()
    with SmtpClient(tern.port) as c:
        assert c.ehlo().startswith("250-")
        assert c.cmd("MAIL FROM:<bob@example.org> BODY=8BITMIME") == "250 2.1.0 Sender <bob@example.org> OK"
        assert c.cmd("RCPT TO:<alice@example.test>") == "250 2.1.5 Recipient <alice@example.test> OK"
        assert c.cmd("DATA") == "354 End data with <CR><LF>.<CR><LF>"
        c.send(body + b".\r\n")
        m = QUEUED_RE.match(c.read_reply())
        assert m
    (content,) = tern.wait_messages("alice", 1)
    assert_delivered(content, prefix_re("bob@example.org", "alice@example.test", "client.test", m.group(1)),
                     body.replace(b"\r\n", b"\n"))


def test_two_messages_in_one_session(tern):
    ids = []
    with SmtpClient(tern.port) as c:
        assert c.ehlo().startswith("250-")
        for n in (1, 2):
            assert c.cmd("MAIL FROM:<bob@example.org>") == "250 2.1.0 Sender <bob@example.org> OK"
            assert c.cmd("RCPT TO:<erin@example.test>") == "250 2.1.5 Recipient <erin@example.test> OK"
            assert c.cmd("DATA") == "354 End data with <CR><LF>.<CR><LF>"
            c.send(f"Subject: number {n}\r\n\r\nmessage {n}\r\n.\r\n")
            m = QUEUED_RE.match(c.read_reply())
            assert m
            ids.append(m.group(1))
    assert ids[0] != ids[1]
    files = tern.wait_messages("erin", 2)
    tern.wait_spool_empty()
    assert len(files) == 2
    by_subject = {b"Subject: number 1": ids[0], b"Subject: number 2": ids[1]}
    for content in files:
        (subject,) = [s for s in by_subject if s in content]
        assert f"with ESMTP id {by_subject.pop(subject)}\n\tfor <erin@example.test>; ".encode() in content
    assert not by_subject


def test_spool_holds_message_until_delivery(tern_factory):
    """With deliveries held (concurrency_local = 0) the message sits in spool/msg and spool/env
    under its queue id; once released it is delivered and both files are removed."""
    server = tern_factory(queue={"concurrency_local": 0})
    queue_id = send_message(server.port, "bob@example.org", ["alice@example.test"], "Subject: held\r\n\r\nheld\r\n")
    assert server.spool_entries() == [f"msg/{queue_id}", f"env/{queue_id}"]
    assert server.messages("alice") == []
    server.reload(queue={"concurrency_local": 10})
    server.wait_messages("alice", 1)
    server.wait_spool_empty()
    assert len(server.messages("alice")) == 1


def test_smtputf8_sender(tern):
    with SmtpClient(tern.port) as c:
        assert c.ehlo().startswith("250-")
        assert c.cmd("MAIL FROM:<jörg@bücher.example> SMTPUTF8") == "250 2.1.0 Sender <jörg@bücher.example> OK"
        assert c.cmd("RCPT TO:<alice@example.test>") == "250 2.1.5 Recipient <alice@example.test> OK"
        assert c.cmd("DATA") == "354 End data with <CR><LF>.<CR><LF>"
        c.send("Subject: ünïcödé\r\n\r\nhallo\r\n.\r\n".encode())
        m = QUEUED_RE.match(c.read_reply())
        assert m
    (content,) = tern.wait_messages("alice", 1)
    assert_delivered(content, prefix_re("jörg@bücher.example", "alice@example.test", "client.test", m.group(1),
                                        with_="UTF8SMTP"),
                     "Subject: ünïcödé\n\nhallo\n".encode())


def test_delivered_to_loop_is_not_delivered(tern):
    """A message that already carries alice's Delivered-To line is refused by deliver (loop),
    and the sender (local here, so the bounce can be read) gets a DSN saying so."""
    queue_id = send_message(tern.port, "erin@example.test", ["alice@example.test", "dave@example.test"],
                            "Delivered-To: alice@example.test\r\nSubject: loop\r\n\r\nloop\r\n")
    tern.wait_messages("dave", 1)
    (bounce,) = tern.wait_messages("erin", 1)
    tern.wait_spool_empty()
    assert tern.messages("alice") == []
    assert b"Final-Recipient: rfc822;alice@example.test\nAction: failed\nStatus: 5.4.6\n" in bounce
    assert tern.log_count(rf" queue error delivery failed permanently id={re.escape(queue_id)} "
                          r"to=alice@example\.test reason=.*looping") == 1


def test_parallel_sessions(tern):
    """Eight clients at once, three messages each: 24 files, each exactly once."""
    errors, ids = [], []
    lock = threading.Lock()

    def client(n):
        try:
            for k in range(3):
                qid = send_message(tern.port, f"sender{n}@example.org", ["erin@example.test"],
                                   f"Subject: c{n} m{k}\r\n\r\nclient {n} message {k}\r\n")
                with lock:
                    ids.append(qid)
        except Exception as e:  # noqa: BLE001 - reported below
            with lock:
                errors.append(repr(e))

    threads = [threading.Thread(target=client, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    assert len(set(ids)) == 24
    files = tern.wait_messages("erin", 24, timeout=30)
    tern.wait_spool_empty()
    files = tern.messages("erin")
    assert len(files) == 24
    bodies = sorted(f.split(b"\n\n", 1)[1] for f in files)
    assert bodies == sorted(f"client {n} message {k}\n".encode() for n in range(8) for k in range(3))
