"""`tern serve --dev` as a newcomer meets it: the README's swaks line lands in alice's Maildir."""
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time

import pytest

# Development mode always uses its own SQLite file, whatever TERN_TEST_BACKEND says.
pytestmark = pytest.mark.backend_independent

TERN = os.environ.get("TERN_BIN", os.path.join(os.path.dirname(__file__), "../../build/asan/tern"))


def readme_swaks_command():
    readme = open(os.path.join(os.path.dirname(__file__), "../../README.md")).read()
    line = next(l for l in readme.splitlines() if l.startswith("swaks "))
    return line


def wait_for_port(port, deadline):
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return True
        except OSError:
            time.sleep(0.05)
    return False


def test_readme_swaks_line_lands_in_maildir_within_a_second():
    assert not wait_for_port(2525, time.time()), "port 2525 is already in use: stop the other tern first"
    work = tempfile.mkdtemp(prefix="tern-dev-")
    proc = subprocess.Popen([TERN, "serve", "--dev"], cwd=work, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        assert wait_for_port(2525, time.time() + 20), "tern serve --dev did not open port 2525"
        # The development configuration, certificate and example account exist; the account is
        # in the directory database (not the file) and its README password works.
        config_path = os.path.join(work, "var", "tern.toml")
        config = open(config_path).read()
        assert "[[user]]" not in config and "[[domain]]" not in config
        assert os.path.exists(os.path.join(work, "var", "directory", "accounts.db"))
        show = subprocess.run([TERN, "user", "show", "alice@example.test", "--json", "--config", config_path],
                              capture_output=True, text=True, timeout=60)
        assert show.returncode == 0, show.stdout + show.stderr
        alice = json.loads(show.stdout)
        assert (alice["address"], alice["enabled"], alice["password_scheme"]) == ("alice@example.test", True,
                                                                                    "yescrypt")
        auth = subprocess.run([TERN, "user", "auth", "alice@example.test", "--password-stdin", "--config",
                               config_path], input="tern-dev-password\n", capture_output=True, text=True,
                              timeout=60)
        assert (auth.returncode, auth.stdout) == (0, "authenticated alice@example.test for test\n"), auth.stderr
        assert os.path.exists(os.path.join(work, "var", "tls", "cert.pem"))
        key_mode = os.stat(os.path.join(work, "var", "tls", "key.pem")).st_mode & 0o777
        assert key_mode == 0o600

        swaks = subprocess.run(readme_swaks_command(), shell=True, cwd=work, capture_output=True,
                               text=True, timeout=60)
        assert swaks.returncode == 0, swaks.stdout + swaks.stderr
        queued = re.search(r"<-  250 2\.0\.0 Ok: queued as (\S+)", swaks.stdout)
        assert queued, swaks.stdout
        sent_at = time.time()
        new = os.path.join(work, "var", "domains", "example.test", "alice", "Maildir", "new")
        files = []
        while time.time() < sent_at + 1.0 and not files:
            files = os.listdir(new) if os.path.isdir(new) else []
            time.sleep(0.01)
        assert len(files) == 1, "message not in Maildir/new within a second"
        content = open(os.path.join(new, files[0])).read()
        assert content.startswith("Return-Path: <you@example.org>\nDelivered-To: alice@example.test\n"
                                  "Received: from ")
        assert f"with ESMTP id {queued.group(1)}" in content
        assert "Subject: hello\n" in content and "\nit works\n" in content

        # The README's POP3 account: STLS on 1110 (the self-signed development certificate).
        import poplib
        import ssl
        insecure = ssl.create_default_context()
        insecure.check_hostname = False
        insecure.verify_mode = ssl.CERT_NONE
        pop = poplib.POP3("127.0.0.1", 1110, timeout=10)
        pop.stls(context=insecure)
        pop.user("alice@example.test")
        pop.pass_("tern-dev-password")
        assert pop.stat()[0] == 1
        assert b"Subject: hello" in pop.retr(1)[1]
        pop.quit()

        # And over IMAP with STARTTLS on 1143: the message, and the special-use folders.
        import imaplib
        imap = imaplib.IMAP4("127.0.0.1", 1143, timeout=10)
        imap.starttls(ssl_context=insecure)
        imap.login("alice@example.test", "tern-dev-password")
        assert b'(\\HasNoChildren \\Sent) "." "Sent"' in imap.list()[1]
        assert imap.select("INBOX") == ("OK", [b"1"])
        assert b"Subject: hello" in imap.fetch("1", "(BODY.PEEK[HEADER])")[1][0][1]
        imap.logout()
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
        shutil.rmtree(work, ignore_errors=True)
    assert proc.returncode == 0, out
    assert "tern stopped" in out
    assert "AddressSanitizer" not in out and "runtime error:" not in out, out
