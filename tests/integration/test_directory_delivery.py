"""Delivery through the directory: aliases, sub-addresses, catch-alls, role addresses, forwards
(with the queued copy's rewritten envelope), loops met at delivery time, and Maildir++ quota.
Each test checks the Maildir files themselves. Runs on SQLite, or on PostgreSQL with
TERN_TEST_BACKEND=postgresql.
"""
from __future__ import annotations

import re

import dirlib
import ternlib
from dirlib import accepted, rcpt, sql, unknown
from ternlib import QUEUED_RE, SmtpClient, send_message, wait_until

SENDER = "bob@example.org"


def delivered_to(content: bytes) -> str:
    """The Delivered-To line tern put on a Maildir file (its second line)."""
    lines = content.split(b"\n")
    assert lines[0] == f"Return-Path: <{SENDER}>".encode() or lines[0].startswith(b"Return-Path: <"), lines[0]
    assert lines[1].startswith(b"Delivered-To: "), lines[:3]
    return lines[1][len(b"Delivered-To: "):].decode()


def send(server, recipients: list[str], subject: str, sender: str = SENDER, headers: str = "") -> str:
    return send_message(server.port, sender, recipients, f"{headers}Subject: {subject}\r\n\r\n{subject} body\r\n")


def subjects(server, user: str) -> list[str]:
    out = []
    for m in server.messages(user):
        found = re.search(rb"^Subject: (.*)$", m, re.M)
        out.append(found.group(1).decode() if found else "")
    return sorted(out)


def cli_ok(server, *args: str) -> None:
    server.cli(*args, check=True)


def forwarded(server, queue_id: str) -> re.Match:
    return dirlib.log_match(server, rf" deliver info forwarded id={re.escape(queue_id)} to=(\S+) new_id=(\S+) "
                                    r"targets=(\S+) sender=(\S*)$")


def test_alias_target_that_fails_for_good_is_bounced(tern_factory):
    """An alias to dave and erin, erin over quota with no grace: dave gets the message, and the
    sender gets a bounce for the alias naming erin's failure and saying the others received it."""
    t = dirlib.make_server(tern_factory, delivery={"over_quota_grace": 0})
    cli_ok(t, "alias", "add", "pair@example.test", "dave@example.test", "erin@example.test")
    cli_ok(t, "user", "quota", "erin@example.test", "0", "--messages", "1")
    send(t, ["erin@example.test"], "fills erin")
    t.wait_messages("erin", 1)
    t.wait_spool_empty()
    queue_id = send(t, ["pair@example.test"], "to the pair")
    (report_id,) = t.wait_only_reports()
    assert subjects(t, "dave") == ["to the pair"]
    assert subjects(t, "erin") == ["fills erin"]
    dirlib.log_match(t, rf" deliver error some targets of a recipient failed permanently id={re.escape(queue_id)} "
                        r"to=pair@example\.test errors=\"5\.2\.2 mailbox of erin@example\.test is full ")
    dirlib.log_match(t, rf" queue error delivery failed permanently id={re.escape(queue_id)} to=pair@example\.test "
                        r"reason=\"5\.2\.2 mailbox of erin@example\.test is full .*; the other targets of "
                        r"pair@example\.test received the message\"$")
    report = (t.data_dir / "spool" / "msg" / report_id).read_text()
    assert "Final-Recipient: rfc822;pair@example.test\nAction: failed\nStatus: 5.2.2\n" in report
    unfolded = re.sub(r"\n[ \t]+", " ", report)
    assert "the other targets of pair@example.test received the message" in unfolded


# ---------------------------------------------------------------------------------------------
# Aliases, sub-addresses, catch-all, role addresses


