"""`tern check-config` and `tern serve` with good and bad configuration files."""
from __future__ import annotations

import subprocess

import pytest

from ternlib import IS_ROOT, default_config, free_port, merge_config, render_config

# check-config and a refused `tern serve` never open the account database.
pytestmark = pytest.mark.backend_independent

LISTEN_PROBLEM = 'expected "address:port" with a numeric address, e.g. "0.0.0.0:25" or "[::1]:25"'
SMTP_KEYS = ("listen, max_message_size, max_recipients, max_connections, max_errors, command_timeout, data_timeout, "
             "relay_networks, submission_listen, smtps_listen, allow_insecure_auth, sender_login_match, max_auth_failures, "
             "received_auth_user, max_connections_per_ip, max_connections_per_network, max_load, "
             "too_many_connections_message, too_many_per_ip_message, too_many_per_network_message, overloaded_message, "
             "greeting_delay, drop_early_talkers, sender_domain_check, max_unknown_recipients, bad_senders, "
             "bad_recipients, bad_senders_file, bad_recipients_file, access_rules, access")


def check_config(tern_bin, path):
    return subprocess.run([tern_bin, "check-config", str(path)], capture_output=True, text=True, timeout=30)


def line_of(text: str, needle: str) -> int:
    """1-based number of the first line of `text` containing `needle`."""
    for n, line in enumerate(text.splitlines(), 1):
        if needle in line:
            return n
    raise AssertionError(f"{needle!r} not in the test's own file")


@pytest.fixture
def config_file(tmp_path):
    """Writes `text` to tmp_path/tern.toml and returns the path."""
    def write(text: str, name: str = "tern.toml"):
        path = tmp_path / name
        path.write_text(text)
        return path
    return write


def good_text(tmp_path, **changes) -> str:
    return render_config(merge_config(default_config(str(tmp_path / "data"), 2525), **changes))


# Accounts as the configuration file held them before the directory service: now an error.
OLD_ACCOUNTS = """
[[domain]]
name = "example.test"

[[user]]
address = "alice@example.test"
password_hash = "$y$j9T$jA67ydMBF2vVLDZAaqvb50$bgnQkt6YcSugLN/hOfSAkk2GSOXQ74vsvoSzXtTB0o7"

[[user]]
address = "x@x.test"
password_hash = "plaintext"
"""


def moved(section: str) -> str:
    return (f"{section}: accounts are no longer kept in the configuration file: remove the [[{section}]] sections "
            "and create them with `tern domain add` / `tern user add` (docs/accounts.md)")


# ---------------------------------------------------------------------------------------------
# Valid files


def test_valid_config(tern_bin, tmp_path, config_file):
    path = config_file(good_text(tmp_path))
    r = check_config(tern_bin, path)
    assert (r.returncode, r.stdout, r.stderr) == (
        0, f"{path}: ok (data in {tmp_path}/data, accounts in {tmp_path}/data/directory/accounts.db)\n", "")


def test_valid_config_relative_data_dir(tern_bin, tmp_path, config_file):
    path = config_file(good_text(tmp_path, server={"data_dir": "var/mail"}))
    r = check_config(tern_bin, path)
    assert (r.returncode, r.stdout, r.stderr) == (
        0, f"{path}: ok (data in {tmp_path}/var/mail, accounts in {tmp_path}/var/mail/directory/accounts.db)\n", "")


@pytest.mark.parametrize("sqlite_path, expected", [("/srv/tern/accounts.db", "/srv/tern/accounts.db"),
                                                   ("db/../acc.db", "{data}/acc.db")], ids=["absolute", "relative"])
def test_valid_config_sqlite_path(tern_bin, tmp_path, config_file, sqlite_path, expected):
    path = config_file(good_text(tmp_path, directory={"sqlite_path": sqlite_path}))
    r = check_config(tern_bin, path)
    expected = expected.format(data=f"{tmp_path}/data")
    assert (r.returncode, r.stdout, r.stderr) == (0, f"{path}: ok (data in {tmp_path}/data, accounts in {expected})\n",
                                                  "")


