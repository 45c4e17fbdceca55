"""Every bad input of docs/reliability.md's table, run as a new user would: the real `recagent` command in a fresh
RECAGENT_HOME. Each must end with exit code 2, an ``error:`` line naming the problem, a ``how to fix:`` line and no
traceback; each run is recorded (command, exit code, message) and bench/reliability.py prints the table."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from reliability_kit import record
from testkit import ROOT


@dataclass
class Case:
    name: str
    args: list[str]
    needle: str  # in the error message
    env: dict[str, str] = field(default_factory=dict)


FILES = {
    "surrogate.jsonl": '{"id": "a", "title": "ok"}\n{"id": "b", "title": "t", "description": "x \\ud800"}\n',
    "only-surrogates.jsonl": '{"id": "a", "title": "t \\ud800"}\n{"id": "b\\udfff", "title": "t"}\n',
    "nan.jsonl": '{"id": NaN, "title": "A"}\n{"id": 1e400, "title": "B"}\n{"id": "c", "title": Infinity}\n',
    "books.csv": "id,title,year\n1,A,1990\n",
    "vars.json": '{"x": 1}',
    "not-json.json": "{nope",
}
CASES = [
    Case("lone surrogate in one row, --strict", ["ingest", "surrogate.jsonl", "--strict"], "lone_surrogate"),
    Case("lone surrogates in every row", ["ingest", "only-surrogates.jsonl"], "lone_surrogate"),
    Case("NaN / 1e400 / Infinity ids and titles", ["ingest", "nan.jsonl"], "non_finite_number"),
    Case("--meta with an unknown type", ["ingest", "books.csv", "--meta", "year:date"], "unknown type 'date'"),
    Case("a catalog that does not exist", ["ingest", "missing.csv"], "does not exist"),
    Case("RECAGENT_FUSION_WEIGHTS not JSON", ["config"], "cannot be parsed", {"RECAGENT_FUSION_WEIGHTS": "{bad"}),
    Case(
        "RECAGENT_FUSION_WEIGHTS not JSON (another command)",
        ["recommend", "--query", "x"],
        "cannot be parsed",
        {"RECAGENT_FUSION_WEIGHTS": "{bad"},
    ),
    Case(
        "unknown source, negative weight in settings",
        ["config"],
        "unknown candidate source(s) 'nosuch'",
        {"RECAGENT_FUSION_WEIGHTS": '{"semantic": -1, "nosuch": 1}'},
    ),
    Case("a setting outside its choices", ["config"], "llm_backend", {"RECAGENT_LLM_BACKEND": "nonsense"}),
    Case("--config file missing", ["--config", "missing.toml", "config"], "does not exist"),
    Case("--source with an unknown name", ["recommend", "--query", "x", "--source", "bogus=1"], "'bogus'"),
    Case("--source with a negative weight", ["recommend", "--query", "x", "--source", "semantic=-2"], ">= 0"),
    Case("--source without =", ["recommend", "--query", "x", "--source", "profile"], "NAME=WEIGHT"),
    Case("--strategy unknown", ["recommend", "--query", "x", "--strategy", "magic"], "strategy"),
    Case("recommend with nothing to go on", ["recommend"], "nothing to recommend from"),
    Case("--filter unreadable", ["recommend", "--query", "x", "--filter", "year>>3"], "cannot read filter"),
    Case("--variant without a colon", ["eval", "run", "data", "--variant", "garbage"], "has no ':'"),
    Case("--variant with an unknown source", ["eval", "run", "data", "--variant", "a:fusion.nosuch=1"], "'nosuch'"),
    Case("--variant with an unknown key", ["eval", "run", "data", "--variant", "a:colour=red"], "unknown key"),
    Case("--split unknown", ["eval", "run", "data", "--variant", "a:", "--split", "weird"], "split"),
    Case("--k out of range", ["eval", "run", "data", "--variant", "a:", "--k", "0"], "--k"),
    Case(
        "prompts render: variables missing",
        ["prompts", "render", "rank_options", "--vars", "vars.json"],
        "missing variable",
    ),
    Case(
        "prompts render: variables file not JSON",
        ["prompts", "render", "rank_options", "--vars", "not-json.json"],
        "not-json.json",
    ),
    Case("prompts render: unknown template", ["prompts", "render", "nope", "--vars", "vars.json"], "nope"),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input_is_a_clear_error(case: Case, tmp_path: Path) -> None:
    for name, text in FILES.items():
        (tmp_path / name).write_text(text, encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("RECAGENT_")}
    env |= {"RECAGENT_HOME": str(tmp_path / "home"), "COLUMNS": "300", "PYTHONPATH": str(ROOT), **case.env}
    out = subprocess.run([sys.executable, "-m", "recagent", *case.args], capture_output=True, text=True, env=env,
                         cwd=tmp_path, timeout=120)  # fmt: skip
    lines = [line.strip() for line in out.stderr.splitlines() if line.strip()]
    message = next((line for line in lines if line.startswith("error:")), "")
    hint = next((line for line in lines if line.startswith("how to fix:")), "")
    shown = " ".join(f"{k}={v}" for k, v in case.env.items())
    clear = out.returncode == 2 and bool(message) and bool(hint) and "Traceback" not in out.stderr
    record("bad_input", case=case.name, command=" ".join(filter(None, [shown, "recagent", *case.args])),
           exit_code=out.returncode, message=message, hint=hint, inputs_tried=1, clear=int(clear))  # fmt: skip
    assert "Traceback" not in out.stderr, out.stderr
    assert out.returncode == 2, out.stderr
    assert case.needle in " ".join(out.stderr.split()), out.stderr
    assert message and hint, out.stderr