def test_alias_to_two_users_and_alias_to_alias(tern):
    cli_ok(tern, "alias", "add", "team@example.test", "alice@example.test", "dave@example.test")
    cli_ok(tern, "alias", "add", "all@example.test", "team@example.test", "erin@example.test")
    # Two routes to one Maildir still give one copy.
    cli_ok(tern, "alias", "add", "twice@example.test", "alice@example.test", "alice+x@example.test",
           "team@example.test")
    send(tern, ["team@example.test"], "to team")
    send(tern, ["all@example.test"], "to all")
    send(tern, ["twice@example.test"], "to twice")
    tern.wait_messages("alice", 3)
    tern.wait_messages("dave", 3)
    tern.wait_messages("erin", 1)
    tern.wait_spool_empty()
    assert subjects(tern, "alice") == ["to all", "to team", "to twice"]
    assert subjects(tern, "dave") == ["to all", "to team", "to twice"]
    assert subjects(tern, "erin") == ["to all"]
    for user in ("alice", "dave", "erin"):
        assert {delivered_to(m) for m in tern.messages(user)} == {f"{user}@example.test"}
    assert not (tern.data_dir / "domains" / "example.test" / "team").exists()
    assert tern.log_count(r" queue info delivered id=\S+ to=all@example\.test attempts=1$") == 1


def test_sub_addresses(tern):
    assert rcpt(tern.port, "alice+news@example.test", "alice-news@example.test", "alice-a-b+c@example.test",
                "nobody+news@example.test", "+news@example.test") == [
        accepted("alice+news@example.test"), accepted("alice-news@example.test"), accepted("alice-a-b+c@example.test"),
        unknown("nobody+news@example.test"), unknown("+news@example.test")]
    send(tern, ["alice+news@example.test"], "plus")
    send(tern, ["Alice-News@example.test"], "minus")
    tern.wait_messages("alice", 2)
    tern.wait_spool_empty()
    assert subjects(tern, "alice") == ["minus", "plus"]
    assert {delivered_to(m) for m in tern.messages("alice")} == {"alice@example.test"}
    # An exact user wins over the extension of a shorter one; deeper extensions fall back to it.
    tern.add_user("alice-news@example.test")
    send(tern, ["alice-news@example.test"], "exact")
    send(tern, ["alice-news-daily@example.test"], "deeper")
    send(tern, ["alice+news@example.test"], "plus again")
    tern.wait_messages("alice-news", 2)
    tern.wait_messages("alice", 3)
    tern.wait_spool_empty()
    assert subjects(tern, "alice-news") == ["deeper", "exact"]
    assert {delivered_to(m) for m in tern.messages("alice-news")} == {"alice-news@example.test"}
    assert subjects(tern, "alice") == ["minus", "plus", "plus again"]


def test_plus_only_extension_separator(tern_factory):
    t = dirlib.make_server(tern_factory, directory={"extension_separators": "+"})
    assert rcpt(t.port, "alice-news@example.test", "alice+news@example.test") == [
        unknown("alice-news@example.test"), accepted("alice+news@example.test")]
    send(t, ["alice+news@example.test"], "plus")
    (content,) = t.wait_messages("alice", 1)
    assert delivered_to(content) == "alice@example.test"
    r = t.cli("resolve", "alice-news@example.test")
    assert r.stdout == "alice-news@example.test: unknown (no user or alias alice-news@example.test)\n"


def test_catchall(tern):
    assert rcpt(tern.port, "random@example.test") == [unknown("random@example.test")]
    cli_ok(tern, "domain", "set", "example.test", "--catchall", "erin@example.test")
    assert rcpt(tern.port, "random@example.test", "x+y@example.test") == [
        accepted("random@example.test"), accepted("x+y@example.test")]
    send(tern, ["random@example.test"], "unknown local part")
    send(tern, ["dave@example.test"], "known user")
    send(tern, ["dave+tag@example.test"], "known user with extension")
    tern.wait_messages("erin", 1)
    tern.wait_messages("dave", 2)
    tern.wait_spool_empty()
    assert subjects(tern, "erin") == ["unknown local part"]
    assert subjects(tern, "dave") == ["known user", "known user with extension"]
    assert delivered_to(tern.messages("erin")[0]) == "erin@example.test"
    # A catch-all to an address that does not exist makes nothing deliverable.
    cli_ok(tern, "domain", "set", "example.test", "--catchall", "gone@example.test")
    assert rcpt(tern.port, "random@example.test", "dave@example.test") == [
        unknown("random@example.test"), accepted("dave@example.test")]
    cli_ok(tern, "domain", "set", "example.test", "--catchall", "none")
    assert rcpt(tern.port, "random@example.test") == [unknown("random@example.test")]


