"""`recagent train ranker`: bad input is a clear error; a real run on the MovieLens sample with the tiny model."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from pydantic import ValidationError
from typer.testing import CliRunner

from agent.errors import InputError
from agent.settings import Settings
from recagent import cmd_train

from testkit import ROOT, SAMPLE_COLLECTION, cli_app


def _app(settings: Settings) -> typer.Typer:
    return cli_app(settings, "train", cmd_train.app)


def test_missing_files_are_a_message_not_a_traceback(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RECAGENT_")}
    env["RECAGENT_HOME"] = str(tmp_path / "home")
    out = subprocess.run(
        [sys.executable, "-m", "recagent", "train", "ranker", "--catalog", str(tmp_path / "nope"),
         "--interactions", str(tmp_path / "r.csv"), "--out", str(tmp_path / "o")],
        capture_output=True, text=True, env=env, timeout=120, cwd=ROOT,
    )  # fmt: skip
    assert out.returncode == 2, out.stderr
    assert "does not exist" in out.stderr and "how to fix" in out.stderr and "Traceback" not in out.stderr


def test_bad_options(tmp_path: Path, ml_small: Path, tiny_model_dir: Path) -> None:
    from agent.settings import load_settings

    app = _app(load_settings(home=tmp_path, llm_model=str(tiny_model_dir)))
    runner = CliRunner()
    common = ["train", "ranker", "--catalog", str(ml_small), "--interactions", str(ml_small / "ratings.csv")]
    bad_split = runner.invoke(app, [*common, "--out", str(tmp_path / "o"), "--split", "sideways"])
    assert isinstance(bad_split.exception, ValidationError) and "split" in str(bad_split.exception)
    bad_order = runner.invoke(app, [*common, "--out", str(tmp_path / "o"), "--option-order", "sideways"])
    assert isinstance(bad_order.exception, ValidationError) and "option_order" in str(bad_order.exception)
    bad_strategy = runner.invoke(app, [*common, "--out", str(tmp_path / "o"), "--strategy", "listwise"])
    assert isinstance(bad_strategy.exception, ValidationError) and "strategy" in str(bad_strategy.exception)
    few = runner.invoke(app, [*common, "--out", str(tmp_path / "o"), "--val-users", "100000"])
    assert isinstance(few.exception, InputError) and "too few users" in few.exception.message
    assert "--val-users" in few.exception.hint
    assert runner.invoke(app, ["train", "ranker", "--help"]).exit_code == 0


@pytest.mark.slow
def test_cli_trains_on_the_sample(train_settings: Settings, ml_sample: Path, tiny_model_dir: Path,
                                  tmp_path: Path) -> None:  # fmt: skip
    settings = train_settings.model_copy(update={"llm_model": str(tiny_model_dir), "llm_dtype": "float32"})
    app = _app(settings)
    runner = CliRunner()
    out = tmp_path / "run"
    args = ["train", "ranker", "--catalog", str(ml_sample), "--interactions", str(ml_sample / "ratings.csv"),
            "--out", str(out), "--collection", SAMPLE_COLLECTION, "--users", "40", "--val-users", "4",
            "--max-train-users", "6", "--examples-per-user", "1", "--history", "4", "--options", "5",
            "--max-steps", "2", "--eval-every", "1", "--batch-size", "3"]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert "examples/s" in result.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["split"]["users"] == 40 and manifest["data"]["collection"] == SAMPLE_COLLECTION
    assert any(f.endswith("ratings.csv") for f in manifest["data"]["files"])
    assert manifest["data"]["stats"]["train"]["examples"] == 6 and len(manifest["val_curve"]) == 3
    again = runner.invoke(app, args)  # the folder holds that run now
    assert isinstance(again.exception, InputError) and "--resume" in again.exception.hint


@pytest.mark.slow
def test_cli_trains_a_pointwise_ranker(train_settings: Settings, ml_sample: Path, tiny_model_dir: Path,
                                       tmp_path: Path) -> None:  # fmt: skip
    settings = train_settings.model_copy(update={"llm_model": str(tiny_model_dir), "llm_dtype": "float32"})
    out = tmp_path / "pw"
    args = ["train", "ranker", "--catalog", str(ml_sample), "--interactions", str(ml_sample / "ratings.csv"),
            "--out", str(out), "--collection", SAMPLE_COLLECTION, "--users", "40", "--val-users", "3",
            "--val-examples-per-user", "1", "--max-train-users", "5", "--examples-per-user", "1", "--history", "4",
            "--options", "5", "--strategy", "pointwise", "--negatives", "2", "--max-steps", "2", "--eval-every", "1",
            "--batch-size", "3"]  # fmt: skip
    result = CliRunner().invoke(_app(settings), args)
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert "pointwise: up to 3 Yes/No prompts" in result.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["strategy"] == "pointwise" and manifest["template"]["name"] == "rank_pointwise"
    counts = manifest["examples"]
    assert counts["train_prompts"] == 3 * counts["train"] and counts["val_prompts"] == 5 * counts["val"]
    assert all(0 < v["ndcg@10"] <= 1 for v in manifest["val_curve"])
