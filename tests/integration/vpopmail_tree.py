"""A synthetic vpopmail installation for the import tests (`tern import vpopmail DIR`).

build_tree(root) writes what vadddomain, vaddaliasdomain, vadduser, vmoduser, valias and
qmailadmin leave in ~vpopmail:

    root/users/assign                         +example.org-, +example.info- (alias), +example.net-
    root/domains/example.org/vpasswd          postmaster ($1$), bob ($6$, NO_POP, 1000000S),
                                              carol ($1$, 5000000S,1000C), zoe ($6$, hashed dir 0/zoe)
    root/domains/example.org/carol/.qmail     forward to carol@remote.example and keep a copy
    root/domains/example.org/.qmail-sales     alias to bob@ and carol@
    root/domains/example.org/.qmail-default   vdelivermail catch-all to postmaster's Maildir
    root/domains/example.net/vpasswd          dave ($6$, old-style quota 50M), erin ($1$, NO_IMAP)
    root/domains/example.net/.qmail-default   vdelivermail bounce-no-mailbox (no catch-all)

Every user has a Maildir with messages in new/ and cur/ (names carrying ,S=<size>) and a .Sent
folder. The returned dict says what a correct import yields, so tests assert against it rather
than against copies of these values:

    {"root": Path, "assign": Path,
     "domains": {name: {"dir": Path, "catchall": str, "aliases": [alias domains]}},
     "domain_aliases": {alias: domain},
     "users": {address: {"password", "hash", "scheme", "maildir" (Path), "quota_bytes",
                         "quota_messages", "services" (set), "enabled", "display_name",
                         "forwards", "keep_copy", "messages": {"new"|"cur"|".Sent": [names]}}},
     "aliases": {address: [targets]},
     "no_catchall": [domains whose .qmail-default bounces]}

Hashes come from Python's crypt module when present (deprecated, still in 3.11), else from
`openssl passwd -1 / -6`.
"""
from __future__ import annotations

import os
import subprocess
import warnings
from pathlib import Path

# vpopmail's vauth.h flag bits (the gid field of vpasswd).
NO_POP = 0x02
NO_WEBMAIL = 0x04
NO_IMAP = 0x08
NO_RELAY = 0x20

ALL_SERVICES = {"smtp", "imap", "pop3", "web"}
VDELIVERMAIL = "/home/vpopmail/bin/vdelivermail"


