"""End to end: the runner over 10 MovieLens-sample users (real embedder + embedded Chroma, scripted engine):
all output files, baselines, replay without an engine (bit-identical), resume, sampled protocol, conversations."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from agent.errors import ConfigError, EngineUnavailableError, InputError
from agent.settings import Settings
from eval.datasets import load_dataset
from eval.llm_cache import CacheMissError, merge_caches
from eval.protocol import Protocol
from eval.runner import run_eval
from eval.variants import parse_variant
from retrieval.embed import Embedder

from fakes import FakeEngine, option_titles

VOLATILE = {"latency_ms", "timings_ms"}


def by_title(req: Any, labels: list[str]) -> dict[str, float]:
    """Prefers alphabetically late titles (content, not position); deterministic."""
    titles = option_titles(req)
    order = sorted(titles, key=lambda lab: titles[lab])
    return {lab: (float(order.index(lab)) if lab in titles else -50.0) for lab in labels}


def _stable(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in r.items() if k not in VOLATILE} for r in records]


def _run(settings: Settings, embedder: Embedder, data: Path, out: Path, **kw: Any) -> Any:
    kw.setdefault("variants", [parse_variant("opt:strategy=options,weight=1.0,explain=template")])
    kw.setdefault("protocol", Protocol(users=10, seed=3, ks=(5, 10)))
    kw.setdefault("engine", FakeEngine(score_fn=by_title))
    return run_eval(settings, load_dataset(data), kw.pop("protocol"), out, embedder=embedder,
                    collection="eval-test", progress=False, batch_size=4, **kw)  # fmt: skip


def test_full_run_outputs_replay_and_resume(
    eval_settings: Settings, eval_embedder: Embedder, ml_sample: Path, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    engine = FakeEngine(score_fn=by_title)
    result = _run(eval_settings, eval_embedder, ml_sample, out, engine=engine,
                  baselines=["random", "popularity", "itemknn", "retrieval"])  # fmt: skip
    for name in ("results.json", "cases.jsonl", "report.md", "report.html", "run.trec", "qrels.trec",
                 "llm_cache.sqlite"):  # fmt: skip
        assert (out / name).is_file(), name
    results = json.loads((out / "results.json").read_text())
    assert results["cases"] == 10
    assert set(results["arms"]) == {"opt", "random", "popularity", "itemknn", "retrieval"}
    opt = results["arms"]["opt"]
    assert opt["cases"] == 10 and opt["llm"]["fallback_rate"] == 0.0
    assert 0 <= opt["metrics"]["ndcg@10"]["ci_low"] <= opt["metrics"]["ndcg@10"]["mean"] <= 1
    assert opt["retrieval_recall"]["mean"] is not None
    assert sum(opt["attribution"].values()) == 10
    assert set(opt["attribution"]) <= {"hit", "not_retrieved", "demoted_by_ranker", "lost_to_fallback"}
    assert results["reference"] == "retrieval" and results["comparisons"]
    prov = results["provenance"]
    assert prov["protocol"]["seed"] == 3 and prov["dataset"]["files"] and "rank_options" in prov["prompt_templates"]
    records = [json.loads(line) for line in (out / "cases.jsonl").read_text().splitlines()]
    assert len(records) == 50
    first = next(r for r in records if r["variant"] == "opt")
    assert len(first["ranked"]) == 10 and first["gold"] and first["prompt_tokens"] > 0
    case = next(c for c in result.split.cases if c.case_id == first["case_id"])
    assert not set(first["ranked"]) & {h.item_id for h in case.history}  # seen items never recommended
    assert "## Accuracy" in (out / "report.md").read_text()
    page = (out / "report.html").read_text()
    assert "<table>" in page and page.count("<svg") == 4  # metrics, position bias, latency, attribution
    assert "Position bias" in page and "Failure attribution" in page
    n_calls = len(engine.calls)
    assert n_calls > 0

    # replay: no engine at all, everything from the cache, identical records and metrics
    replayed = _run(eval_settings, eval_embedder, ml_sample, out, engine=None, replay=True,
                    baselines=["random", "popularity", "itemknn", "retrieval"])  # fmt: skip
    assert replayed.out == out / "replay"
    again = json.loads((out / "replay" / "results.json").read_text())
    assert again["arms"] == results["arms"]
    assert again["comparisons"] == results["comparisons"]
    assert again["provenance"]["llm_cache"]["misses"] == 0
    assert _stable(replayed.records) == _stable(records)

    # replay with a different variant: cache misses are a clear error
    with pytest.raises(CacheMissError, match="are not in"):
        _run(eval_settings, eval_embedder, ml_sample, tmp_path / "other", replay=True,
             cache_path=out / "llm_cache.sqlite",
             variants=[parse_variant("opt:strategy=options,weight=1.0,explain=template,orders=2")])  # fmt: skip

    # resume: drop the last 3 records, run again: only those are recomputed
    lines = (out / "cases.jsonl").read_text().splitlines()
    (out / "cases.jsonl").write_text("\n".join(lines[:7]) + "\n" + lines[7][:20])  # + a partial line
    resumed = _run(eval_settings, eval_embedder, ml_sample, out, resume=True, engine=FakeEngine(score_fn=by_title),
                   baselines=["random", "popularity", "itemknn", "retrieval"])  # fmt: skip
    assert _stable(resumed.records) == _stable(records)
    with pytest.raises(ConfigError, match="already holds"):
        _run(eval_settings, eval_embedder, ml_sample, out, baselines=["random"])
    with pytest.raises(ConfigError, match="different"):
        _run(eval_settings, eval_embedder, ml_sample, out, resume=True, protocol=Protocol(users=5, seed=3, ks=(5, 10)))


def test_sampled_protocol_ranks_only_the_sampled_set(
    eval_settings: Settings, eval_embedder: Embedder, ml_sample: Path, tmp_path: Path
) -> None:
    protocol = Protocol(users=6, seed=1, ks=(5,), candidates="sampled", n_negatives=19, negatives="popularity")
    result = _run(eval_settings, eval_embedder, ml_sample, tmp_path / "s", protocol=protocol, baselines=["random"])
    assert result.split.candidates is not None
    for r in result.records:
        pool = set(result.split.candidates[r["case_id"]])
        assert len(pool) == 20 and set(r["gold"]) <= pool
        assert set(r["ranked"]) <= pool
        if r["variant"] == "opt":
            assert set(r["candidate_ids"]) == pool and r["retrieved"] == 1.0


def test_conversation_turns_on_a_movielens_catalog(
    eval_settings: Settings, eval_embedder: Embedder, ml_sample: Path, tmp_path: Path
) -> None:
    import csv

    with (ml_sample / "movies.csv").open(encoding="utf-8") as fh:
        titles = [row["title"] for row in csv.DictReader(fh)][:40]

    # ReDial writes "The Matrix (1999)" where MovieLens has "Matrix, The (1999)": use display forms
    def redial(title: str) -> str:
        name, year = title.rsplit(" (", 1)
        for art in ("The", "A", "An"):
            if name.endswith(f", {art}"):
                name = f"{art} {name[: -len(art) - 2]}"
        return f"{name} ({year}"

    turns = tmp_path / "turns.jsonl"
    rows = []
    for i in range(6):
        rows.append({"dialog_id": f"d{i}", "turn_id": 2, "context": ["Hi", f"I liked {redial(titles[i])}"],
                     "entity": [redial(titles[i])], "rec": [redial(titles[10 + i]), "Not A Movie (1900)"]})  # fmt: skip
    rows.append({"dialog_id": "dx", "turn_id": 1, "context": ["hello"], "entity": [], "rec": ["Nothing (1901)"]})
    turns.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    data = load_dataset(turns, catalog=ml_sample)
    assert data.kind == "conversations" and len(data.cases) == 6
    assert data.match is not None and data.match.unmatched == 7 and data.match.turns_without_gold == 1
    assert data.match.matched == 6 and data.match.context_matched == 6
    result = run_eval(eval_settings, data, Protocol(ks=(5,)), tmp_path / "c", embedder=eval_embedder,
                      variants=[parse_variant("opt:strategy=options,weight=1.0,explain=template")],
                      engine=FakeEngine(score_fn=by_title), baselines=["random", "retrieval"],
                      collection="eval-test", progress=False)  # fmt: skip
    report = (result.out / "report.md").read_text()
    assert "7 unmatched" in report.replace("**", "")
    assert all(
        not set(r["ranked"]) & set(c.liked) for r, c in zip(result.records, result.split.cases * 3, strict=False)
    )
    with pytest.raises(ConfigError, match="needs an interaction log"):
        run_eval(eval_settings, data, Protocol(), tmp_path / "d", baselines=["popularity"], progress=False)


def test_bad_inputs_fail_before_any_llm_call(
    eval_settings: Settings, eval_embedder: Embedder, ml_sample: Path, tmp_path: Path
) -> None:
    engine = FakeEngine()
    with pytest.raises(InputError, match="empty split"):
        _run(eval_settings, eval_embedder, ml_sample, tmp_path / "a", engine=engine,
             protocol=Protocol(min_history=100000))  # fmt: skip
    with pytest.raises(ConfigError, match="nothing to evaluate"):
        _run(eval_settings, eval_embedder, ml_sample, tmp_path / "b", engine=engine, variants=[])
    with pytest.raises(ConfigError, match="invalid settings"):
        _run(eval_settings, eval_embedder, ml_sample, tmp_path / "c", engine=engine,
             variants=[parse_variant("x:weight=3")])  # fmt: skip
    with pytest.raises(InputError, match="no LLM cache"):
        _run(eval_settings, eval_embedder, ml_sample, tmp_path / "d", engine=engine, replay=True)
    assert engine.calls == []
    assert not any(tmp_path.iterdir())  # nothing written either: no output folder, no empty LLM cache


def test_arms_with_the_same_model_share_one_engine(
    eval_settings: Settings, eval_embedder: Embedder, ml_sample: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The runner starts an engine per model, not per arm, and closes it before starting the next model's."""
    import agent.llm

    started: list[tuple[str | None, FakeEngine]] = []
    events: list[str] = []

    class Counted(FakeEngine):
        def close(self) -> None:
            events.append(f"close {self.model_id}")

    def create(settings: Settings) -> FakeEngine:
        engine = Counted(score_fn=by_title, model_id=f"m-{settings.llm_model}")
        started.append((settings.llm_model, engine))
        events.append(f"start {engine.model_id}")
        return engine

    monkeypatch.setattr(agent.llm, "create_engine", create)
    variants = [parse_variant(v) for v in ("a:strategy=options,weight=1.0,explain=none",
                                           "b:strategy=options,weight=0.5,explain=none",
                                           "c:strategy=options,weight=1.0,explain=none,model=other",
                                           "d:strategy=options,weight=0.2,explain=none,model=other")]  # fmt: skip
    result = _run(eval_settings, eval_embedder, ml_sample, tmp_path / "run", engine=None, variants=variants,
                  protocol=Protocol(users=4, seed=3, ks=(5,)))  # fmt: skip
    assert [m for m, _ in started] == [eval_settings.llm_model, "other"]
    base = f"m-{eval_settings.llm_model}"
    assert events == [f"start {base}", f"close {base}", "start m-other", "close m-other"]
    assert {a: result.results["arms"][a]["cases"] for a in "abcd"} == dict.fromkeys("abcd", 4)


