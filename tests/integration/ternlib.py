"""Helpers for the tern integration tests: configuration files, a handle on a running
`tern serve` master, a raw SMTP client and polling with a deadline.

Imported by conftest.py and the test modules (pytest puts this directory on sys.path).
"""
from __future__ import annotations

import copy
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from pathlib import Path

HOSTNAME = "mail.example.test"
DOMAIN = "example.test"
# Any crypt(3)-looking hash will do; this one is `echo pw | tern hash-password`.
PASSWORD_HASH = "$y$j9T$jA67ydMBF2vVLDZAaqvb50$bgnQkt6YcSugLN/hOfSAkk2GSOXQ74vsvoSzXtTB0o7"
SERVICE_USERS = {"smtp": "tern-smtp", "queue": "tern-queue", "deliver": "tern-vmail", "directory": "tern-dir",
                 "relay": "tern-relay"}
SERVICES = ("smtp", "queue", "deliver", "directory", "relay")  # pop3 runs only when configured
# TERN_TEST_BACKEND=postgresql runs every server on a fresh PostgreSQL database (make test runs
# the suite once per backend); anything else means the default SQLite file.
BACKEND = os.environ.get("TERN_TEST_BACKEND", "sqlite")
IS_ROOT = os.geteuid() == 0
CRLF = "\r\n"
DEFAULT_TIMEOUT = 10.0

# Sanitizer output that must never appear in a log (children's stderr is merged into it).
SANITIZER_MARKERS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:")


def tern_binary() -> str:
    return os.environ.get("TERN_BIN", str(Path(__file__).resolve().parents[2] / "build" / "asan" / "tern"))


# ---------------------------------------------------------------------------------------------
# Polling


def wait_until(predicate, timeout: float = DEFAULT_TIMEOUT, interval: float = 0.05, message: str = "condition"):
    """Calls predicate() until it returns something truthy; returns that value, or fails."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for: {message}")
        time.sleep(interval)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ensure_service_users() -> dict[str, int]:
    """As root: makes the run_as users if missing (idempotent). Returns service -> uid."""
    uids = {}
    for service, user in SERVICE_USERS.items():
        try:
            pwd.getpwnam(user)
        except KeyError:
            subprocess.run(
                ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", user],
                check=False, capture_output=True)
        uids[service] = pwd.getpwnam(user).pw_uid
    return uids


# ---------------------------------------------------------------------------------------------
# Configuration


def default_config(data_dir: str, port: int) -> dict:
    """The configuration file's sections, plus "domains" and "users": accounts that
    TernServer.provision() creates before the first start (they are not file keys)."""
    return {
        "server": {"hostname": HOSTNAME, "data_dir": data_dir},
        "smtp": {
            "listen": [f"127.0.0.1:{port}"],
            "max_message_size": 100000,
            "max_recipients": 1000,
            "max_errors": 10,
            "command_timeout": 300,
            "data_timeout": 600,
        },
        "queue": {"concurrency_local": 10, "retry_initial": 1, "retry_max": 2},
        # The relay asks the test DNS server (make test starts it; it answers for the test zones
        # and SERVFAIL at once for anything else), never the machine's resolver.
        "dns": {"forwarders": [os.environ.get("TERN_TEST_DNS", "127.0.0.1@1")], "trust_anchor": "none"},
        # The arrival checks (on by default) would add an Authentication-Results field whose
        # results depend on the DNS the machine reaches; tests of them turn them on
        # (test_mailauth.py), the others see messages exactly as sent.
        "mailauth": {"verify": False},
        "domains": [DOMAIN],
        "users": ["alice@example.test", "dave@example.test", "erin@example.test"],
    }


def merge_config(base: dict, **changes) -> dict:
    """Copy of `base` where each keyword names a section: dicts are merged, lists replaced."""
    out = copy.deepcopy(base)
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key].update(value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return str(v)
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise TypeError(v)


def render_config(cfg: dict) -> str:
    out = []
    sections = ("server", "run_as", "smtp", "pop3", "imap", "queue", "directory", "delivery", "relay", "dns", "dnsbl", "greylist",
                "spf", "dkim", "mailauth")
    unknown = set(cfg) - set(sections) - {"tls", "routes", "domains", "users"}  # the last two: accounts
    assert not unknown, f"render_config does not know the section(s) {sorted(unknown)}"
    for section in sections:
        if section in cfg:
            out.append(f"[{section}]")
            out.extend(f"{k} = {_toml_value(v)}" for k, v in cfg[section].items() if k != "access")
            out.append("")
    for rule in cfg.get("smtp", {}).get("access", []):  # a list of dicts: the [[smtp.access]] tables
        out.append("[[smtp.access]]")
        out.extend(f"{k} = {_toml_value(v)}" for k, v in rule.items())
        out.append("")
    if "tls" in cfg:  # [tls], and a list of dicts under "sni" for the [[sni]] tables
        out.append("[tls]")
        out.extend(f"{k} = {_toml_value(v)}" for k, v in cfg["tls"].items() if k != "sni")
        out.append("")
        for sni in cfg["tls"].get("sni", []):
            out.append("[[sni]]")
            out.extend(f"{k} = {_toml_value(v)}" for k, v in sni.items())
            out.append("")
    for route in cfg.get("routes", []):
        out.append("[[route]]")
        out.extend(f"{k} = {_toml_value(v)}" for k, v in route.items())
        out.append("")
    return "\n".join(out)


def write_config_file(path: Path, text: str) -> None:
    """Writes a configuration file atomically, readable by the service users."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


