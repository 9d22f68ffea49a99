"""The account commands (`tern domain|user|alias`) without a running server: exact table and
JSON output, every refusal with its message and exit status (0 done, 1 refused, 75 try again),
names that are not valid, and an account database that is missing, locked, read-only, damaged or
from a newer tern. Runs on SQLite, or on PostgreSQL with TERN_TEST_BACKEND=postgresql.
"""
from __future__ import annotations

import os
import pwd
import subprocess
import time
import warnings

import pytest

import dirlib
import ternlib
from dirlib import PG, cli_json, refused, sql

HASH = ternlib.PASSWORD_HASH  # of "pw"
MD5_HASH = "$1$abcdefgh$2kA9A6fJbxTu8VIcClx/c."
SIZE_HELP = "is not a size; write bytes or a number with K, M, G or T, such as 500M (0: no limit)"
needs_root = pytest.mark.skipif(not ternlib.IS_ROOT, reason="switches to another user with runuser (needs root)")
sqlite_only = pytest.mark.skipif(PG, reason="SQLite file semantics; the PostgreSQL variant is the next test")
pg_only = pytest.mark.skipif(not PG, reason="PostgreSQL variant of the SQLite test before it")


def crypt_check(password: str, hash_: str) -> bool:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import crypt  # noqa: PLC0415 (deprecated; libxcrypt underneath, so it knows $y$)
    return crypt.crypt(password, hash_) == hash_


def ok(r: subprocess.CompletedProcess, stdout: str) -> None:
    assert (r.returncode, r.stdout, r.stderr) == (0, stdout, ""), \
        f"exit {r.returncode}\nstdout: {r.stdout}\nstderr: {r.stderr}"


def run_as(server: ternlib.TernServer, user: str, *args: str) -> subprocess.CompletedProcess:
    """`tern ARGS --config FILE` as another user (the caller is root)."""
    return subprocess.run(["runuser", "-u", user, "--", server.binary, *args, "--config", str(server.config_path)],
                          capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)


def with_positional(server: ternlib.TernServer, words: list[str], *positionals: str) -> subprocess.CompletedProcess:
    """`tern WORDS --config FILE -- POSITIONALS`, for names that start with '-' or hold odd bytes."""
    return subprocess.run([server.binary, *words, "--config", str(server.config_path), "--", *positionals],
                          capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)


@pytest.fixture
def accounts(tern_factory) -> ternlib.TernServer:
    """A configuration with an empty (not yet created) account database; no server runs."""
    return dirlib.bare_server(tern_factory)


@pytest.fixture
def hosted(accounts) -> ternlib.TernServer:
    """`accounts` with the domain example.test."""
    ok(accounts.cli("domain", "add", "example.test"), "added domain example.test\n")
    return accounts


def maildir_of(server, address: str) -> str:
    local, _, domain = address.partition("@")
    return f"{server.data_dir}/domains/{domain}/{local}/Maildir"


def recent(t: int) -> bool:
    return abs(t - time.time()) < 120


# ---------------------------------------------------------------------------------------------
# Output, table and JSON


