"""Metrics: hand-computed cases, and equality with ranx on random runs (hypothesis)."""

from __future__ import annotations

import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.errors import InputError
from eval import metrics as M

QREL = {"a": 1, "b": 1}
RANKING = ["x", "a", "y", "b", "z"]  # relevant at ranks 2 and 4


def test_ranking_metrics_by_hand() -> None:
    assert M.hit_rate(QREL, RANKING, 1) == 0.0
    assert M.hit_rate(QREL, RANKING, 2) == 1.0
    assert M.precision(QREL, RANKING, 4) == 0.5
    assert M.recall(QREL, RANKING, 2) == 0.5
    assert M.recall(QREL, RANKING, 5) == 1.0
    assert M.f1(QREL, RANKING, 4) == pytest.approx(2 * 0.5 * 1.0 / 1.5)
    assert M.mrr(QREL, RANKING, 5) == 0.5
    assert M.mrr(QREL, RANKING, 1) == 0.0
    dcg = 1 / math.log2(3) + 1 / math.log2(5)
    idcg = 1 + 1 / math.log2(3)
    assert M.ndcg(QREL, RANKING, 5) == pytest.approx(dcg / idcg)
    assert M.mean_average_precision(QREL, RANKING, 5) == pytest.approx((1 / 2 + 2 / 4) / 2)
    assert M.mean_average_precision(QREL, RANKING, 3) == pytest.approx((1 / 2) / 2)  # divided by all relevant


def test_graded_ndcg_and_run_dicts() -> None:
    qrel = {"a": 2, "b": 1}
    run = {"b": 0.9, "a": 0.5, "c": 0.1}  # ranked b, a, c
    assert M.ranked_ids(run) == ["b", "a", "c"]
    expected = (1 + 2 / math.log2(3)) / (2 + 1 / math.log2(3))
    assert M.ndcg(qrel, run, 10) == pytest.approx(expected)
    assert M.ndcg({}, run, 10) == 0.0 and M.recall({}, run, 10) == 0.0


def test_evaluate_by_name_and_missing_cases() -> None:
    qrels = {"q1": {"a": 1}, "q2": {"b": 1}}
    run = {"q1": ["a", "c"]}  # q2 absent: scores 0
    out = M.evaluate(qrels, run, ["hit_rate@1", "mrr@10"])
    assert out == {"hit_rate@1": 0.5, "mrr@10": 0.5}
    with pytest.raises(InputError, match="unknown metric"):
        M.evaluate(qrels, run, ["ndcg10"])
    with pytest.raises(InputError, match="unknown metric"):
        M.parse_metric("bleu@3")
    with pytest.raises(InputError, match="no cases"):
        M.evaluate({}, run, ["ndcg@10"])


def test_beyond_accuracy_by_hand() -> None:
    lists = [["a", "b"], ["a", "c"]]
    assert M.catalog_coverage(lists, 10, 2) == 0.3
    assert M.catalog_coverage(lists, 10, 1) == 0.1
    genres = {"a": ["Comedy"], "b": ["Comedy", "Drama"], "c": ["Horror"]}
    assert M.intra_list_diversity(["a", "b"], 2, attributes=genres) == pytest.approx(0.5)
    assert M.intra_list_diversity(["a", "b", "c"], 3, attributes=genres) == pytest.approx((0.5 + 1 + 1) / 3)
    assert M.intra_list_diversity(["a"], 3, attributes=genres) is None
    vectors = {"a": [1.0, 0.0], "b": [0.0, 1.0], "c": [1.0, 0.0]}
    assert M.intra_list_diversity(["a", "b"], 2, vectors=vectors) == pytest.approx(1.0)
    assert M.intra_list_diversity(["a", "c"], 2, vectors=vectors) == pytest.approx(0.0)
    pop = {"a": 6.0, "b": 2.0, "c": 0.0}  # total 8; c counts as 1
    assert M.novelty(["a", "b"], pop, 2) == pytest.approx((-math.log2(6 / 8) - math.log2(2 / 8)) / 2)
    assert M.novelty(["c"], pop, 1) == pytest.approx(3.0)
    pct = M.popularity_percentiles(pop)
    assert pct == {"a": 1.0, "b": 0.5, "c": 0.0}
    assert M.popularity_bias(["a", "c"], pct, 2) == 0.5


def test_llm_failure_rates_and_cost() -> None:
    records = [
        {"llm_calls": 2, "parse_failures": 1, "off_candidate": 1, "duplicates": 0, "ranked": ["a", "b"],
         "fallback_reason": None, "grounded": [True, False], "agreement": 0.5, "prompt_tokens": 100,
         "completion_tokens": 10, "latency_ms": 10.0},
        {"llm_calls": 2, "parse_failures": 0, "off_candidate": 0, "duplicates": 2, "ranked": ["c", "d"],
         "fallback_reason": "engine_error: boom", "grounded": [None, True], "agreement": None, "prompt_tokens": 50,
         "completion_tokens": 0, "latency_ms": 30.0},
    ]  # fmt: skip
    rates = M.llm_failure_rates(records)
    assert rates["parse_failure_rate"] == 0.25
    assert rates["off_candidate_rate"] == 0.25 and rates["duplicate_rate"] == 0.5
    assert rates["fallback_rate"] == 0.5 and rates["fallback_by_reason"] == {"engine_error": 0.5}
    assert rates["grounding_rate"] == pytest.approx(2 / 3)
    assert rates["position_agreement"] == 0.5 and rates["position_sensitivity"] == 0.5
    cost = M.cost_summary(records)
    assert cost["prompt_tokens_mean"] == 75 and cost["completion_tokens_total"] == 10
    assert cost["latency_ms_p50"] == 20.0 and cost["latency_ms_p95"] == pytest.approx(29.0)
    assert M.llm_failure_rates([])["fallback_rate"] is None


# ------------------------------------------------------------------------------------------------ ranx
ITEMS = [f"d{i}" for i in range(12)]


@st.composite
def qrels_and_runs(draw: st.DrawFn) -> tuple[dict[str, dict[str, int]], dict[str, dict[str, float]]]:
    n_cases = draw(st.integers(1, 4))
    qrels, run = {}, {}
    for c in range(n_cases):
        rel_items = draw(st.lists(st.sampled_from(ITEMS), min_size=1, max_size=4, unique=True))
        qrels[f"q{c}"] = {i: draw(st.integers(1, 3)) for i in rel_items}
        ranked = draw(st.lists(st.sampled_from(ITEMS), min_size=1, max_size=12, unique=True))
        run[f"q{c}"] = {item: float(len(ranked) - r) for r, item in enumerate(ranked)}  # distinct scores
    return qrels, run


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=qrels_and_runs(), k=st.sampled_from([1, 3, 5, 10]))
def test_matches_ranx(data: tuple[dict[str, dict[str, int]], dict[str, dict[str, float]]], k: int) -> None:
    from ranx import Qrels, Run
    from ranx import evaluate as ranx_evaluate

    qrels, run = data
    names = [f"ndcg@{k}", f"mrr@{k}", f"recall@{k}", f"map@{k}", f"precision@{k}", f"hit_rate@{k}"]
    ours = M.evaluate(qrels, run, names)
    theirs = ranx_evaluate(Qrels(qrels), Run(run), names, make_comparable=True)
    for name in names:
        assert ours[name] == pytest.approx(float(theirs[name]), abs=1e-9), name
