"""The strategy registry and the shared render -> call -> parse -> scores loop: a strategy plugged in by a registry
entry alone is run by rank_many, with the loop's fallback rules."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import pytest

from agent.llm.base import LLMEngine
from agent.rerank import STRATEGIES, RankingContext, RerankConfig, rank, rank_many
from agent.rerank.job import Job
from agent.rerank.registry import RETRIEVAL, STRATEGY_CLASSES
from agent.rerank.strategy import PromptStrategy, RankingStrategy, RankRequest
from agent.schemas import LLM_STRATEGIES
from prompts import PromptError, PromptRegistry

from fakes import FakeEngine, make_candidates, make_user


def test_every_configurable_strategy_is_registered_under_its_name() -> None:
    assert set(STRATEGY_CLASSES) == set(STRATEGIES) - {RETRIEVAL}
    for name, cls in STRATEGY_CLASSES.items():
        assert issubclass(cls, RankingStrategy) and cls.name == name
        if cls.uses_engine:
            assert cls.task() == f"rank_{name}"
            assert cls.template(RerankConfig()) == RerankConfig().template_for(name)
        else:
            assert cls.template(RerankConfig()) is None
    assert {n for n, cls in STRATEGY_CLASSES.items() if cls.uses_engine} == set(LLM_STRATEGIES)


class ReverseWithoutLLM(RankingStrategy):
    """Scores the retrieval order backwards and needs no engine (the shape of a learned ranker)."""

    name = "pointwise"
    uses_engine = False

    @classmethod
    def template(cls, config: RerankConfig) -> str | None:
        return None

    def run(self, engine: LLMEngine | None, registry: PromptRegistry, jobs: Sequence[Job]) -> None:
        for job in jobs:
            job.conclude([[float(i) for i in range(job.n)]])


def test_a_strategy_without_engine_runs_from_its_registry_entry(
    registry: PromptRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(STRATEGY_CLASSES, "pointwise", ReverseWithoutLLM)
    cfg = RerankConfig(strategy="pointwise", llm_weight=1.0, explain="none")
    result = rank(None, registry, make_user(), make_candidates(5), k=5, config=cfg)
    assert result.fallback_reason is None
    assert result.item_ids == ["b4", "b3", "b2", "b1", "b0"]
    assert [it.llm_score for it in result.items] == [4.0, 3.0, 2.0, 1.0, 0.0]


class TwoPasses(PromptStrategy):
    """Two requests per job; the 'engine call' answers each with a score vector that favours one candidate.
    Rendering fails for users whose id starts with 'bad'."""

    name = "pointwise"
    made: ClassVar[list[TwoPasses]] = []

    def __init__(self) -> None:
        self.got: dict[int, list[list[float]]] = {}
        self.calls = 0
        TwoPasses.made.append(self)

    def render(self, registry: PromptRegistry, job: Job) -> list[RankRequest]:
        if str(job.ctx.user.user_id).startswith("bad"):
            raise PromptError("no prompt for this user", hint="test")
        return [RankRequest(job, favourite, [{"role": "user", "content": "rank"}]) for favourite in (1, 2)]

    def call(self, engine: LLMEngine, requests: Sequence[RankRequest], timeout: float | None) -> Sequence[Any]:
        self.calls += 1
        return [r.unit for r in requests]

    def parse(self, request: RankRequest, result: Any) -> None:
        vector = [0.0] * request.job.n
        vector[result] = 1.0
        self.got.setdefault(request.job.index, []).append(vector)

    def vectors(self, job: Job) -> list[list[float]]:
        return self.got.get(job.index, [])


def test_the_shared_loop_averages_vectors_and_isolates_a_render_failure(
    registry: PromptRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(STRATEGY_CLASSES, "pointwise", TwoPasses)
    monkeypatch.setattr(TwoPasses, "made", [])
    cfg = RerankConfig(strategy="pointwise", llm_weight=1.0, explain="none")
    ctxs = [
        RankingContext(user=make_user(user_id=uid), candidates=make_candidates(4), k=4, config=cfg)
        for uid in ("u1", "bad-user", "u2")
    ]
    engine = FakeEngine()
    good, bad, other = rank_many(engine, registry, ctxs)
    assert len(TwoPasses.made) == 1 and TwoPasses.made[0].calls == 1, (
        "one strategy object and one engine call for the batch"
    )
    for result in (good, other):
        assert result.fallback_reason is None
        assert [it.llm_score for it in result.items][:2] == [0.5, 0.5]  # mean of the two passes
        assert result.item_ids[:2] == ["b1", "b2"]
    assert bad.fallback_reason is not None and bad.fallback_reason.startswith("prompt_error")
    assert bad.item_ids == ["b0", "b1", "b2", "b3"]


def test_no_engine_sends_llm_strategies_to_fallback(registry: PromptRegistry) -> None:
    cfg = RerankConfig(strategy="listwise", explain="none")
    result = rank(None, registry, make_user(), make_candidates(3), k=3, config=cfg)
    assert result.fallback_reason == "engine_error: no LLM engine is configured"
    assert result.item_ids == ["b0", "b1", "b2"]