def test_domain_add_list_show_set(accounts):
    t = accounts
    ok(t.cli("domain", "add", "example.test"), "added domain example.test\n")
    ok(t.cli("domain", "add", "Other.TEST", "--quota", "100M", "--quota-messages", "500", "--max-users", "5",
             "--max-aliases", "3", "--catchall", "alice@example.test", "--postmaster", "boss@example.test",
             "--disabled"), "added domain other.test\n")
    ok(t.cli("domain", "list"),
       "DOMAIN        STATE     USERS  ALIASES  DEFAULT QUOTA  CATCH-ALL\n"
       "example.test  enabled   0      0        unlimited      -\n"
       "other.test    disabled  0      0        100M           alice@example.test\n")
    listed = cli_json(t, "domain", "list")
    assert all(recent(d.pop("created")) for d in listed)
    assert listed == [
        {"name": "example.test", "enabled": True, "users": 0, "aliases": 0, "domain_aliases": [], "max_users": 0,
         "max_aliases": 0, "max_lists": 0, "quota_bytes": 0, "quota_messages": 0, "catchall": "", "postmaster": ""},
        {"name": "other.test", "enabled": False, "users": 0, "aliases": 0, "domain_aliases": [], "max_users": 5,
         "max_aliases": 3, "max_lists": 0, "quota_bytes": 100 * 1024 * 1024, "quota_messages": 500,
         "catchall": "alice@example.test", "postmaster": "boss@example.test"},
    ]
    ok(t.cli("domain", "show", "other.test"),
       "domain:          other.test\n"
       "state:           disabled\n"
       "users:           0 (limit 5)\n"
       "aliases:         0 (limit 3)\n"
       "lists limit:     unlimited\n"
       "default quota:   100M, 500 messages\n"
       "catch-all:       alice@example.test\n"
       "postmaster:      boss@example.test\n"
       "domain aliases:  none\n")

    ok(t.cli("domain", "alias", "add", "example.net", "example.test"),
       "added domain alias example.net -> example.test\n")
    ok(t.cli("domain", "alias", "add", "Example.ORG", "EXAMPLE.test"),
       "added domain alias example.org -> example.test\n")
    shown = cli_json(t, "domain", "show", "example.test")
    assert recent(shown.pop("created"))
    assert shown == {"name": "example.test", "enabled": True, "users": 0, "aliases": 0,
                     "domain_aliases": ["example.net", "example.org"], "max_users": 0, "max_aliases": 0,
                     "max_lists": 0, "quota_bytes": 0, "quota_messages": 0, "catchall": "", "postmaster": ""}
    ok(t.cli("domain", "show", "example.test"),
       "domain:          example.test\n"
       "state:           enabled\n"
       "users:           0 (limit unlimited)\n"
       "aliases:         0 (limit unlimited)\n"
       "lists limit:     unlimited\n"
       "default quota:   unlimited, unlimited messages\n"
       "catch-all:       none\n"
       "postmaster:      postmaster mailbox of the domain\n"
       "domain aliases:  example.net, example.org\n")

    ok(t.cli("domain", "set", "other.test", "--enable", "--catchall", "none", "--quota", "0", "--max-users", "0"),
       "updated domain other.test\n")
    shown = cli_json(t, "domain", "show", "other.test")
    assert (shown["enabled"], shown["catchall"], shown["quota_bytes"], shown["quota_messages"], shown["max_users"],
            shown["max_aliases"], shown["postmaster"]) == (True, "", 0, 500, 0, 3, "boss@example.test")

    ok(t.cli("domain", "alias", "del", "example.org"), "deleted domain alias example.org\n")
    refused(t.cli("domain", "alias", "del", "example.org"), "no domain alias example.org")
    refused(t.cli("domain", "show", "nosuch.test"), "no domain nosuch.test")
    refused(t.cli("domain", "set", "nosuch.test", "--disable"), "no domain nosuch.test")
    refused(t.cli("domain", "del", "nosuch.test"), "no domain nosuch.test")
    refused(t.cli("domain", "alias", "add", "x.test", "nosuch.test"),
            "no domain nosuch.test; add it first with `tern domain add nosuch.test`")


def test_domain_show_names_the_server_postmaster(tern_factory):
    t = dirlib.bare_server(tern_factory, directory={"postmaster": "admin@example.test"})
    ok(t.cli("domain", "add", "example.test"), "added domain example.test\n")
    assert "postmaster:      admin@example.test (server default)\n" in t.cli("domain", "show", "example.test").stdout


def test_user_add_list_show(hosted):
    t = hosted
    ok(t.cli("domain", "set", "example.test", "--quota", "1G"), "updated domain example.test\n")
    ok(t.cli("user", "add", "alice@example.test", "--password-stdin", "--name", "Alice Example", input="s3cret\n"),
       f"added user alice@example.test (quota 1G, mailbox {maildir_of(t, 'alice@example.test')})\n")
    ok(t.cli("user", "add", "Bob@Example.TEST", "--password-hash", HASH, "--quota", "500M", "--quota-messages", "1000",
             "--services", "smtp,imap"),
       f"added user bob@example.test (quota 500M, mailbox {maildir_of(t, 'bob@example.test')})\n")
    ok(t.cli("user", "add", "carol@example.test", "--password-hash", MD5_HASH, "--disabled", "--maildir",
             "/srv/mail/carol/Maildir"),
       "added user carol@example.test (quota 1G, mailbox /srv/mail/carol/Maildir)\n")
    ok(t.cli("user", "list"),
       "ADDRESS             STATE     QUOTA  SERVICES            FORWARDS  NAME\n"
       "alice@example.test  enabled   1G     smtp,imap,pop3,web  -         Alice Example\n"
       "bob@example.test    enabled   500M   smtp,imap           -         \n"
       "carol@example.test  disabled  1G     smtp,imap,pop3,web  -         \n")
    users = cli_json(t, "user", "list", "example.test")
    assert all(recent(u.pop("created")) for u in users)
    assert users == [
        {"address": "alice@example.test", "name": "Alice Example", "enabled": True, "services": "smtp,imap,pop3,web",
         "quota_bytes": 1 << 30, "quota_messages": 0, "forwards": [], "keep_copy": False,
         "maildir": maildir_of(t, "alice@example.test"), "password_scheme": "yescrypt"},
        {"address": "bob@example.test", "name": "", "enabled": True, "services": "smtp,imap",
         "quota_bytes": 500 << 20, "quota_messages": 1000, "forwards": [], "keep_copy": False,
         "maildir": maildir_of(t, "bob@example.test"), "password_scheme": "yescrypt"},
        {"address": "carol@example.test", "name": "", "enabled": False, "services": "smtp,imap,pop3,web",
         "quota_bytes": 1 << 30, "quota_messages": 0, "forwards": [], "keep_copy": False,
         "maildir": "/srv/mail/carol/Maildir", "password_scheme": "md5-crypt"},
    ]
    ok(t.cli("user", "show", "BOB@example.test"),
       "address:   bob@example.test\n"
       "name:      -\n"
       "state:     enabled\n"
       "services:  smtp,imap\n"
       "quota:     500M, 1000 messages\n"
       "forwards:  none\n"
       f"maildir:   {maildir_of(t, 'bob@example.test')}\n"
       "password:  yescrypt\n")
    bob = cli_json(t, "user", "show", "bob@example.test")
    assert bob["address"] == "bob@example.test" and bob["services"] == "smtp,imap"
    # The password was stored as a hash, never as itself.
    stored = sql(t, "SELECT password_hash FROM users WHERE local = 'alice'")
    assert stored.startswith("$y$") and crypt_check("s3cret", stored) and "s3cret" not in stored
    refused(t.cli("user", "show", "nobody@example.test"), "no user nobody@example.test")
    refused(t.cli("user", "list", "nosuch.test"), "no domain nosuch.test")
    refused(t.cli("user", "add", "x@nosuch.test", "--password-hash", HASH),
            "no domain nosuch.test; add it first with `tern domain add nosuch.test`")
    refused(t.cli("user", "add", "x@example.test", "--services", "ftp", "--password-hash", HASH),
            '--services "ftp": use a list of smtp, imap, pop3, web, or all / none')
    refused(t.cli("user", "add", "x@example.test", "--maildir", "rel/Maildir", "--password-hash", HASH),
            "--maildir must be an absolute path")
    refused(t.cli("user", "add", "x@example.test", "--password-hash", "plain"),
            "--password-hash takes a crypt(3) hash ($y$, $6$, $5$, $1$ or $2b$...); make one with `tern hash-password`")


