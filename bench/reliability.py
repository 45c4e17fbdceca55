"""Run the reliability suite (tests/reliability) and print its figures: faults injected / survived, inputs tried /
crashes, turns sent / lost, injection strings / escapes, security checks, soak memory. These are the figures of
docs/reliability.md.

    .venv/bin/python bench/reliability.py               # the whole suite (slow parts included, ~5 min on 2 cores)
    .venv/bin/python bench/reliability.py --fast        # without the tests marked slow
    .venv/bin/python bench/reliability.py --log FILE    # only summarise an existing figures log
    .venv/bin/python bench/reliability.py -- -k fuzz    # extra pytest arguments after --

Each test appends JSON lines to the file named by RECAGENT_RELIABILITY_LOG (tests/reliability/reliability_kit.py
`record`); this script sets it, runs pytest, adds the lines up per theme and prints a Markdown table (and, with
--json, the totals as JSON). Exit code: pytest's.
"""

from __future__ import annotations

import sys
from pathlib import Path

# bench/retrieval.py would shadow the `retrieval` package: drop this folder from the import path
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import argparse
import json
import os
import subprocess
import tempfile
import time
import xml.etree.ElementTree as ET
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
MAX_KEYS = {"injection_strings", "seconds", "growth_mb", "slope_mb_per_min", "sessions"}
"""Figures that are not added up over tests (the same corpus, one soak run): the largest value is kept."""

ROWS: list[tuple[str, str, list[str]]] = [
    ("engine faults", "faults injected / survived", ["faults_injected", "faults_survived"]),
    ("store faults", "faults injected / survived", ["faults_injected", "faults_survived"]),
    ("store faults", "requests while Chroma stops and restarts / 503 answers (store down) / crashes",
     ["requests", "unavailable_503", "crashes"]),
    ("crash safety", "kill -9 of `recagent ingest` / runs / items / mismatches after the re-run",
     ["ingest_kills", "ingest_runs", "items", "mismatches"]),
    ("crash safety", "ingest kills that landed while embedding / inside a Chroma write (markers) / missed",
     ["kills_in_embedding", "kills_in_write", "kills_missed"]),
    ("crash safety", "kill -9 of `recagent serve` / chat turns sent / acknowledged / lost",
     ["serve_kills", "turns_sent", "turns_acknowledged", "turns_lost"]),
    ("crash safety", "SIGTERM / SIGINT (serve while its engine starts, the shutdown guard) / processes left",
     ["signals", "orphans"]),
    ("fuzzing", "inputs tried / crashes", ["inputs_tried", "crashes"]),
    ("fuzzing", "catalog inputs holding a lone surrogate / NaN or Infinity (JSON)",
     ["sent_lone_surrogate", "sent_nan_or_infinity"]),
    ("bad input", "commands run / clear errors (exit 2, error + how to fix, no traceback)", ["inputs_tried", "clear"]),
    ("injection", "injection strings / placements / escapes", ["injection_strings", "placements", "escapes"]),
    ("security", "checks passed / failures", ["checks", "failures"]),
    ("soak", "seconds / turns sent / turns lost / errors", ["seconds", "turns_sent", "turns_lost", "errors"]),
    ("soak", "server RSS MiB: after warm-up / end / max / growth / slope per min",
     ["rss_start_mb", "rss_end_mb", "rss_max_mb", "growth_mb", "slope_mb_per_min"]),
]  # fmt: skip
THEMES = {
    "bad input": "bad_input",
    "engine faults": "engine_faults",
    "store faults": "store_faults",
    "crash safety": "crash_safety",
    "fuzzing": "fuzz",
    "injection": "injection",
    "security": "security",
    "soak": "soak",
}


