"""The fallback policy on a scripted engine: every failure gives the retrieval order, k items and a reason."""

from __future__ import annotations

import json
import time

import pytest

from agent.errors import EngineError, EngineUnavailableError
from agent.llm.base import Generation, LLMRequest
from agent.rerank import RankingContext, RerankConfig, RerankResult, rank, rank_many
from prompts import PromptError, PromptRegistry

from fakes import FakeEngine, Taste, kind_of, make_candidates, make_user

LLM_STRATEGIES = ["listwise", "options", "pointwise"]


def assert_retrieval_fallback(result: RerankResult, n: int, k: int, reason_prefix: str) -> None:
    assert result.fallback_reason is not None and result.fallback_reason.startswith(reason_prefix)
    assert result.item_ids == [f"b{i}" for i in range(min(n, k))]
    for it in result.items:
        assert "fallback" in it.flags
        assert it.justification and it.justification_source == "template" and it.grounded
        assert it.llm_score is None
        assert it.grounding_note and reason_prefix in it.grounding_note


@pytest.mark.parametrize("strategy", LLM_STRATEGIES)
@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (EngineError("the server answered 500"), "engine_error: the server answered 500"),
        (EngineUnavailableError("vLLM is not installed"), "engine_error: vLLM is not installed"),
        (RuntimeError("CUDA fell over"), "engine_error: RuntimeError: CUDA fell over"),
    ],
)
def test_engine_errors_fall_back(strategy: str, error: Exception, reason: str, registry: PromptRegistry) -> None:
    engine = FakeEngine(error=error)
    result = rank(engine, registry, make_user(), make_candidates(6), k=4, strategy=strategy)
    assert_retrieval_fallback(result, 6, 4, reason)
    assert engine.methods()[-1] != "generate" or strategy == "listwise"  # no explain call after a failure


def test_no_engine_falls_back(registry: PromptRegistry) -> None:
    result = rank(None, registry, make_user(), make_candidates(3), k=5, strategy="options")
    assert_retrieval_fallback(result, 3, 5, "engine_error: no LLM engine")


def test_invalid_json_falls_back_with_the_raw_output(registry: PromptRegistry) -> None:
    engine = FakeEngine(lambda req, schema: "Sure! Here is my ranking: b1, b2")
    result = rank(engine, registry, make_user(), make_candidates(5), k=3, strategy="listwise")
    assert_retrieval_fallback(result, 5, 3, "invalid_output")
    assert result.parse_failures == 1 and result.raw == ["Sure! Here is my ranking: b1, b2"]


@pytest.mark.parametrize("validate", [True, False])
def test_cut_off_output_falls_back(validate: bool, registry: PromptRegistry) -> None:
    cut = Generation(
        text='{"ranking":[{"id":"b1","justif', prompt_tokens=50, completion_tokens=8, finish_reason="length"
    )
    engine = FakeEngine(lambda req, schema: cut, validate=validate)
    result = rank(
        engine, registry, make_user(), make_candidates(5), k=3, strategy="listwise", config=RerankConfig(max_tokens=8)
    )
    assert_retrieval_fallback(result, 5, 3, "invalid_output")
    assert engine.calls[0].max_tokens == 8


def test_empty_ranking_falls_back(registry: PromptRegistry) -> None:
    engine = FakeEngine(
        lambda req, schema: json.dumps({"ranking": [{"id": "nope", "justification": "x"}]}), validate=False
    )
    result = rank(engine, registry, make_user(), make_candidates(5), k=3, strategy="listwise")
    assert_retrieval_fallback(result, 5, 3, "empty")
    assert result.off_candidate == 1


@pytest.mark.parametrize("strategy", LLM_STRATEGIES)
def test_timeout_falls_back(strategy: str, registry: PromptRegistry) -> None:
    engine = FakeEngine(Taste({}).generate, Taste({}).score, delay_s=0.4)
    started = time.perf_counter()
    result = rank(
        engine, registry, make_user(), make_candidates(4), k=2, strategy=strategy, config=RerankConfig(timeout_s=0.05)
    )
    assert time.perf_counter() - started < 0.35
    assert_retrieval_fallback(result, 4, 2, "timeout")
    time.sleep(0.45)  # let the abandoned call finish before the engine is reused


def test_one_broken_user_does_not_sink_the_batch(registry: PromptRegistry) -> None:
    """The engine raises for the whole batch when one output is invalid; the requests are then isolated."""
    good = Taste({"Book 2": 3.0})

    def script(req: LLMRequest, schema: dict[str, object] | None) -> str:
        if kind_of(req) == "listwise" and "BROKEN" in "".join(m.content for m in req.messages or ()):
            return "not json"
        return good.generate(req, schema)

    engine = FakeEngine(script)
    ctxs = [
        RankingContext(
            user=make_user(user_id=u, need=need),
            candidates=make_candidates(4),
            k=2,
            config=RerankConfig(strategy="listwise", explain="template", llm_weight=1.0),
        )
        for u, need in (("u1", "books"), ("u2", "BROKEN"), ("u3", "more books"))
    ]
    results = rank_many(engine, registry, ctxs)
    assert [r.fallback_reason for r in results] == [None, "invalid_output", None]
    # one engine call: the broken output fails alone, the valid ones are kept (before: bisection [3, 1, 2, 1, 1])
    assert [len(c.requests) for c in engine.calls] == [3]
    assert results[0].item_ids[0] == "b2" and results[1].item_ids == ["b0", "b1"]


