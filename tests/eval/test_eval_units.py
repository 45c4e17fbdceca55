"""Datasets (title matching), protocols, variant specs, paired statistics, the LLM cache: small inline data."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from agent.errors import (
    ConfigError,
    EngineError,
    EngineUnavailableError,
    InputError,
    PartialOutputError,
    StructuredOutputError,
)
from eval.compare import bootstrap_ci, compare_arms, paired_bootstrap_ci, permutation_test, winner_table
from eval.datasets import EvalDataset, TitleIndex, load_dataset, load_turns, normalise_title
from eval.llm_cache import CacheMissError, CachingEngine, LLMCache, merge_caches
from eval.protocol import Protocol, make_split
from eval.variants import parse_variant, variant_settings
from retrieval.interactions import Interactions
from retrieval.types import Item

from fakes import FakeEngine


def test_normalise_title() -> None:
    assert normalise_title("Matrix, The (1999)") == ("the matrix", "1999")
    assert normalise_title("The Matrix (1999)") == ("the matrix", "1999")
    assert normalise_title("Amélie (2001)") == ("amelie", "2001")
    assert normalise_title("Seven (a.k.a. Se7en) (1995)") == ("seven", "1995")
    assert normalise_title("Up") == ("up", None)


def test_title_index_and_turns_count_unmatched(tmp_path: Path) -> None:
    items = [Item(id="1", title="Matrix, The (1999)"), Item(id="2", title="Up (2009)"), Item(id="3", title="Up (1976)")]
    index = TitleIndex(items)
    assert index.match("1") == ("1", "exact")
    assert index.match("Up (2009)") == ("2", "exact")
    assert index.match("The Matrix (1999)") == ("1", "normalised")
    assert index.match("Up") == (None, "unmatched")  # two films named Up: ambiguous without a year
    catalog = tmp_path / "movies.json"
    extra = {"director": ["D"], "writer": ["W"], "star": ["S"], "imdb_id": "tt0"}  # ReDial movies.json fields
    movies = {"1": {"name": "The Matrix (1999)", "genre": ["sci-fi"], "plot": "x", **extra},
              "2": {"name": "Up (2009)", "genre": ["animation"], "plot": "y", **extra}}  # fmt: skip
    catalog.write_text(json.dumps(movies))
    turns = tmp_path / "turns.jsonl"
    turns.write_text(
        json.dumps({"dialog_id": "a", "turn_id": 1, "context": ["hi", "like Up (2009)"], "entity": ["Up (2009)"],
                    "rec": ["Matrix, The (1999)", "Unknown (1990)"]}) + "\n"
        + json.dumps({"dialog_id": "b", "turn_id": 3, "context": ["x"], "rec": ["Nope (2000)"]}) + "\n"
    )  # fmt: skip
    data = load_turns(turns, catalog)
    assert [c.case_id for c in data.cases] == ["a_1"]
    assert data.cases[0].gold == {"1": 1} and data.cases[0].liked == ["2"]
    assert data.match is not None
    assert (data.match.gold_total, data.match.matched, data.match.unmatched) == (3, 1, 2)
    assert data.match.turns_without_gold == 1 and "Unknown (1990)" in data.match.unmatched_examples
    assert load_dataset(tmp_path).kind == "conversations"
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"dialog_id": "a", "context": ["x"], "rec": ["Nope (2000)"]}) + "\n")
    with pytest.raises(InputError, match="no usable turn"):
        load_turns(bad, catalog)


def test_interaction_ids_must_match_the_catalog(ml_sample: Path, tmp_path: Path) -> None:
    ratings = tmp_path / "log.csv"
    ratings.write_text("user,item,rating\n1,zz1,5\n1,zz2,4\n2,zz3,5\n")
    from eval.datasets import load_interaction_dataset

    with pytest.raises(InputError, match="not in the catalog"):
        load_interaction_dataset(ml_sample, ratings)


def _dataset() -> EvalDataset:
    users, items, ratings, times = [], [], [], []
    for u in range(6):
        for t in range(8):
            users.append(f"u{u}")
            items.append(f"i{(u + t) % 20}")
            ratings.append(5.0 if t % 2 else 2.0)
            times.append(t)
    log = Interactions.from_records(users, items, ratings, times)
    catalog = {f"i{i}": Item(id=f"i{i}", title=f"Item {i}", metadata={"genres": ["A"]}) for i in range(20)}
    return EvalDataset(name="tiny", kind="interactions", catalog_path=Path("x"), catalog_format="csv", mapping=None,
                       items=catalog, interactions=log)  # fmt: skip


def test_temporal_random_and_sampled_protocols() -> None:
    data = _dataset()
    split = make_split(data, Protocol(min_history=3))
    assert len(split.cases) == 6
    case = split.cases[0]
    assert case.gold == {"i7": 1} and len(case.history) == 7  # last positive (t=7) held out
    assert split.train is not None and len(split.train) == 42
    sampled = make_split(data, Protocol(min_history=3, users=3, seed=2, candidates="sampled", n_negatives=5))
    again = make_split(data, Protocol(min_history=3, users=3, seed=2, candidates="sampled", n_negatives=5))
    assert sampled.candidates == again.candidates and len(sampled.cases) == 3
    for c in sampled.cases:
        pool = sampled.candidates[c.case_id]  # type: ignore[index]
        assert len(pool) == 6 and set(c.gold) <= set(pool)
        assert not set(pool) - set(c.gold) & {h.item_id for h in c.history}
    ratio = make_split(data, Protocol(split="ratio", test_ratio=0.5, min_history=3))
    assert ratio.cases[0].gold == {"i5": 1, "i7": 1} and len(ratio.cases[0].history) == 4  # t4..t7 held out
    assert ratio.train is not None and len(ratio.train) == 24
    assert make_split(data, Protocol(split="ratio", test_ratio=0.25, min_history=3)).cases[0].gold == {"i7": 1}
    with pytest.raises(InputError, match="empty split"):  # 5 of 8 held out leaves 3 < min_history 4
        make_split(data, Protocol(split="ratio", test_ratio=0.6, min_history=4))
    rnd = make_split(data, Protocol(split="random", min_history=3, seed=1))
    assert all(len(c.history) == 7 for c in rnd.cases)
    with pytest.raises(InputError, match="empty split"):
        make_split(data, Protocol(min_rating=6))
    with pytest.raises(InputError, match="unseen items"):
        make_split(data, Protocol(min_history=3, candidates="sampled", n_negatives=50))


def test_variant_specs(eval_settings: object) -> None:
    v = parse_variant("opt2:strategy=options,weight=0.5,orders=2,prompt=rank_options,mmr_lambda=0.7,explain=none")
    assert v.settings == {"rerank_strategy": "options", "rerank_llm_weight": 0.5, "rerank_n_orders": 2,
                          "explain_mode": "none"}  # fmt: skip
    assert v.rerank == {"mmr_lambda": 0.7, "options_template": "rank_options"}
    vs = variant_settings(eval_settings, v)  # type: ignore[arg-type]
    cfg = vs.rerank_config()
    assert cfg.strategy == "options" and cfg.llm_weight == 0.5 and cfg.mmr_lambda == 0.7 and cfg.n_orders == 2
    assert parse_variant("bare:").settings == {}
    for spec, match in [("x:strategy=magic", "unknown strategy"), ("x:prompt=nope", "unknown prompt template"),
                        ("x:colour=red", "unknown key"), ("x:weight", "cannot read"), ("bad name:weight=1", "bad name"),
                        ("random:weight=1", "baseline name"), ("x:mmr_lambda=7", "mmr_lambda"),
                        ("x:prompt=explain_nope", "unknown prompt"), ("garbage", "no ':'")]:  # fmt: skip
        with pytest.raises(ConfigError, match=match):
            parse_variant(spec)


def test_paired_statistics() -> None:
    a = [1.0, 1.0, 1.0, 0.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0] * 3
    b = [0.0] * 30
    lo, hi = paired_bootstrap_ci(a, b, seed=1)
    assert 0 < lo <= np.mean(a) <= hi <= 1
    assert permutation_test(a, b, seed=1) < 0.01
    assert permutation_test(a, a) == 1.0
    assert bootstrap_ci([0.5, 0.5]) == (0.5, 0.5)
    x = {str(i): v for i, v in enumerate(a)}
    y = {str(i): v for i, v in enumerate(b)}
    stats = compare_arms(x, y)
    assert stats["significant"] and stats["diff"] == pytest.approx(0.9) and stats["cases"] == 30
    rows = winner_table({"new": {"m": x}, "ref": {"m": y}}, ["m"], "ref")
    assert rows[0]["verdict"] == "better"
    noisy = {str(i): float(i % 2) for i in range(30)}
    flipped = {str(i): float((i + 1) % 2) for i in range(30)}
    assert winner_table({"n": {"m": noisy}, "f": {"m": flipped}}, ["m"], "f")[0]["verdict"] == "tie"
    with pytest.raises(InputError, match="share no case"):
        compare_arms({"a": 1.0}, {"b": 1.0})


def test_caching_engine_hits_misses_errors_and_replay(tmp_path: Path) -> None:
    inner = FakeEngine(generate_fn=lambda req, schema: "out:" + str(req.prompt))
    cache = LLMCache(tmp_path / "c.sqlite")
    engine = CachingEngine(inner, cache)
    first = engine.generate(["p1", "p2"], max_tokens=8)
    assert [g.text for g in first] == ["out:p1", "out:p2"] and len(inner.calls) == 1
    second = engine.generate(["p2", "p3"], max_tokens=8)
    assert [g.text for g in second] == ["out:p2", "out:p3"]
    assert len(inner.calls[-1].requests) == 1  # only the miss was sent
    engine.generate(["p1"], max_tokens=9)  # other sampling params: another key
    assert len(inner.calls) == 3
    scores = engine.score_options(["q"], ["A", "B"])
    assert scores[0].logprobs == {"A": -1.0, "B": -1.0}
    # a failing call is recorded and raised again on replay
    schema = {"type": "object", "properties": {"x": {"type": "integer"}}, "required": ["x"]}
    with pytest.raises(StructuredOutputError):
        engine.generate(["bad"], json_schema=schema)
    replay = CachingEngine(None, cache, identity=engine.identity)
    assert [g.text for g in replay.generate(["p1", "p3"], max_tokens=8)] == ["out:p1", "out:p3"]
    assert replay.score_options(["q"], ["A", "B"])[0].logprobs == scores[0].logprobs
    with pytest.raises(StructuredOutputError):
        replay.generate(["bad"], json_schema=schema)
    with pytest.raises(CacheMissError, match="no recorded"):
        replay.generate(["never seen"], max_tokens=8)
    other = CachingEngine(None, cache, identity={**engine.identity, "model_id": "other"})
    with pytest.raises(CacheMissError):
        other.generate(["p1"], max_tokens=8)


def test_the_kv_block_size_does_not_change_an_engines_identity(tmp_path: Path) -> None:
    """describe() reports the block size and prefix caching (how the engine serves); outputs recorded by the same
    model under another block size, or before those keys were reported, still replay."""
    from eval.llm_cache import engine_identity

    class Served(FakeEngine):
        def __init__(self, **serving: Any) -> None:
            super().__init__(generate_fn=lambda req, schema: "out")
            self.serving = serving

        def describe(self) -> dict[str, Any]:
            return {**super().describe(), "dtype": "bfloat16", **self.serving}

    before = engine_identity(Served())
    assert engine_identity(Served(block_size=32, prefix_caching=True)) == before
    assert engine_identity(Served(block_size=128, prefix_caching=False)) == before
    assert engine_identity(Served(dtype="float32")) != before  # what the model computes in still counts
    cache = LLMCache(tmp_path / "c.sqlite3")
    CachingEngine(Served(block_size=128), cache).generate(["p"], max_tokens=4)
    assert CachingEngine(None, cache, identity=engine_identity(Served(block_size=32))).generate(["p"], max_tokens=4)


def test_outputs_failing_their_schema_in_a_batch_are_recorded_per_request(tmp_path: Path) -> None:
    """A batch where one output does not validate: the valid outputs are cached, the failure is recorded for its
    request alone, and a later batch (or a replay) gets the same outcomes without asking the engine again."""
    schema = {"type": "object", "properties": {"x": {"type": "integer"}}, "required": ["x"]}
    inner = FakeEngine(generate_fn=lambda req, s: "nope" if "bad" in str(req.prompt) else '{"x": 1}')
    cache = LLMCache(tmp_path / "c.sqlite")
    engine = CachingEngine(inner, cache)
    with pytest.raises(PartialOutputError) as err:
        engine.generate(["a", "bad", "c"], json_schema=schema)
    kinds = [type(o).__name__ for o in err.value.outcomes]
    assert kinds == ["Generation", "StructuredOutputError", "Generation"] and len(inner.calls) == 1
    assert err.value.outcomes[1].raw == "nope"
    with pytest.raises(PartialOutputError) as again:  # another batch holding the same requests: no engine call
        engine.generate(["bad", "a", "d"], json_schema=schema)
    assert [type(o).__name__ for o in again.value.outcomes] == ["StructuredOutputError", "Generation", "Generation"]
    assert [len(c.requests) for c in inner.calls] == [3, 1]  # only "d" was new
    with pytest.raises(StructuredOutputError) as alone:
        engine.generate(["bad"], json_schema=schema)
    assert not isinstance(alone.value, PartialOutputError) and len(inner.calls) == 2
    replay = CachingEngine(None, cache, identity=engine.identity)
    with pytest.raises(PartialOutputError) as replayed:
        replay.generate(["a", "bad", "c"], json_schema=schema)
    assert [getattr(o, "parsed", None) for o in replayed.value.outcomes] == [{"x": 1}, None, {"x": 1}]
    assert replayed.value.outcomes[1].raw == "nope"


def test_transient_engine_errors_are_retried_unless_replaying(tmp_path: Path) -> None:
    """An engine that was down for a call (not the request's fault) is asked again when a run resumes; a replay
    of a run that saw the error still reproduces it; once the call succeeds, replay serves its outputs."""
    down = [True]

    def flaky(req: Any, schema: Any) -> str:
        if down[0]:
            raise EngineUnavailableError("engine core died")
        return "ok:" + str(req.prompt)

    cache = LLMCache(tmp_path / "c.sqlite")
    engine = CachingEngine(FakeEngine(generate_fn=flaky), cache)
    with pytest.raises(EngineError, match="died"):
        engine.generate(["p"], max_tokens=8)
    replay = CachingEngine(None, cache, identity=engine.identity)
    with pytest.raises(EngineError, match="died"):  # what the recorded run saw
        replay.generate(["p"], max_tokens=8)
    down[0] = False
    assert [g.text for g in engine.generate(["p"], max_tokens=8)] == ["ok:p"]  # resumed: asked again
    assert [g.text for g in replay.generate(["p"], max_tokens=8)] == ["ok:p"]


def test_validation_part_never_sees_a_test_target() -> None:
    data = _dataset()
    test = make_split(data, Protocol(min_history=3))
    targets = {(c.user_id, i) for c in test.cases for i in c.gold}
    val = make_split(data, Protocol(min_history=3, part="validation"))
    assert val.notes is not None and val.notes["part"] == "validation" and val.notes["test_targets_removed"] == 6
    assert len(val.cases) == 6 and val.train is not None
    for case in val.cases:
        assert case.gold == {f"i{(int(case.user_id[1:]) + 5) % 20}": 1}  # the user's t5
        assert len(case.history) == 5  # t0..t4: the target t5 is the last train positive; t6, t7 were test
        assert not {(case.user_id, i) for i in case.gold} & targets
        assert not {(case.user_id, h.item_id) for h in case.history} & targets
    train_pairs = {(u, i) for u in val.train.user_ids for i in (h.item_id for h in val.train.history(u))}
    assert not train_pairs & targets  # nor does the log that retrieval and the baselines see
    # only the listed users, with counts of what was given
    only = make_split(data, Protocol(min_history=3, part="validation", user_ids=("u1", "u4", "nobody")))
    assert [c.user_id for c in only.cases] == ["u1", "u4"]
    assert only.notes == {"user_ids_given": 3, "user_ids_evaluated": 2, "user_ids_unknown": 1,
                          "user_ids_not_eligible": 0, "part": "validation", "test_targets_removed": 6}  # fmt: skip
    with pytest.raises(InputError, match="none of the 2 user ids"):
        make_split(data, Protocol(min_history=3, user_ids=("x", "y")))
    conv = EvalDataset(name="c", kind="conversations", catalog_path=Path("x"), catalog_format="csv", mapping=None,
                       items={}, cases=test.cases)  # fmt: skip
    with pytest.raises(InputError, match="needs an interaction log"):
        make_split(conv, Protocol(part="validation"))


def test_runs_recorded_before_the_part_field_can_still_be_resumed() -> None:
    from eval.runner import _config_protocol

    assert "part" not in _config_protocol(Protocol()) and "user_ids" not in _config_protocol(Protocol())
    assert _config_protocol(Protocol(part="validation", user_ids=("1",)))["user_ids"] == ["1"]


def test_merge_caches_counts_refuses_bad_input_and_keeps_the_first_output(tmp_path: Path) -> None:
    def record(folder: str, arm: str, prompts: list[str], model_id: str = "fake-model", tag: str = "") -> Path:
        cache = LLMCache(tmp_path / folder / "llm_cache.sqlite")
        engine = CachingEngine(FakeEngine(generate_fn=lambda r, s: tag + str(r.prompt), model_id=model_id), cache)
        engine.generate(prompts, max_tokens=8)
        cache.set_engine(arm, engine.identity)
        cache.close()
        return tmp_path / folder

    a = record("a", "arm-a", ["p1", "p2"])
    b = record("b", "arm-b", ["p2", "p3"])
    c = record("c", "arm-c", ["p1"], tag="changed:")  # same request, another output
    report = merge_caches([a, b, c], tmp_path / "m")
    assert [(r["responses"], r["added"], r["already_held"], r["conflicts"]) for r in report.sources] == [
        (2, 2, 0, 0),
        (2, 1, 1, 0),
        (1, 0, 0, 1),
    ]
    assert report.responses == 3 and report.added == 3 and report.conflicts == 1
    merged = LLMCache(tmp_path / "m" / "llm_cache.sqlite")
    identity = merged.engine("arm-a")
    assert identity is not None and merged.engine("arm-c") == identity
    replay = CachingEngine(None, merged, identity=identity)
    assert [g.text for g in replay.generate(["p1", "p2", "p3"], max_tokens=8)] == ["p1", "p2", "p3"]  # first kept
    merged.close()
    assert merge_caches([a], tmp_path / "m").added == 0  # merging again adds nothing

    other = record("o", "arm-a", ["p9"], model_id="other-model")  # same arm name, another model
    with pytest.raises(InputError, match="arm 'arm-a' was recorded with different engines"):
        merge_caches([a, other], tmp_path / "refused")
    assert not (tmp_path / "refused").exists()  # refused before anything is written
    with pytest.raises(InputError, match="does not exist"):
        merge_caches([tmp_path / "nowhere"], tmp_path / "refused")
    (tmp_path / "plain.sqlite").write_bytes(b"not a database at all, just text" * 4)
    with pytest.raises(InputError, match="not an SQLite file"):
        merge_caches([tmp_path / "plain.sqlite"], tmp_path / "refused")
    sqlite3.connect(tmp_path / "other.sqlite").execute("CREATE TABLE t (x)").connection.commit()
    with pytest.raises(InputError, match="not an evaluator LLM cache"):
        merge_caches([tmp_path / "other.sqlite"], tmp_path / "refused")
    with pytest.raises(InputError, match="both a source and the destination"):
        merge_caches([a, b], a)
    with pytest.raises(InputError, match="no LLM cache"):
        merge_caches([], tmp_path / "refused")
    assert not (tmp_path / "refused").exists()
