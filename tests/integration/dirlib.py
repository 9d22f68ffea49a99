"""Helpers for the directory tests (test_directory*.py): servers whose [directory] section is set
by the test on either backend, direct SQL on the account database (to make states the CLI
refuses to make), RCPT probes, and spool envelopes.
"""
from __future__ import annotations

import json
import os
import pwd
import re
import subprocess
from pathlib import Path

import ternlib
from ternlib import BACKEND, SmtpClient, TernServer, wait_until

SQLITE3 = "/usr/bin/sqlite3"
PSQL = "/usr/bin/psql"
PG = BACKEND == "postgresql"


def make_server(factory, start: bool = True, **sections) -> TernServer:
    """tern_factory(start, **sections) that keeps the backend under test when the test sets
    [directory] keys: ternlib only picks PostgreSQL when no "directory" section is given, so
    here a fresh database is made and named in the section (and dropped by remove_files)."""
    server = factory(start=False, **sections)
    directory = server.config.get("directory", {})
    if PG and "backend" not in directory:
        import pgserver
        server.pg_database = pgserver.new_database()
        server.config["directory"] = {**directory, "backend": "postgresql", "postgresql": server.pg_database}
        server.write_config()
    if start:
        server.start()
    return server


def bare_server(factory, **sections) -> TernServer:
    """A server that is not started and has no accounts yet (no "domains"/"users" to provision)."""
    sections.setdefault("domains", [])
    sections.setdefault("users", [])
    return make_server(factory, start=False, **sections)


def backend_of(server: TernServer) -> str:
    return server.config.get("directory", {}).get("backend", "sqlite")


def db_path(server: TernServer) -> Path:
    """The SQLite account database (the default path under the data directory, or sqlite_path)."""
    p = Path(server.config.get("directory", {}).get("sqlite_path", "directory/accounts.db"))
    return p if p.is_absolute() else server.data_dir / p


def fix_sqlite_owner(server: TernServer) -> None:
    """Root's sqlite3 may leave a -wal/-shm behind; the directory service (tern-dir) must own them."""
    if not ternlib.IS_ROOT:
        return
    pw = pwd.getpwnam(ternlib.SERVICE_USERS["directory"])
    db = db_path(server)
    for f in (db, Path(f"{db}-wal"), Path(f"{db}-shm")):
        if f.exists():
            os.chown(f, pw.pw_uid, pw.pw_gid)


def sql(server: TernServer, statement: str, admin: bool = False) -> str:
    """Runs SQL on the server's account database with the stock client (sqlite3 or psql),
    bypassing tern, and returns its output (rows, '|'-separated). admin=True runs a PostgreSQL
    statement from the server's maintenance database instead (ALTER DATABASE ...)."""
    if backend_of(server) == "postgresql":
        import pgserver
        conninfo = server.config["directory"]["postgresql"]
        if admin:
            conninfo = pgserver.admin_conninfo()
        cmd = [PSQL, "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d", conninfo, "-c", statement]
    else:
        cmd = [SQLITE3, "-cmd", ".timeout 10000", str(db_path(server)), statement]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    if backend_of(server) != "postgresql":
        fix_sqlite_owner(server)
    assert r.returncode == 0, f"{cmd[0]} failed on {statement!r}: {r.stderr}"
    return r.stdout.strip()


def pg_database_name(server: TernServer) -> str:
    import pgserver
    return pgserver.parse_conninfo(server.config["directory"]["postgresql"])["dbname"]


class SqlLock:
    """Holds an exclusive lock on the account database from another process until stop():
    sqlite3 with BEGIN EXCLUSIVE, or psql with LOCK TABLE meta IN ACCESS EXCLUSIVE MODE (every
    tern statement that opens the store reads meta first)."""

    def __init__(self, server: TernServer):
        self.server = server
        if backend_of(server) == "postgresql":
            cmd = [PSQL, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", server.config["directory"]["postgresql"]]
            script = "BEGIN;\nLOCK TABLE meta IN ACCESS EXCLUSIVE MODE;\n\\echo locked\n"
        else:
            cmd = [SQLITE3, str(db_path(server))]
            script = "BEGIN EXCLUSIVE;\nSELECT 'locked';\n"
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True)
        self.proc.stdin.write(script)
        self.proc.stdin.flush()
        line = self.proc.stdout.readline().strip()
        assert line == "locked", f"could not take the lock: {line!r} {self.proc.stderr.read() if not line else ''}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.write("ROLLBACK;\n")
            self.proc.stdin.close()
            self.proc.wait(timeout=30)
        if backend_of(self.server) != "postgresql":
            fix_sqlite_owner(self.server)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


