"""DKIM interoperability: tern's signatures checked by other implementations, and theirs by tern.

- `tern dkim keygen` makes an RSA-2048 and an Ed25519 key for dkim.tern-test and prints the TXT
  records; `tern dkim show` prints them again; a second keygen is refused (exit 73).
- Messages signed by `tern dkim sign` verify with dkimpy (Debian's python3-dkim, its dnsfunc
  answering with the records keygen printed) and with OpenDKIM's `opendkim-testmsg`. That tool
  has no option for a key or a DNS server, and libopendkim asks the nameserver of
  /etc/resolv.conf on port 53: so it runs in a new user, mount and network namespace
  (`unshare -rmn`) where a small DNS responder listens on 127.0.0.1:53 and a resolv.conf naming
  it is bind-mounted over /etc/resolv.conf. Without user namespaces that test is skipped.
- Messages signed by dkimpy (RSA and Ed25519) and by `opendkim-testmsg -C` (which signs only
  with rsa-sha1: tern answers `policy`, and with --accept-sha1 checks it) verify with
  `tern dkim verify`, whose key lookups go to the test DNS server (dnslib.DnsServer) serving the
  records of this module.

Environment: TERN_BIN is the tern binary. Needs /usr/bin/python3 with python3-dkim, and
opendkim-tools.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import dnslib

dkim = pytest.importorskip("dkim", reason="python3-dkim is not installed (apt-get install python3-dkim)")

pytestmark = pytest.mark.backend_independent  # no account database

DOMAIN = "dkim.tern-test"
DKIMPY_DATA = Path("/usr/lib/python3/dist-packages/dkim/tests/data")
# dkimpy's test keys: test.private (RSA 1024, public key in test.txt) and ed25519test.key.
DKIMPY_ED25519_PUBLIC = "yi50DjK5O9pqbFpNHklsv9lqaS0ArSYu02qp1S0DW1Y="

# CRLF line ends; Date and Message-ID because libopendkim checks RFC 5322's required fields.
MESSAGE = (
    "From: Alice <alice@dkim.tern-test>\r\n"
    "To: Bob <bob@example.net>\r\n"
    "Subject: interop   test\r\n"
    " folded here\r\n"
    "Date: Mon, 01 Jan 2024 00:00:00 +0000\r\n"
    "Message-ID: <interop@dkim.tern-test>\r\n"
    "MIME-Version: 1.0\r\n"
    "Content-Type: text/plain; charset=us-ascii\r\n"
    "\r\n"
    "Hello  there. \r\n"
    "\r\n"
    "A second paragraph,\twith a tab.\r\n"
    "\r\n"
    "\r\n"
).encode()


def lf(message: bytes) -> bytes:
    return message.replace(b"\r\n", b"\n")


def tampered(message: bytes) -> bytes:
    out = message.replace(b"A second paragraph", b"A changed paragraph")
    assert out != message
    return out


def run_tern(tern_bin: str, *args: str, stdin: bytes = b"") -> subprocess.CompletedProcess:
    return subprocess.run([tern_bin, *args], input=stdin, capture_output=True, timeout=120)


def parse_zone_lines(text: str) -> dict[str, list[str]]:
    """`NAME. IN TXT ( "a" "b" )` lines -> {NAME: ["a", "b"]}."""
    records = {}
    for line in text.splitlines():
        if line.startswith(";") or not line.strip():
            continue
        m = re.fullmatch(r'(\S+)\. IN TXT \(((?: "[^"]*")+) \)', line)
        assert m, f"not a zone-file TXT line: {line!r}"
        records[m.group(1)] = re.findall(r'"([^"]*)"', m.group(2))
    return records


class Keys:
    def __init__(self, directory: Path, config: Path, printed: str):
        self.directory = directory
        self.config = config
        self.printed = printed
        self.records = parse_zone_lines(printed)  # name -> strings
        self.texts = {name: "".join(strings) for name, strings in self.records.items()}
        self.key_dir = directory / "data" / "dkim" / DOMAIN

    def dnsfunc(self, name: bytes, timeout: int = 5) -> bytes | None:
        """dkimpy's key lookup, answered with the records keygen printed."""
        text = self.texts.get(name.decode().rstrip("."))
        return text.encode() if text is not None else None


