"""Databases on the test PostgreSQL server, for tests of the directory's postgresql backend.

The server is started by `make test` (and `make unit`, `make integration`) with
scripts/test-postgres.sh, which prints the superuser's connection string as
TERN_TEST_POSTGRES='host=127.0.0.1 port=N user=tern_test dbname=postgres'.

    conninfo = pgserver.new_database()   # a fresh, empty database; its libpq connection string
    ...
    pgserver.drop_database(conninfo)
"""
from __future__ import annotations

import os
import re
import subprocess
import uuid

PSQL = "/usr/bin/psql"
ENV_VAR = "TERN_TEST_POSTGRES"
TIMEOUT = 60.0

_TOKEN = re.compile(r"\s*([A-Za-z_]+)\s*=\s*('(?:[^'\\]|\\.)*'|(?:[^\s'\\]|\\.)+|)")


def admin_conninfo() -> str:
    """The connection string of the test server's superuser (from TERN_TEST_POSTGRES)."""
    value = os.environ.get(ENV_VAR, "").strip()
    if not value:
        raise AssertionError(
            f"{ENV_VAR} is not set: the PostgreSQL tests need the test server. Run them through "
            "`make test` (or `make integration`), which starts it with scripts/test-postgres.sh, or by hand: "
            f'eval "$(scripts/test-postgres.sh start build/pg)" && export {ENV_VAR}'
        )
    return value


def parse_conninfo(conninfo: str) -> dict[str, str]:
    """'host=h port=1 password=\\'a b\\'' -> {'host': 'h', 'port': '1', 'password': 'a b'}
    (libpq's key=value form; a later keyword overrides an earlier one, as in libpq)."""
    result: dict[str, str] = {}
    pos = 0
    text = conninfo.strip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            raise AssertionError(f"cannot parse the connection string near {text[pos:pos + 20]!r}")
        value = m.group(2)
        if value.startswith("'"):
            value = value[1:-1]
        result[m.group(1)] = re.sub(r"\\(.)", r"\1", value)
        pos = m.end()
        while pos < len(text) and text[pos].isspace():
            pos += 1
    return result


def format_conninfo(params: dict[str, str]) -> str:
    """The inverse of parse_conninfo: values quoted when needed."""

    def quote(v: str) -> str:
        if v and not re.search(r"[\s'\\]", v):
            return v
        return "'" + v.replace("\\", "\\\\").replace("'", "\\'") + "'"

    return " ".join(f"{k}={quote(v)}" for k, v in params.items())


def _with_dbname(conninfo: str, dbname: str) -> str:
    params = parse_conninfo(conninfo)
    params["dbname"] = dbname
    return format_conninfo(params)


def _psql(conninfo: str, sql: str) -> None:
    env = dict(os.environ, PGCONNECT_TIMEOUT="10")
    try:
        proc = subprocess.run(
            [PSQL, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", conninfo, "-c", sql],
            capture_output=True, text=True, timeout=TIMEOUT, env=env,
        )
    except FileNotFoundError:
        raise AssertionError(f"{PSQL} not found; install postgresql-client (scripts/install-deps.sh)") from None
    except subprocess.TimeoutExpired:
        raise AssertionError(f"psql did not finish within {TIMEOUT:.0f} s: {sql}") from None
    if proc.returncode != 0:
        raise AssertionError(
            f"psql failed ({sql}): {proc.stderr.strip()}; is the test server running? "
            "(scripts/test-postgres.sh start build/pg)"
        )


def new_database() -> str:
    """Creates an empty database tern_it_<uuid hex> and returns its connection string (the
    server's host, port and user, with dbname replaced)."""
    admin = admin_conninfo()
    name = f"tern_it_{uuid.uuid4().hex}"
    _psql(admin, f'CREATE DATABASE "{name}"')
    return _with_dbname(admin, name)


def drop_database(conninfo: str) -> None:
    """Drops the database a connection string from new_database() names, closing its sessions."""
    name = parse_conninfo(conninfo).get("dbname", "")
    if not re.fullmatch(r"tern_it_[0-9a-f]{32}", name):
        raise AssertionError(f"refusing to drop {name!r}: not a database made by new_database()")
    admin = os.environ.get(ENV_VAR, "").strip() or _with_dbname(conninfo, "postgres")
    _psql(admin, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