# ---------------------------------------------------------------------------------------------
# The account commands


def run_cli(binary: str, config_path: Path, *args: str, input: str | None = None,
            check: bool = False) -> subprocess.CompletedProcess:
    """Runs `tern ARGS --config FILE` and returns the completed process (text mode)."""
    r = subprocess.run([binary, *args, "--config", str(config_path)], input=input, capture_output=True, text=True,
                       timeout=60, stdin=None if input is not None else subprocess.DEVNULL)
    if check:
        assert r.returncode == 0, f"tern {' '.join(args)} exited {r.returncode}: {r.stdout}{r.stderr}"
    return r


def add_user(binary: str, config_path: Path, address: str, password_hash: str = PASSWORD_HASH) -> None:
    run_cli(binary, config_path, "user", "add", address, "--password-hash", password_hash, check=True)


def add_accounts(binary: str, config_path: Path, domains: list[str], users: list[str]) -> None:
    """`tern domain add` for each domain, then `tern user add` (with PASSWORD_HASH) for each user."""
    for d in domains:
        run_cli(binary, config_path, "domain", "add", d, check=True)
    for u in users:
        add_user(binary, config_path, u)


# ---------------------------------------------------------------------------------------------
# /proc


def read_cmdline(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return [a.decode("utf-8", "replace") for a in f.read().split(b"\0") if a]
    except OSError:
        return []


def proc_status(pid: int) -> dict[str, str]:
    out = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                k, _, v = line.partition(":")
                out[k] = v.strip()
    except OSError:
        pass
    return out


def is_running(pid: int) -> bool:
    """True while pid exists and is not a zombie."""
    st = proc_status(pid)
    return bool(st) and not st.get("State", "").startswith(("Z", "X"))


def all_pids() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


# ---------------------------------------------------------------------------------------------
# The server handle


class TernServer:
    """A `tern serve --config FILE` master with its own data directory and port."""

    def __init__(self, binary: str, config_changes: dict | None = None):
        self.binary = binary
        self.base = Path(tempfile.mkdtemp(prefix="tern-it-"))
        os.chmod(self.base, 0o755)  # the service users must traverse it
        self.data_dir = self.base / "data"
        self.config_path = self.base / "tern.toml"
        self.port = free_port()
        base_config = default_config(str(self.data_dir), self.port)
        self.pg_database: str | None = None
        if BACKEND == "postgresql" and "backend" not in (config_changes or {}).get("directory", {}):
            import pgserver
            try:
                self.pg_database = pgserver.new_database()
            except BaseException:
                shutil.rmtree(self.base, ignore_errors=True)  # nobody would remove it: not yet a server
                raise
            base_config["directory"] = {"backend": "postgresql", "postgresql": self.pg_database}
        self.config = merge_config(base_config, **(config_changes or {}))
        self.provisioned = False
        # provision() may copy a template made once by the CLI (see AccountTemplates); False
        # runs the CLI for this server's accounts every time (a test of what the CLI leaves).
        self.use_template = True
        self.proc: subprocess.Popen | None = None
        self.exit_codes: list[int] = []
        self._lines: list[str] = []
        self._lock = threading.Lock()
        self._reader: threading.Thread | None = None
        self.write_config()

    # -- configuration ------------------------------------------------------------------------
    def write_config(self, config: dict | str | None = None) -> None:
        if config is not None and not isinstance(config, str):
            self.config = config
        write_config_file(self.config_path, config if isinstance(config, str) else render_config(self.config))

    def set_config(self, **changes) -> None:
        """Rewrites the file with `changes` merged in (takes effect at reload or next start)."""
        self.write_config(merge_config(self.config, **changes))

    # -- accounts -----------------------------------------------------------------------------
    def cli(self, *args: str, input: str | None = None, check: bool = False) -> subprocess.CompletedProcess:
        """Runs `tern ARGS --config FILE` and returns the completed process (text mode)."""
        return run_cli(self.binary, self.config_path, *args, input=input, check=check)

    def add_user(self, address: str, password_hash: str = PASSWORD_HASH) -> None:
        add_user(self.binary, self.config_path, address, password_hash)

    def provision(self) -> None:
        """Creates the configuration's "domains" and "users" in the account database, once:
        with the CLI, or by copying the database the CLI made for the same accounts earlier in
        the session (TEMPLATES) when nothing has touched this server's database yet."""
        if self.provisioned:
            return
        self.provisioned = True
        domains, users = list(self.config.get("domains", [])), list(self.config.get("users", []))
        if not domains and not users:
            return
        if not (self.use_template and TEMPLATES.install(self, domains, users)):
            add_accounts(self.binary, self.config_path, domains, users)

    # -- the master process -------------------------------------------------------------------
    @property
    def master_pid(self) -> int:
        return self.proc.pid

    def start(self, wait: bool = True) -> None:
        assert self.proc is None or self.proc.poll() is not None, "master already running"
        if self.proc is not None:
            self._join_reader()
        self.provision()
        since = len(self.lines())
        self.proc = subprocess.Popen(
            [self.binary, "serve", "--config", str(self.config_path)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            cwd=str(self.base), start_new_session=True)
        self._reader = threading.Thread(target=self._read, args=(self.proc.stdout,), daemon=True)
        self._reader.start()
        if wait:
            self.wait_ready(since)

    def _read(self, stream) -> None:
        for raw in iter(stream.readline, b""):
            line = raw.decode("utf-8", "replace").rstrip("\n")
            with self._lock:
                self._lines.append(line)
        stream.close()

    def _join_reader(self) -> None:
        if self._reader is not None:
            self._reader.join(timeout=10)
            self._reader = None

    def wait_ready(self, since: int = 0, timeout: float = 20.0) -> None:
        needed = (" smtp info started", " queue info spool scanned", " deliver info started",
                  " directory info account database open", " relay info relay ready")

        def ready():
            if self.proc.poll() is not None:
                raise AssertionError(f"tern serve exited with {self.proc.returncode} while starting:\n"
                                     + "\n".join(self.lines()[since:]))
            tail = self.lines()[since:]
            return all(any(n in line for line in tail) for n in needed) and self.port_open()

        wait_until(ready, timeout, message="tern to start (port open, spool scanned, deliver started)")

    def port_open(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                return True
        except OSError:
            return False

    def signal(self, sig: int) -> None:
        os.kill(self.proc.pid, sig)

    def wait_exit(self, timeout: float = DEFAULT_TIMEOUT) -> int:
        code = self.proc.wait(timeout=timeout)
        self._join_reader()
        self.exit_codes.append(code)
        return code

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM, then SIGKILL after `timeout`. Returns the exit status (None if not running)."""
        if self.proc is None or self.proc.poll() is not None:
            return None
        self.signal(signal.SIGTERM)
        try:
            return self.wait_exit(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.wait_exit(10)
            raise AssertionError(f"tern master did not stop within {timeout:.0f}s of SIGTERM; killed")

    def stray_pids(self) -> list[int]:
        """Every process (master or child, any generation) started on this config file."""
        me = os.getpid()
        return [p for p in all_pids()
                if p != me and str(self.config_path) in read_cmdline(p) and is_running(p)]

    def cleanup(self) -> None:
        try:
            self.stop()
        finally:
            for pid in self.stray_pids():
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            self._join_reader()

    def remove_files(self) -> None:
        shutil.rmtree(self.base, ignore_errors=True)
        if self.pg_database:
            import pgserver
            pgserver.drop_database(self.pg_database)

    # -- log ----------------------------------------------------------------------------------
    def lines(self) -> list[str]:
        with self._lock:
            return list(self._lines)

    def log_text(self) -> str:
        return "\n".join(self.lines())

    def log_count(self, pattern: str) -> int:
        """Number of log lines matching the regular expression `pattern` (re.search)."""
        rx = re.compile(pattern)
        return sum(1 for line in self.lines() if rx.search(line))

    def wait_log(self, pattern: str, count: int = 1, timeout: float = DEFAULT_TIMEOUT) -> None:
        wait_until(lambda: self.log_count(pattern) >= count, timeout,
                   message=f"{count} log line(s) matching {pattern!r}")

    def sanitizer_reports(self) -> list[str]:
        return [line for line in self.lines() if any(m in line for m in SANITIZER_MARKERS)]

    # -- children -----------------------------------------------------------------------------
    def child_pid(self, name: str) -> int | None:
        """Pid of the running `tern service NAME` child of the current master, or None."""
        if self.proc is None:
            return None
        for pid in all_pids():
            args = read_cmdline(pid)
            if len(args) >= 3 and args[1] == "service" and args[2] == name and str(self.config_path) in args:
                st = proc_status(pid)
                if st.get("PPid") == str(self.proc.pid) and is_running(pid):
                    return pid
        return None

    def wait_child_pid(self, name: str, not_pid: int | None = None, timeout: float = DEFAULT_TIMEOUT) -> int:
        return wait_until(lambda: (lambda p: p if p and p != not_pid else None)(self.child_pid(name)),
                          timeout, message=f"a running {name} child" + (f" other than {not_pid}" if not_pid else ""))

    def wait_handles_sighup(self, name: str) -> int:
        """Waits until the running `name` child catches SIGHUP (SigCgt in /proc/PID/status).
        A child logs "started" before it installs its handlers, and SIGHUP's default action
        would end it; the master forwards every SIGHUP to every child it has started."""
        def catching():
            pid = self.child_pid(name)
            mask = proc_status(pid).get("SigCgt") if pid else None
            return pid if mask and int(mask, 16) & (1 << (signal.SIGHUP - 1)) else None
        return wait_until(catching, message=f"the {name} child to handle SIGHUP")

    # -- reload -------------------------------------------------------------------------------
    def reload(self, config: dict | str | None = None, **changes) -> None:
        """Rewrites the configuration, sends SIGHUP to the master and waits until the master and
        the four children have logged "configuration reloaded"."""
        if config is not None:
            self.write_config(config)
        elif changes:
            self.set_config(**changes)
        patterns = [rf" {s} info configuration reloaded" for s in ("master",) + SERVICES]
        before = {p: self.log_count(p) for p in patterns}
        for name in SERVICES:
            self.wait_handles_sighup(name)
        self.signal(signal.SIGHUP)
        for p in patterns:
            self.wait_log(p, before[p] + 1)

    # -- mail store and spool -----------------------------------------------------------------
    def maildir(self, user: str = "alice") -> Path:
        local, _, domain = user.partition("@")
        return self.data_dir / "domains" / (domain or DOMAIN) / local / "Maildir" / "new"

    def maildir_files(self, user: str = "alice") -> list[Path]:
        d = self.maildir(user)
        return sorted(d.iterdir()) if d.is_dir() else []

    def messages(self, user: str = "alice") -> list[bytes]:
        return [p.read_bytes() for p in self.maildir_files(user)]

    def wait_messages(self, user: str = "alice", count: int = 1, timeout: float = DEFAULT_TIMEOUT) -> list[bytes]:
        wait_until(lambda: len(self.maildir_files(user)) >= count, timeout,
                   message=f"{count} message(s) in {self.maildir(user)}")
        return self.messages(user)

    def spool_entries(self) -> list[str]:
        out = []
        for sub in ("msg", "env"):
            d = self.data_dir / "spool" / sub
            if d.is_dir():
                out += [f"{sub}/{p.name}" for p in sorted(d.iterdir())]
        return out

    def wait_only_reports(self, timeout: float = DEFAULT_TIMEOUT) -> list[str]:
        """Waits until the spool holds nothing but delivery reports (DSNs to remote senders,
        which stay queued since the test DNS knows no such domains); returns their queue ids."""
        env = self.data_dir / "spool" / "env"

        def only_reports():
            ids = [p.name for p in env.iterdir() if not p.name.endswith(".tmp")]
            texts = [(env / i).read_text(errors="replace") if (env / i).exists() else "" for i in ids]
            return all("\nkind bounce\n" in t or "\nkind double-bounce\n" in t for t in texts) and (ids or [True])

        wait_until(only_reports, timeout, message="a spool holding only delivery reports")
        return sorted(p.name for p in env.iterdir() if not p.name.endswith(".tmp"))

    def wait_spool_empty(self, timeout: float = DEFAULT_TIMEOUT) -> None:
        wait_until(lambda: not self.spool_entries(), timeout, message="an empty spool (msg/ and env/)")

    def assert_nothing_delivered(self, user: str = "alice", already: int = 0) -> None:
        """Proves that nothing but a fresh sentinel reaches `user` beyond the `already` messages
        the test delivered on purpose: waits for an empty spool (anything queued is then
        delivered), sends a sentinel, waits for it and for the spool to empty again, then checks
        the counts."""
        self.wait_spool_empty()
        before = set(self.maildir_files(user))
        marker = f"sentinel-{uuid.uuid4().hex}"
        send_message(self.port, "sentinel@example.org", [f"{user}@{DOMAIN}" if "@" not in user else user],
                     f"Subject: {marker}\r\n\r\n{marker}\r\n")
        wait_until(lambda: len(set(self.maildir_files(user)) - before) >= 1, message="the sentinel message")
        self.wait_spool_empty()
        new = sorted(set(self.maildir_files(user)) - before)
        assert len(new) == 1 and marker.encode() in new[0].read_bytes(), \
            f"unexpected delivery to {user}: " + repr([p.read_bytes()[:400] for p in new])
        assert len(before) == already, \
            f"expected {already} earlier message(s) for {user}, found: " + repr([p.read_bytes()[:400] for p in before])


# ---------------------------------------------------------------------------------------------
# Account templates


class AccountTemplates:
    """Most servers start with the same accounts (one domain, three users). Running the CLI
    four times per server costs seconds with the sanitizer build, so the first server with a
    given (backend, domains, users) has them made by the CLI in a database of its own (the
    template), and later ones get a copy: the SQLite file (owned by the directory user, in a
    0700 directory/, as the CLI leaves it) or `CREATE DATABASE ... TEMPLATE` on PostgreSQL.
    Only servers with the default data directory, account database location and directory user
    qualify, and only while their database is untouched (no SQLite file yet; no tables in the
    PostgreSQL database); otherwise provision() runs the CLI. test_privileges sets
    use_template = False to check what the CLI itself leaves. drop_all() removes the templates
    (conftest does at the end of the session)."""

    def __init__(self):
        self._made: dict[tuple, object] = {}  # key -> Path of the SQLite template, or PG conninfo
        self._dirs: list[Path] = []

    @staticmethod
    def _key(server: "TernServer", domains: list[str], users: list[str]) -> tuple | None:
        directory = server.config.get("directory", {})
        if (server.config.get("run_as", {}).get("directory") or "sqlite_path" in directory
                or server.config.get("server", {}).get("data_dir") != str(server.data_dir)):
            return None
        backend = directory.get("backend", "sqlite")
        if backend == "postgresql" and (not server.pg_database or directory.get("postgresql") != server.pg_database):
            return None
        return backend, tuple(domains), tuple(users)

    def _make(self, key: tuple, binary: str):
        backend, domains, users = key
        base = Path(tempfile.mkdtemp(prefix="tern-it-template-"))
        os.chmod(base, 0o755)
        self._dirs.append(base)
        changes = {}
        if backend == "postgresql":
            import pgserver
            conninfo = pgserver.new_database()
            self._made[key] = conninfo  # dropped by drop_all even if the CLI fails
            changes["directory"] = {"backend": "postgresql", "postgresql": conninfo}
        config_path = base / "tern.toml"
        write_config_file(config_path, render_config(merge_config(default_config(str(base / "data"), 25), **changes)))
        add_accounts(binary, config_path, list(domains), list(users))
        if backend == "sqlite":
            self._made[key] = base / "data" / "directory" / "accounts.db"
        return self._made[key]

    @staticmethod
    def _pg_is_empty(conninfo: str) -> bool:
        r = subprocess.run(["/usr/bin/psql", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d", conninfo, "-c",
                            "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'"],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, f"psql failed: {r.stderr}"
        return r.stdout.strip() == "0"

    def install(self, server: "TernServer", domains: list[str], users: list[str]) -> bool:
        key = self._key(server, domains, users)
        if key is None:
            return False
        if key[0] == "sqlite":
            db = server.data_dir / "directory" / "accounts.db"
            if db.exists():
                return False
            template = self._made.get(key) or self._make(key, server.binary)
            server.data_dir.mkdir(mode=0o755, exist_ok=True)
            os.chmod(server.data_dir, 0o755)
            db.parent.mkdir(mode=0o700, exist_ok=True)
            os.chmod(db.parent, 0o700)
            for suffix in ("", "-wal", "-shm"):
                source = Path(f"{template}{suffix}")
                if source.exists():
                    shutil.copy2(source, f"{db}{suffix}")
            if IS_ROOT:
                owner = pwd.getpwnam(SERVICE_USERS["directory"])
                for path in [db.parent, *db.parent.iterdir()]:
                    os.chown(path, owner.pw_uid, owner.pw_gid)
            return True
        import pgserver
        if not self._pg_is_empty(server.pg_database):
            return False
        template = self._made.get(key) or self._make(key, server.binary)
        name = pgserver.parse_conninfo(server.pg_database)["dbname"]
        source = pgserver.parse_conninfo(template)["dbname"]
        r = subprocess.run(["/usr/bin/psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", pgserver.admin_conninfo(),
                            "-c", f'DROP DATABASE "{name}" WITH (FORCE)',
                            "-c", f'CREATE DATABASE "{name}" TEMPLATE "{source}"'],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, f"psql could not copy the template database {source}: {r.stderr}"
        return True

    def drop_all(self) -> None:
        for key, made in list(self._made.items()):
            if key[0] == "postgresql":
                import pgserver
                pgserver.drop_database(made)
        self._made.clear()
        for d in self._dirs:
            shutil.rmtree(d, ignore_errors=True)
        self._dirs.clear()


TEMPLATES = AccountTemplates()


# ---------------------------------------------------------------------------------------------
# Raw SMTP client


class ConnectionClosed(Exception):
    pass


class SmtpClient:
    """Sends raw bytes and reads whole (possibly multi-line) replies, joined by "\\n"."""

    def __init__(self, port: int, timeout: float = DEFAULT_TIMEOUT, greeting: bool = True,
                 source: str | None = None, host: str = "127.0.0.1"):
        # source: the client's own loopback address (127.0.0.0/8 is all local on Linux), for
        # tests of per-client policy.
        self.sock = socket.create_connection((host, port), timeout=timeout,
                                             source_address=(source, 0) if source else None)
        self.buf = b""
        self.greeting = self.read_reply() if greeting else None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    def send(self, data: bytes | str) -> None:
        self.sock.sendall(data.encode() if isinstance(data, str) else data)

    def _fill(self) -> None:
        try:
            chunk = self.sock.recv(65536)
        except ConnectionResetError:
            chunk = b""
        if not chunk:
            raise ConnectionClosed(f"connection closed by server; unread bytes {self.buf!r}")
        self.buf += chunk

    def read_line(self) -> str:
        while b"\r\n" not in self.buf:
            self._fill()
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line.decode("utf-8", "replace")

    def read_reply(self) -> str:
        lines = []
        while True:
            line = self.read_line()
            lines.append(line)
            if len(line) < 4 or line[3] != "-":
                return "\n".join(lines)

    def read_replies(self, n: int) -> list[str]:
        return [self.read_reply() for _ in range(n)]

    def cmd(self, line: bytes | str) -> str:
        self.send((line.encode() if isinstance(line, str) else line) + b"\r\n")
        return self.read_reply()

    def ehlo(self, name: str = "client.test") -> str:
        return self.cmd(f"EHLO {name}")

    def closed(self, timeout: float = DEFAULT_TIMEOUT) -> bool:
        """True when the server closes the connection with nothing more to read."""
        self.sock.settimeout(timeout)
        try:
            self._fill()
        except ConnectionClosed:
            return not self.buf
        return False

    def extra_data(self, wait: float = 0.3) -> bytes:
        """Bytes that arrive within `wait` seconds beyond what was read (normally nothing)."""
        old = self.sock.gettimeout()
        self.sock.settimeout(wait)
        try:
            self._fill()
        except (socket.timeout, ConnectionClosed):
            pass
        finally:
            self.sock.settimeout(old)
        return self.buf


QUEUED_RE = re.compile(r"^250 2\.0\.0 Ok: queued as (\S+)$")


def send_message(port: int, sender: str, recipients: list[str], data: str | bytes,
                 helo: str = "client.test") -> str:
    """One complete transaction with exact replies checked; `data` is the wire form without the
    final ".\\r\\n" (already CRLF and dot-stuffed). Returns the queue id."""
    with SmtpClient(port) as c:
        assert c.ehlo(helo).startswith(f"250-{HOSTNAME} Hello [127.0.0.1]")
        assert c.cmd(f"MAIL FROM:<{sender}>") == f"250 2.1.0 Sender <{sender}> OK"
        for r in recipients:
            assert c.cmd(f"RCPT TO:<{r}>") == f"250 2.1.5 Recipient <{r}> OK"
        assert c.cmd("DATA") == "354 End data with <CR><LF>.<CR><LF>"
        payload = data.encode() if isinstance(data, str) else data
        if not payload.endswith(b"\r\n"):
            payload += b"\r\n"
        c.send(payload + b".\r\n")
        reply = c.read_reply()
        m = QUEUED_RE.match(reply)
        assert m, f"expected a 250 queued reply, got {reply!r}"
        assert c.cmd("QUIT") == f"221 2.0.0 {HOSTNAME} closing connection"
        return m.group(1)
