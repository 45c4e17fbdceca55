"""Pointwise strategy: one ``rank_pointwise`` prompt per candidate; score = log P(Yes) - log P(No) of the next
token. The user part of the prompt comes first and is byte-identical across a user's candidates, so vLLM's
prefix cache computes it once.

Yes/No tokens: after ``Answer (Yes or No):`` a tokenizer may continue with ``" Yes"`` (leading space, the usual
SentencePiece/BPE form) or ``"Yes"``. On Gemma 3 all four of ``" Yes"``, ``"Yes"``, ``" No"``, ``"No"`` are single
tokens, so the score uses the log-sum-exp over both variants of each answer. Engines refuse labels that are not
one token; we then fall back to ``[" Yes", " No"]``, then ``["Yes", "No"]``, and remember per engine which set
works (so steady state costs one call).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from agent.llm.base import LLMEngine, OptionScores
from agent.llm.batching import CallFailure, Outcome, call_batch, is_label_error
from agent.rerank.calibration import engine_key
from agent.rerank.job import Job
from agent.rerank.strategy import PromptStrategy, RankRequest
from agent.schemas import CandidateItem
from prompts import PromptRegistry, RenderedPrompt

__all__ = ["YES_NO_VARIANTS", "PointwiseStrategy", "render_judgement", "yes_no_score"]

YES_NO_VARIANTS: tuple[tuple[tuple[str, ...], tuple[str, ...]], ...] = (
    ((" Yes", "Yes"), (" No", "No")),
    ((" Yes",), (" No",)),
    (("Yes",), ("No",)),
)
_WORKING: dict[str, int] = {}


def _logsumexp(values: Sequence[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return -math.inf
    top = max(finite)
    return top + math.log(sum(math.exp(v - top) for v in finite))


def yes_no_score(logprobs: dict[str, float], yes: Sequence[str], no: Sequence[str]) -> float:
    """logsumexp(Yes variants) - logsumexp(No variants), clipped to a finite range."""
    diff = _logsumexp([logprobs[y] for y in yes]) - _logsumexp([logprobs[n] for n in no])
    return max(-1e6, min(1e6, diff)) if not math.isnan(diff) else 0.0


def _score(
    engine: LLMEngine, requests: list[list[dict[str, str]]], timeout: float | None
) -> tuple[Outcome[OptionScores], tuple[tuple[str, ...], tuple[str, ...]]]:
    key = engine_key(engine)
    tries = list(range(len(YES_NO_VARIANTS)))
    if key in _WORKING:
        tries.remove(_WORKING[key])
        tries.insert(0, _WORKING[key])
    outcome: Outcome[OptionScores] = Outcome([], 0)
    variant = YES_NO_VARIANTS[tries[0]]
    for t in tries:
        variant = YES_NO_VARIANTS[t]
        names = [*variant[0], *variant[1]]
        outcome = call_batch(
            engine,
            len(requests),
            lambda idx: engine.score_options([requests[i] for i in idx], names),  # noqa: B023 (called at once)
            timeout=timeout,
        )
        label_refused = all(
            isinstance(r, CallFailure) and r.error is not None and is_label_error(r.error) for r in outcome.results
        )
        if not label_refused:
            _WORKING[key] = t
            break
    return outcome, variant


def render_judgement(
    registry: PromptRegistry,
    template: str,
    history: list[dict[str, Any]],
    need: str,
    candidate: CandidateItem,
    *,
    include_text: bool,
) -> RenderedPrompt:
    """The prompt judging one candidate for a user (``history``/``need`` as ``UserContext.prompt_history`` and
    ``prompt_need`` give them); training renders its pointwise prompts through this too."""
    variables = {"history": history, "need": need, "candidate": candidate.prompt_vars(include_text=include_text)}
    return registry.render(template, variables, allow_extra=True)


class PointwiseStrategy(PromptStrategy):
    """One score_options call for every candidate of every job (more only while probing the Yes/No tokens); each
    request's ``unit`` is its candidate's position."""

    name = "pointwise"

    def __init__(self) -> None:
        self.scores: dict[int, list[float]] = {}  # job index -> Yes/No score per candidate
        self.failed: set[int] = set()  # jobs with a failed judgement
        self.yes_no: tuple[tuple[str, ...], tuple[str, ...]] = YES_NO_VARIANTS[0]

    def render(self, registry: PromptRegistry, job: Job) -> list[RankRequest]:
        cfg = job.config
        history, need = job.ctx.user.prompt_history(cfg.history_limit), job.ctx.user.prompt_need()
        mine = []
        for i, cand in enumerate(job.cands):
            rendered = render_judgement(
                registry, cfg.pointwise_template, history, need, cand, include_text=cfg.include_text
            )
            job.add_version(rendered.version_id)
            mine.append(RankRequest(job, i, rendered.chat_messages()))
        return mine

    def call(self, engine: LLMEngine, requests: Sequence[RankRequest], timeout: float | None) -> Sequence[Any]:
        outcome, self.yes_no = _score(engine, [r.messages for r in requests], timeout)
        return outcome.results

    def parse(self, request: RankRequest, result: OptionScores | CallFailure) -> None:
        job, i = request.job, request.unit
        if isinstance(result, CallFailure):
            job.llm_calls += 1
            job.reasons.append(result.reason)
            self.failed.add(job.index)
            return
        job.took_scores({"candidate": job.cands[i].id, "logprobs": result.logprobs}, result.prompt_tokens)
        self.scores.setdefault(job.index, [0.0] * job.n)[i] = yes_no_score(result.logprobs, *self.yes_no)

    def vectors(self, job: Job) -> list[list[float]]:
        # a user's candidates are judged against each other: one failed judgement sends the user to fallback
        return [] if job.index in self.failed else [self.scores[job.index]]