def test_user_changes(hosted):
    t = hosted
    t.add_user("bob@example.test")
    ok(t.cli("user", "set", "bob@example.test", "--name", "Bob B", "--services", "pop3"),
       "updated user bob@example.test\n")
    bob = cli_json(t, "user", "show", "bob@example.test")
    assert (bob["name"], bob["services"]) == ("Bob B", "pop3")
    ok(t.cli("user", "set", "bob@example.test", "--name", "none", "--services", "all", "--maildir", "/srv/bob/Maildir"),
       "updated user bob@example.test\n")
    bob = cli_json(t, "user", "show", "bob@example.test")
    assert (bob["name"], bob["services"], bob["maildir"]) == ("", "smtp,imap,pop3,web", "/srv/bob/Maildir")
    ok(t.cli("user", "set", "bob@example.test", "--maildir", "default"), "updated user bob@example.test\n")
    assert cli_json(t, "user", "show", "bob@example.test")["maildir"] == maildir_of(t, "bob@example.test")

    ok(t.cli("user", "disable", "bob@example.test"), "disabled bob@example.test\n")
    assert cli_json(t, "user", "show", "bob@example.test")["enabled"] is False
    ok(t.cli("user", "enable", "bob@example.test"), "enabled bob@example.test\n")
    assert cli_json(t, "user", "show", "bob@example.test")["enabled"] is True

    ok(t.cli("user", "forward", "bob@example.test", "Ext@Remote.Example", "alice@example.test", "--keep-copy"),
       "mail for bob@example.test is forwarded to 2 addresses, with a copy kept\n")
    bob = cli_json(t, "user", "show", "bob@example.test")
    assert (bob["forwards"], bob["keep_copy"]) == (["ext@remote.example", "alice@example.test"], True)
    assert "forwards:  ext@remote.example, alice@example.test (copy kept)\n" in t.cli("user", "show",
                                                                                      "bob@example.test").stdout
    ok(t.cli("user", "forward", "bob@example.test", "--clear"), "forwarding of bob@example.test cleared\n")
    bob = cli_json(t, "user", "show", "bob@example.test")
    assert (bob["forwards"], bob["keep_copy"]) == ([], False)
    refused(t.cli("user", "forward", "bob@example.test"),
            "give forwarding addresses, or --clear to stop forwarding (not both)")

    old = sql(t, "SELECT password_hash FROM users WHERE local = 'bob'")
    ok(t.cli("user", "passwd", "bob@example.test", "--password-stdin", input="n3w pass\n"),
       "password changed for bob@example.test\n")
    new = sql(t, "SELECT password_hash FROM users WHERE local = 'bob'")
    assert new != old and crypt_check("n3w pass", new) and not crypt_check("pw", new)

    ok(t.cli("user", "del", "bob@example.test"),
       f"deleted user bob@example.test; the Maildir {maildir_of(t, 'bob@example.test')} was left on disk\n")
    refused(t.cli("user", "del", "bob@example.test"), "no user bob@example.test")
    for args in (["passwd", "--password-stdin"], ["quota", "1M"], ["enable"], ["disable"], ["set", "--name", "x"],
                 ["forward", "--clear"]):
        r = t.cli("user", args[0], "bob@example.test", *args[1:], input="pw\n")
        refused(r, "no user bob@example.test")