def test_valid_config_postgresql(tern_bin, tmp_path, config_file):
    """check-config names the backend but does not connect (the server may be elsewhere)."""
    path = config_file(good_text(tmp_path, directory={"backend": "postgresql",
                                                      "postgresql": "host=192.0.2.1 port=1 dbname=tern user=tern"}))
    r = check_config(tern_bin, path)
    assert (r.returncode, r.stdout, r.stderr) == (0, f"{path}: ok (data in {tmp_path}/data, accounts in PostgreSQL)\n",
                                                  "")


# ---------------------------------------------------------------------------------------------
# One problem each


def bad_cases(tmp_path):
    """name -> (file text, the needle locating the problem's line, expected "key: message")."""
    base = good_text(tmp_path)
    return {
        "unknown_key": (
            base.replace("max_errors = 10", "max_errors = 10\nmax_mesage_size = 5"),
            "max_mesage_size",
            f"smtp.max_mesage_size: unknown key; valid keys here are: {SMTP_KEYS}"),
        "unknown_key_in_server": (
            base.replace('hostname = "mail.example.test"', 'hostname = "mail.example.test"\nhost_name = "x"'),
            "host_name",
            "server.host_name: unknown key; valid keys here are: hostname, data_dir"),
        "domain_section": (
            base + '\n[[domain]]\nname = "example.test"\n', "[[domain]]", moved("domain")),
        "user_section": (
            base + '\n[[user]]\naddress = "alice@example.test"\n', "[[user]]", moved("user")),
        "unknown_backend": (
            good_text(tmp_path, directory={"backend": "mysql"}), "backend =",
            "directory.backend: 'mysql' is not a backend; write backend = \"sqlite\" or backend = \"postgresql\""),
        "postgresql_without_conninfo": (
            good_text(tmp_path, directory={"backend": "postgresql"}), "[directory]",
            'directory.postgresql: missing: backend = "postgresql" needs a connection string, e.g. '
            'postgresql = "host=127.0.0.1 dbname=tern user=tern"'),
        "bad_forward_sender": (
            good_text(tmp_path, delivery={"forward_sender": "srs"}), "forward_sender",
            "delivery.forward_sender: 'srs' is not a choice; write forward_sender = \"rewrite\" or \"keep\""),
        "listen_without_port": (
            good_text(tmp_path, smtp={"listen": ["127.0.0.1"]}), "listen =", f"smtp.listen: {LISTEN_PROBLEM}"),
        "listen_host_name": (
            good_text(tmp_path, smtp={"listen": ["localhost:25"]}), "listen =", f"smtp.listen: {LISTEN_PROBLEM}"),
        "listen_port_zero": (
            good_text(tmp_path, smtp={"listen": ["127.0.0.1:0"]}), "listen =", f"smtp.listen: {LISTEN_PROBLEM}"),
        "listen_port_too_big": (
            good_text(tmp_path, smtp={"listen": ["127.0.0.1:70000"]}), "listen =", f"smtp.listen: {LISTEN_PROBLEM}"),
        "listen_ipv6_without_brackets": (
            good_text(tmp_path, smtp={"listen": ["::1:25"]}), "listen =", f"smtp.listen: {LISTEN_PROBLEM}"),
        "integer_out_of_range": (
            good_text(tmp_path, smtp={"max_errors": 0}), "max_errors",
            "smtp.max_errors: expected a whole number of errors from 1 to 1000, write for example max_errors = 10"),
        "over_quota_grace_out_of_range": (
            good_text(tmp_path, delivery={"over_quota_grace": -1}), "over_quota_grace",
            "delivery.over_quota_grace: expected a whole number of seconds from 0 to 2592000, write for example "
            "over_quota_grace = 86400"),
    }


@pytest.mark.parametrize("case", ["unknown_key", "unknown_key_in_server", "domain_section", "user_section",
                                  "unknown_backend", "postgresql_without_conninfo", "bad_forward_sender",
                                  "listen_without_port", "listen_host_name", "listen_port_zero",
                                  "listen_port_too_big", "listen_ipv6_without_brackets", "integer_out_of_range",
                                  "over_quota_grace_out_of_range"])
