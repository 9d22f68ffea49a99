"""A test DNS server (unbound on 127.0.0.1) for tests that need DNS answers: MX, A/AAAA, TLSA, TXT, PTR.

It runs scripts/test-dns.sh, which serves the zones

    tern-test.            DNSSEC-signed; `anchor` is a trust-anchor file for it, so a resolver
                          given forwarders=[server.forwarder] and trust_anchor_file=server.anchor
                          validates its answers as secure
    insecure-test.        unsigned: answers are insecure (not bogus) for such a resolver
    18.198.in-addr.arpa.  unsigned reverse zones (PTR records of 198.18.0.0/16 and 3fff::/20)
    f.f.f.3.ip6.arpa.

from `records`: zone-file lines, one record per line, names relative to tern-test. (until a
`$ORIGIN` line) or absolute; each goes to the zone its owner is in. TTLs default to 0, so
nothing is cached across a reload. A line commented `; bogus` gets the signatures of its RRset
broken (validating resolvers answer bogus). SOA/NS records and the name ns.tern-test. are the
script's. Example:

    @pytest.fixture
    def dns(tmp_path):
        server = dnslib.DnsServer(tmp_path / "dns")
        server.start('''
            example-mx   MX   10 mx1
            mx1          A    127.0.0.1
            _25._tcp.mx1 TLSA 3 1 1 0123...ef
            broken       A    192.0.2.9 ; bogus
        ''')
        yield server
        server.stop()

    # tern's configuration then names server.forwarder ("127.0.0.1@PORT") and server.anchor.
    server.reload(other_records)   # same port, same anchor, new answers

Records given as one string may be indented: common leading white space is removed (textwrap.dedent),
so keep continuation lines (same owner as the line before) indented deeper than the others.
"""
from __future__ import annotations

import os
import re
import subprocess
import tempfile
import textwrap
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "test-dns.sh"
TIMEOUT = 60.0


class DnsServer:
    """One unbound serving the test zones from its own directory (new, empty, or made by it)."""

    def __init__(self, directory: str | os.PathLike[str]):
        self.directory = Path(directory)
        self.port: int | None = None
        self.forwarder: str | None = None  # "127.0.0.1@PORT", as ResolverOptions.forwarders wants it
        self.anchor: str | None = None  # the trust-anchor file (DS of tern-test.)

    def start(self, records: str | None = None) -> "DnsServer":
        """Starts the server with these records (None: the script's default records, those of
        tests/unit/dns_test.cpp). On a running server this is reload()."""
        self._run_start(records)
        return self

    def reload(self, records: str | None = None) -> None:
        """Serves other records: rewrites and re-signs the zones and restarts unbound on the same
        port with the same key, so `forwarder` and `anchor` stay valid."""
        before = self.port
        self._run_start(records)
        if before is not None and self.port != before:
            raise AssertionError(
                f"the test DNS server came back on port {self.port}, not {before} (another process took "
                "the port during the restart); restart whatever was configured with the old forwarder"
            )

    def stop(self) -> None:
        """Stops the server (harmless when it is not running)."""
        self._script("stop", str(self.directory))

    def __enter__(self) -> "DnsServer":
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def _run_start(self, records: str | None) -> None:
        args = ["start", str(self.directory)]
        records_file = None
        try:
            if records is not None:
                with tempfile.NamedTemporaryFile("w", prefix="tern-dns-records-", suffix=".zone",
                                                 delete=False) as f:
                    f.write(textwrap.dedent(records).strip("\n") + "\n")
                    records_file = f.name
                args.append(records_file)
            out = self._script(*args)
        finally:
            if records_file:
                os.unlink(records_file)
        values = dict(re.findall(r"^(TERN_TEST_DNS(?:_ANCHOR)?)=(.*)$", out, re.M))
        forwarder = values.get("TERN_TEST_DNS", "")
        m = re.fullmatch(r"127\.0\.0\.1@(\d+)", forwarder)
        if not m or "TERN_TEST_DNS_ANCHOR" not in values:
            raise AssertionError(f"{SCRIPT} start printed no server address: {out!r}")
        self.forwarder = forwarder
        self.port = int(m.group(1))
        self.anchor = values["TERN_TEST_DNS_ANCHOR"]

    def _script(self, *args: str) -> str:
        try:
            proc = subprocess.run([str(SCRIPT), *args], capture_output=True, text=True, timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"{SCRIPT} {' '.join(args)} did not finish within {TIMEOUT:.0f} s") from None
        if proc.returncode != 0:
            raise AssertionError(f"{SCRIPT} {' '.join(args)} failed: {proc.stderr.strip()}")
        return proc.stdout
