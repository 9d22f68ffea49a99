"""A recipient that expands to several mailboxes is retried without duplicates: the targets
already served are recorded in the spool envelope ("done" lines) and skipped on the retry."""
from __future__ import annotations

from ternlib import send_message, wait_until


def test_partial_failure_is_retried_for_the_missing_target_only(tern):
    tern.cli("user", "quota", "dave@example.test", "1K", check=True)
    tern.cli("alias", "add", "team@example.test", "alice@example.test", "dave@example.test", check=True)
    body = "Subject: big\r\n\r\n" + ("x" * 70 + "\r\n") * 70  # about 5 KB: over dave's 1 KB quota
    queue_id = send_message(tern.port, "sender@example.org", ["team@example.test"], body)

    tern.wait_messages("alice", 1)
    tern.wait_log(r"delivery deferred id=" + queue_id + r" to=team@example\.test .*4\.2\.2 mailbox of "
                  r"dave@example\.test is full")
    envelope = (tern.data_dir / "spool" / "env" / queue_id).read_text()
    alice_maildir = str(tern.data_dir / "domains" / "example.test" / "alice" / "Maildir")
    assert f"rcpt pending 1 " in envelope and f"\ndone {alice_maildir}\n" in envelope, envelope

    # Let a few retries (1-2 s apart) fail: alice still has one copy.
    tern.wait_log(r"delivery deferred id=" + queue_id, count=3, timeout=20)
    assert len(tern.maildir_files("alice")) == 1

    tern.cli("user", "quota", "dave@example.test", "0", check=True)
    tern.wait_messages("dave", 1, timeout=20)
    tern.wait_spool_empty()
    assert len(tern.maildir_files("alice")) == 1
    assert len(tern.maildir_files("dave")) == 1
    assert b"Delivered-To: dave@example.test" in tern.messages("dave")[0]