# ---------------------------------------------------------------------------------------------
# SMTP probes


def rcpt(port: int, *addresses: str, sender: str = "bob@example.org") -> list[str]:
    """The replies to RCPT TO for each address, in one session after EHLO and MAIL FROM."""
    with SmtpClient(port) as c:
        assert c.ehlo().startswith("250-")
        assert c.cmd(f"MAIL FROM:<{sender}>") == f"250 2.1.0 Sender <{sender}> OK"
        return [c.cmd(f"RCPT TO:<{a}>") for a in addresses]


def rcpt_one(port: int, address: str) -> str:
    return rcpt(port, address)[0]


def accepted(address: str) -> str:
    return f"250 2.1.5 Recipient <{address}> OK"


def unknown(address: str) -> str:
    return f"550 5.1.1 <{address}>: No such user here"


def disabled(address: str) -> str:
    return f"550 5.2.1 <{address}>: Mailbox disabled"


def relay_denied(address: str) -> str:
    return f"554 5.7.1 <{address}>: Relay access denied"


def alias_loop(address: str) -> str:
    return f"451 4.4.6 <{address}>: Alias loop in this server's configuration, try again later"


UNAVAILABLE = "451 4.3.0 Recipient verification temporarily unavailable, try again later"


# ---------------------------------------------------------------------------------------------
# CLI


def cli_json(server: TernServer, *args: str):
    """Runs `tern ARGS --json`, checks exit 0 and returns the parsed JSON."""
    r = server.cli(*args, "--json")
    assert r.returncode == 0, f"tern {' '.join(args)} --json exited {r.returncode}: {r.stdout}{r.stderr}"
    return json.loads(r.stdout)


def refused(r: subprocess.CompletedProcess, message: str, code: int = 1) -> None:
    """The command exited `code` with exactly "tern: MESSAGE" on stderr and nothing on stdout."""
    assert (r.returncode, r.stdout, r.stderr) == (code, "", f"tern: {message}\n"), \
        f"exit {r.returncode}\nstdout: {r.stdout}\nstderr: {r.stderr}"


def auth(server: TernServer, address: str, password: str, *args: str) -> subprocess.CompletedProcess:
    """`tern user auth ADDRESS [ARGS]` with the password on standard input."""
    return server.cli("user", "auth", address, *args, input=password + "\n")


# ---------------------------------------------------------------------------------------------
# Spool and log


def envelope(server: TernServer, queue_id: str) -> dict:
    """spool/env/ID parsed: {"sender": ..., "rcpt": [(state, address), ...], plus the other keys}."""
    text = (server.data_dir / "spool" / "env" / queue_id).read_text()
    out: dict = {"rcpt": []}
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        if key == "rcpt":
            state, _attempts, _next, address = value.split(" ", 3)
            out["rcpt"].append((state, address))
        else:
            out[key] = value
    return out


def queued_ids(server: TernServer) -> list[str]:
    d = server.data_dir / "spool" / "env"
    return sorted(p.name for p in d.iterdir() if not p.name.endswith(".tmp")) if d.is_dir() else []


def log_match(server: TernServer, pattern: str, timeout: float = ternlib.DEFAULT_TIMEOUT) -> re.Match:
    """Waits for a log line matching `pattern` and returns the first match."""
    rx = re.compile(pattern)

    def find():
        for line in server.lines():
            m = rx.search(line)
            if m:
                return m
        return None

    return wait_until(find, timeout, message=f"a log line matching {pattern!r}")


def wait_started_without_directory(server: TernServer, since: int = 0, timeout: float = 20.0) -> None:
    """After start(wait=False) on a server whose account database cannot be opened: waits until
    the services run, the directory has logged that the database is unavailable, and the port is open."""
    needed = (" smtp info started", " queue info spool scanned", " deliver info started",
              " directory error account database unavailable")

    def ready():
        assert server.proc.poll() is None, "tern serve exited while starting:\n" + server.log_text()
        tail = server.lines()[since:]
        return all(any(n in line for line in tail) for n in needed) and server.port_open()

    wait_until(ready, timeout, message="tern to start with the account database unavailable")
