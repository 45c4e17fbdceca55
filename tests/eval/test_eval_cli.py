"""`recagent eval run|compare` wiring (the sub-app mounted on a bare root; the lead registers it in cli.py)."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from typer.testing import CliRunner

from agent.errors import ConfigError, InputError
from agent.settings import Settings
from recagent import cmd_eval

from testkit import cli_app


def _app(settings: Settings) -> typer.Typer:
    return cli_app(settings, "eval", cmd_eval.app)


def test_cli_run_and_compare(eval_settings: Settings, ml_sample: Path, tmp_path: Path) -> None:
    app = _app(eval_settings)
    runner = CliRunner()
    common = ["eval", "run", str(ml_sample), "--users", "5", "--k", "5", "--collection", "eval-test"]
    a = runner.invoke(
        app, [*common, "--baseline", "popularity", "--baseline", "retrieval", "--out", str(tmp_path / "a")]
    )
    assert a.exit_code == 0, a.output
    assert "## Accuracy" in a.output and (tmp_path / "a" / "results.json").is_file()
    b = runner.invoke(app, [*common, "--baseline", "itemknn", "--out", str(tmp_path / "b")])
    assert b.exit_code == 0, b.output
    cmp = runner.invoke(app, ["eval", "compare", str(tmp_path / "a"), str(tmp_path / "b"), "--json"])
    assert cmp.exit_code == 0, cmp.output
    data = json.loads(cmp.output)
    assert data["a"]["arm"] == "popularity" and data["b"]["arm"] == "itemknn"
    assert {r["metric"] for r in data["rows"]} >= {"ndcg@5", "hit_rate@5"}
    text = runner.invoke(app, ["eval", "compare", str(tmp_path / "a"), str(tmp_path / "b"), "--arm-a", "retrieval"])
    assert text.exit_code == 0 and "winner" in text.output


def test_cli_bad_input_is_a_clear_error(eval_settings: Settings, ml_sample: Path, tmp_path: Path) -> None:
    app = _app(eval_settings)
    runner = CliRunner()
    bad_variant = runner.invoke(app, ["eval", "run", str(ml_sample), "--variant", "x:strategy=magic"])
    assert isinstance(bad_variant.exception, ConfigError) and "unknown strategy" in str(bad_variant.exception)
    bad_prompt = runner.invoke(app, ["eval", "run", str(ml_sample), "--variant", "x:prompt=nope"])
    assert isinstance(bad_prompt.exception, ConfigError)
    missing = runner.invoke(app, ["eval", "run", str(tmp_path / "nothing"), "--baselines"])
    assert isinstance(missing.exception, InputError) and "does not exist" in str(missing.exception)
    bad_k = runner.invoke(app, ["eval", "run", str(ml_sample), "--baselines", "--k", "0"])
    assert isinstance(bad_k.exception, InputError)
    nothing = runner.invoke(app, ["eval", "compare", str(tmp_path), str(tmp_path)])
    assert isinstance(nothing.exception, InputError)
    helped = runner.invoke(app, ["eval", "run", "--help"])
    assert helped.exit_code == 0 and "--replay" in helped.output