def crypt_hash(password: str, scheme: str) -> str:
    """A crypt(3) hash of `password`: scheme "md5" ($1$) or "sha512" ($6$)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            import crypt  # noqa: PLC0415 (deprecated module, imported only here)
        method = crypt.METHOD_MD5 if scheme == "md5" else crypt.METHOD_SHA512
        return crypt.crypt(password, crypt.mksalt(method))
    except ImportError:
        flag = "-1" if scheme == "md5" else "-6"
        out = subprocess.run(["openssl", "passwd", flag, "-stdin"], input=password, capture_output=True,
                             text=True, check=True)
        return out.stdout.strip()


def _message(subject: str, body: str) -> bytes:
    return (f"Return-Path: <sender@remote.example>\nFrom: sender@remote.example\nSubject: {subject}\n\n"
            f"{body}\n").encode()


def _make_maildir(maildir: Path, address: str, index: int) -> dict[str, list[str]]:
    """A Maildir++ with two messages in new/, one read message in cur/ and one in .Sent/cur/."""
    names: dict[str, list[str]] = {"new": [], "cur": [], ".Sent": []}
    for sub in ("tmp", "new", "cur", ".Sent/tmp", ".Sent/new", ".Sent/cur"):
        (maildir / sub).mkdir(parents=True, exist_ok=True)
    (maildir / ".Sent" / "maildirfolder").write_bytes(b"")

    def put(folder: str, sub: str, n: int, flags: str, subject: str) -> None:
        data = _message(subject, f"message {n} for {address}")
        name = f"{1700000000 + index * 100 + n}.M{n}P{4000 + index}.mail.example.org,S={len(data)}{flags}"
        base = maildir if folder in ("new", "cur") else maildir / folder
        (base / sub / name).write_bytes(data)
        names[folder].append(name)

    put("new", "new", 1, "", "first")
    put("new", "new", 2, "", "second")
    put("cur", "cur", 3, ":2,S", "already read")
    put(".Sent", "cur", 4, ":2,S", "sent by me")
    return names


def build_tree(root: Path, home: str | None = None, owner: tuple[int, int] | None = None) -> dict:
    """Writes the tree under `root` (created if missing). Paths inside the files are written
    under `home` when given (as in a tree copied from /home/vpopmail), else under `root`.
    `owner` (uid, gid) chowns everything, e.g. to the deliver service's user."""
    root = Path(os.path.abspath(root))
    recorded = Path(home) if home else root
    domains_dir = root / "domains"

    def rec(p: Path) -> str:
        """`p` (under root) as the vpopmail files record it."""
        return str(recorded / p.relative_to(root))

    spec = {
        "example.org": {
            "aliases": ["example.info"],
            "users": [
                # name, password, scheme, flags, quota text, gecos, subdirectory (hashed layout)
                ("postmaster", "pm-Secret-1", "md5", 0, "NOQUOTA", "Postmaster", ""),
                ("bob", "bob-Secret-6", "sha512", NO_POP, "1000000S", "Bob Builder", ""),
                ("carol", "carol-Secret-1", "md5", 0, "5000000S,1000C", "Carol", ""),
                ("zoe", "zoe-Secret-6", "sha512", 0, "NOQUOTA", "Zoe", "0"),
            ],
        },
        "example.net": {
            "aliases": [],
            "users": [
                ("dave", "dave-Secret-6", "sha512", 0, "50M", "Dave", ""),
                ("erin", "erin-Secret-1", "md5", NO_IMAP, "NOQUOTA", "Erin", ""),
            ],
        },
    }
    quotas = {"NOQUOTA": (0, 0), "1000000S": (1000000, 0), "5000000S,1000C": (5000000, 1000),
              "50M": (50 * 1024 * 1024, 0)}
    flag_services = {NO_POP: "pop3", NO_IMAP: "imap", NO_WEBMAIL: "web", NO_RELAY: "smtp"}

    result: dict = {"root": root, "assign": root / "users" / "assign", "domains": {}, "domain_aliases": {},
                    "users": {}, "aliases": {}, "no_catchall": []}
    assign_lines = []
    for index_d, (domain, d) in enumerate(spec.items()):
        ddir = domains_dir / domain
        ddir.mkdir(parents=True, exist_ok=True)
        assign_lines.append(f"+{domain}-:{domain}:89:89:{rec(ddir)}:-::")
        for alias in d["aliases"]:
            assign_lines.append(f"+{alias}-:{domain}:89:89:{rec(ddir)}:-::")
            result["domain_aliases"][alias] = domain
        result["domains"][domain] = {"dir": ddir, "catchall": "", "aliases": list(d["aliases"])}
        vpasswd = []
        for index_u, (name, password, scheme, flags, quota, gecos, sub) in enumerate(d["users"]):
            udir = ddir / sub / name if sub else ddir / name
            maildir = udir / "Maildir"
            address = f"{name}@{domain}"
            hashed = crypt_hash(password, scheme)
            vpasswd.append(f"{name}:{hashed}:1:{flags}:{gecos}:{rec(udir)}:{quota}")
            messages = _make_maildir(maildir, address, index_d * 10 + index_u)
            qb, qm = quotas[quota]
            if qb or qm:
                definition = ",".join(x for x in (f"{qb}S" if qb else "", f"{qm}C" if qm else "") if x)
                (maildir / "maildirsize").write_text(f"{definition}\n0 0\n")
            result["users"][address] = {
                "password": password, "hash": hashed, "scheme": scheme, "maildir": maildir,
                "quota_bytes": qb, "quota_messages": qm,
                "services": ALL_SERVICES - {s for bit, s in flag_services.items() if flags & bit},
                "enabled": True, "display_name": gecos, "forwards": [], "keep_copy": False,
                "messages": messages,
            }
        (ddir / "vpasswd").write_text("\n".join(vpasswd) + "\n")
        (ddir / ".dir-control").write_text("0\n")  # vpopmail's hashing state; not imported

    org = domains_dir / "example.org"
    # carol forwards and keeps a copy (qmailadmin's "forward, save a copy").
    (org / "carol" / ".qmail").write_text(f"&carol@remote.example\n{rec(org / 'carol' / 'Maildir')}/\n")
    result["users"]["carol@example.org"].update(forwards=["carol@remote.example"], keep_copy=True)
    # An alias with two targets, as valias writes it.
    (org / ".qmail-sales").write_text("&bob@example.org\n&carol@example.org\n")
    result["aliases"]["sales@example.org"] = ["bob@example.org", "carol@example.org"]
    # Catch-all to postmaster's Maildir; example.net bounces unknown addresses.
    (org / ".qmail-default").write_text(f"| {VDELIVERMAIL} '' {rec(org / 'postmaster' / 'Maildir')}/\n")
    result["domains"]["example.org"]["catchall"] = "postmaster@example.org"
    (domains_dir / "example.net" / ".qmail-default").write_text(f"| {VDELIVERMAIL} '' bounce-no-mailbox\n")
    result["no_catchall"].append("example.net")

    (root / "users").mkdir(parents=True, exist_ok=True)
    (root / "users" / "assign").write_text("\n".join(assign_lines) + "\n.\n")

    if owner is not None:
        for dirpath, dirnames, filenames in os.walk(root):
            for n in [dirpath] + [os.path.join(dirpath, x) for x in dirnames + filenames]:
                os.lchown(n, owner[0], owner[1])
    return result


if __name__ == "__main__":  # python3 vpopmail_tree.py DIR: write a tree to look at by hand
    import json
    import sys

    tree = build_tree(Path(sys.argv[1]))
    print(json.dumps(tree, default=lambda o: sorted(o) if isinstance(o, set) else str(o), indent=2))