def test_quota_sizes(hosted):
    t = hosted
    t.add_user("a@example.test")
    for given, shown, size in [("10K", "10K", 10 * 1024), ("500M", "500M", 500 << 20), ("500m", "500M", 500 << 20),
                               ("2G", "2G", 2 << 30), ("1T", "1T", 1 << 40), ("1500", "1500B", 1500),
                               ("2048", "2K", 2048), ("0", "unlimited", 0)]:
        ok(t.cli("user", "quota", "a@example.test", given), f"quota of a@example.test: {shown}, unlimited messages\n")
        assert sql(t, "SELECT quota_bytes FROM users WHERE local = 'a'") == str(size), given
    ok(t.cli("user", "quota", "a@example.test", "10K"), "quota of a@example.test: 10K, unlimited messages\n")
    assert "quota:     10K, unlimited messages\n" in t.cli("user", "show", "a@example.test").stdout
    ok(t.cli("user", "quota", "a@example.test", "2K", "--messages", "5"), "quota of a@example.test: 2K, 5 messages\n")
    assert "quota:     2K, 5 messages\n" in t.cli("user", "show", "a@example.test").stdout
    for bad in ["10X", "-5", "1.5G", "K", "12345678901234567", "10 K"]:
        refused(t.cli("user", "quota", "a@example.test", bad), f'quota "{bad}" {SIZE_HELP}')
    refused(t.cli("user", "quota", "a@example.test", "1M", "--messages", "many"),
            '--messages "many" is not a whole number (0: no limit)')
    refused(t.cli("domain", "set", "example.test", "--quota", "lots"), f'--quota "lots" {SIZE_HELP}')
    refused(t.cli("domain", "set", "example.test", "--max-users", "-1"),
            '--max-users "-1" is not a whole number (0: no limit)')
    # Nothing changed by the refusals.
    shown = cli_json(t, "user", "show", "a@example.test")
    assert (shown["quota_bytes"], shown["quota_messages"]) == (2048, 5)
    # A new user takes the domain's default quota.
    ok(t.cli("domain", "set", "example.test", "--quota", "250M", "--quota-messages", "100"),
       "updated domain example.test\n")
    t.add_user("b@example.test")
    shown = cli_json(t, "user", "show", "b@example.test")
    assert (shown["quota_bytes"], shown["quota_messages"]) == (250 << 20, 100)


def test_alias_commands(hosted):
    t = hosted
    t.add_user("alice@example.test")
    ok(t.cli("domain", "alias", "add", "example.net", "example.test"),
       "added domain alias example.net -> example.test\n")
    ok(t.cli("alias", "add", "info@example.test", "alice@example.test", "ext@remote.example"),
       "alias info@example.test -> alice@example.test, ext@remote.example\n")
    # An alias given in an aliased domain is stored in the hosted domain.
    ok(t.cli("alias", "add", "sales@example.net", "info@example.test"),
       "alias sales@example.test -> info@example.test\n")
    ok(t.cli("alias", "list"),
       "ALIAS               TARGETS\n"
       "info@example.test   alice@example.test, ext@remote.example\n"
       "sales@example.test  info@example.test\n")
    assert cli_json(t, "alias", "list", "example.test") == [
        {"address": "info@example.test", "targets": ["alice@example.test", "ext@remote.example"]},
        {"address": "sales@example.test", "targets": ["info@example.test"]},
    ]
    assert cli_json(t, "domain", "show", "example.test")["aliases"] == 2
    ok(t.cli("alias", "del", "info@example.test", "ext@remote.example"),
       "deleted target ext@remote.example of info@example.test\n")
    refused(t.cli("alias", "del", "info@example.test", "nobody@remote.example"),
            "alias info@example.test has no target nobody@remote.example")
    ok(t.cli("alias", "del", "sales@example.net"), "deleted alias sales@example.test\n")
    refused(t.cli("alias", "del", "sales@example.test"), "no alias sales@example.test")
    assert cli_json(t, "alias", "list") == [{"address": "info@example.test", "targets": ["alice@example.test"]}]
    refused(t.cli("alias", "add", "x@nosuch.test", "alice@example.test"),
            "no domain nosuch.test; add it first with `tern domain add nosuch.test`")


def test_domain_del_needs_force(hosted):
    t = hosted
    for u in ("alice", "bob"):
        t.add_user(f"{u}@example.test")
    ok(t.cli("alias", "add", "info@example.test", "alice@example.test"),
       "alias info@example.test -> alice@example.test\n")
    ok(t.cli("domain", "alias", "add", "example.net", "example.test"),
       "added domain alias example.net -> example.test\n")
    maildir = t.data_dir / "domains" / "example.test" / "alice" / "Maildir" / "new"
    maildir.mkdir(parents=True)
    (maildir / "1.msg").write_text("Subject: kept\n\nkept\n")
    r = t.cli("domain", "del", "example.test")
    assert (r.returncode, r.stdout) == (1, "")
    assert r.stderr == (
        "tern: domain example.test is not empty; it has\n"
        "  2 users: alice, bob\n"
        "  1 aliases: info\n"
        "  1 domain aliases: example.net\n"
        "`tern domain del example.test --force` removes all of them from the directory; the Maildirs stay on disk "
        f"under {t.data_dir}/domains/example.test\n")
    assert [u["address"] for u in cli_json(t, "user", "list")] == ["alice@example.test", "bob@example.test"]
    ok(t.cli("domain", "del", "example.test", "--force"),
       "deleted domain example.test (2 users, 1 aliases, 1 domain aliases); Maildirs were left on disk\n")
    assert cli_json(t, "domain", "list") == []
    assert cli_json(t, "user", "list") == []
    assert cli_json(t, "alias", "list") == []
    assert (maildir / "1.msg").read_text() == "Subject: kept\n\nkept\n"
    # The names are free again, the alias domain too.
    ok(t.cli("domain", "add", "example.net"), "added domain example.net\n")
    ok(t.cli("domain", "add", "example.test"), "added domain example.test\n")
    assert cli_json(t, "domain", "show", "example.test")["users"] == 0


