"""`tern spf check` against the test DNS server (unbound, scripts/test-dns.sh through dnslib),
compared case by case with Debian's pyspf (`import spf`), which asks the same server through
dnspython: both must give the result the table expects, and the same explanation where the
record has exp=.

The records live in a signed zone (tern-test.); tern validates them with the server's trust
anchor, pyspf reads them without DNSSEC. Exit statuses: 0 with a result, 64 for a bad argument
(the message names it), 75 when the resolver gets no answer at all.
"""
from __future__ import annotations

import subprocess

import dns.resolver
import pytest
import spf

import dnslib
from ternlib import free_port, tern_binary

# No account database is involved: one run is enough.
pytestmark = pytest.mark.backend_independent

INCLUDES = " ".join(f"include:l{i}.tern-test" for i in range(1, 12))
LEAVES = "\n".join(f'l{i}          TXT  "v=spf1 -all"' for i in range(1, 12))

RECORDS = f"""
pass          TXT  "v=spf1 ip4:198.18.0.0/24 -all"
softfail      TXT  "v=spf1 ip4:198.18.0.0/24 ~all"
neutral       TXT  "v=spf1 ip4:198.18.0.0/24 ?all"
incl          TXT  "v=spf1 include:pass.tern-test -all"
redir         TXT  "v=spf1 redirect=softfail.tern-test"
mx            TXT  "v=spf1 mx -all"
mx            MX   10 mail.mx
mail.mx       A    198.18.2.5
mail.mx       AAAA 3fff:2::5
acidr         TXT  "v=spf1 a:host.acidr.tern-test/28 -all"
host.acidr    A    198.18.3.1
exists        TXT  "v=spf1 exists:%{{i}}.allow.insecure-test -all"
syntax        TXT  "v=spf1 ip4:198.18.0.300 -all"
toomany       TXT  "v=spf1 {INCLUDES} +all"
{LEAVES}
exp           TXT  "v=spf1 -all exp=why.exp.tern-test"
why.exp       TXT  "%{{i}} may not send mail for %{{d}}"
nospf         A    198.18.0.1
helo          TXT  "v=spf1 a -all"
helo          A    198.18.5.5
; In the unsigned zone: below an empty non-terminal of the signed zone (allow.tern-test would
; be one) the test server's NXDOMAIN proof does not validate, and tern would see it as bogus.
$ORIGIN insecure-test.
198.18.4.4.allow A 127.0.0.2
"""

# (client address, MAIL FROM, HELO, expected result, expected mechanism or None)
CASES = [
    ("198.18.0.9", "a@pass.tern-test", "client.example", "pass", "ip4:198.18.0.0/24"),
    ("192.0.2.9", "a@pass.tern-test", "client.example", "fail", "-all"),
    ("192.0.2.9", "a@softfail.tern-test", "client.example", "softfail", "~all"),
    ("192.0.2.9", "a@neutral.tern-test", "client.example", "neutral", "?all"),
    ("198.18.0.200", "a@incl.tern-test", "client.example", "pass", "include:pass.tern-test"),
    ("192.0.2.9", "a@incl.tern-test", "client.example", "fail", "-all"),
    ("198.18.0.3", "a@redir.tern-test", "client.example", "pass", "ip4:198.18.0.0/24"),
    ("192.0.2.9", "a@redir.tern-test", "client.example", "softfail", "~all"),
    ("198.18.2.5", "a@mx.tern-test", "client.example", "pass", "mx"),
    ("3fff:2::5", "a@mx.tern-test", "client.example", "pass", "mx"),
    ("198.18.2.6", "a@mx.tern-test", "client.example", "fail", "-all"),
    ("198.18.3.14", "a@acidr.tern-test", "client.example", "pass", "a:host.acidr.tern-test/28"),
    ("198.18.3.16", "a@acidr.tern-test", "client.example", "fail", "-all"),
    ("198.18.4.4", "a@exists.tern-test", "client.example", "pass", "exists:%{i}.allow.insecure-test"),
    ("198.18.4.5", "a@exists.tern-test", "client.example", "fail", "-all"),
    ("198.18.0.9", "a@syntax.tern-test", "client.example", "permerror", None),
    ("198.18.0.9", "a@toomany.tern-test", "client.example", "permerror", None),
    ("198.18.0.9", "a@nospf.tern-test", "client.example", "none", None),
    ("198.18.0.9", "a@nothing.tern-test", "client.example", "none", None),
    ("198.18.5.5", "", "helo.tern-test", "pass", "a"),
    ("198.18.5.6", "", "helo.tern-test", "fail", "-all"),
]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    s = dnslib.DnsServer(tmp_path_factory.mktemp("spf") / "dns")
    s.start(RECORDS)
    yield s
    s.stop()


