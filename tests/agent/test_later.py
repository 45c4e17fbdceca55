"""Recommendations first, justifications after (agent/later.py): template reasons at once, LLM justifications
filled in afterwards, one event per item in rank order; engine errors keep the template reason and say why."""

from __future__ import annotations

from typing import Any

from agent.errors import EngineError
from agent.later import PENDING_FLAG, defer, justify_events, pending_requests
from agent.rerank import rank_many
from agent.schemas import RankingContext, RerankConfig
from prompts import PromptRegistry

from fakes import FakeEngine, Taste, kind_of, make_candidates, make_user


def _ctx(k: int = 4, **config: Any) -> RankingContext:
    cfg = RerankConfig(**{"strategy": "retrieval", "explain": "llm", **config})
    return RankingContext(user=make_user(), candidates=make_candidates(8), k=k, config=cfg)


def _explain_calls(engine: FakeEngine) -> int:
    return sum(1 for c in engine.calls if c.requests and kind_of(c.requests[0]) == "explain")


def test_deferred_ranking_shows_template_reasons_and_makes_no_explain_call() -> None:
    engine, registry, ctx = FakeEngine(Taste({}).generate), PromptRegistry(), _ctx()
    result = rank_many(engine, registry, [defer(ctx)])[0]
    todo = pending_requests(ctx, result)
    assert _explain_calls(engine) == 0
    assert len(todo) == 4 and [r.item.id for r in todo] == [i.item_id for i in result.items]
    assert all(r.config.explain == "llm" for r in todo)
    for item in result.items:
        assert item.justification and item.justification_source == "template"
        assert PENDING_FLAG in item.flags and "template_justification" not in item.flags


def test_events_come_in_rank_order_with_llm_justifications() -> None:
    engine, registry, ctx = FakeEngine(Taste({}).generate), PromptRegistry(), _ctx()
    result = rank_many(engine, registry, [defer(ctx)])[0]
    todo = pending_requests(ctx, result)
    usage: dict[str, Any] = {}
    events = list(justify_events(engine, registry, result.items, todo, usage=usage))
    assert [e.rank for e in events] == [1, 2, 3, 4]
    assert [e.item_id for e in events] == [i.item_id for i in result.items]
    assert all(e.justification_source == "llm" and e.grounded and e.error is None for e in events)
    assert all(PENDING_FLAG not in e.flags for e in events)
    assert _explain_calls(engine) == 1  # all four in one engine call (chunk 0)
    assert usage["llm_calls"] == 4 and usage["prompt_tokens"] > 0 and usage["prompt_versions"]


def test_chunks_send_one_engine_call_per_chunk_and_yield_as_each_finishes() -> None:
    engine, registry, ctx = FakeEngine(Taste({}).generate), PromptRegistry(), _ctx()
    result = rank_many(engine, registry, [defer(ctx)])[0]
    todo = pending_requests(ctx, result)
    seen = []
    for event in justify_events(engine, registry, result.items, todo, chunk=3):
        seen.append((event.rank, _explain_calls(engine)))
    assert seen == [(1, 1), (2, 1), (3, 1), (4, 2)]  # items 1-3 arrive before the second call starts


def test_engine_error_keeps_the_template_reason_and_says_why() -> None:
    registry, ctx = PromptRegistry(), _ctx()
    result = rank_many(FakeEngine(), registry, [defer(ctx)])[0]
    templates = [i.justification for i in result.items]
    broken = FakeEngine(error=EngineError("the engine crashed"))
    events = list(justify_events(broken, registry, result.items, pending_requests(ctx, result)))
    assert [e.justification for e in events] == templates
    assert all(e.justification_source == "template" and e.grounded for e in events)
    assert all(e.error and "engine_error" in e.error for e in events)


def test_unexpected_failure_keeps_the_template_reason() -> None:
    registry, ctx = PromptRegistry(), _ctx(explain_template="no-such-template")
    result = rank_many(FakeEngine(), registry, [defer(ctx)])[0]
    events = list(justify_events(FakeEngine(), registry, result.items, pending_requests(ctx, result)))
    assert len(events) == 4
    assert all(e.justification_source == "template" and "no-such-template" in (e.error or "") for e in events)


def test_nothing_pending_without_llm_justifications_or_after_a_fallback() -> None:
    registry = PromptRegistry()
    ctx = _ctx(explain="template")
    assert defer(ctx) is ctx
    assert pending_requests(ctx, rank_many(FakeEngine(), registry, [ctx])[0]) == []
    fallen = _ctx(strategy="options")
    result = rank_many(FakeEngine(error=EngineError("down")), registry, [defer(fallen)])[0]
    assert result.fallback_reason and pending_requests(fallen, result) == []
    assert all(PENDING_FLAG not in i.flags for i in result.items)