def read_log(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def totals(lines: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per theme: numeric figures added up over tests (or the largest, for MAX_KEYS and rss_*)."""
    out: dict[str, dict[str, Any]] = {}
    for line in lines:
        theme = out.setdefault(line["theme"], {"tests": set()})
        theme["tests"].add(line.get("test", "?"))
        for key, value in line.items():
            if key in ("theme", "test") or isinstance(value, bool) or not isinstance(value, int | float):
                continue
            if key in MAX_KEYS or key.startswith("rss_"):
                theme[key] = max(theme.get(key, value), value)
            else:
                theme[key] = theme.get(key, 0) + value
    for theme in out.values():
        theme["tests"] = len(theme["tests"])
    return out


def table(sums: dict[str, dict[str, Any]]) -> str:
    """The figures per theme; each theme's first row is its tests passed / failed (from the outcome of every test,
    recorded by tests/reliability/conftest.py, so a failed test always shows)."""
    lines = ["| theme | figure | value |", "| --- | --- | --- |"]
    for name in dict.fromkeys(n for n, _, _ in ROWS):
        found = sums.get(THEMES[name], {})
        if "tests_passed" in found or "tests_failed" in found:
            lines.append(f"| {name} | tests passed / failed | {_fmt(found.get('tests_passed', 0))} / "
                         f"{_fmt(found.get('tests_failed', 0))} |")  # fmt: skip
        for row_name, label, keys in ROWS:
            if row_name == name and any(k in found for k in keys):
                lines.append(f"| {name} | {label} | {' / '.join(_fmt(found.get(k, '-')) for k in keys)} |")
    return "\n".join(lines)


def bad_input_table(lines: list[dict[str, Any]]) -> str:
    """One row per bad input tried (tests/reliability/test_bad_inputs.py): the command, its exit code, the message."""
    rows = ["| bad input | command | exit | message and how to fix |", "| --- | --- | --- | --- |"]
    for line in lines:
        if line.get("theme") == "bad_input" and "case" in line:
            text = f"{line.get('message', '')} / {line.get('hint', '')}".replace("|", "\\|")
            command = str(line.get("command", "")).replace("|", "\\|")
            rows.append(f"| {line['case']} | `{command}` | {line.get('exit_code')} | {text} |")
    return "\n".join(rows) if len(rows) > 2 else ""


def _fmt(value: Any) -> str:
    return f"{value:,.1f}" if isinstance(value, float) else f"{value:,}" if isinstance(value, int) else str(value)


def junit_counts(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {}
    root = ET.parse(path).getroot()
    suite = root if root.tag == "testsuite" else root.find("testsuite")
    if suite is None:
        return {}
    get = suite.attrib.get
    tests, failures, errors, skipped = (int(get(k, 0)) for k in ("tests", "failures", "errors", "skipped"))
    return {"tests": tests, "passed": tests - failures - errors - skipped, "failed": failures + errors,
            "skipped": skipped, "seconds": round(float(get("time", 0)), 1)}  # fmt: skip


def main() -> int:
    argv = sys.argv[1:]
    extra: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, extra = argv[:cut], argv[cut + 1 :]
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fast", action="store_true", help="skip the tests marked slow")
    parser.add_argument("--log", type=Path, help="summarise this figures log instead of running the suite")
    parser.add_argument("--keep-log", type=Path, help="also keep the figures log of this run here")
    parser.add_argument("--json", action="store_true", help="print the totals as JSON too")
    args = parser.parse_args(argv)
    rc = 0
    run: dict[str, Any] = {}
    if args.log is not None:
        lines = read_log(args.log)
    else:
        with tempfile.TemporaryDirectory(prefix="reliability-") as tmp:
            log = Path(tmp) / "figures.jsonl"
            junit = Path(tmp) / "junit.xml"
            cmd = [sys.executable, "-m", "pytest", "tests/reliability", "-p", "no:cacheprovider", "-q",
                   f"--junitxml={junit}", *(["-m", "not slow"] if args.fast else []), *extra]  # fmt: skip
            print("running:", " ".join(cmd), file=sys.stderr)
            started = time.perf_counter()
            rc = subprocess.call(cmd, cwd=ROOT, env={**os.environ, "RECAGENT_RELIABILITY_LOG": str(log)})
            run = {"wall_s": round(time.perf_counter() - started, 1), **junit_counts(junit)}
            lines = read_log(log)
            if args.keep_log is not None:
                args.keep_log.write_text(log.read_text(encoding="utf-8") if log.exists() else "", encoding="utf-8")
    sums = totals(lines)
    print()
    if run:
        print(f"pytest: {run.get('passed', '?')} passed, {run.get('failed', '?')} failed, "
              f"{run.get('skipped', '?')} skipped in {run['wall_s']} s (exit code {rc})\n")  # fmt: skip
    print(table(sums))
    bad = bad_input_table(lines)
    if bad:
        print()
        print(bad)
    if args.json:
        print(json.dumps({"run": run, "totals": sums}, indent=1))
    return rc


if __name__ == "__main__":
    sys.exit(main())