def test_pointwise_finds_single_token_yes_no_labels(registry: PromptRegistry) -> None:
    """A tokenizer where only ' Yes' / ' No' are single tokens: the 4-label form is refused, the next works,
    and the engine remembers it."""
    taste = Taste({"Book 1": 4.0})
    engine = FakeEngine(taste.generate, taste.score, single_tokens={" Yes", " No"}, model_id="space-only")
    cfg = RerankConfig(strategy="pointwise", llm_weight=1.0, explain="none")
    result = rank(engine, registry, make_user(), make_candidates(3), k=3, config=cfg)
    assert result.fallback_reason is None and result.item_ids[0] == "b1"
    assert [c.labels for c in engine.calls] == [[" Yes", "Yes", " No", "No"], [" Yes", " No"]]
    rank(engine, registry, make_user(), make_candidates(3), k=3, config=cfg)
    assert engine.calls[-1].labels == [" Yes", " No"] and len(engine.calls) == 3


def test_pointwise_uses_both_yes_variants(registry: PromptRegistry) -> None:
    def score(req: LLMRequest, labels: list[str]) -> dict[str, float]:
        return {" Yes": -1.0, "Yes": -1.0, " No": -2.0, "No": -50.0}

    engine = FakeEngine(score_fn=score, model_id="all-four")
    result = rank(
        engine,
        registry,
        make_user(),
        make_candidates(2),
        k=2,
        strategy="pointwise",
        config=RerankConfig(explain="none"),
    )
    import math

    expected = math.log(2 * math.exp(-1.0)) - math.log(math.exp(-2.0) + math.exp(-50.0))
    assert result.items[0].llm_score == pytest.approx(expected)


def test_edge_sizes(registry: PromptRegistry) -> None:
    engine = FakeEngine(Taste({}).generate, Taste({}).score)
    assert rank(engine, registry, make_user(), [], k=3, strategy="options").items == []
    one = rank(engine, registry, make_user(), make_candidates(1), k=3, strategy="listwise")
    assert one.item_ids == ["b0"] and one.fallback_reason is None
    dup = make_candidates(3)
    res = rank(engine, registry, make_user(), [*dup, dup[0]], k=10, strategy="options")
    assert res.item_ids.count("b0") == 1 and len(res.items) == 3


def test_unknown_template_is_a_loud_config_error(registry: PromptRegistry) -> None:
    with pytest.raises(PromptError, match="rank_optionz"):
        rank(
            FakeEngine(),
            registry,
            make_user(),
            make_candidates(3),
            k=2,
            config=RerankConfig(options_template="rank_optionz"),
        )


def test_a_template_of_the_wrong_task_is_refused(registry: PromptRegistry) -> None:
    with pytest.raises(PromptError, match="implements task 'rank_listwise'"):
        rank(
            FakeEngine(),
            registry,
            make_user(),
            make_candidates(3),
            k=2,
            config=RerankConfig(options_template="rank_listwise"),
        )


def test_options_without_any_label_probability_fall_back_as_empty(registry: PromptRegistry) -> None:
    engine = FakeEngine(score_fn=lambda req, labels: dict.fromkeys(labels, float("-inf")))
    result = rank(
        engine, registry, make_user(), make_candidates(4), k=3, strategy="options", config=RerankConfig(calibrate=False)
    )
    assert_retrieval_fallback(result, 4, 3, "empty")


def test_a_single_candidate_needs_no_ranking_call(registry: PromptRegistry) -> None:
    engine = FakeEngine(Taste({}).generate, Taste({}).score)
    result = rank(engine, registry, make_user(), make_candidates(1), k=3, strategy="listwise")
    assert result.item_ids == ["b0"] and result.items[0].flags == []
    assert [kind_of(c.requests[0]) for c in engine.calls] == ["explain"]


def test_an_in_process_engine_is_never_entered_twice(registry: PromptRegistry) -> None:
    """After a timeout the abandoned call keeps running; the next call waits for it instead of entering the
    engine concurrently (vLLM's in-process engine is not thread-safe)."""
    engine = FakeEngine(Taste({}).generate, Taste({}).score, delay_s=0.3)
    engine.backend = "vllm"
    timed_out = rank(
        engine,
        registry,
        make_user(),
        make_candidates(3),
        k=2,
        strategy="options",
        config=RerankConfig(timeout_s=0.05, calibrate=False, explain="none"),
    )
    assert timed_out.fallback_reason == "timeout"
    ok = rank(
        engine,
        registry,
        make_user(),
        make_candidates(3),
        k=2,
        strategy="options",
        config=RerankConfig(calibrate=False, explain="none"),
    )
    assert ok.fallback_reason is None and engine.max_active == 1
