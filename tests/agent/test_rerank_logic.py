"""Ranking logic on a scripted engine: blending, windows, order aggregation, calibration, MMR, batching."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from agent.llm.base import Generation, LLMRequest
from agent.rerank import RankingContext, RerankConfig, rank, rank_many
from agent.rerank.blend import average_ranks, blend_scores, kendall_tau, mean_pairwise_tau
from agent.rerank.options import split_windows, window_lift
from prompts import PromptRegistry

from fakes import Call, FakeEngine, Taste, kind_of, make_candidates, make_user, option_titles

LLM_STRATEGIES = ["listwise", "options", "pointwise"]


def reversed_taste(n: int, **kw: float) -> Taste:
    """Prefers the retrieval order's last item: the opposite of retrieval."""
    return Taste({f"Book {i}": float(i) for i in range(n)}, **kw)


def engine_for(taste: Taste, **kw: object) -> FakeEngine:
    return FakeEngine(taste.generate, taste.score, **kw)  # type: ignore[arg-type]


def check_invariants(ids: list[str], candidates: list[str], k: int) -> None:
    assert len(ids) == min(k, len(candidates))
    assert len(set(ids)) == len(ids)
    assert set(ids) <= set(candidates)


# ------------------------------------------------------------------------------------------------ pure math
def test_blend_math_by_hand() -> None:
    # llm ranks [3, 1, 2] -> [0, 1, .5]; retrieval [1, .5, 0]; w = .5
    assert blend_scores([0.0, 2.0, 1.0], 3, 0.5) == pytest.approx([0.5, 0.75, 0.25])
    assert blend_scores([5.0, 1.0], 2, 0.0) == [1.0, 0.0]
    assert blend_scores([1.0], 1, 1.0) == [1.0]
    assert average_ranks([3.0, 1.0, 3.0, 0.0]) == [1.5, 3.0, 1.5, 4.0]