@pytest.fixture(scope="module")
def pyspf(server):
    """pyspf with dnspython asking the test server only."""
    saved = dns.resolver.default_resolver
    resolver = dns.resolver.Resolver(configure=False)
    resolver.nameservers = ["127.0.0.1"]
    resolver.port = server.port
    dns.resolver.default_resolver = resolver
    yield spf
    dns.resolver.default_resolver = saved


def tern_spf(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([tern_binary(), "spf", "check", *args], capture_output=True, text=True, timeout=timeout)


def check(server, ip: str, sender: str, helo: str) -> tuple[subprocess.CompletedProcess, dict[str, str]]:
    proc = tern_spf("--ip", ip, "--sender", sender, "--helo", helo, "--dns", server.forwarder,
                    "--trust-anchor", server.anchor, "--receiver", "mx.tern.example")
    fields = {}
    for line in proc.stdout.splitlines():
        key, _, value = line.partition(": ")
        fields.setdefault(key, value)
    return proc, fields


@pytest.mark.parametrize("ip,sender,helo,expected,mechanism", CASES,
                         ids=[f"{c[1] or 'helo:' + c[2]}-{c[0]}" for c in CASES])
def test_same_result_as_pyspf(server, pyspf, ip, sender, helo, expected, mechanism):
    proc, fields = check(server, ip, sender, helo)
    assert proc.returncode == 0, proc.stderr
    result, _code, explanation = pyspf.query(i=ip, s=sender, h=helo, receiver="mx.tern.example").check()
    assert result == expected, f"pyspf: {result} ({explanation})"
    assert fields.get("result") == expected, proc.stdout
    if mechanism is not None:
        assert fields.get("mechanism") == mechanism, proc.stdout
    if expected in ("permerror", "temperror"):
        assert fields.get("problem"), proc.stdout
    header = fields.get("Received-SPF", "")
    assert header.startswith(f"{expected} (mx.tern.example: "), proc.stdout
    assert f"client-ip={ip};" in header or f'client-ip="{ip}";' in header, header
    assert f"identity={'mailfrom' if sender else 'helo'}" in header, header


def test_explanation_matches_pyspf(server, pyspf):
    proc, fields = check(server, "192.0.2.77", "bob@exp.tern-test", "client.example")
    result, _code, explanation = pyspf.query(i="192.0.2.77", s="bob@exp.tern-test", h="client.example").check()
    assert (result, fields.get("result")) == ("fail", "fail"), proc.stdout
    assert fields.get("explanation") == "192.0.2.77 may not send mail for exp.tern-test", proc.stdout
    assert explanation == fields["explanation"]


def test_too_many_lookups_names_the_limit(server):
    proc, fields = check(server, "198.18.0.9", "a@toomany.tern-test", "client.example")
    assert fields.get("problem", "").endswith(
        "'include:l11.tern-test': more than 10 terms that query the DNS (RFC 7208 4.6.4)"), proc.stdout


@pytest.mark.parametrize("args,named", [
    (["--ip", "198.18.0.300", "--sender", "a@b.example", "--helo", "c.example"], "--ip"),
    (["--sender", "a@b.example", "--helo", "c.example"], "--ip"),
    (["--ip", "192.0.2.1", "--sender", "a@b.example"], "--helo"),
    (["--ip", "192.0.2.1", "--sender", "nobody", "--helo", "c.example"], "--sender"),
    (["--ip", "192.0.2.1", "--sender", "a@b.example", "--helo", "c.example", "--dns", "localhost:53"], "--dns"),
    (["--ip", "192.0.2.1", "--sender", "a@b.example", "--helo", "c.example", "--dns", "127.0.0.1@99999"], "--dns"),
])
def test_bad_arguments_exit_64(args, named):
    proc = tern_spf(*args)
    assert proc.returncode == 64, (proc.stdout, proc.stderr)
    assert named in proc.stderr
    assert proc.stdout == ""


def test_no_answer_from_the_resolver_exits_75():
    port = free_port()  # nothing listens there
    proc = tern_spf("--ip", "192.0.2.1", "--sender", "a@pass.tern-test", "--helo", "c.example",
                    "--dns", f"127.0.0.1@{port}", "--trust-anchor", "none", "--timeout", "1")
    assert proc.returncode == 75, (proc.stdout, proc.stderr)
    assert "result: temperror" in proc.stdout
    assert f"no answer from 127.0.0.1@{port}" in proc.stderr
