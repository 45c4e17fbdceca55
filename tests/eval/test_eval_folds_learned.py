"""`recagent eval folds --learned` and `recagent eval folds-llm` on real parts: a small ReDial-shaped dataset, the
bundled embedder, an embedded Chroma store, real LightGBM, and the tiny random vLLM model for the LLM arm (slow)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from agent.settings import Settings, load_settings
from eval.crs_folds import FUSED_DEFAULT
from eval.crs_llm import draw_samples, llm_arm, reranked
from eval.datasets import EvalCase
from recagent import cmd_eval
from train.crs_ltr import LEARNED_ARM
from train.dialogue import LIVE_ARM

from testkit import cli_app

GENRES = ["horror", "comedy", "drama"]
MOVIES = 24


def _title(i: int) -> str:
    return f"Movie {i} ({1980 + i})"


def _dataset(folder: Path) -> Path:
    movies = {
        str(100 + i): {"name": _title(i), "genre": [GENRES[i % 3]], "director": [f"D{i % 4}"],
                       "plot": f"A {GENRES[i % 3]} story number {i}.", "writer": [], "star": [], "imdb_id": f"tt{i}"}
        for i in range(MOVIES)
    }  # fmt: skip
    (folder / "movies.json").write_text(json.dumps(movies), encoding="utf-8")
    rows = []
    for d in range(36):  # movie a mentioned, then movie a + 12 recommended; a second turn recommends a + 13
        a = d % 12
        context = ["", "hi", f"I like {_title(a)}"]
        rows.append({"dialog_id": f"d{d}", "turn_id": 2, "context": context, "entity": [_title(a)],
                     "rec": [_title(a + 12)]})  # fmt: skip
        rows.append({"dialog_id": f"d{d}", "turn_id": 4, "context": [*context, "seen it", "and this one?"],
                     "entity": [_title(a), _title(a + 12)], "rec": [_title((a + 13) % MOVIES)]})  # fmt: skip
    (folder / "turns.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return folder


def test_reranked_keeps_every_candidate_and_the_tail() -> None:
    assert reranked(list("abcdef"), ["c", "a"], 3) == ["c", "a", "b", "d", "e", "f"]
    assert reranked(list("abcdef"), ["c", "b", "a"], 3) == ["c", "b", "a", "d", "e", "f"]
    cases = [EvalCase(case_id=f"t{i}", gold={"x": 1, "y": 1}) for i in range(5)]
    drawn = draw_samples(cases, 4, seed=1)
    assert len(drawn) == 4 == len(set(drawn)) and drawn == draw_samples(cases, 4, seed=1)
    assert draw_samples(cases, 99, seed=1) == [(f"t{i}", g) for i in range(5) for g in "xy"]


@pytest.fixture(scope="module")
def folds_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Settings, Path, Path]:
    tmp = tmp_path_factory.mktemp("folds")
    data = _dataset(tmp)
    settings = load_settings(home=tmp / "home")
    out = tmp / "out"
    app = cli_app(settings, "eval", cmd_eval.app)
    args = ["eval", "folds", str(data), "--folds", "3", "--out", str(out), "--learned", "--live-ranker"]
    done = CliRunner().invoke(app, args)
    assert done.exit_code == 0, done.output
    assert f"| {LIVE_ARM} |" in done.output and "Live ranker per fold" in done.output
    return settings, data, out


@pytest.mark.slow
def test_eval_folds_with_the_learned_ranker(folds_run: tuple[Settings, Path, Path]) -> None:
    _, _, out = folds_run
    doc = json.loads((out / "results.json").read_text(encoding="utf-8"))
    results = doc["results"]
    assert results[LEARNED_ARM]["samples"] == results[FUSED_DEFAULT]["samples"] == 72
    assert doc["paired_ltr"]["base"] == FUSED_DEFAULT and doc["paired_ltr"]["arm"] == LEARNED_ARM
    for fold in doc["folds"]:
        assert fold["leaked_dialogues"] == 0
        assert fold["ltr"]["pool"] in (100, 200) and fold["ltr"]["train_groups"] == 72 - fold["test_turns"]
    report = (out / "report.md").read_text(encoding="utf-8")
    assert LEARNED_ARM in report and "Learned ranker per fold" in report
    rankings = [json.loads(line) for line in (out / "rankings.jsonl").read_text(encoding="utf-8").splitlines()]
    assert {r["case_id"] for r in rankings if r["arm"] == LEARNED_ARM} == {r["case_id"] for r in rankings
                                                                           if r["arm"] == FUSED_DEFAULT}  # fmt: skip


@pytest.mark.slow
def test_eval_folds_with_the_live_ranker(folds_run: tuple[Settings, Path, Path]) -> None:
    """`--live-ranker`: the live training path fitted per fold (the turns' text as request text) and the held-out
    turns served by the chat's code, paired against the fused order and the learned arm."""
    _, _, out = folds_run
    doc = json.loads((out / "results.json").read_text(encoding="utf-8"))
    assert doc["results"][LIVE_ARM]["samples"] == 72
    assert [(p["arm"], p["base"]) for p in doc["paired_live"]] == [(LIVE_ARM, FUSED_DEFAULT), (LIVE_ARM, LEARNED_ARM)]
    for fold in doc["folds"]:
        live = fold["live"]
        assert live["turns"] == live["turns_with_text"] == 72 - fold["test_turns"]  # every training turn has text
        assert "semantic" in live["sources"] and "comention" in live["sources"]
    report = (out / "report.md").read_text(encoding="utf-8")
    assert f"{LIVE_ARM} minus {FUSED_DEFAULT}" in report and f"{LIVE_ARM} minus {LEARNED_ARM}" in report


@pytest.mark.slow
def test_the_llm_arm_on_a_folds_run(folds_run: tuple[Settings, Path, Path], vllm_tiny: Any) -> None:
    settings, data, out = folds_run
    llm = llm_arm(settings, data, out, samples=10, seed=0, batch=4, progress=False, engine=vllm_tiny)
    assert llm["meta"]["samples"] == 10 and llm["meta"]["strategy"] == "options"
    base, arm = list(llm["results"].values())
    # the LLM reorders the first fusion_n (20) of the base ranking only: its top 50 holds the same movies
    assert arm["recall@50"] == base["recall@50"]
    assert set(llm["paired"]) == {"recall@1", "recall@10", "recall@50"}
    assert (out / "llm_arm.md").is_file() and "paired bootstrap" in (out / "llm_arm.md").read_text(encoding="utf-8")
