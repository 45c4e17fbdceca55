"""`recagent train ranker-ltr`: bad input is a clear error; a real run on the MovieLens sample."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from agent.errors import ConfigError, InputError
from agent.settings import Settings, load_settings
from recagent import cmd_train

from testkit import ROOT, SAMPLE_COLLECTION, cli_app


def _app(settings: Settings) -> typer.Typer:
    return cli_app(settings, "train", cmd_train.app)


def test_missing_files_are_a_message_not_a_traceback(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RECAGENT_")}
    env["RECAGENT_HOME"] = str(tmp_path / "home")
    out = subprocess.run(
        [sys.executable, "-m", "recagent", "train", "ranker-ltr", "--catalog", str(tmp_path / "nope"),
         "--interactions", str(tmp_path / "r.csv")],
        capture_output=True, text=True, env=env, timeout=120, cwd=ROOT,
    )  # fmt: skip
    assert out.returncode == 2, out.stderr
    assert "does not exist" in out.stderr and "how to fix" in out.stderr and "Traceback" not in out.stderr


@pytest.mark.parametrize(
    ("flag", "value", "field"),
    [("--serve", "sideways", "serve"), ("--early-stop-share", "1.5", "early_stop_share"),
     ("--split", "sideways", "split"), ("--lr", "0", "learning_rate")],
)  # fmt: skip
def test_bad_settings_are_named(tmp_path: Path, ml_small: Path, flag: str, value: str, field: str) -> None:
    app = _app(load_settings(home=tmp_path))
    args = ["train", "ranker-ltr", "--catalog", str(ml_small), "--interactions", str(ml_small), flag, value]
    result = CliRunner().invoke(app, args)
    assert isinstance(result.exception, ConfigError), result.output
    assert field in result.exception.message and "ranker-ltr --help" in (result.exception.hint or "")
    assert result.exception.exit_code == 2


@pytest.mark.slow
def test_cli_trains_on_the_sample(train_settings: Settings, ml_sample: Path, tmp_path: Path) -> None:
    app = _app(train_settings)
    out = tmp_path / "ltr"
    args = ["train", "ranker-ltr", "--catalog", str(ml_sample), "--interactions", str(ml_sample / "ratings.csv"),
            "--collection", SAMPLE_COLLECTION, "--out", str(out), "--candidates", "30", "--rounds", "20",
            "--min-data-in-leaf", "5", "--threads", "1"]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "validation users have their target among the 30 fused candidates" in result.output
    assert "early-stop users" in result.output and "top features (gain)" in result.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["data"]["candidates"] == 30 and manifest["provenance"]["collection"] == SAMPLE_COLLECTION
    assert manifest["stats"]["test_interactions_kept_out"] > 0 and len(manifest["provenance"]["files"]) >= 2
    again = CliRunner().invoke(app, args)
    assert isinstance(again.exception, InputError) and "--force" in (again.exception.hint or "")
    assert CliRunner().invoke(app, [*args, "--force"]).exit_code == 0
