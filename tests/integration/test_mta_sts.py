"""MTA-STS (RFC 8461) in the relay: the `_mta-sts` TXT record in the test DNS (dnslib), the policy
served over HTTPS by a small Python server on 127.0.0.1:443 with a certificate from a throwaway CA
(tlslib), and the MX an smtp_receiver.SmtpReceiver. tern trusts the test CA through
`[relay] tls_ca_file`, for the policy server and for the MX certificates alike.

The policy server must listen on port 443, where tern fetches policies: these tests need that port
on 127.0.0.1 (they run as root in `make test`), and fail, naming the cause, when it is taken.
"""
from __future__ import annotations

import http.server
import socket
import ssl
import threading
import time

import pytest

import tlslib
from smtp_receiver import SmtpReceiver
from test_relay import dns, relay_tern, send, start_dns, world_readable_dir  # noqa: F401 (fixtures)

# The account backend plays no part here: one run (SQLite) is enough.
pytestmark = pytest.mark.backend_independent

POLICY_PATH = "/.well-known/mta-sts.txt"
RECORDS = """\
remote                 MX  10 mx1
mx1                    A   127.0.0.1
_mta-sts.remote        TXT "v=STSv1; id=20261125T0100;"
mta-sts.remote         A   127.0.0.1
"""


def policy(mode: str, *mx: str, max_age: int = 86400) -> str:
    return "version: STSv1\r\n" f"mode: {mode}\r\n" + "".join(f"mx: {m}\r\n" for m in mx) + f"max_age: {max_age}\r\n"


class PolicyServer:
    """HTTPS on 127.0.0.1:443 serving `body` at /.well-known/mta-sts.txt; records each request
    as (path, Host header)."""

    def __init__(self, cert: tlslib.Cert, body: str, content_type: str = "text/plain; charset=utf-8"):
        self.body = body
        self.content_type = content_type
        self.requests: list[tuple[str, str | None]] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self):
                outer.requests.append((self.path, self.headers.get("Host")))
                found = self.path == POLICY_PATH
                data = (outer.body if found else "not found\n").encode()
                self.send_response(200 if found else 404)
                self.send_header("Content-Type", outer.content_type if found else "text/plain")
                self.send_header("Content-Length", str(len(data)))
                self.send_header("Connection", "close")
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        try:
            self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 443), Handler)
        except OSError as e:
            raise AssertionError(
                f"cannot listen on 127.0.0.1:443 for the MTA-STS policy server ({e}): tern fetches policies "
                "from port 443, so these tests need it; run them as root with nothing else listening there"
            ) from None
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert.chainfile, cert.keyfile)
        self.httpd.socket = context.wrap_socket(self.httpd.socket, server_side=True)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def __enter__(self) -> "PolicyServer":
        return self

    def __exit__(self, *exc_info) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