def test_role_addresses(tern_factory):
    t = dirlib.make_server(tern_factory, directory={"postmaster": "dave@example.test"})
    cli_ok(t, "domain", "add", "other.test", "--postmaster", "erin@example.test")
    cli_ok(t, "domain", "add", "third.test")
    cli_ok(t, "user", "add", "abuse@third.test", "--password-hash", ternlib.PASSWORD_HASH)
    recipients = ["postmaster@example.test", "ABUSE@example.test", "postmaster@other.test", "abuse@other.test",
                  "postmaster@third.test", "abuse@third.test"]
    assert rcpt(t.port, *recipients) == [accepted(r) for r in recipients]
    for r in recipients:
        send(t, [r], f"to {r}")
    t.wait_messages("dave", 3)
    t.wait_messages("erin", 2)
    t.wait_messages("abuse@third.test", 1)
    t.wait_spool_empty()
    # example.test and third.test use the server's postmaster; other.test its own; a real user wins.
    assert subjects(t, "dave") == ["to ABUSE@example.test", "to postmaster@example.test", "to postmaster@third.test"]
    assert subjects(t, "erin") == ["to abuse@other.test", "to postmaster@other.test"]
    assert subjects(t, "abuse@third.test") == ["to abuse@third.test"]
    assert not (t.data_dir / "domains" / "example.test" / "postmaster").exists()


def test_role_address_without_a_configured_postmaster(tern):
    send(tern, ["postmaster@example.test"], "no postmaster configured")
    (content,) = tern.wait_messages("postmaster", 1)
    assert delivered_to(content) == "postmaster@example.test"
    assert b"Subject: no postmaster configured\n" in content


# ---------------------------------------------------------------------------------------------
# Forwards


# Forwards to remote addresses stay queued (no relay yet): retried only after the test ends.
NO_RETRY = {"retry_initial": 600, "retry_max": 600}


def test_forward_with_kept_copy_queues_a_rewritten_message(tern_factory):
    tern = dirlib.make_server(tern_factory, queue=NO_RETRY)
    cli_ok(tern, "user", "forward", "alice@example.test", "carol@remote.example", "--keep-copy")
    queue_id = send(tern, ["alice@example.test"], "forward me")
    (content,) = tern.wait_messages("alice", 1)
    assert delivered_to(content) == "alice@example.test"
    m = forwarded(tern, queue_id)
    assert (m.group(1), m.group(3), m.group(4)) == ("alice@example.test", "carol@remote.example", "alice@example.test")
    new_id = m.group(2)
    assert new_id != queue_id
    # The original is done; the forward waits for the relay, its envelope from the forwarder.
    dirlib.log_match(tern, rf" queue info delivered id={re.escape(queue_id)} to=alice@example\.test attempts=1$")
    # The relay takes it; the test DNS server knows no remote.example (SERVFAIL): deferred.
    dirlib.log_match(tern, rf" queue warn delivery deferred id={re.escape(new_id)} to=carol@remote\.example "
                           r"reason=\"4\.4\.3 DNS lookup of the MX for remote\.example failed: SERVFAIL\"")
    wait_until(lambda: dirlib.queued_ids(tern) == [new_id], message="only the forward queued")
    env = dirlib.envelope(tern, new_id)
    assert (env["sender"], env["rcpt"], env["client"]) == ("alice@example.test", [("pending", "carol@remote.example")],
                                                            "[local]")
    body = (tern.data_dir / "spool" / "msg" / new_id).read_bytes()
    assert body.startswith(b"Delivered-To: alice@example.test\nReceived: from client.test ([127.0.0.1])\n")
    assert f"with ESMTP id {queue_id}\n\tfor <alice@example.test>; ".encode() in body
    assert body.endswith(b"\nSubject: forward me\n\nforward me body\n")
    # A bounce (null sender) is forwarded with the null sender.
    bounce_id = send(tern, ["alice@example.test"], "a bounce", sender="")
    m = forwarded(tern, bounce_id)
    assert m.group(4) == '""'  # the log's empty value
    assert dirlib.envelope(tern, m.group(2))["sender"] == ""