def test_arms_with_the_same_retrieval_share_candidate_lists(
    eval_settings: Settings, eval_embedder: Embedder, ml_sample: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Retrieval runs once per case for all arms whose retrieval settings are equal; an arm with other fusion
    weights (the embedding baseline) gets its own lists, and every arm's candidates are what its own generator
    returns."""
    from retrieval.candidates import CandidateGenerator

    calls: list[str] = []
    original = CandidateGenerator.generate

    def counted(self: CandidateGenerator, query: Any, **kw: Any) -> Any:
        calls.append(json.dumps(sorted(self.fusion.weights.items())))
        return original(self, query, **kw)

    monkeypatch.setattr(CandidateGenerator, "generate", counted)
    variants = [parse_variant(v) for v in ("a:strategy=options,weight=1.0,explain=none",
                                           "b:strategy=options,weight=0.2,explain=template")]  # fmt: skip
    result = _run(eval_settings, eval_embedder, ml_sample, tmp_path / "run", variants=variants,
                  baselines=["retrieval", "embedding"], protocol=Protocol(users=4, seed=3, ks=(5,)))  # fmt: skip
    assert len(calls) == 8 and len(set(calls)) == 2  # 4 cases x (default fusion, embedding fusion)
    cands = {(r["variant"], r["case_id"]): r["candidate_ids"] for r in result.records}
    cases = sorted({c for _, c in cands})
    assert all(cands["a", c] == cands["b", c] == cands["retrieval", c] for c in cases)
    assert any(cands["embedding", c] != cands["retrieval", c] for c in cases)

    calls.clear()  # without sharing (one arm per run) the lists are the same
    alone = _run(eval_settings, eval_embedder, ml_sample, tmp_path / "alone", baselines=["embedding"],
                 variants=[], protocol=Protocol(users=4, seed=3, ks=(5,)))  # fmt: skip
    assert len(calls) == 4
    assert {r["case_id"]: r["candidate_ids"] for r in alone.records} == {c: cands["embedding", c] for c in cases}


def test_runner_stops_when_the_engine_dies(
    eval_settings: Settings, eval_embedder: Embedder, ml_sample: Path, tmp_path: Path
) -> None:
    """Every case after an engine death would be a fallback: the run stops instead (resumable), keeping the
    batches recorded before it."""

    class Dying(FakeEngine):
        batches = 0

        def score_options(self, *args: Any, **kwargs: Any) -> Any:
            Dying.batches += 1
            return super().score_options(*args, **kwargs)

        def is_dead(self) -> bool:
            return Dying.batches >= 2

    out = tmp_path / "run"
    with pytest.raises(EngineUnavailableError, match="engine died") as err:
        run_eval(eval_settings, load_dataset(ml_sample), Protocol(users=8, seed=3, ks=(5,)), out,
                 variants=[parse_variant("opt:strategy=options,weight=1.0,explain=none")], engine=Dying(),
                 embedder=eval_embedder, collection="eval-test", progress=False, batch_size=4)  # fmt: skip
    assert "run the same command again" in err.value.hint
    lines = (out / "cases.jsonl").read_text().splitlines()
    assert len(lines) == 4 and all('"fallback_reason": null' in line for line in lines)  # the first batch only


def test_caches_of_separate_runs_merge_into_one_replay(
    eval_settings: Settings, eval_embedder: Embedder, ml_sample: Path, tmp_path: Path
) -> None:
    """Two arms recorded in two runs (as long strategies are, one at a time) are replayed side by side on identical
    cases from the merged cache: the same records as the runs that recorded them, no engine, no miss."""
    first = parse_variant("opt:strategy=options,weight=1.0,explain=none")
    second = parse_variant("opt2:strategy=options,weight=0.5,explain=none,orders=2")
    a = _run(eval_settings, eval_embedder, ml_sample, tmp_path / "a", variants=[first], baselines=["retrieval"])
    b = _run(eval_settings, eval_embedder, ml_sample, tmp_path / "b", variants=[second])
    with pytest.raises(CacheMissError):  # neither run holds the other's outputs
        _run(eval_settings, eval_embedder, ml_sample, tmp_path / "a", engine=None, replay=True,
             variants=[first, second])  # fmt: skip
    report = merge_caches([tmp_path / "a", tmp_path / "b"], tmp_path / "both")
    assert report.conflicts == 0 and report.added == report.responses > 0
    assert [r["engines"] for r in report.sources] == [["opt"], ["opt2"]]
    replayed = _run(eval_settings, eval_embedder, ml_sample, tmp_path / "both", engine=None, replay=True,
                    variants=[first, second], baselines=["retrieval"])  # fmt: skip
    results = json.loads((tmp_path / "both" / "replay" / "results.json").read_text())
    assert results["provenance"]["llm_cache"]["misses"] == 0 and set(results["arms"]) == {"opt", "opt2", "retrieval"}
    recorded = _stable(a.records) + _stable([r for r in b.records if r["variant"] == "opt2"])
    key = lambda r: (r["variant"], r["case_id"])  # noqa: E731
    assert sorted(_stable(replayed.records), key=key) == sorted(recorded, key=key)


def test_eval_run_uses_a_fitted_dialogue_log_and_refuses_a_leaking_one(
    eval_settings: Settings, eval_embedder: Embedder, ml_sample: Path, tmp_path: Path
) -> None:
    """A collection's fitted dialogue log serves `recagent eval run` on dialogue turns, unless it holds one of the
    scored dialogues (then a clear InputError, before any scoring)."""
    from retrieval.dialogue_sources import ARTIFACT_KIND
    from retrieval.fitted import artifact_dir

    movies = [json.loads(json.dumps(r)) for r in _movies(ml_sample)[:12]]
    rows = [{"dialog_id": f"d{i}", "turn_id": 2, "context": ["Hi", f"I liked {movies[i][1]}"],
             "entity": [movies[i][1]], "rec": [movies[6 + i][1]]} for i in range(3)]  # fmt: skip
    turns = tmp_path / "turns.jsonl"
    turns.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    data = load_dataset(turns, catalog=ml_sample)
    folder = artifact_dir(eval_settings.store_config(), "eval-test", ARTIFACT_KIND)
    seed, target = movies[0][0], movies[11][0]
    kw: dict[str, Any] = {"embedder": eval_embedder, "baselines": ["retrieval"], "collection": "eval-test",
                          "progress": False}  # fmt: skip
    plain = run_eval(eval_settings, data, Protocol(ks=(5,)), tmp_path / "a", **kw)
    try:
        _fitted_log_runs(eval_settings, data, folder, seed, target, plain, tmp_path, kw)
    finally:
        shutil.rmtree(folder, ignore_errors=True)  # the collection is shared by the module's tests


def _fitted_log_runs(eval_settings: Settings, data: Any, folder: Path, seed: str, target: str, plain: Any,
                     tmp_path: Path, kw: dict[str, Any]) -> None:  # fmt: skip
    from eval.crs import dialogue_log_usable
    from retrieval.dialogue_log import DialogueLog, DialogueTurn
    from retrieval.dialogue_sources import DialogueSourceConfig, fit_cached

    fit_cached(DialogueLog([DialogueTurn("d1", (seed,), (target,))]), DialogueSourceConfig(), folder)
    with pytest.raises(InputError, match="holds 1 of the 3 evaluated dialogues"):
        run_eval(eval_settings, data, Protocol(ks=(5,)), tmp_path / "b", **kw)
    model, _ = fit_cached(DialogueLog([DialogueTurn("other", (seed,), (target,))]), DialogueSourceConfig(), folder)
    assert dialogue_log_usable(model, data.cases) and not dialogue_log_usable(None, data.cases)
    used = run_eval(eval_settings, data, Protocol(ks=(5,)), tmp_path / "c", **kw)
    first = next(r for r in used.records if r["case_id"] == "d0_2")
    before = next(r for r in plain.records if r["case_id"] == "d0_2")
    assert first["ranked"][0] == target and before["ranked"][0] != target  # comention: seed -> target


def _movies(ml_sample: Path) -> list[tuple[str, str]]:
    """(movieId, ReDial-style display title) of the sample catalog."""
    import csv

    out = []
    with (ml_sample / "movies.csv").open(encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            name, year = row["title"].rsplit(" (", 1)
            for art in ("The", "A", "An"):
                if name.endswith(f", {art}"):
                    name = f"{art} {name[: -len(art) - 2]}"
            out.append((row["movieId"], f"{name} ({year}"))
    return out
