"""`recagent eval run|compare` wiring (the sub-app mounted on a bare root; the lead registers it in cli.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
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
    ids = tmp_path / "val_users.txt"
    users = sorted({json.loads(line)["case_id"] for line in (tmp_path / "a" / "cases.jsonl").open()})[:3]
    ids.write_text("# validation users\n" + "\n".join([*users, "no-such-user"]) + "\n")
    val = runner.invoke(app, [*common, "--baseline", "popularity", "--part", "validation", "--user-ids", str(ids),
                              "--out", str(tmp_path / "v")])  # fmt: skip
    assert val.exit_code == 0, val.output
    assert "part=validation" in val.output and "user ids: 4 given" in val.output and "1 unknown" in val.output
    prov = json.loads((tmp_path / "v" / "results.json").read_text())["provenance"]
    assert prov["protocol"]["part"] == "validation" and prov["split_notes"]["user_ids_unknown"] == 1
    assert {r["metric"] for r in data["rows"]} >= {"ndcg@5", "hit_rate@5"}
    text = runner.invoke(app, ["eval", "compare", str(tmp_path / "a"), str(tmp_path / "b"), "--arm-a", "retrieval"])
    assert text.exit_code == 0 and "winner" in text.output
    # arms that retrieve (pipeline arms) are also compared on the recall of their fused candidates
    assert "retrieval_recall" not in {r["metric"] for r in data["rows"]}  # popularity vs item-kNN: no retrieval
    same = runner.invoke(app, ["eval", "compare", str(tmp_path / "a"), str(tmp_path / "a"), "--arm-a", "retrieval",
                               "--arm-b", "retrieval", "--json"])  # fmt: skip
    rows = {r["metric"]: r for r in json.loads(same.output)["rows"]}
    records = [json.loads(x) for x in (tmp_path / "a" / "cases.jsonl").open()]
    recall = [r["retrieved"] for r in records if r["variant"] == "retrieval"]
    assert rows["retrieval_recall"]["mean_a"] == pytest.approx(sum(recall) / len(recall))
    assert rows["retrieval_recall"]["diff"] == 0.0 and rows["retrieval_recall"]["cases"] == 5


def test_cli_bad_input_is_a_clear_error(
    eval_settings: Settings, ml_sample: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)  # the default --out (eval-out) lands here
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
    ids = tmp_path / "ids.txt"
    ids.write_text("# nobody\n\n")
    empty_ids = runner.invoke(app, ["eval", "run", str(ml_sample), "--baselines", "--user-ids", str(ids)])
    assert isinstance(empty_ids.exception, InputError) and "holds no user id" in str(empty_ids.exception)
    ids.write_text("no-such-user\n")
    unknown = runner.invoke(app, ["eval", "run", str(ml_sample), "--baselines", "--user-ids", str(ids)])
    assert isinstance(unknown.exception, InputError) and "1 are not in the interaction log" in str(unknown.exception)
    bad_part = runner.invoke(app, ["eval", "run", str(ml_sample), "--baselines", "--part", "dev"])
    assert bad_part.exit_code != 0 and "part" in str(bad_part.exception or bad_part.output)
    helped = runner.invoke(app, ["eval", "run", "--help"])
    assert helped.exit_code == 0 and "--replay" in helped.output
    assert list(work.iterdir()) == []  # refused runs write nothing (no eval-out/ with an empty LLM cache)


def test_cli_merge_cache(eval_settings: Settings, tmp_path: Path) -> None:
    from eval.llm_cache import CachingEngine, LLMCache

    from fakes import FakeEngine

    for folder, prompts in (("a", ["p1", "p2"]), ("b", ["p2", "p3"])):
        cache = LLMCache(tmp_path / folder / "llm_cache.sqlite")
        engine = CachingEngine(FakeEngine(), cache)
        engine.generate(prompts, max_tokens=8)
        cache.set_engine(f"arm-{folder}", engine.identity)
        cache.close()
    app = _app(eval_settings)
    runner = CliRunner()
    done = runner.invoke(app, ["eval", "merge-cache", str(tmp_path / "a"), str(tmp_path / "b"),
                               "--out", str(tmp_path / "m")])  # fmt: skip
    assert done.exit_code == 0, done.output
    assert "2 outputs (1 added, 1 already held, 0 conflicting), 0 recorded errors, arms: arm-b" in done.output
    assert f"{tmp_path / 'm' / 'llm_cache.sqlite'}: 3 outputs (3 added)" in done.output
    missing = runner.invoke(app, ["eval", "merge-cache", str(tmp_path / "zzz"), "--out", str(tmp_path / "m2")])
    assert isinstance(missing.exception, InputError) and "does not exist" in str(missing.exception)
    assert not (tmp_path / "m2").exists()