def write_config(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    config = directory / "tern.toml"
    config.write_text('[server]\nhostname = "mail.dkim.tern-test"\ndata_dir = "data"\n'
                      '[smtp]\nlisten = ["127.0.0.1:2525"]\n')
    return config


@pytest.fixture(scope="module")
def keys(tmp_path_factory, tern_bin) -> Keys:
    directory = tmp_path_factory.mktemp("dkim-keys")
    config = write_config(directory)
    r = run_tern(tern_bin, "dkim", "keygen", DOMAIN, "-c", str(config))
    assert r.returncode == 0, r.stderr.decode()
    return Keys(directory, config, r.stdout.decode())


@pytest.fixture(scope="module")
def dns(tmp_path_factory, keys):
    """The test DNS server with tern's keys, dkimpy's test keys and a selector for OpenDKIM."""
    server = dnslib.DnsServer(tmp_path_factory.mktemp("dkim-dns") / "dns")
    lines = []
    for name, strings in keys.records.items():
        lines.append(f"{name}. TXT " + " ".join(f'"{s}"' for s in strings))
    rsa_text = keys.texts[f"tern._domainkey.{DOMAIN}"]
    dkimpy_rsa = (DKIMPY_DATA / "test.txt").read_text().strip()
    for name, text in ((f"odk._domainkey.{DOMAIN}", rsa_text),
                       (f"dkimpy-rsa._domainkey.{DOMAIN}", dkimpy_rsa),
                       (f"dkimpy-ed._domainkey.{DOMAIN}", f"v=DKIM1; k=ed25519; p={DKIMPY_ED25519_PUBLIC}")):
        lines.append(f"{name}. TXT " + " ".join(f'"{text[i:i + 255]}"' for i in range(0, len(text), 255)))
    server.start("\n".join(lines))
    yield server
    server.stop()


def tern_verify(tern_bin: str, dns, message: bytes, *extra: str) -> tuple[int, list[str]]:
    r = run_tern(tern_bin, "dkim", "verify", "--dns", dns.forwarder, "--trust-anchor", dns.anchor, *extra,
                 stdin=message)
    assert r.stderr == b"", r.stderr.decode()
    return r.returncode, r.stdout.decode().splitlines()


# ---------------------------------------------------------------------------------------------
# Keys and records
# ---------------------------------------------------------------------------------------------

def test_keygen_prints_the_records_and_show_repeats_them(keys, tern_bin):
    rsa, ed = f"tern._domainkey.{DOMAIN}", f"tern-ed25519._domainkey.{DOMAIN}"
    assert sorted(keys.records) == sorted([rsa, ed])
    assert keys.texts[rsa].startswith("v=DKIM1; k=rsa; p=MII")
    assert len(keys.records[rsa]) == 2 and all(len(s) <= 255 for s in keys.records[rsa])  # RSA-2048: two strings
    assert re.fullmatch(r"v=DKIM1; k=ed25519; p=[A-Za-z0-9+/]{43}=", keys.texts[ed])
    for name in ("tern.rsa.key", "tern.ed25519.key"):
        st = (keys.key_dir / name).stat()
        if os.geteuid() == 0:
            assert st.st_mode & 0o777 in (0o640, 0o600), oct(st.st_mode)
        else:
            assert st.st_mode & 0o777 == 0o600 and st.st_uid == os.geteuid()
        assert "PRIVATE KEY" in (keys.key_dir / name).read_text()
    r = run_tern(tern_bin, "dkim", "show", DOMAIN, "-c", str(keys.config))
    assert r.returncode == 0, r.stderr.decode()
    assert parse_zone_lines(r.stdout.decode()) == keys.records


def test_keygen_refuses_to_overwrite_and_show_needs_keys(keys, tern_bin):
    r = run_tern(tern_bin, "dkim", "keygen", DOMAIN, "-c", str(keys.config))
    assert r.returncode == 73
    err = r.stderr.decode()
    assert str(keys.key_dir / "tern.rsa.key") in err and "--force" in err and "--selector" in err
    r = run_tern(tern_bin, "dkim", "show", "other.tern-test", "-c", str(keys.config))
    assert r.returncode == 66
    assert "no DKIM keys for other.tern-test" in r.stderr.decode()
    assert "tern dkim keygen other.tern-test" in r.stderr.decode()


def test_keygen_force_replaces_a_key(tmp_path, tern_bin):
    config = write_config(tmp_path)
    args = ("dkim", "keygen", "force.tern-test", "--algorithm", "ed25519", "-c", str(config))
    first = run_tern(tern_bin, *args)
    assert first.returncode == 0, first.stderr.decode()
    assert run_tern(tern_bin, *args).returncode == 73
    second = run_tern(tern_bin, *args, "--force")
    assert second.returncode == 0, second.stderr.decode()
    assert parse_zone_lines(first.stdout.decode()) != parse_zone_lines(second.stdout.decode())
    assert list(parse_zone_lines(second.stdout.decode())) == ["tern-ed25519._domainkey.force.tern-test"]


# ---------------------------------------------------------------------------------------------
# tern signs, others verify
# ---------------------------------------------------------------------------------------------

def tern_sign(tern_bin: str, keys: Keys, message: bytes, *extra: str) -> bytes:
    r = run_tern(tern_bin, "dkim", "sign", "--domain", DOMAIN, "-c", str(keys.config), *extra, stdin=message)
    assert r.returncode == 0, r.stderr.decode()
    assert r.stdout.endswith(message)
    return r.stdout


@pytest.mark.parametrize("line_ends", ["crlf", "lf"])
def test_tern_signatures_verify_with_dkimpy(keys, tern_bin, line_ends):
    message = MESSAGE if line_ends == "crlf" else lf(MESSAGE)
    signed = tern_sign(tern_bin, keys, message)
    algorithms = re.findall(rb"a=([a-z0-9-]+);", signed)
    assert algorithms == [b"rsa-sha256", b"ed25519-sha256"]
    for idx in (0, 1):
        assert dkimpy_verifies(signed, idx, keys), f"signature {idx} rejected by dkimpy"
        assert not dkimpy_verifies(tampered(signed), idx, keys)


def dkimpy_verifies(message: bytes, idx: int, keys: Keys) -> bool:
    try:
        return bool(dkim.DKIM(message).verify(idx=idx, dnsfunc=keys.dnsfunc))
    except dkim.ValidationError:  # dkimpy 1.1 raises for a body hash mismatch instead of answering False
        return False


# The DNS responder run inside the namespace: answers TXT questions from a JSON map, NXDOMAIN else.
NAMESPACE_HELPER = r'''
import json, os, socket, struct, subprocess, sys, threading
records, workdir, command = json.loads(sys.argv[1]), sys.argv[2], json.loads(sys.argv[3])
subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
with open(os.path.join(workdir, "resolv.conf"), "w") as f:
    f.write("nameserver 127.0.0.1\n")
subprocess.run(["mount", "--bind", os.path.join(workdir, "resolv.conf"), "/etc/resolv.conf"], check=True)
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.bind(("127.0.0.1", 53))
def serve():
    while True:
        query, peer = sock.recvfrom(4096)
        qid = struct.unpack(">H", query[:2])[0]
        i, labels = 12, []
        while query[i]:
            labels.append(query[i + 1:i + 1 + query[i]].decode()); i += 1 + query[i]
        qtype = struct.unpack(">H", query[i + 1:i + 3])[0]
        question = query[12:i + 5]
        text = records.get(".".join(labels).lower())
        if text is None or qtype != 16:
            rcode = 3 if text is None else 0
            sock.sendto(struct.pack(">6H", qid, 0x8180 | rcode, 1, 0, 0, 0) + question, peer)
            continue
        data = text.encode()
        rdata = b"".join(bytes([len(data[k:k + 255])]) + data[k:k + 255] for k in range(0, len(data), 255))
        answer = struct.pack(">HHHIH", 0xC00C, 16, 1, 0, len(rdata)) + rdata
        sock.sendto(struct.pack(">6H", qid, 0x8180, 1, 1, 0, 0) + question + answer, peer)
threading.Thread(target=serve, daemon=True).start()
with open(os.path.join(workdir, "message"), "rb") as stdin:
    p = subprocess.run(command, stdin=stdin, capture_output=True)
print(json.dumps({"rc": p.returncode, "stdout": p.stdout.decode(errors="replace"),
                  "stderr": p.stderr.decode(errors="replace")}))
'''


def opendkim_verify(tmp_path: Path, records: dict[str, str], message: bytes) -> tuple[int, str]:
    """opendkim-testmsg in verify mode: exit 0 and no output when the signature verifies."""
    if not shutil.which("opendkim-testmsg") or not shutil.which("unshare") or not shutil.which("ip"):
        pytest.skip("opendkim-testmsg (opendkim-tools), unshare or ip is missing")
    (tmp_path / "message").write_bytes(message)
    p = subprocess.run(["unshare", "-rmn", sys.executable, "-c", NAMESPACE_HELPER, json.dumps(records),
                        str(tmp_path), json.dumps(["opendkim-testmsg"])], capture_output=True, text=True, timeout=60)
    if p.returncode != 0:
        pytest.skip(f"cannot run opendkim-testmsg in a user namespace with its own DNS: {p.stderr.strip()}")
    result = json.loads(p.stdout)
    return result["rc"], result["stderr"]


@pytest.mark.parametrize("which", ["rsa", "ed25519", "both"])
def test_tern_signatures_verify_with_opendkim(keys, tern_bin, tmp_path, which):
    key_args = {
        "rsa": ("--selector", "tern", "--key", str(keys.key_dir / "tern.rsa.key")),
        "ed25519": ("--selector", "tern-ed25519", "--key", str(keys.key_dir / "tern.ed25519.key")),
        "both": (),
    }[which]
    signed = tern_sign(tern_bin, keys, MESSAGE, *key_args)
    assert signed.count(b"DKIM-Signature:") == (2 if which == "both" else 1)
    rc, err = opendkim_verify(tmp_path, keys.texts, signed)
    assert (rc, err) == (0, ""), f"opendkim-testmsg rejected tern's {which} signature: {err}"
    rc, err = opendkim_verify(tmp_path, keys.texts, tampered(signed))
    assert rc != 0 and "Bad signature" in err, (rc, err)


# ---------------------------------------------------------------------------------------------
# Others sign, tern verifies (keys from the test DNS server)
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("canon", [(b"relaxed", b"relaxed"), (b"simple", b"simple"), (b"relaxed", b"simple")])
def test_dkimpy_signatures_verify_with_tern(dns, tern_bin, canon):
    message = MESSAGE
    rsa = dkim.sign(message, b"dkimpy-rsa", DOMAIN.encode(), (DKIMPY_DATA / "test.private").read_bytes(),
                    canonicalize=canon, signature_algorithm=b"rsa-sha256")
    ed = dkim.sign(message, b"dkimpy-ed", DOMAIN.encode(), (DKIMPY_DATA / "ed25519test.key").read_bytes(),
                   canonicalize=canon, signature_algorithm=b"ed25519-sha256")
    signed = ed + rsa + message
    rc, lines = tern_verify(tern_bin, dns, signed)
    assert rc == 0, lines
    assert len(lines) == 2, lines
    assert lines[0].startswith(f"dkim=pass header.d={DOMAIN} header.s=dkimpy-ed header.a=ed25519-sha256"), lines
    assert lines[1].startswith(f"dkim=pass header.d={DOMAIN} header.s=dkimpy-rsa header.a=rsa-sha256"), lines
    assert "(1024-bit key)" in lines[1]
    rc, lines = tern_verify(tern_bin, dns, tampered(signed))
    assert rc == 1
    assert [l.split()[0] for l in lines] == ["dkim=fail", "dkim=fail"], lines
    assert all('reason="body hash did not verify' in l for l in lines), lines


def test_opendkim_signatures_verify_with_tern(dns, keys, tern_bin):
    if not shutil.which("opendkim-testmsg"):
        pytest.skip("opendkim-testmsg is missing (apt-get install opendkim-tools)")
    # -C keeps the CRLF line ends; without it opendkim-testmsg 2.11's decr() leaves stray
    # characters after the b= value (it removes the CRs without moving the string's end).
    p = subprocess.run(["opendkim-testmsg", "-C", "-d", DOMAIN, "-s", "odk", "-k", str(keys.key_dir / "tern.rsa.key")],
                       input=MESSAGE, capture_output=True, timeout=60)
    assert p.returncode == 0, p.stderr.decode()
    signed = p.stdout
    assert b"a=rsa-sha1;" in signed  # opendkim-testmsg signs with rsa-sha1 only
    rc, lines = tern_verify(tern_bin, dns, signed)
    assert rc == 1 and len(lines) == 1, lines
    assert lines[0].startswith(f"dkim=policy header.d={DOMAIN} header.s=odk header.a=rsa-sha1"), lines
    assert "RFC 8301" in lines[0]
    rc, lines = tern_verify(tern_bin, dns, signed, "--accept-sha1")
    assert rc == 0 and lines[0].startswith("dkim=pass"), lines
    assert "(2048-bit key)" in lines[0]
    rc, lines = tern_verify(tern_bin, dns, tampered(signed), "--accept-sha1")
    assert rc == 1 and lines[0].startswith("dkim=fail"), lines


def test_tern_signatures_verify_with_tern_over_dns(dns, keys, tern_bin):
    signed = tern_sign(tern_bin, keys, lf(MESSAGE))
    rc, lines = tern_verify(tern_bin, dns, signed)
    assert rc == 0, lines
    assert [l.split()[0] for l in lines] == ["dkim=pass", "dkim=pass"], lines
    assert "header.s=tern-ed25519" in lines[1]


def test_tern_verify_without_key_or_signature(dns, keys, tern_bin):
    signed = tern_sign(tern_bin, keys, MESSAGE, "--selector", "missing", "--key", str(keys.key_dir / "tern.rsa.key"))
    rc, lines = tern_verify(tern_bin, dns, signed)
    assert rc == 1
    assert lines[0].startswith("dkim=permerror header.d=dkim.tern-test header.s=missing"), lines
    assert f"no key: missing._domainkey.{DOMAIN} has no TXT record" in lines[0]
    rc, lines = tern_verify(tern_bin, dns, MESSAGE)
    assert (rc, lines) == (1, ['dkim=none reason="no DKIM-Signature field"'])