def test_empty_domain_deleted_without_force(hosted):
    ok(hosted.cli("domain", "del", "example.test"),
       "deleted domain example.test (0 users, 0 aliases, 0 domain aliases); Maildirs were left on disk\n")


def test_duplicates(hosted):
    t = hosted
    t.add_user("alice@example.test")
    refused(t.cli("domain", "add", "example.test"),
            "domain example.test already exists (as a domain or a domain alias)")
    refused(t.cli("domain", "add", "EXAMPLE.TEST"),
            "domain example.test already exists (as a domain or a domain alias)")
    ok(t.cli("domain", "alias", "add", "example.net", "example.test"),
       "added domain alias example.net -> example.test\n")
    refused(t.cli("domain", "add", "example.net"), "domain example.net already exists (as a domain or a domain alias)")
    refused(t.cli("domain", "alias", "add", "example.net", "example.test"),
            "domain example.net already exists (as a domain or a domain alias)")
    refused(t.cli("domain", "alias", "add", "example.test", "example.test"),
            "domain example.test already exists (as a domain or a domain alias)")
    refused(t.cli("user", "add", "alice@example.test", "--password-hash", HASH),
            "user alice@example.test already exists")
    refused(t.cli("user", "add", "ALICE@example.test", "--password-hash", HASH),
            "user alice@example.test already exists")
    ok(t.cli("alias", "add", "info@example.test", "alice@example.test"),
       "alias info@example.test -> alice@example.test\n")
    refused(t.cli("alias", "add", "info@example.test", "alice@example.test"),
            "alias info@example.test already has target alice@example.test")
    refused(t.cli("alias", "add", "info@example.test", "Alice@EXAMPLE.test"),
            "alias info@example.test already has target alice@example.test")
    refused(t.cli("alias", "add", "alice@example.test", "x@remote.example"),
            "alice@example.test is a user; an alias cannot have the same address")
    refused(t.cli("user", "add", "info@example.test", "--password-hash", HASH),
            "info@example.test is already an alias; delete the alias first")
    assert cli_json(t, "alias", "list") == [{"address": "info@example.test", "targets": ["alice@example.test"]}]
    assert [u["address"] for u in cli_json(t, "user", "list")] == ["alice@example.test"]


def test_limits(hosted):
    t = hosted
    ok(t.cli("domain", "set", "example.test", "--max-users", "1", "--max-aliases", "1"),
       "updated domain example.test\n")
    t.add_user("alice@example.test")
    refused(t.cli("user", "add", "bob@example.test", "--password-hash", HASH),
            "domain example.test already has its limit of 1 users; raise it with "
            "`tern domain set example.test --max-users N`")
    ok(t.cli("alias", "add", "info@example.test", "alice@example.test"),
       "alias info@example.test -> alice@example.test\n")
    # More targets for an existing alias do not count against the limit; a second alias does.
    ok(t.cli("alias", "add", "info@example.test", "x@remote.example"), "alias info@example.test -> x@remote.example\n")
    refused(t.cli("alias", "add", "sales@example.test", "alice@example.test"),
            "domain example.test already has its limit of 1 aliases")
    assert "users:           1 (limit 1)\naliases:         1 (limit 1)\n" in t.cli("domain", "show",
                                                                                   "example.test").stdout
    ok(t.cli("domain", "set", "example.test", "--max-users", "2"), "updated domain example.test\n")
    t.add_user("bob@example.test")
    assert [u["address"] for u in cli_json(t, "user", "list")] == ["alice@example.test", "bob@example.test"]


# ---------------------------------------------------------------------------------------------
# Passwords: a prompt, standard input or a file, never argv


