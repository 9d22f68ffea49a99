"""`tern import vpopmail DIR`: a synthetic vpopmail installation (vpopmail_tree.py) imported
with the real CLI, then served: accounts exactly as vpopmail had them, the old crypt(3) hashes
still log in, and mail lands in the old Maildirs in place, next to the mail already there."""
from __future__ import annotations

import json
import pwd

import pytest

from ternlib import SmtpClient, send_message, wait_until
from vpopmail_tree import build_tree


def import_json(server, root, *flags: str) -> dict:
    r = server.cli("import", "vpopmail", str(root), "--json", *flags)
    assert r.returncode == 0, f"tern import exited {r.returncode}: {r.stdout}{r.stderr}"
    return json.loads(r.stdout)


def show(server, what: str, name: str):
    return json.loads(server.cli(what, "show", name, "--json", check=True).stdout)


@pytest.fixture
def imported(tern_factory, service_uids):
    """A stopped server with the tree built under its base directory (owned by the deliver
    service's user when running as root, as a migration would chown it) and imported once."""
    server = tern_factory(start=False)
    owner = None
    if service_uids is not None:
        entry = pwd.getpwuid(service_uids["deliver"])
        owner = (entry.pw_uid, entry.pw_gid)
    tree = build_tree(server.base / "vpopmail", owner=owner)
    report = import_json(server, tree["root"])
    return server, tree, report


def expected_counts(tree: dict) -> dict:
    return {
        "domains_added": len(tree["domains"]),
        "domain_aliases_added": len(tree["domain_aliases"]),
        "users_added": len(tree["users"]),
        "aliases_added": len(tree["aliases"]),
        "alias_targets_added": sum(len(t) for t in tree["aliases"].values()),
        "catchalls_set": sum(1 for d in tree["domains"].values() if d["catchall"]),
    }


def test_dry_run_reports_and_writes_nothing(tern_factory):
    server = tern_factory(start=False)
    tree = build_tree(server.base / "vpopmail")
    report = import_json(server, tree["root"], "--dry-run")
    assert report["dry_run"] is True and report["changed"] is True
    for key, value in expected_counts(tree).items():
        assert report["counts"][key] == value, key
    assert "would add user bob@example.org (quota 1000000 bytes; services smtp,imap,web)" in report["done"]
    domains = json.loads(server.cli("domain", "list", "--json", check=True).stdout)
    assert [d["name"] for d in domains] == []
    assert server.cli("user", "show", "bob@example.org").returncode != 0


def test_import_maps_every_account_and_a_rerun_changes_nothing(imported):
    server, tree, report = imported
    assert report["dry_run"] is False and report["changed"] is True
    for key, value in expected_counts(tree).items():
        assert report["counts"][key] == value, (key, report)
    assert report["not_mapped"] == [], report["not_mapped"]
    assert any("example.net has no catch-all" in n and "bounce-no-mailbox" in n for n in report["notes"])

    for address, u in tree["users"].items():
        got = show(server, "user", address)
        assert got["maildir"] == str(u["maildir"]), address
        assert set(got["services"].split(",")) == u["services"], address
        assert (got["quota_bytes"], got["quota_messages"]) == (u["quota_bytes"], u["quota_messages"]), address
        assert got["forwards"] == u["forwards"] and got["keep_copy"] == u["keep_copy"], address
        assert got["enabled"] == u["enabled"] and got["name"] == u["display_name"], address
        assert got["password_scheme"] == {"md5": "md5-crypt", "sha512": "sha512-crypt"}[u["scheme"]], address
    for domain, d in tree["domains"].items():
        got = show(server, "domain", domain)
        assert got["catchall"] == d["catchall"], domain
        assert got["domain_aliases"] == d["aliases"], domain
    aliases = json.loads(server.cli("alias", "list", "example.org", "--json", check=True).stdout)
    assert {a["address"]: sorted(a["targets"]) for a in aliases} == \
        {k: sorted(v) for k, v in tree["aliases"].items()}

    # Idempotent: the second run changes nothing and says so, in JSON and in text.
    again = import_json(server, tree["root"])
    assert again["changed"] is False and again["done"] == []
    assert again["counts"]["unchanged"] == sum(expected_counts(tree).values()) - \
        expected_counts(tree)["alias_targets_added"]
    text = server.cli("import", "vpopmail", str(tree["root"]), check=True).stdout
    assert "Nothing to change" in text


