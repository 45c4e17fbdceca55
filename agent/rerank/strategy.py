"""The one interface of a ranking strategy, and the render -> engine call -> parse -> scores loop written once.

A strategy turns a batch of :class:`~agent.rerank.job.Job` (one per user) into one score per candidate for each job
(``job.conclude(vectors)``), or a fallback reason (``job.fail(reason)``). :class:`RankingStrategy` is the whole
contract (:meth:`RankingStrategy.run`); strategies that prompt the LLM subclass :class:`PromptStrategy`, which runs
the shared loop:

    prepare (once per batch, e.g. calibration) -> render every job's requests (a PromptError sends that job to
    fallback) -> ONE engine call for all requests of the batch -> parse each result into the job's score vectors
    -> conclude every job (mean over its vectors; none -> fallback with the most telling reason)

A strategy object holds the state of one batch (``create_strategy`` makes a fresh one per stage), so its parse
step may collect per-job vectors on ``self``. See :mod:`agent.rerank.registry` for how to add a strategy.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from agent.llm.base import LLMEngine
from agent.rerank.job import Job
from agent.schemas import RerankConfig
from prompts import PromptError, PromptRegistry

__all__ = ["PromptStrategy", "RankRequest", "RankingStrategy"]


@dataclass
class RankRequest:
    """One engine request of a strategy: the job it ranks for, what it covers (``unit``: an order, a window, a
    candidate: the strategy's own bookkeeping), the chat messages, and the JSON schema of its output if any."""

    job: Job
    unit: Any
    messages: list[dict[str, str]]
    schema: dict[str, object] | None = None


class RankingStrategy(ABC):
    """A way to score a batch of jobs' candidates. Subclasses set ``name`` (the ``RerankConfig.strategy`` value)."""

    name: ClassVar[str]
    uses_engine: ClassVar[bool] = True
    """False for a strategy that scores without the LLM: it also runs when no engine is configured."""
    lists_items: ClassVar[bool] = False
    """True when the model lists a subset of the candidates: the others are flagged ``appended_missing``."""

    @classmethod
    def template(cls, config: RerankConfig) -> str | None:
        """The prompt template this strategy renders under ``config`` (checked before any engine call), or None."""
        return config.template_for(cls.name)

    @classmethod
    def task(cls) -> str:
        """The task that template must implement."""
        return f"rank_{cls.name}"

    @classmethod
    def final_order(cls, job: Job) -> tuple[list[int], list[float]] | None:
        """The top-k positions and final scores when the strategy orders the job itself (no blend with the retrieval
        order, no popularity penalty or MMR); None (the default) lets the core blend ``job.llm_scores``."""
        return None

    @abstractmethod
    def run(self, engine: LLMEngine | None, registry: PromptRegistry, jobs: Sequence[Job]) -> None:
        """Score every job (``job.conclude``) or send it to fallback (``job.fail``)."""


class PromptStrategy(RankingStrategy):
    """A strategy that prompts the LLM: implement :meth:`render`, :meth:`call`, :meth:`parse` and :meth:`vectors`
    (and :meth:`prepare` if the batch needs a step before rendering); :meth:`run` is the shared loop."""

    def prepare(self, engine: LLMEngine, registry: PromptRegistry, jobs: Sequence[Job]) -> None:
        """Once per batch, before rendering (default: nothing)."""

    @abstractmethod
    def render(self, registry: PromptRegistry, job: Job) -> list[RankRequest]:
        """The engine requests of one job; raise :class:`PromptError` when a prompt cannot be rendered."""

    @abstractmethod
    def call(self, engine: LLMEngine, requests: Sequence[RankRequest], timeout: float | None) -> Sequence[Any]:
        """One engine call for the requests of the whole batch: a result or a ``CallFailure`` per request."""

    @abstractmethod
    def parse(self, request: RankRequest, result: Any) -> None:
        """Account one request's result on its job (tokens, raw output, failures) and keep its score vector."""

    @abstractmethod
    def vectors(self, job: Job) -> list[list[float]]:
        """The job's usable score vectors (one per order or pass), averaged by ``job.conclude``."""

    def run(self, engine: LLMEngine | None, registry: PromptRegistry, jobs: Sequence[Job]) -> None:
        if engine is None:
            raise ValueError(f"the {self.name} strategy needs an engine")  # rank_many never calls it without one
        self.prepare(engine, registry, jobs)
        requests = self._render_all(registry, jobs)
        if not requests:
            return
        timeouts = [r.job.config.timeout_s for r in requests if r.job.config.timeout_s is not None]
        started = time.perf_counter()
        results = self.call(engine, requests, min(timeouts) if timeouts else None)
        elapsed = (time.perf_counter() - started) * 1000
        for request, result in zip(requests, results, strict=True):
            request.job.timings["rank"] = elapsed
            self.parse(request, result)
        for job in {id(r.job): r.job for r in requests}.values():
            if job.fallback_reason is None:
                job.conclude(self.vectors(job))

    def _render_all(self, registry: PromptRegistry, jobs: Sequence[Job]) -> list[RankRequest]:
        requests: list[RankRequest] = []
        for job in jobs:
            try:
                mine = self.render(registry, job)
            except PromptError as exc:
                job.fail(f"prompt_error: {exc.message}")
                continue
            requests.extend(mine)
        return requests