def test_forward_without_copy(tern_factory):
    tern = dirlib.make_server(tern_factory, queue=NO_RETRY)
    cli_ok(tern, "user", "forward", "dave@example.test", "carol@remote.example", "dan@remote.example")
    queue_id = send(tern, ["dave@example.test", "erin@example.test"], "away")
    tern.wait_messages("erin", 1)
    m = forwarded(tern, queue_id)
    assert (m.group(3), m.group(4)) == ("carol@remote.example,dan@remote.example", "dave@example.test")
    dirlib.log_match(tern, rf" queue info delivered id={re.escape(queue_id)} to=dave@example\.test attempts=1$")
    env = wait_until(lambda: dirlib.queued_ids(tern) == [m.group(2)] and dirlib.envelope(tern, m.group(2)))
    assert env["rcpt"] == [("pending", "carol@remote.example"), ("pending", "dan@remote.example")]
    assert tern.messages("dave") == []


def test_forward_of_a_message_larger_than_one_ipc_frame(tern_factory):
    """A forward is handed to the queue in pieces: a 2.4 MB message (IPC frames hold 1 MiB)
    is queued whole, byte for byte, behind its Delivered-To line."""
    t = dirlib.make_server(tern_factory, smtp={"max_message_size": 4_000_000}, queue=NO_RETRY)
    cli_ok(t, "user", "forward", "alice@example.test", "carol@remote.example")
    line = "0123456789" * 7 + "\r\n"
    queue_id = send_message(t.port, SENDER, ["alice@example.test"], "Subject: big\r\n\r\n" + line * 35000)
    original = (t.data_dir / "spool" / "msg" / queue_id)
    m = forwarded(t, queue_id)
    new_id = m.group(2)
    body = (t.data_dir / "spool" / "msg" / new_id).read_bytes()
    assert len(body) > 2_400_000
    assert body.startswith(b"Delivered-To: alice@example.test\nReceived: from client.test ([127.0.0.1])\n")
    payload = (b"0123456789" * 7 + b"\n") * 35000
    assert body.endswith(b"\nSubject: big\n\n" + payload)
    assert not original.exists()  # the original was delivered (forwarded) and left the spool


def test_forward_keeps_sender_when_configured(tern_factory):
    t = dirlib.make_server(tern_factory, delivery={"forward_sender": "keep"}, queue=NO_RETRY)
    cli_ok(t, "user", "forward", "alice@example.test", "carol@remote.example", "--keep-copy")
    queue_id = send(t, ["alice@example.test"], "keep my sender")
    t.wait_messages("alice", 1)
    m = forwarded(t, queue_id)
    assert m.group(4) == SENDER
    env = wait_until(lambda: dirlib.queued_ids(t) == [m.group(2)] and dirlib.envelope(t, m.group(2)))
    assert (env["sender"], env["rcpt"]) == (SENDER, [("pending", "carol@remote.example")])


def test_forward_loop_by_delivered_to(tern):
    """A message that already went through alice's forward (it carries her Delivered-To line)
    is not forwarded again: it fails permanently and nothing new is queued."""
    cli_ok(tern, "user", "forward", "alice@example.test", "carol@remote.example")
    queue_id = send(tern, ["alice@example.test", "dave@example.test"], "came back",
                    headers="Delivered-To: alice@example.test\r\n")
    tern.wait_messages("dave", 1)
    tern.wait_only_reports()  # the bounce to the (remote) sender
    dirlib.log_match(tern, rf" queue info report queued id=\S+ about={re.escape(queue_id)} to={re.escape(SENDER)} "
                           r"recipients=1$")
    dirlib.log_match(tern, rf" queue error delivery failed permanently id={re.escape(queue_id)} to=alice@example\.test "
                           r"reason=\"5\.4\.6 forwarding loop: the message already has Delivered-To "
                           r"alice@example\.test\"$")
    assert tern.log_count(" deliver info forwarded ") == 0
    assert tern.messages("alice") == []