def test_one_problem(tern_bin, tmp_path, config_file, case):
    text, needle, problem = bad_cases(tmp_path)[case]
    path = config_file(text)
    r = check_config(tern_bin, path)
    assert r.returncode == 1
    assert r.stdout == ""
    assert r.stderr == f"{path}:{line_of(text, needle)}: {problem}\n1 problem found\n"


def test_toml_syntax_error(tern_bin, tmp_path, config_file):
    text = good_text(tmp_path).replace("[queue]", "[queue")
    path = config_file(text)
    r = check_config(tern_bin, path)
    assert r.returncode == 1
    assert r.stdout == ""
    lines = r.stderr.splitlines()
    assert len(lines) == 2, r.stderr
    assert lines[0].startswith(f"{path}:{line_of(text, '[queue')}: TOML syntax error: "), lines[0]
    assert lines[1] == "1 problem found"


def test_several_problems_reported_in_order(tern_bin, tmp_path, config_file):
    text = good_text(tmp_path, smtp={"listen": ["127.0.0.1"], "max_errors": 0}).replace(
        "[queue]", "[queue]\nconcurrency = 3") + OLD_ACCOUNTS
    path = config_file(text)
    r = check_config(tern_bin, path)
    assert r.returncode == 1
    assert r.stdout == ""
    assert r.stderr.splitlines() == [
        f"{path}:{line_of(text, 'listen =')}: smtp.listen: {LISTEN_PROBLEM}",
        f"{path}:{line_of(text, 'max_errors')}: smtp.max_errors: expected a whole number of errors from 1 to 1000, "
        "write for example max_errors = 10",
        f"{path}:{line_of(text, 'concurrency = 3')}: queue.concurrency: unknown key; valid keys here are: "
        "concurrency_local, concurrency_remote, concurrency_per_domain, retry_initial, retry_max, lifetime, "
        "delay_warning, double_bounce_to",
        f"{path}:{line_of(text, '[[domain]]')}: {moved('domain')}",
        f"{path}:{line_of(text, '[[user]]')}: {moved('user')}",
        "5 problems found",
    ]


def test_missing_file(tern_bin, tmp_path):
    path = tmp_path / "absent.toml"
    r = check_config(tern_bin, path)
    assert (r.returncode, r.stdout) == (1, "")
    assert r.stderr == (f"{path}: cannot read the file (No such file or directory); check the path, "
                        "or start from etc/tern.toml.example\n1 problem found\n")


# ---------------------------------------------------------------------------------------------
# tern serve refuses a bad file


def run_serve(tern_bin, path, cwd):
    return subprocess.run([tern_bin, "serve", "--config", str(path)], stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=30, cwd=cwd)


def test_serve_with_bad_config_exits_78(tern_bin, tmp_path, config_file):
    port = free_port()
    text = good_text(tmp_path, smtp={"listen": [f"127.0.0.1:{port}"]}) + OLD_ACCOUNTS
    path = config_file(text)
    r = run_serve(tern_bin, path, tmp_path)
    assert r.returncode == 78, r.stdout
    lines = r.stdout.splitlines()
    assert len(lines) == 3, r.stdout
    for line, section in zip(lines, ("domain", "user")):
        problem = f"{path}:{line_of(text, f'[[{section}]]')}: {moved(section)}"
        quoted = '"' + problem.replace("\\", "\\\\").replace('"', '\\"') + '"'
        assert line.endswith(f" master error configuration problem problem={quoted}"), line
    assert lines[2].endswith(" master error cannot start: fix the configuration (tern check-config shows every problem)")
    assert not (tmp_path / "data").exists()


def test_serve_with_unknown_run_as_user(tern_bin, tmp_path, config_file):
    if not IS_ROOT:
        pytest.skip("[run_as] users are looked up only when tern starts as root")
    text = good_text(tmp_path, smtp={"listen": [f"127.0.0.1:{free_port()}"]},
                     run_as={"smtp": "tern-no-such-user"})
    path = config_file(text)
    r = run_serve(tern_bin, path, tmp_path)
    assert r.returncode == 1, r.stdout
    assert "master error cannot start error=\"user 'tern-no-such-user' does not exist; create it with " \
           "`useradd --system --no-create-home --shell /usr/sbin/nologin tern-no-such-user` or name another " \
           "user under [run_as]\"" in r.stdout