def test_password_sources(hosted, tmp_path):
    t = hosted
    ok(t.cli("user", "add", "a@example.test", "--password-stdin", input="from stdin\nsecond line\n"),
       f"added user a@example.test (quota unlimited, mailbox {maildir_of(t, 'a@example.test')})\n")
    ok(t.cli("user", "add", "b@example.test", "--password-stdin", input="crlf\r\n"),
       f"added user b@example.test (quota unlimited, mailbox {maildir_of(t, 'b@example.test')})\n")
    pw_file = tmp_path / "pw"
    pw_file.write_text("from a file\n")
    ok(t.cli("user", "add", "c@example.test", "--password-file", str(pw_file)),
       f"added user c@example.test (quota unlimited, mailbox {maildir_of(t, 'c@example.test')})\n")
    hashes = dict(line.split("|", 1) for line in sql(t, "SELECT local, password_hash FROM users").splitlines())
    assert crypt_check("from stdin", hashes["a"]) and not crypt_check("from stdin\nsecond line", hashes["a"])
    assert crypt_check("crlf", hashes["b"])
    assert crypt_check("from a file", hashes["c"])
    assert {cli_json(t, "user", "show", f"{u}@example.test")["password_scheme"] for u in "abc"} == {"yescrypt"}

    # Without a terminal and without --password-stdin/--password-file there is no password.
    refused(t.cli("user", "add", "d@example.test"),
            "no password given: type it at the prompt (a terminal), or use --password-stdin or --password-file FILE")
    refused(t.cli("user", "passwd", "a@example.test"),
            "no password given: type it at the prompt (a terminal), or use --password-stdin or --password-file FILE")
    refused(t.cli("user", "add", "d@example.test", "--password-stdin", input="\n"),
            "the password is empty; nothing changed")
    refused(t.cli("user", "add", "d@example.test", "--password-stdin", input="x" * 1025 + "\n"),
            "the password is longer than 1024 characters")
    refused(t.cli("user", "add", "d@example.test", "--password-file", str(tmp_path / "missing")),
            f"cannot read the password file {tmp_path / 'missing'}: No such file or directory")
    # There is no option that takes the password itself.
    for args in (["user", "add", "d@example.test", "--password", "secret"],
                 ["user", "passwd", "a@example.test", "--password", "secret"]):
        r = t.cli(*args)
        assert r.returncode not in (0, 1, 75) and "secret --password" in r.stderr and r.stdout == "", r
    assert [u["address"] for u in cli_json(t, "user", "list")] == ["a@example.test", "b@example.test", "c@example.test"]


# ---------------------------------------------------------------------------------------------
# Names that are not valid: refused before the database is touched


BAD_DOMAINS = [
    ("-bad.example", "domain \"-bad.example\" has a label that starts or ends with '-'"),
    ("bad-.example", "domain \"bad-.example\" has a label that starts or ends with '-'"),
    ("a..b", 'domain "a..b" has an empty label (two dots, or a dot at either end)'),
    (".lead.example", 'domain ".lead.example" has an empty label (two dots, or a dot at either end)'),
    ("trail.example.", 'domain "trail.example." has an empty label (two dots, or a dot at either end)'),
    ("nodot", 'domain "nodot" has a single label; give the full name, such as example.com'),
    ("", "the domain name is empty"),
    ("under_score.example",
     "domain \"under_score.example\" contains \"_\"; only letters, digits, '-' and '.' are allowed"),
    ("sl/ash.example", "domain \"sl/ash.example\" contains a control character, '/' or '\\'"),
    ("back\\slash.example", "domain \"back\\slash.example\" contains a control character, '/' or '\\'"),
    ("ctl\x01.example", "domain \"ctl\\x01.example\" contains a control character, '/' or '\\'"),
    ("a" * 64 + ".example", f'domain "{"a" * 64}.example" has a label longer than 63 characters'),
    (("a" * 60 + ".") * 5 + "example", f'domain "{"a" * 40}"... is longer than 253 characters'),
    ("xn--zz.example", 'domain "xn--zz.example" has an invalid xn-- label: string contains invalid punycode data'),
    ("\u2603.example",
     'domain "\\xe2\\x98\\x83.example" is not a valid international domain name: '
     "string contains a disallowed character"),
]


@pytest.mark.backend_independent  # refused before any database is opened
@pytest.mark.parametrize("name, message", BAD_DOMAINS, ids=[repr(n)[:30] for n, _ in BAD_DOMAINS])
def test_bad_domain_name(accounts, name, message):
    refused(with_positional(accounts, ["domain", "add"], name), message)
    refused(with_positional(accounts, ["user", "add", "--password-hash", HASH], f"alice@{name}"),
            message if name else 'address "alice@" is not of the form local@domain')
    if not PG:
        assert not dirlib.db_path(accounts).exists(), "a refused name must not create the database"


BAD_LOCAL_PARTS = [
    ("a/b", "local part \"a/b\" contains a control character, '/' or a non-ASCII byte"),
    ("../x", "local part \"../x\" contains a control character, '/' or a non-ASCII byte"),
    ("..", "local part \"..\" starts or ends with '.' or has two dots in a row"),
    ("a..b", "local part \"a..b\" starts or ends with '.' or has two dots in a row"),
    (".a", "local part \".a\" starts or ends with '.' or has two dots in a row"),
    ("a.", "local part \"a.\" starts or ends with '.' or has two dots in a row"),
    ("a\x01b", "local part \"a\\x01b\" contains a control character, '/' or a non-ASCII byte"),
    ("a\tb", "local part \"a\\x09b\" contains a control character, '/' or a non-ASCII byte"),
    ("a\x7fb", "local part \"a\\x7fb\" contains a control character, '/' or a non-ASCII byte"),
    ("a b", "local part \"a b\" contains \" \"; use letters, digits, dots and !#$%&'*+-=?^_`{|}~"),
    ("a(b)", "local part \"a(b)\" contains \"(\"; use letters, digits, dots and !#$%&'*+-=?^_`{|}~"),
    ("a\\b", "local part \"a\\b\" contains \"\\\"; use letters, digits, dots and !#$%&'*+-=?^_`{|}~"),
    ("m\u00fcller", "local part \"m\\xc3\\xbcller\" contains a control character, '/' or a non-ASCII byte"),
    ("a" * 65, f'local part "{"a" * 20}"... is longer than 64 characters'),
]