def assert_port_443_free() -> None:
    """The fetch must fail for want of a server: nothing may listen on 127.0.0.1:443."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", 443))
        except OSError as e:
            raise AssertionError(f"cannot bind 127.0.0.1:443 ({e}): these tests need that port (run as root, "
                                 "with nothing else listening there)") from None


@pytest.fixture
def ca(world_readable_dir):  # noqa: F811
    return tlslib.make_ca(world_readable_dir / "pki")


@pytest.fixture
def policy_cert(ca):
    return ca.issue("mta-sts", ["mta-sts.remote.tern-test"])


def sts_tern(tern_factory, dns, ca, port: int, **relay):  # noqa: F811
    return relay_tern(tern_factory, dns, port, relay={"tls_ca_file": ca.certfile, **relay})


def test_enforce_with_a_matching_mx_and_a_valid_certificate_delivers(tern_factory, dns, ca, policy_cert):  # noqa: F811
    mx_cert = ca.issue("mx1", ["mx1.tern-test"])
    with PolicyServer(policy_cert, policy("enforce", "*.tern-test")) as https, \
            SmtpReceiver(hostname="mx1.tern-test", starttls=(mx_cert.chainfile, mx_cert.keyfile)) as mx:
        start_dns(dns, RECORDS)
        tern = sts_tern(tern_factory, dns, ca, mx.port)
        queue_id = send(tern, ["bob@remote.tern-test"], subject="first")
        (msg,) = mx.wait_for(1)
        assert msg.tls and msg.sni == "mx1.tern-test"
        tern.wait_log(rf'relay info relayed id={queue_id} to=bob@remote\.tern-test status=sent '
                      r'mta="mx1\.tern-test \[127\.0\.0\.1\]" tls="TLSv1\.3 \S+ verified=mta-sts"')
        tern.wait_log(rf'queue info relay transaction id={queue_id} domain=remote\.tern-test .*verified=mta-sts')
        assert tern.log_count(rf'relay info relay: MTA-STS policy fetched id={queue_id} domain=remote\.tern-test '
                              r'policy_id=20261125T0100 mode=enforce max_age=86400 mx=\*\.tern-test') == 1
        assert https.requests == [(POLICY_PATH, "mta-sts.remote.tern-test")]
        # The next message uses the cached policy: the TXT id is unchanged, nothing is fetched.
        second = send(tern, ["carol@remote.tern-test"], subject="second")
        mx.wait_for(2)
        tern.wait_log(rf'relay info relayed id={second} .* tls="TLSv1\.3 \S+ verified=mta-sts"')
        assert len(https.requests) == 1


def test_enforce_with_an_mx_without_starttls_defers(tern_factory, dns, ca, policy_cert):  # noqa: F811
    with PolicyServer(policy_cert, policy("enforce", "mx1.tern-test")), SmtpReceiver(hostname="mx1.tern-test") as mx:
        start_dns(dns, RECORDS)
        tern = sts_tern(tern_factory, dns, ca, mx.port)
        queue_id = send(tern, ["bob@remote.tern-test"])
        tern.wait_log(rf'queue warn delivery deferred id={queue_id} to=bob@remote\.tern-test '
                      r'reason="4\.7\.4 TLS is required for remote\.tern-test \(MTA-STS policy\) but '
                      r'mx1\.tern-test \[127\.0\.0\.1\] does not offer STARTTLS"')
        assert mx.messages == []


def test_enforce_with_an_untrusted_certificate_defers(tern_factory, dns, ca, policy_cert, world_readable_dir):  # noqa: F811
    self_signed = tlslib.self_signed(world_readable_dir / "self", "mx1", ["mx1.tern-test"])
    with PolicyServer(policy_cert, policy("enforce", "mx1.tern-test")), \
            SmtpReceiver(hostname="mx1.tern-test", starttls=(self_signed.chainfile, self_signed.keyfile)) as mx:
        start_dns(dns, RECORDS)
        tern = sts_tern(tern_factory, dns, ca, mx.port)
        queue_id = send(tern, ["bob@remote.tern-test"])
        tern.wait_log(rf'queue warn delivery deferred id={queue_id} to=bob@remote\.tern-test '
                      r'reason="4\.7\.5 TLS handshake with mx1\.tern-test \[127\.0\.0\.1\] failed '
                      r'\(certificate: self[- ]signed certificate\) \[MTA-STS\]"')
        assert mx.messages == []


def test_enforce_without_a_matching_mx_defers(tern_factory, dns, ca, policy_cert):  # noqa: F811
    mx_cert = ca.issue("mx1", ["mx1.tern-test"])
    with PolicyServer(policy_cert, policy("enforce", "mail.remote.tern-test", "*.mx.tern-test")), \
            SmtpReceiver(hostname="mx1.tern-test", starttls=(mx_cert.chainfile, mx_cert.keyfile)) as mx:
        start_dns(dns, RECORDS)
        tern = sts_tern(tern_factory, dns, ca, mx.port)
        queue_id = send(tern, ["bob@remote.tern-test"])
        tern.wait_log(rf'queue warn delivery deferred id={queue_id} to=bob@remote\.tern-test '
                      r'reason="4\.7\.5 no MX host of remote\.tern-test matches its MTA-STS policy"')
        assert tern.log_count(rf'relay warn relay: MX host skipped: its name does not match the MTA-STS policy '
                              rf'id={queue_id} domain=remote\.tern-test mx=mx1\.tern-test') >= 1
        assert mx.connections == 0 and mx.messages == []


def test_testing_mode_delivers_and_logs_what_enforce_would_refuse(tern_factory, dns, ca, policy_cert,
                                                                   world_readable_dir):  # noqa: F811
    self_signed = tlslib.self_signed(world_readable_dir / "self", "mx1", ["mx1.tern-test"])
    with PolicyServer(policy_cert, policy("testing", "mx1.tern-test")), \
            SmtpReceiver(hostname="mx1.tern-test", starttls=(self_signed.chainfile, self_signed.keyfile)) as mx:
        start_dns(dns, RECORDS)
        tern = sts_tern(tern_factory, dns, ca, mx.port)
        queue_id = send(tern, ["bob@remote.tern-test"])
        (msg,) = mx.wait_for(1)
        assert msg.tls
        tern.wait_log(rf'queue info delivered id={queue_id} to=bob@remote\.tern-test attempts=1')
        tern.wait_log(rf'relay info relayed id={queue_id} .* tls="TLSv1\.3 \S+ verified=no"')
        assert tern.log_count(rf'relay warn relay: MTA-STS policy in testing mode: enforce would refuse this server '
                              rf'id={queue_id} domain=remote\.tern-test mx=mx1\.tern-test '
                              r'reason="the certificate of mx1\.tern-test \[127\.0\.0\.1\] is not valid: '
                              r'self[- ]signed certificate"') == 1
        assert tern.log_count(r"MTA-STS policy in testing mode") == 1  # nothing else to report


def test_testing_mode_with_an_unlisted_mx_without_starttls_delivers(tern_factory, dns, ca, policy_cert):  # noqa: F811
    with PolicyServer(policy_cert, policy("testing", "mail.remote.tern-test")), \
            SmtpReceiver(hostname="mx1.tern-test") as mx:
        start_dns(dns, RECORDS)
        tern = sts_tern(tern_factory, dns, ca, mx.port)
        queue_id = send(tern, ["bob@remote.tern-test"])
        mx.wait_for(1)
        tern.wait_log(rf'queue info delivered id={queue_id} to=bob@remote\.tern-test attempts=1')
        warning = (rf'relay warn relay: MTA-STS policy in testing mode: enforce would refuse this server id={queue_id} '
                   r'domain=remote\.tern-test mx=mx1\.tern-test reason=')
        assert tern.log_count(warning + r'"the policy\'s mx patterns do not match mx1\.tern-test"') == 1
        assert tern.log_count(warning + r'"mx1\.tern-test \[127\.0\.0\.1\] does not offer STARTTLS"') == 1


def test_failed_policy_fetch_delivers_as_without_mta_sts(tern_factory, dns, ca):
    assert_port_443_free()
    with SmtpReceiver(hostname="mx1.tern-test") as mx:  # no STARTTLS: an enforced policy would refuse it
        start_dns(dns, RECORDS)
        tern = sts_tern(tern_factory, dns, ca, mx.port)
        queue_id = send(tern, ["bob@remote.tern-test"])
        mx.wait_for(1)
        tern.wait_log(rf'queue info delivered id={queue_id} to=bob@remote\.tern-test attempts=1')
        tern.wait_log(rf'relay info relayed id={queue_id} .* status=sent .* tls=none')
        assert tern.log_count(
            rf'relay warn relay: MTA-STS policy fetch failed id={queue_id} domain=remote\.tern-test '
            r'reason="fetching https://mta-sts\.remote\.tern-test/\.well-known/mta-sts\.txt failed: cannot connect to '
            r'mta-sts\.remote\.tern-test \[127\.0\.0\.1\]:443 \(Connection refused\)"') == 1


def test_policy_with_the_wrong_content_type_is_no_policy(tern_factory, dns, ca, policy_cert):  # noqa: F811
    with PolicyServer(policy_cert, policy("enforce", "mx1.tern-test"), content_type="text/html") as https, \
            SmtpReceiver(hostname="mx1.tern-test") as mx:
        start_dns(dns, RECORDS)
        tern = sts_tern(tern_factory, dns, ca, mx.port)
        queue_id = send(tern, ["bob@remote.tern-test"])
        mx.wait_for(1)
        tern.wait_log(rf'queue info delivered id={queue_id} to=bob@remote\.tern-test attempts=1')
        assert tern.log_count(r'relay warn relay: MTA-STS policy fetch failed .*sent the policy as \\"text/html\\", '
                              r'not text/plain') == 1
        assert len(https.requests) == 1


def test_mta_sts_false_ignores_policies(tern_factory, dns, ca, policy_cert):  # noqa: F811
    with PolicyServer(policy_cert, policy("enforce", "mx1.tern-test")) as https, \
            SmtpReceiver(hostname="mx1.tern-test") as mx:
        start_dns(dns, RECORDS)
        tern = sts_tern(tern_factory, dns, ca, mx.port, mta_sts=False)
        queue_id = send(tern, ["bob@remote.tern-test"])
        mx.wait_for(1)
        tern.wait_log(rf'queue info delivered id={queue_id} to=bob@remote\.tern-test attempts=1')
        time.sleep(0.2)
        assert https.requests == []
        assert tern.log_count("MTA-STS") == 0
