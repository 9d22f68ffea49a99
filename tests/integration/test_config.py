"""`tern check-config` and `tern serve` with good and bad configuration files."""
from __future__ import annotations

import subprocess

import pytest

from ternlib import IS_ROOT, default_config, free_port, merge_config, render_config

LISTEN_PROBLEM = 'expected "address:port" with a numeric address, e.g. "0.0.0.0:25" or "[::1]:25"'
SMTP_KEYS = "listen, max_message_size, max_recipients, max_connections, max_errors, command_timeout, data_timeout"


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


# ---------------------------------------------------------------------------------------------
# Valid files


def test_valid_config(tern_bin, tmp_path, config_file):
    path = config_file(good_text(tmp_path))
    r = check_config(tern_bin, path)
    assert (r.returncode, r.stdout, r.stderr) == (0, f"{path}: ok (1 domains, 3 users, data in {tmp_path}/data)\n", "")


def test_valid_config_counts_and_relative_data_dir(tern_bin, tmp_path, config_file):
    text = good_text(tmp_path, server={"data_dir": "var/mail"}, domains=["example.test", "example.org"],
                     users=["alice@example.test", "bob@example.org"])
    path = config_file(text)
    r = check_config(tern_bin, path)
    assert (r.returncode, r.stdout, r.stderr) == (0, f"{path}: ok (2 domains, 2 users, data in {tmp_path}/var/mail)\n",
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
        "user_in_undeclared_domain": (
            good_text(tmp_path, users=["alice@example.test", "x@x.test"]),
            '"x@x.test"',
            "user.address: domain 'x.test' is not declared; add a [[domain]] section with name = \"x.test\""),
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
        "not_a_crypt_hash": (
            base.replace('address = "erin@example.test"\npassword_hash = ',
                         'address = "erin@example.test"\npassword_hash = "plaintext"\n#'),
            '"plaintext"',
            "user.password_hash: not a crypt(3) hash ($y$, $6$, $5$, $1$ or $2b$); make one with `tern hash-password`"),
    }


@pytest.mark.parametrize("case", ["unknown_key", "unknown_key_in_server", "user_in_undeclared_domain",
                                  "listen_without_port", "listen_host_name", "listen_port_zero",
                                  "listen_port_too_big", "listen_ipv6_without_brackets", "integer_out_of_range",
                                  "not_a_crypt_hash"])
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
    text = good_text(tmp_path, smtp={"listen": ["127.0.0.1"], "max_errors": 0},
                     users=["alice@example.test", "x@x.test"]).replace("[queue]", "[queue]\nconcurrency = 3")
    path = config_file(text)
    r = check_config(tern_bin, path)
    assert r.returncode == 1
    assert r.stdout == ""
    assert r.stderr.splitlines() == [
        f"{path}:{line_of(text, 'listen =')}: smtp.listen: {LISTEN_PROBLEM}",
        f"{path}:{line_of(text, 'max_errors')}: smtp.max_errors: expected a whole number of errors from 1 to 1000, "
        "write for example max_errors = 10",
        f"{path}:{line_of(text, 'concurrency = 3')}: queue.concurrency: unknown key; valid keys here are: "
        "concurrency_local, retry_initial, retry_max",
        f"{path}:{line_of(text, 'x@x.test')}: user.address: domain 'x.test' is not declared; add a [[domain]] "
        "section with name = \"x.test\"",
        "4 problems found",
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
    text = good_text(tmp_path, smtp={"listen": [f"127.0.0.1:{port}"]}, users=["alice@example.test", "x@x.test"])
    path = config_file(text)
    r = run_serve(tern_bin, path, tmp_path)
    assert r.returncode == 78, r.stdout
    problem = (f"{path}:{line_of(text, 'x@x.test')}: user.address: domain 'x.test' is not declared; "
               "add a [[domain]] section with name = \"x.test\"")
    quoted = '"' + problem.replace("\\", "\\\\").replace('"', '\\"') + '"'
    lines = r.stdout.splitlines()
    assert len(lines) == 2, r.stdout
    assert lines[0].endswith(f" master error configuration problem problem={quoted}"), lines[0]
    assert lines[1].endswith(" master error cannot start: fix the configuration (tern check-config shows every problem)")
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
