"""Issue 27 cases 2, 3 and 6: settings that crashed, fusion weights checked one way everywhere, and arguments that got
no "how to fix" line. Each runs the real command in a fresh RECAGENT_HOME and checks exit code 2, the message and the
hint, and that no traceback is printed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import retrieval.config as retrieval_config
from agent.errors import ConfigError, InputError
from agent.pipeline import RecommendRequest
from agent.settings import load_settings
from eval.variants import parse_variant
from recagent.options import source_options
from retrieval.config import FusionConfig, check_source_weights

ROOT = Path(__file__).resolve().parents[1]


def run(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("RECAGENT_")}
    base |= {"RECAGENT_HOME": str(tmp_path / "home"), "COLUMNS": "200", "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "recagent", *args],
        capture_output=True,
        text=True,
        env={**base, **(env or {})},
        cwd=tmp_path,
        timeout=120,
    )


def refused(out: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert out.returncode == 2, out.stderr
    assert "Traceback" not in out.stderr, out.stderr
    assert "how to fix" in out.stderr, out.stderr
    flat = " ".join(out.stderr.split())
    for needle in needles:
        assert needle in flat, flat


# -- case 2: a setting that is not JSON -------------------------------------------------------------------------
@pytest.mark.parametrize("command", [["config"], ["recommend", "--query", "x"], ["prompts", "list"], ["demo"]])
def test_unparsable_fusion_weights_env_is_a_message(tmp_path: Path, command: list[str]) -> None:
    out = run(tmp_path, *command, env={"RECAGENT_FUSION_WEIGHTS": "{bad"})
    if command == ["prompts", "list"]:  # does not read the settings: unaffected
        assert out.returncode == 0
        return
    refused(out, "RECAGENT_FUSION_WEIGHTS", "{bad", "semantic")


# -- case 3: one validation of fusion weights --------------------------------------------------------------------
BAD = {"semantic": -1.0, "nosuch": 1.0}


def test_settings_refuse_unknown_sources_and_negative_weights(tmp_path: Path) -> None:
    out = run(tmp_path, "config", env={"RECAGENT_FUSION_WEIGHTS": json.dumps(BAD)})
    refused(out, "unknown candidate source(s) 'nosuch'", "semantic=-1.0", ">= 0")


def test_every_entry_point_refuses_the_same_way(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError) as core:
        check_source_weights(BAD)
    message = str(core.value)
    assert "'nosuch'" in message and "semantic=-1.0" in message
    monkeypatch.setenv("RECAGENT_FUSION_WEIGHTS", json.dumps(BAD))
    with pytest.raises(ConfigError) as settings_err:
        load_settings(home=tmp_path)
    monkeypatch.delenv("RECAGENT_FUSION_WEIGHTS")
    with pytest.raises(ValueError) as request_err:
        RecommendRequest(query="x", source_weights=BAD)
    with pytest.raises(ValueError) as fusion_err:
        FusionConfig(weights=BAD)
    with pytest.raises(InputError) as option_err:
        source_options(["semantic=-1", "nosuch=1"])
    for err in (settings_err, request_err, fusion_err, option_err):
        assert "unknown candidate source(s) 'nosuch'" in str(err.value)
        assert "weights must be numbers >= 0" in str(err.value)
    for spec in ("x:fusion.nosuch=1", "x:fusion.semantic=-1", "x:fusion.semantic=nan"):
        with pytest.raises(ConfigError, match=r"unknown candidate source|>= 0"):
            parse_variant(spec)


def test_known_names_come_from_source_names(monkeypatch: pytest.MonkeyPatch) -> None:
    """A source another module adds to SOURCE_NAMES is accepted everywhere without touching the check."""
    with pytest.raises(ValueError):
        check_source_weights({"newsource": 1.0})
    monkeypatch.setattr(retrieval_config, "SOURCE_NAMES", (*retrieval_config.SOURCE_NAMES, "newsource"))
    assert check_source_weights({"newsource": 1.0}) == {"newsource": 1.0}
    assert RecommendRequest(query="x", source_weights={"newsource": 2}).source_weights == {"newsource": 2.0}
    assert parse_variant("x:fusion.newsource=0.5").fusion == {"newsource": 0.5}
    assert source_options(["newsource=1"]) == {"newsource": 1.0}


def test_cli_source_option_gets_a_hint(tmp_path: Path) -> None:
    refused(run(tmp_path, "recommend", "--query", "x", "--source", "bogus=1"), "'bogus'", "SOURCE one of semantic")
    refused(run(tmp_path, "recommend", "--query", "x", "--source", "profile"), "NAME=WEIGHT")


# -- case 6: arguments -------------------------------------------------------------------------------------------
def test_variant_without_colon_is_refused_before_any_work(tmp_path: Path) -> None:
    out = run(tmp_path, "eval", "run", str(tmp_path / "no-such-dataset"), "--variant", "garbage")
    refused(out, "variant 'garbage' has no ':'", "NAME:key=value")


def test_split_and_strategy_name_their_choices(tmp_path: Path) -> None:
    out = run(tmp_path, "eval", "run", str(tmp_path), "--variant", "a:strategy=retrieval", "--split", "weird")
    refused(out, "split", "how to fix: split: use one of 'temporal'")
    refused(run(tmp_path, "recommend", "--query", "x", "--strategy", "magic"), "strategy: use one of 'retrieval'")


def test_prompts_render_bad_variables_exit_2(tmp_path: Path) -> None:
    variables = tmp_path / "vars.json"
    variables.write_text('{"x": 1}')
    refused(run(tmp_path, "prompts", "render", "rank_options", "--vars", str(variables)), "missing variable")
    refused(run(tmp_path, "prompts", "render", "no_such_template", "--vars", str(variables)))


def test_meta_names_the_bad_type(tmp_path: Path) -> None:
    catalog = tmp_path / "c.csv"
    catalog.write_text("id,title,year\n1,A,1990\n")
    out = run(tmp_path, "ingest", str(catalog), "--meta", "year:date")
    refused(out, "unknown type 'date'", "int, float, str, list, bool")