def test_imported_hashes_log_in_and_flags_limit_services(imported):
    server, tree, _ = imported
    server.start()
    for address, u in tree["users"].items():
        ok = server.cli("user", "auth", address, "--password-stdin", input=u["password"] + "\n")
        assert ok.returncode == 0 and ok.stdout.startswith(f"authenticated {address}"), (address, ok.stdout, ok.stderr)
        bad = server.cli("user", "auth", address, "--password-stdin", input=u["password"] + "x\n")
        assert bad.returncode != 0 and "bad credentials" in bad.stdout, (address, bad.stdout, bad.stderr)
    # bob has vpopmail's NO_POP flag, erin NO_IMAP.
    pop = server.cli("user", "auth", "bob@example.org", "--service", "pop3", "--password-stdin",
                     input=tree["users"]["bob@example.org"]["password"] + "\n")
    assert pop.returncode != 0 and "service not allowed" in pop.stdout, (pop.stdout, pop.stderr)
    imap = server.cli("user", "auth", "bob@example.org", "--service", "imap", "--password-stdin",
                      input=tree["users"]["bob@example.org"]["password"] + "\n")
    assert imap.returncode == 0, (imap.stdout, imap.stderr)
    imap = server.cli("user", "auth", "erin@example.net", "--service", "imap", "--password-stdin",
                      input=tree["users"]["erin@example.net"]["password"] + "\n")
    assert imap.returncode != 0 and "service not allowed" in imap.stdout, (imap.stdout, imap.stderr)


def test_mail_is_delivered_into_the_old_maildirs_in_place(imported):
    server, tree, _ = imported
    server.start()
    users = tree["users"]

    def new_files(address: str) -> list:
        return sorted((users[address]["maildir"] / "new").iterdir())

    before = {a: {p.name: p.read_bytes() for p in new_files(a)} for a in users}

    def wait_new(address: str, count: int) -> list[bytes]:
        def arrived():
            fresh = [p for p in new_files(address) if p.name not in before[address]]
            return fresh if len(fresh) >= count else None
        return [p.read_bytes() for p in wait_until(arrived, message=f"{count} new message(s) for {address}")]

    send_message(server.port, "sender@remote.example", ["bob@example.org"], "Subject: direct\r\n\r\nto bob\r\n")
    (msg,) = wait_new("bob@example.org", 1)
    assert b"Delivered-To: bob@example.org\n" in msg and msg.endswith(b"to bob\n")

    # The alias domain, the two-target alias and the catch-all.
    send_message(server.port, "sender@remote.example", ["bob@example.info"], "Subject: via alias domain\r\n\r\nx\r\n")
    send_message(server.port, "sender@remote.example", ["sales@example.org"], "Subject: sales\r\n\r\nsales\r\n")
    send_message(server.port, "sender@remote.example", ["nobody@example.org"], "Subject: lost\r\n\r\nlost\r\n")
    bob = wait_new("bob@example.org", 3)
    assert sum(b"Subject: via alias domain" in m for m in bob) == 1
    assert sum(b"Subject: sales" in m for m in bob) == 1
    (carol,) = wait_new("carol@example.org", 1)
    assert b"Subject: sales" in carol
    (catchall,) = wait_new("postmaster@example.org", 1)
    assert b"Subject: lost" in catchall and b"Delivered-To: postmaster@example.org\n" in catchall

    # example.net's .qmail-default bounced unknown addresses; tern refuses them at RCPT.
    with SmtpClient(server.port) as c:
        c.ehlo()
        assert c.cmd("MAIL FROM:<sender@remote.example>").startswith("250")
        assert c.cmd("RCPT TO:<nobody@example.net>").startswith("550 5.1.1")

    # The mail that was there before the import is untouched, folders included.
    for address, u in users.items():
        for name, data in before[address].items():
            assert (u["maildir"] / "new" / name).read_bytes() == data, (address, name)
        for folder in ("cur", ".Sent"):
            base = u["maildir"] / "cur" if folder == "cur" else u["maildir"] / ".Sent" / "cur"
            assert sorted(p.name for p in base.iterdir()) == sorted(u["messages"][folder]), (address, folder)