def test_kendall_tau_by_hand() -> None:
    assert kendall_tau([1, 2, 3], [1, 2, 3]) == pytest.approx(1.0)
    assert kendall_tau([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    # pairs (0,1) concordant, (0,2) concordant, (1,2) discordant -> (2 - 1) / 3
    assert kendall_tau([1, 2, 3], [1, 3, 2]) == pytest.approx(1 / 3)
    assert mean_pairwise_tau([[1, 2, 3]]) is None


def test_windows_are_balanced_and_bounded() -> None:
    assert [len(w) for w in split_windows(list(range(21)), 20)] == [11, 10]
    assert [len(w) for w in split_windows(list(range(45)), 20)] == [15, 15, 15]
    assert [len(w) for w in split_windows(list(range(7)), 20)] == [7]
    assert sorted(i for w in split_windows(list(range(45)), 20) for i in w) == list(range(45))


def test_window_lift_subtracts_the_prior() -> None:
    logprobs = {"A": math.log(0.2), "B": math.log(0.8), "C": -50.0}
    raw = window_lift(logprobs, 2, None)
    assert raw == pytest.approx([math.log(0.2) + math.log(2), math.log(0.8) + math.log(2)])
    # a prior that explains B's advantage entirely leaves no preference
    flat = window_lift(logprobs, 2, [math.log(0.2), math.log(0.8)])
    assert flat == pytest.approx([0.0, 0.0], abs=1e-9)


# ------------------------------------------------------------------------------------------------ blending
@pytest.mark.parametrize("strategy", LLM_STRATEGIES)
def test_weight_zero_returns_the_retrieval_order_exactly(strategy: str, registry: PromptRegistry) -> None:
    cands = make_candidates(8)
    engine = engine_for(reversed_taste(8))
    cfg = RerankConfig(strategy=strategy, llm_weight=0.0, n_orders=2, explain="none")  # type: ignore[arg-type]
    result = rank(engine, registry, make_user(), cands, k=5, config=cfg)
    assert result.fallback_reason is None
    assert result.item_ids == [c.id for c in cands[:5]]
    assert engine.calls, "the LLM was still asked (its score is recorded, weight 0 ignores it)"
    assert all(it.llm_score is not None for it in result.items)


@pytest.mark.parametrize("strategy", LLM_STRATEGIES)
def test_weight_one_returns_the_llm_order(strategy: str, registry: PromptRegistry) -> None:
    cands = make_candidates(6)
    engine = engine_for(reversed_taste(6))
    cfg = RerankConfig(strategy=strategy, llm_weight=1.0, calibrate=False, explain="none")  # type: ignore[arg-type]
    result = rank(engine, registry, make_user(), cands, k=6, config=cfg)
    assert result.item_ids == [f"b{i}" for i in range(5, -1, -1)]
    assert [it.rank for it in result.items] == list(range(1, 7))
    assert [it.retrieval_rank for it in result.items] == list(range(6, 0, -1))


def test_default_weight_moves_items_only_a_little(registry: PromptRegistry) -> None:
    """The default (0.2) lets a model that disagrees completely with retrieval move an item by at most a
    quarter of the list."""
    cands = make_candidates(9)
    result = rank(
        engine_for(reversed_taste(9)),
        registry,
        make_user(),
        cands,
        k=9,
        config=RerankConfig(calibrate=False, explain="none"),
    )
    for it in result.items:
        assert abs(it.rank - it.retrieval_rank) <= 2


def test_mmr_and_popularity_penalty(registry: PromptRegistry) -> None:
    cands = make_candidates(3)
    engine = engine_for(reversed_taste(3))
    base = RerankConfig(llm_weight=0.0, calibrate=False, explain="none")
    emb = {"b0": [1.0, 0.0], "b1": [1.0, 0.0], "b2": [0.0, 1.0]}
    # final = [1, .5, 0]; MMR(.5): b0 (0.5), then b2 (0) beats b1 (.25 - .5)
    mmr = rank(
        engine, registry, make_user(), cands, k=3, config=base.model_copy(update={"mmr_lambda": 0.5}), embeddings=emb
    )
    assert mmr.item_ids == ["b0", "b2", "b1"]
    assert rank(engine, registry, make_user(), cands, k=3, config=base, embeddings=emb).item_ids == ["b0", "b1", "b2"]
    # popularity share of b0 is 1: 1 - 1 = 0 ties b2 (0) and keeps the retrieval order between them
    pop = rank(
        engine,
        registry,
        make_user(),
        cands,
        k=3,
        config=base.model_copy(update={"popularity_penalty": 1.0}),
        popularity={"b0": 1000.0},
    )
    assert pop.item_ids == ["b1", "b0", "b2"]
    assert pop.items[1].score == pytest.approx(0.0)


# ------------------------------------------------------------------------------------------------ options
def test_options_windows_keep_each_prompt_within_the_labels(registry: PromptRegistry) -> None:
    cands = make_candidates(25)
    engine = engine_for(reversed_taste(25))
    cfg = RerankConfig(option_window=10, llm_weight=1.0, calibrate=False, explain="none")
    result = rank(engine, registry, make_user(), cands, k=25, config=cfg)
    (call,) = engine.calls
    assert call.method == "score_options" and len(call.requests) == 3  # 25 -> 9 + 8 + 8
    assert call.labels == [chr(ord("A") + i) for i in range(9)]
    shown = [list(option_titles(r).values()) for r in call.requests]
    assert [len(s) for s in shown] == [9, 8, 8]
    assert sorted(t for s in shown for t in s) == sorted(c.title for c in cands)
    check_invariants(result.item_ids, [c.id for c in cands], 25)
    # the merged order keeps each window's own order (the best of every window is ahead of its rivals)
    pos = {i: result.item_ids.index(i) for i in result.item_ids}
    for titles in shown:
        ids = [f"b{t.split()[1]}" for t in titles]
        best_first = sorted(ids, key=lambda i: -int(i[1:]))
        assert [pos[i] for i in best_first] == sorted(pos[i] for i in ids)


def test_order_aggregation_is_the_mean_over_orders(registry: PromptRegistry) -> None:
    """Pure position bias, no calibration: each item's LLM score is the mean lift of the positions it held."""
    cands = make_candidates(4)
    engine = engine_for(Taste({}, position_bias=1.0))
    cfg = RerankConfig(n_orders=3, calibrate=False, llm_weight=1.0, explain="none", seed=7)
    result = rank(engine, registry, make_user(), cands, k=4, config=cfg)
    (call,) = engine.calls
    assert len(call.requests) == 3  # three permutations, one engine call
    lift = window_lift({lab: 1.0 * i - 10 for i, lab in enumerate("ABCD")}, 4, None)
    expected = {c.id: 0.0 for c in cands}
    orders = []
    for req in call.requests:
        titles = list(option_titles(req).values())
        orders.append(titles)
        for p, t in enumerate(titles):
            expected[f"b{t.split()[1]}"] += lift[p] / 3
    assert orders[0] == [c.title for c in cands]  # order 0 is the retrieval order
    assert len({tuple(o) for o in orders}) > 1
    for it in result.items:
        assert it.llm_score == pytest.approx(expected[it.item_id])
    assert result.agreement is not None and result.agreement < 1.0


def test_agreement_is_one_when_orders_agree(registry: PromptRegistry) -> None:
    cands = make_candidates(5)
    result = rank(
        engine_for(reversed_taste(5)),
        registry,
        make_user(),
        cands,
        k=3,
        config=RerankConfig(n_orders=3, calibrate=False, explain="none"),
    )
    assert result.agreement == pytest.approx(1.0)


def test_calibration_removes_the_position_bias(registry: PromptRegistry, tmp_path: Path) -> None:
    """A model that always prefers the last option (bias 5/position) but has a weak content signal: raw
    scores follow the position, calibrated ones follow the content."""
    cands = make_candidates(5)
    taste = Taste({"Book 1": 2.0, "Book 3": 1.0}, position_bias=5.0)
    raw = rank(
        engine_for(taste),
        registry,
        make_user(),
        cands,
        k=5,
        config=RerankConfig(calibrate=False, llm_weight=1.0, explain="none"),
    )
    assert raw.item_ids == ["b4", "b3", "b2", "b1", "b0"] and not raw.calibrated

    engine = engine_for(taste)
    cfg = RerankConfig(calibrate=True, llm_weight=1.0, explain="none", cache_dir=tmp_path)
    cal = rank(engine, registry, make_user(), cands, k=5, config=cfg)
    assert cal.calibrated
    assert cal.item_ids[:2] == ["b1", "b3"]
    content_free, _ranking = engine.calls
    assert all(set(option_titles(r).values()) <= {"N/A", "[MASK]", "none"} for r in content_free.requests)
    assert len(content_free.requests) == 3
    # cached in memory: a second ranking sends no content-free prompts
    rank(engine, registry, make_user(), cands, k=5, config=cfg)
    assert engine.methods() == ["score_options"] * 3
    # and on disk, keyed by engine, template version and label count
    stored = json.loads((tmp_path / "label_priors.json").read_text())["entries"]
    (key,) = stored
    assert key.startswith("fake:fake-model|rank_options@") and key.endswith("|5")
    assert len(stored[key]["prior"]) == 5 and stored[key]["prior"][4] > stored[key]["prior"][0]
    from agent.rerank.calibration import PriorCache

    PriorCache.clear_memory()
    fresh = engine_for(taste)
    again = rank(fresh, registry, make_user(), cands, k=5, config=cfg)
    assert fresh.methods() == ["score_options"] and again.item_ids == cal.item_ids


# ------------------------------------------------------------------------------------------------ listwise
def test_listwise_dedupes_drops_strangers_and_appends_the_missing(registry: PromptRegistry) -> None:
    cands = make_candidates(6)
    answer = {"ranking": [{"id": i, "justification": "Fits."} for i in ["b2", "b2", "evil", "b0"]]}
    engine = FakeEngine(lambda req, schema: json.dumps(answer), validate=False)  # a server without grammar
    result = rank(
        engine,
        registry,
        make_user(),
        cands,
        k=4,
        strategy="listwise",
        config=RerankConfig(llm_weight=1.0, explain="none"),
    )
    assert result.item_ids == ["b2", "b0", "b1", "b3"]
    assert result.duplicates == 1 and result.off_candidate == 1 and result.appended_missing == 2
    assert [("appended_missing" in it.flags) for it in result.items] == [False, False, True, True]
    schema = engine.calls[0].schemas[0]
    assert schema is not None
    assert schema["properties"]["ranking"]["items"]["properties"]["id"]["enum"] == [c.id for c in cands]
    assert schema["properties"]["ranking"]["minItems"] == 4


def test_listwise_orders_are_aggregated_with_borda(registry: PromptRegistry) -> None:
    """Order 0 is the retrieval order; a model that always picks the first two shown gives Borda points to
    whatever each permutation put first."""
    cands = make_candidates(4)

    def first_two(req: LLMRequest, schema: object) -> str:
        from fakes import listwise_ids

        ids = listwise_ids(req)[:2]
        return json.dumps({"ranking": [{"id": i, "justification": "Fits."} for i in ids]})

    engine = FakeEngine(first_two)
    result = rank(
        engine,
        registry,
        make_user(),
        cands,
        k=2,
        strategy="listwise",
        config=RerankConfig(n_orders=2, llm_weight=1.0, explain="none", seed=3),
    )
    (call,) = engine.calls
    assert len(call.requests) == 2
    from fakes import listwise_ids

    points = {c.id: 0.0 for c in cands}
    for req in call.requests:
        shown = listwise_ids(req)
        for j, i in enumerate(shown[:2]):
            points[i] += (4 - j) / 4 / 2
        for i in shown[2:]:
            points[i] += (4 - 2 + 1) / 2 / 4 / 2
    for it in result.items:
        assert it.llm_score == pytest.approx(points[it.item_id])
    assert result.agreement is not None


# ------------------------------------------------------------------------------------------------ batching
def test_rank_many_sends_one_engine_call_per_stage(registry: PromptRegistry) -> None:
    taste = reversed_taste(8)
    engine = engine_for(taste)
    users = [make_user(user_id=f"u{i}", need=f"need {i}") for i in range(6)]
    strategies = ["options", "options", "listwise", "listwise", "pointwise", "retrieval"]
    ctxs = [
        RankingContext(
            user=u,
            candidates=make_candidates(4 + i),
            k=3,
            config=RerankConfig(strategy=s, n_orders=2, seed=i, llm_weight=1.0),
        )  # type: ignore[arg-type]
        for i, (u, s) in enumerate(zip(users, strategies, strict=True))
    ]
    results = rank_many(engine, registry, ctxs)
    kinds = [(c.method, {kind_of(r) for r in c.requests}) for c in engine.calls]
    assert kinds == [
        ("score_options", {"options"}),  # content-free calibration prompts (both label counts in one call)
        ("score_options", {"options"}),
        ("generate", {"listwise"}),
        ("score_options", {"pointwise"}),
        ("generate", {"explain"}),
    ]
    sizes = [len(c.requests) for c in engine.calls]
    # calibration: 2 label counts x 3 placeholders; options: 2 users x 2 orders; listwise: 2 x 2; pointwise: 8
    # candidates; explain: 3 items for each user but the listwise ones (their JSON justifications passed)
    assert sizes == [6, 4, 4, 8, 12]
    for ctx, res in zip(ctxs, results, strict=True):
        assert res.fallback_reason is None
        check_invariants(res.item_ids, [c.id for c in ctx.candidates], 3)
        assert all(it.justification and it.grounded for it in res.items)
        assert res.llm_calls > 0 and res.prompt_versions
    assert results[5].llm_calls == 3  # retrieval order, LLM justifications


def test_explain_retries_of_many_users_share_one_call(registry: PromptRegistry) -> None:
    def lying(req: LLMRequest, schema: object) -> str:
        if kind_of(req) == "explain":
            return json.dumps({"justification": "A great pick.", "cited": [{"field": "genres", "value": "Western"}]})
        return "{}"

    engine = FakeEngine(lying)
    ctxs = [
        RankingContext(
            user=make_user(user_id=u), candidates=make_candidates(3), k=2, config=RerankConfig(strategy="retrieval")
        )
        for u in ("u1", "u2")
    ]
    results = rank_many(engine, registry, ctxs)
    assert [(c.method, len(c.requests)) for c in engine.calls] == [("generate", 4), ("generate", 4)]
    assert engine.calls[1].temperature == 0.7 and engine.calls[1].seed == 1
    for res in results:
        assert res.template_justifications == 2 and res.regenerated == 2


def test_calls_record_tokens_and_raw_outputs(registry: PromptRegistry) -> None:
    taste = reversed_taste(4)
    engine = FakeEngine(
        lambda r, s: Generation(text=taste.generate(r, s), prompt_tokens=100, completion_tokens=7, finish_reason="stop")
    )
    res = rank(
        engine,
        registry,
        make_user(),
        make_candidates(4),
        k=2,
        strategy="listwise",
        config=RerankConfig(explain="template"),
    )
    assert res.llm_calls == 1 and res.prompt_tokens == 100 and res.completion_tokens == 7
    assert json.loads(res.raw[0])["ranking"][0]["id"] == "b3"
    assert res.prompt_versions[0].startswith("rank_listwise@")
    assert "rank" in res.timings_ms and "total" in res.timings_ms
    assert isinstance(engine.calls[0], Call)
