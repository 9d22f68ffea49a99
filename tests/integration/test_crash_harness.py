"""The crash harness (tests/reliability/crash_harness.py; issue 7, item 1) for 45 seconds: SMTP
traffic to local and remote recipients while the master and each service are killed with SIGKILL
at random moments. The harness itself proves that every message that got a 250 arrived (or was
bounced to its sender), intact, and that the spool holds no orphaned file; `make soak` runs it
longer. Here: its verdict, and that each kind of kill happened and mail was accepted."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.backend_independent

HARNESS = Path(__file__).resolve().parents[1] / "reliability" / "crash_harness.py"
DURATION = 45
VICTIMS = ("master", "smtp", "queue", "deliver", "relay", "directory")


def test_crash_harness_loses_nothing(tern_bin):
    proc = subprocess.Popen([sys.executable, str(HARNESS), "--duration", str(DURATION), "--progress", "15"],
                            env={**os.environ, "TERN_BIN": tern_bin}, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        out, _ = proc.communicate(timeout=DURATION + 150)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGINT)  # the harness stops its tern and keeps the work directory
        out, _ = proc.communicate(timeout=60)
        print(out)
        pytest.fail(f"the crash harness did not finish within {DURATION + 150} s")
    print(out)
    results = [line for line in out.splitlines() if line.startswith("CRASH-HARNESS RESULT ")]
    assert len(results) == 1, f"no result line (exit status {proc.returncode})"
    fields = dict(item.split("=", 1) for item in results[0].split()[2:])
    assert proc.returncode == 0 and fields["status"] == "PASS", results[0]
    assert (fields["missing"], fields["corrupt"], fields["orphans"]) == ("0", "0", "0"), results[0]
    assert {v: int(fields[f"kills_{v}"]) >= 1 for v in VICTIMS} == {v: True for v in VICTIMS}, results[0]
    assert int(fields["accepted"]) >= 100, results[0]
    assert int(fields["delivered"]) == int(fields["expected"]) > 0, results[0]