# ---------------------------------------------------------------------------------------------
# Changes between acceptance and delivery


def test_verdicts_met_at_delivery(tern_factory):
    """Accepted while valid, then changed before the queue delivers: an alias loop, a deleted
    user and a disabled user each fail permanently with their own reason; alice still gets hers."""
    t = dirlib.make_server(tern_factory, queue={"concurrency_local": 0})
    cli_ok(t, "alias", "add", "loopy@example.test", "alice@example.test")
    queue_id = send(t, ["loopy@example.test", "dave@example.test", "erin@example.test", "alice@example.test"], "held")
    sql(t, "DELETE FROM aliases WHERE local = 'loopy'")
    sql(t, "INSERT INTO aliases (domain, local, target) VALUES ('example.test', 'loopy', 'loopy2@example.test'), "
           "('example.test', 'loopy2', 'loopy@example.test')")
    sql(t, "UPDATE meta SET value = value + 1 WHERE key = 'generation'")  # as every writer does
    cli_ok(t, "user", "del", "dave@example.test")
    cli_ok(t, "user", "disable", "erin@example.test")
    t.reload(queue={"concurrency_local": 10})
    t.wait_messages("alice", 1)
    t.wait_only_reports()  # one bounce to the (remote) sender, for the three failures
    dirlib.log_match(t, rf" queue info report queued id=\S+ about={re.escape(queue_id)} to={re.escape(SENDER)} "
                        r"recipients=3$")
    qid = re.escape(queue_id)
    dirlib.log_match(t, rf" queue error delivery failed permanently id={qid} to=loopy@example\.test "
                        r"reason=\"5\.4\.6 alias loop: .*alias loop: loopy@example\.test -> loopy2@example\.test -> "
                        r"loopy@example\.test\"$")
    dirlib.log_match(t, rf" queue error delivery failed permanently id={qid} to=dave@example\.test "
                        r"reason=\"5\.1\.1 no such user here: dave@example\.test\"$")
    dirlib.log_match(t, rf" queue error delivery failed permanently id={qid} to=erin@example\.test "
                        r"reason=\"5\.2\.1 mailbox disabled: user erin@example\.test is disabled\"$")
    assert t.messages("dave") == [] and t.messages("erin") == []
    assert len(t.messages("alice")) == 1


# ---------------------------------------------------------------------------------------------
# Quota (Maildir++ maildirsize)


BIG = "Subject: big\r\n\r\n" + ("x" * 70 + "\r\n") * 70  # about 5 KB


def maildirsize(server, user: str) -> list[str]:
    return (server.maildir(user).parent / "maildirsize").read_text().splitlines()


def test_over_quota_defers_then_delivers_when_raised(tern):
    cli_ok(tern, "user", "quota", "dave@example.test", "2K")
    send(tern, ["dave@example.test"], "small")
    (small,) = tern.wait_messages("dave", 1)
    tern.wait_spool_empty()
    big_id = send_message(tern.port, SENDER, ["dave@example.test"], BIG)
    dirlib.log_match(tern, rf" queue warn delivery deferred id={re.escape(big_id)} to=dave@example\.test "
                           rf"reason=\"4\.2\.2 mailbox of dave@example\.test is full \({len(small)} of 2048 bytes, "
                           r"1 of 0 messages; 0 = no limit\)\" retry_in=\d+$")
    tern.wait_log(rf" queue warn delivery deferred id={re.escape(big_id)} ", count=2)  # retried, still full
    assert dirlib.queued_ids(tern) == [big_id]
    assert len(tern.messages("dave")) == 1
    assert maildirsize(tern, "dave") == ["2048S", f"{len(small)} 1"]
    # More room: the next retry delivers it, and maildirsize follows.
    cli_ok(tern, "user", "quota", "dave@example.test", "1M")
    tern.wait_messages("dave", 2)
    tern.wait_spool_empty()
    lines = maildirsize(tern, "dave")
    assert lines[0] == "1048576S"
    assert sum(int(line.split()[0]) for line in lines[1:]) == sum(len(m) for m in tern.messages("dave"))
    assert tern.log_count(" delivery failed permanently ") == 0


