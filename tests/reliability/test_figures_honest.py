"""The figures of docs/reliability.md are computed from what the tests asserted: a test that fails makes its
theme's figures say so (``tests_failed``, and ``failures`` of the security checks), never ``failures=0``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from reliability_kit import Checks

ROOT = Path(__file__).resolve().parents[2]
PLUGIN = """
import pytest

@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item):
    yield
    if item.name == "test_loopback_needs_no_token[localhost]":
        raise AssertionError("injected failure after the test body")
"""


def run_security_subset(tmp_path: Path, plugin: bool) -> list[dict[str, object]]:
    log = tmp_path / f"figures-{plugin}.jsonl"
    (tmp_path / "inject_failure.py").write_text(PLUGIN)
    env = {**os.environ, "RECAGENT_RELIABILITY_LOG": str(log),
           "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT), os.environ.get("PYTHONPATH", "")])}  # fmt: skip
    cmd = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q",
           "tests/reliability/test_security.py", "-k", "loopback_needs_no_token"]  # fmt: skip
    if plugin:
        cmd[3:3] = ["-p", "inject_failure"]
    out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == (1 if plugin else 0), out.stdout[-2000:] + out.stderr[-2000:]
    return [json.loads(line) for line in log.read_text().splitlines()]


def test_a_failing_test_cannot_leave_failures_at_zero(tmp_path: Path) -> None:
    clean = run_security_subset(tmp_path, plugin=False)
    summary = [line for line in clean if "checks" in line]
    assert summary and summary[-1]["failures"] == 0 and summary[-1]["checks"] == 5
    assert sum(int(line.get("tests_passed", 0)) for line in clean) == 5

    failed = run_security_subset(tmp_path, plugin=True)
    summary = [line for line in failed if "checks" in line]
    assert summary[-1]["failures"] == 1  # the checks of the failed test passed: the test's failure still counts
    assert sum(int(line.get("tests_failed", 0)) for line in failed) == 1
    assert sum(int(line.get("tests_passed", 0)) for line in failed) == 4


def test_a_failed_check_counts_and_raises() -> None:
    check = Checks("security", "no_such_module")
    check(1 + 1 == 2, "arithmetic")
    try:
        check(False, "a failing check")
    except AssertionError as exc:
        assert str(exc) == "a failing check"
    else:
        raise AssertionError("a failed check must raise")
    assert (check.passed, check.failed) == (1, 1)