@pytest.mark.parametrize("local, message", BAD_LOCAL_PARTS, ids=[repr(n)[:30] for n, _ in BAD_LOCAL_PARTS])
def test_bad_local_part(hosted, local, message):
    refused(with_positional(hosted, ["user", "add", "--password-hash", HASH], f"{local}@example.test"), message)
    refused(with_positional(hosted, ["alias", "add"], "info@example.test", f"{local}@remote.example"), message)
    refused(with_positional(hosted, ["alias", "add"], "info@example.test", "x@remote.example",
                            f"{local}@remote.example"),
            message)
    refused(with_positional(hosted, ["alias", "add"], f"{local}@example.test", "x@remote.example"), message)
    assert cli_json(hosted, "user", "list") == [] and cli_json(hosted, "alias", "list") == []


@pytest.mark.backend_independent
def test_addresses_need_local_and_domain(accounts):
    for text in ("noat", "@example.test", "alice@"):
        refused(accounts.cli("user", "add", text, "--password-hash", HASH),
                f'address "{text}" is not of the form local@domain')


def test_longest_valid_names(hosted):
    local = "a" * 64
    label = "b" * 63
    ok(hosted.cli("domain", "add", f"{label}.example"), f"added domain {label}.example\n")
    hosted.add_user(f"{local}@{label}.example")
    assert cli_json(hosted, "user", "list", f"{label}.example")[0]["address"] == f"{local}@{label}.example"


def test_international_domain_stored_in_idna_form(accounts):
    ok(accounts.cli("domain", "add", "b\u00fccher.example"), "added domain xn--bcher-kva.example\n")
    refused(accounts.cli("domain", "add", "xn--bcher-kva.example"),
            "domain xn--bcher-kva.example already exists (as a domain or a domain alias)")
    accounts.add_user("jorg@B\u00dcCHER.example")
    assert cli_json(accounts, "user", "list")[0]["address"] == "jorg@xn--bcher-kva.example"


# ---------------------------------------------------------------------------------------------
# The account database: missing, unreachable, locked, read-only, damaged, newer


def location(server) -> str:
    """How tern names the database in messages: the SQLite path, or the PostgreSQL connection
    string without secrets, host, port, dbname and user first."""
    if dirlib.backend_of(server) != "postgresql":
        return str(dirlib.db_path(server))
    import pgserver
    params = pgserver.parse_conninfo(server.config["directory"]["postgresql"])
    return " ".join(f"{k}={params[k]}" for k in ("host", "port", "dbname", "user") if k in params)


@sqlite_only
def test_missing_database(accounts):
    db = dirlib.db_path(accounts)
    message = f"no account database at {db}; it is created by `tern serve` or the first `tern domain add`"
    for args in (["user", "list"], ["domain", "list", "--json"], ["domain", "show", "example.test"],
                 ["alias", "list"], ["resolve", "alice@example.test"],
                 ["user", "add", "alice@example.test", "--password-hash", HASH],
                 ["domain", "alias", "add", "example.net", "example.test"]):
        refused(accounts.cli(*args), message)
    assert not db.exists() and not db.parent.exists()
    ok(accounts.cli("domain", "add", "example.test"), "added domain example.test\n")
    ok(accounts.cli("user", "list"), "ADDRESS  STATE  QUOTA  SERVICES  FORWARDS  NAME\n")
    if ternlib.IS_ROOT:  # made by root, but it belongs to the directory service's user
        owner = pwd.getpwnam(ternlib.SERVICE_USERS["directory"])
        for p in (db, db.parent):
            assert (p.stat().st_uid, p.stat().st_gid) == (owner.pw_uid, owner.pw_gid), p
        assert db.parent.stat().st_mode & 0o777 == 0o700


@pg_only
def test_missing_postgresql_database(tern_factory):
    import pgserver
    params = pgserver.parse_conninfo(pgserver.admin_conninfo())
    params["dbname"] = "tern_it_does_not_exist"
    t = dirlib.bare_server(tern_factory, directory={"backend": "postgresql",
                                                    "postgresql": pgserver.format_conninfo(params)})
    r = t.cli("user", "list")
    # A failed connection is classed temporary (75): tern cannot tell a missing database from a
    # server that is restarting, and the message says what to check.
    assert (r.returncode, r.stdout) == (75, "")
    assert r.stderr == (
        f"tern: cannot connect to PostgreSQL ({location(t)}): connection to server at \"{params['host']}\", "
        f"port {params['port']} failed: FATAL: database \"tern_it_does_not_exist\" does not exist; "
        "check [directory] postgresql in the configuration and that the server is running\n")