def test_over_quota_bounces_without_grace(tern_factory):
    t = dirlib.make_server(tern_factory, delivery={"over_quota_grace": 0})
    cli_ok(t, "user", "quota", "dave@example.test", "2K")
    cli_ok(t, "user", "quota", "erin@example.test", "0", "--messages", "1")
    send(t, ["dave@example.test", "erin@example.test"], "small")
    t.wait_messages("dave", 1)
    t.wait_messages("erin", 1)
    t.wait_spool_empty()
    big_id = send_message(t.port, SENDER, ["dave@example.test"], BIG)
    second_id = send(t, ["erin@example.test"], "second")
    assert len(t.wait_only_reports()) == 2  # a bounce to the (remote) sender for each
    dirlib.log_match(t, rf" queue error delivery failed permanently id={re.escape(big_id)} to=dave@example\.test "
                        r"reason=\"5\.2\.2 mailbox of dave@example\.test is full \(\d+ of 2048 bytes, 1 of 0 messages; "
                        r"0 = no limit\); gave up after \d+ seconds\"$")
    dirlib.log_match(t, rf" queue error delivery failed permanently id={re.escape(second_id)} to=erin@example\.test "
                        r"reason=\"5\.2\.2 mailbox of erin@example\.test is full \(\d+ of 0 bytes, 1 of 1 messages; "
                        r"0 = no limit\); gave up after \d+ seconds\"$")
    assert len(t.messages("dave")) == 1 and len(t.messages("erin")) == 1
    assert maildirsize(t, "dave")[0] == "2048S"
    assert maildirsize(t, "erin")[0] == "1C"
    assert t.log_count(rf" delivery deferred id=({re.escape(big_id)}|{re.escape(second_id)}) ") == 0


# ---------------------------------------------------------------------------------------------
# International domain names


def test_international_domain(tern):
    cli_ok(tern, "domain", "add", "b\u00fccher.example")
    tern.add_user("jorg@b\u00fccher.example")  # stored under the A-label, xn--bcher-kva.example
    with SmtpClient(tern.port) as c:
        assert c.ehlo().startswith("250-")
        assert c.cmd(f"MAIL FROM:<{SENDER}> SMTPUTF8") == f"250 2.1.0 Sender <{SENDER}> OK"
        for r in ("jorg@b\u00fccher.example", "jorg@xn--bcher-kva.example", "jorg@B\u00dcCHER.example"):
            assert c.cmd(f"RCPT TO:<{r}>") == accepted(r)
        assert c.cmd("RCPT TO:<nobody@b\u00fccher.example>") == unknown("nobody@b\u00fccher.example")
        assert c.cmd("DATA") == "354 End data with <CR><LF>.<CR><LF>"
        c.send("Subject: idn\r\n\r\nhello\r\n.\r\n")
        m = QUEUED_RE.match(c.read_reply())
        assert m
    # Each spelling is its own envelope recipient (as alice@ of a domain alias and of the domain
    # would be), all three resolve to the one Maildir under the A-label.
    tern.wait_messages("jorg@xn--bcher-kva.example", 3)
    tern.wait_spool_empty()
    contents = tern.messages("jorg@xn--bcher-kva.example")
    assert len(contents) == 3
    assert {delivered_to(c) for c in contents} == {"jorg@xn--bcher-kva.example"}
    assert tern.log_count(r" queue info delivered id=\S+ to=jorg@b\u00fccher\.example attempts=1$") == 1
    r = tern.cli("resolve", "jorg@b\u00fccher.example")
    assert r.stdout == (f"jorg@b\u00fccher.example: deliver\n  mailbox jorg@xn--bcher-kva.example "
                        f"{tern.data_dir}/domains/xn--bcher-kva.example/jorg/Maildir\n")
