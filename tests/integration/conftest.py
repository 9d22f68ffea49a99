"""Fixtures for the tern integration tests.

`tern` is a running master (function scope) with the default configuration of ternlib:
hostname mail.example.test, one domain example.test, users alice, dave and erin, a free
127.0.0.1 port, max_message_size 100000, concurrency_local 10, retry 1..2 s.
`tern_factory(start=True, **sections)` makes more, with configuration sections merged in, e.g.
`tern_factory(queue={"concurrency_local": 0})`. The "domains" and "users" keys are not file
sections: they are the accounts created in the directory database before the first start
(ternlib.TernServer.provision). With TERN_TEST_BACKEND=postgresql every server gets a fresh
PostgreSQL database (unless the test names a backend itself); the test server must be running
(TERN_TEST_POSTGRES; `make test` starts it).

Every server is stopped at teardown (SIGTERM, SIGKILL after 15 s, then any leftover process
started on its configuration file is killed) and its log, which also carries the children's
stderr, must hold no sanitizer report. The log is printed at teardown, so pytest shows it for a
failing test.
"""
from __future__ import annotations

import os

import pytest

import ternlib


@pytest.fixture(scope="session")
def tern_bin() -> str:
    path = ternlib.tern_binary()
    if not os.access(path, os.X_OK):
        pytest.exit(f"tern binary not found or not executable: {path} (set TERN_BIN)", returncode=2)
    return path


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "backend_independent: never opens an account database, so the PostgreSQL pass of "
        "`make test` leaves it out (-m \"not backend_independent\")")


@pytest.fixture(scope="session", autouse=True)
def account_templates():
    """The account databases provision() copies (ternlib.AccountTemplates), removed at the end."""
    yield ternlib.TEMPLATES
    ternlib.TEMPLATES.drop_all()


@pytest.fixture(scope="session")
def service_uids() -> dict[str, int] | None:
    """Service name -> uid of its run_as user when running as root (users made if missing);
    None otherwise (tern then runs every service as the current user)."""
    return ternlib.ensure_service_users() if ternlib.IS_ROOT else None


class _Servers:
    def __init__(self, binary: str):
        self.binary = binary
        self.servers: list[ternlib.TernServer] = []

    def make(self, start: bool = True, **sections) -> ternlib.TernServer:
        server = ternlib.TernServer(self.binary, sections)
        self.servers.append(server)
        if start:
            server.start()
        return server

    def finish(self) -> None:
        problems = []
        for server in self.servers:
            try:
                server.cleanup()
            except AssertionError as e:
                problems.append(str(e))
            print(f"----- tern log ({server.base}) -----")
            print(server.log_text())
            reports = server.sanitizer_reports()
            if reports:
                problems.append(f"sanitizer reports in the log of {server.base}:\n" + "\n".join(reports))
            server.remove_files()
        assert not problems, "\n".join(problems)


@pytest.fixture
def tern_factory(tern_bin, service_uids):
    servers = _Servers(tern_bin)
    yield servers.make
    servers.finish()


@pytest.fixture
def tern(tern_factory) -> ternlib.TernServer:
    return tern_factory()


@pytest.fixture(scope="module")
def shared_tern(tern_bin, service_uids) -> ternlib.TernServer:
    """One server for a whole module, for tests that only look at replies."""
    servers = _Servers(tern_bin)
    yield servers.make()
    servers.finish()