@sqlite_only
@needs_root
def test_unreachable_database(hosted):
    """A user who cannot enter the database's directory is told so, not that it is missing."""
    db = dirlib.db_path(hosted)
    refused(run_as(hosted, "nobody", "user", "list"),
            f"cannot reach the account database {db}: Permission denied; "
            "run this as root or as the [run_as] directory user, which owns it")


def test_locked_database(hosted):
    t = hosted
    with dirlib.SqlLock(t):
        started = time.monotonic()
        r = t.cli("user", "add", "alice@example.test", "--password-hash", HASH)
        waited = time.monotonic() - started
        if not PG:  # WAL: readers go on while a writer holds the lock
            ok(t.cli("domain", "list"),
               "DOMAIN        STATE    USERS  ALIASES  DEFAULT QUOTA  CATCH-ALL\n"
               "example.test  enabled  0      0        unlimited      -\n")
    assert 4.5 <= waited < 20, f"waited {waited:.1f}s; the busy/lock timeout is 5 s"
    if PG:
        assert (r.returncode, r.stdout) == (75, "")
        assert r.stderr == (
            f"tern: PostgreSQL ({location(t)}) refused \"SELECT value FROM meta WHERE key = 'schema_version'\": "
            "canceling statement due to lock timeout [SQLSTATE 55P03]; the server is busy (statement or lock "
            "timeout); retry later\n")
    else:
        db = dirlib.db_path(t)
        refused(r, f"the account database {db} is locked by another process; try again, or find the holder with "
                   f"`fuser {db}`", code=75)
    # Once the lock is gone the same command works.
    t.add_user("alice@example.test")
    assert [u["address"] for u in cli_json(t, "user", "list")] == ["alice@example.test"]


@sqlite_only
@needs_root
def test_read_only_database(hosted):
    """The directory user meets a database file it cannot write (here: owned by root, 0644)."""
    t = hosted
    db = dirlib.db_path(t)
    os.chown(db, 0, 0)
    os.chmod(db, 0o644)
    user = ternlib.SERVICE_USERS["directory"]
    refused(run_as(t, user, "user", "add", "alice@example.test", "--password-hash", HASH),
            f"the account database {db} is read-only for this user: it and its directory must be writable by "
            "the [run_as] directory user (attempt to write a readonly database)")
    r = run_as(t, user, "domain", "list")  # reading still works
    assert (r.returncode, r.stderr) == (0, "") and "example.test  enabled" in r.stdout
    os.chmod(db, 0o444)
    dirlib.fix_sqlite_owner(t)  # the file (and its -wal/-shm) back to the directory user, mode 0444 kept
    refused(run_as(t, user, "domain", "add", "other.test"),
            f"the account database {db} is read-only for this user: it and its directory must be writable by "
            "the [run_as] directory user (attempt to write a readonly database)")
    os.chmod(db, 0o644)
    for f in (db.parent / (db.name + "-wal"), db.parent / (db.name + "-shm")):
        if f.exists():
            os.chmod(f, 0o644)
    ok(run_as(t, user, "domain", "add", "other.test"), "added domain other.test\n")


@pg_only
def test_read_only_postgresql_database(hosted):
    t = hosted
    name = dirlib.pg_database_name(t)
    sql(t, f'ALTER DATABASE "{name}" SET default_transaction_read_only = on', admin=True)
    try:
        r = t.cli("user", "add", "alice@example.test", "--password-hash", HASH)
        assert (r.returncode, r.stdout) == (1, "")
        assert r.stderr.startswith(f'tern: PostgreSQL ({location(t)}) refused "INSERT INTO users (')
        assert r.stderr.endswith(
            "cannot execute INSERT in a read-only transaction [SQLSTATE 25006]; the server is a read-only standby; "
            "point [directory] postgresql at the primary server\n")
        ok(t.cli("domain", "list"),  # reading still works
           "DOMAIN        STATE    USERS  ALIASES  DEFAULT QUOTA  CATCH-ALL\n"
           "example.test  enabled  0      0        unlimited      -\n")
    finally:
        sql(t, f'ALTER DATABASE "{name}" SET default_transaction_read_only = off', admin=True)
    t.add_user("alice@example.test")


@sqlite_only
def test_damaged_database(hosted):
    db = dirlib.db_path(hosted)
    db.write_bytes(b"this is not a database\n" * 200)
    message = (f"the account database {db} is damaged or not a SQLite file (file is not a database); "
               "restore it from a backup")
    refused(hosted.cli("user", "list"), message)
    refused(hosted.cli("domain", "add", "other.test"), message)
    assert db.read_bytes() == b"this is not a database\n" * 200


def test_newer_schema(hosted):
    t = hosted
    sql(t, "UPDATE meta SET value = 99 WHERE key = 'schema_version'")
    message = (f"the account database {location(t)} has schema version 99, newer than this tern understands (1); "
               "run the tern release that made it, or newer")
    for args in (["user", "list"], ["domain", "add", "other.test"], ["resolve", "alice@example.test"],
                 ["user", "add", "alice@example.test", "--password-hash", HASH]):
        refused(t.cli(*args), message)
    assert sql(t, "SELECT value FROM meta WHERE key = 'schema_version'") == "99"
    assert sql(t, "SELECT COUNT(*) FROM users") == "0"
