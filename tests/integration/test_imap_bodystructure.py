"""BODYSTRUCTURE differential over IMAP: every message of ../shared/testdata/mime (real-world, RFC
and malformed mail, each with the BODYSTRUCTURE Dovecot answers for it) is APPENDed to a running
tern with imaplib, fetched back, and tern's BODYSTRUCTURE and BODY compared with Dovecot's.

A difference would have to be listed in KNOWN below with its reason, as docs/imap-compat.md
explains it for administrators; a known difference that disappears fails the test too, so the
list stays true. The messages go as raw literals: imaplib's append() would rewrite their line
ends.
"""
from __future__ import annotations

import imaplib
import os
from pathlib import Path

import pytest

from test_imap import ALICE, PASSWORD, make_server, pki  # noqa: F401  (pki is a fixture)

CORPUS = Path(__file__).resolve().parents[3] / "shared" / "testdata" / "mime"
if not CORPUS.is_dir():
    CORPUS = Path("/work/shared/testdata/mime")

# name -> why tern's answer over IMAP differs from Dovecot's (see docs/imap-compat.md). Empty
# today: every message agrees, the three whose .eml files end lines in CR CR LF included (APPEND
# stores CRLF as LF and keeps the extra CR, giving the CR LF lines Dovecot was given).
KNOWN: dict[str, str] = {}


def corpus_messages() -> list[Path]:
    return sorted(p for p in CORPUS.rglob("*.eml") if Path(str(p)[:-4] + ".dovecot.bodystructure").exists())


def read_answer(path: Path) -> bytes:
    return path.read_bytes().rstrip(b"\r\n")


def fetched_item(data, item: bytes) -> bytes:
    """The "(ITEM ...)" text of a FETCH response as imaplib returns it (literals joined back)."""
    text = b""
    for part in data:
        # imaplib splits "... {19}" CRLF "literal" into a tuple: put the CRLF back.
        text += part[0] + b"\r\n" + part[1] if isinstance(part, tuple) else part
    inner = text[text.index(item):]
    assert inner.endswith(b")"), text
    return b"(" + inner[:-1] + b")"  # the last ")" closes the FETCH response


def test_bodystructure_agrees_with_dovecot_over_imap(tern_factory, pki):  # noqa: F811
    messages = corpus_messages()
    assert len(messages) >= 80, f"MIME corpus missing or short at {CORPUS}"
    t = make_server(tern_factory, pki)
    m = imaplib.IMAP4_SSL("127.0.0.1", t.imaps, ssl_context=pki.context(), timeout=30)
    m.login(ALICE, PASSWORD)
    m.create("Corpus")
    # Messages with NUL octets cannot be APPENDed as a plain literal (RFC 9051: only literal8, which
    # imaplib cannot send); they arrive by delivery instead: written into the folder as deliver
    # writes files (LF line ends), after the others, in order.
    appended = [p for p in messages if b"\0" not in p.read_bytes()]
    delivered = [p for p in messages if b"\0" in p.read_bytes()]
    for path in appended:
        # imaplib's append() rewrites every CR and LF into CRLF; the bytes go as they are instead.
        m.literal = path.read_bytes()
        typ, data = m._command_complete("APPEND", m._command("APPEND", "Corpus"))
        assert typ == "OK", (path, data)
    folder = t.maildir("alice").parent / ".Corpus"
    for i, path in enumerate(delivered):
        target = folder / "new" / f"{2000000000 + i}.M1P1Q{i}.corpus"
        target.write_bytes(path.read_bytes().replace(b"\r\n", b"\n"))
        if os.geteuid() == 0:
            import pwd
            entry = pwd.getpwnam("tern-vmail")
            os.chown(target, entry.pw_uid, entry.pw_gid)
    messages = appended + delivered
    m.select("Corpus", readonly=True)
    agree, differ, seen_known = 0, [], set()
    for n, path in enumerate(messages, start=1):
        name = str(path.relative_to(CORPUS))[:-4]
        typ, data = m.fetch(str(n), "(BODYSTRUCTURE)")
        got_bs = fetched_item(data, b"BODYSTRUCTURE")
        typ, data = m.fetch(str(n), "(BODY)")
        got_body = fetched_item(data, b"BODY ")
        want_bs = read_answer(Path(str(path)[:-4] + ".dovecot.bodystructure"))
        want_body = read_answer(Path(str(path)[:-4] + ".dovecot.body"))
        same = got_bs == want_bs and got_body == want_body
        if same:
            agree += 1
            assert name not in KNOWN, f"{name} agrees with Dovecot now: remove it from KNOWN and docs/imap-compat.md"
        elif name in KNOWN:
            seen_known.add(name)
        else:
            differ.append(f"{name}\n tern:    {got_bs!r}\n dovecot: {want_bs!r}")
    m.logout()
    print(f"IMAP BODYSTRUCTURE vs Dovecot: {agree} agree, {len(seen_known)} known differences, "
          f"{len(differ)} unexplained, of {len(messages)}")
    assert not differ, "BODYSTRUCTURE differs from Dovecot:\n" + "\n".join(differ)
    assert seen_known == set(KNOWN), f"known differences not seen: {set(KNOWN) - seen_known}"
