"""eval/reports/justifications.sh (make report-text): which `eval run`s it starts and what the report is given.

The script is run for real with a stand-in PY that records its arguments (no engine, no data read)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "eval" / "reports" / "justifications.sh"


def _run(tmp_path: Path, **env: str) -> list[list[str]]:
    calls = tmp_path / "calls.txt"
    fake = tmp_path / "py"
    fake.write_text(
        "#!/usr/bin/env bash\n"
        f'if [ "$1" = "-c" ]; then exec {sys.executable} "$@"; fi\n'  # the prompt_format probe runs for real
        f'printf "%s\\x1f" "$@" >> {calls}; echo >> {calls}\n'
    )
    fake.chmod(0o755)
    full = {**os.environ, "PY": str(fake), "OUT": str(tmp_path / "out"), "DOCS": str(tmp_path / "docs"), **env}
    full["PYTHONPATH"] = str(ROOT)
    subprocess.run(["bash", str(SCRIPT)], cwd=ROOT, env=full, check=True, capture_output=True, text=True)
    return [line.rstrip("\x1f").split("\x1f") for line in calls.read_text().splitlines() if line]


def _opt(call: list[str], name: str) -> str:
    return call[call.index(name) + 1]


def _variants(call: list[str]) -> list[str]:
    return [call[i + 1].split(":")[0] for i, a in enumerate(call) if a == "--variant"]


@pytest.mark.skipif(sys.platform == "win32", reason="bash script")
def test_paired_sample_smaller_than_the_cases_runs_the_new_format_alone_on_all(tmp_path: Path) -> None:
    calls = _run(tmp_path, USERS="6", TURNS="5", PAIRED="2")
    runs = [c for c in calls if c[:4] == ["-m", "recagent", "eval", "run"]]
    assert [(_opt(c, "--out").rsplit("/", 1)[1], _opt(c, "--users"), _variants(c)) for c in runs] == [
        ("movielens", "6", ["fewshot"]),
        ("movielens-paired", "2", ["chat", "fewshot"]),
        ("redial", "5", ["fewshot"]),
        ("redial-paired", "2", ["chat", "fewshot"]),
    ]
    report = next(c for c in calls if c[:4] == ["-m", "recagent", "eval", "text-report"])
    assert [Path(p).name for p in report[4:8]] == ["movielens", "movielens-paired", "redial", "redial-paired"]
    preamble = _opt(report, "--preamble")
    assert "PAIRED=2" in preamble and "separate seeded sample of 2 cases" in preamble
    timings = (tmp_path / "out" / "timings.txt").read_text()
    assert "movielens (6 cases, new format)" in timings and "redial (2 cases, paired)" in timings


@pytest.mark.skipif(sys.platform == "win32", reason="bash script")
def test_paired_at_least_the_cases_runs_both_arms_on_all_cases(tmp_path: Path) -> None:
    calls = _run(tmp_path, USERS="3", TURNS="3", PAIRED="40", DATASETS="redial", WRAP="env")
    runs = [c for c in calls if "run" in c[:4]]
    assert len(runs) == 1 and _opt(runs[0], "--users") == "3" and _variants(runs[0]) == ["chat", "fewshot"]
    report = next(c for c in calls if "text-report" in c[:4])
    assert "separate seeded sample" not in _opt(report, "--preamble")
