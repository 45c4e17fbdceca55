"""Option-logit strategy: candidates lettered (A), (B) ... and scored by the next-token log-probability of each
letter, one forward pass per prompt.

Windows: a list longer than ``option_window`` (default 20) is cut into balanced contiguous windows (21
candidates -> 11 + 10, never a window of one). Every window of every order of every user goes into ONE
``score_options`` call, with the labels ``A..`` of the largest window; a smaller window uses its first ``m``
labels, renormalised over them (exact: they are next-token log-probs of the same distribution).
Merging windows: within a window the (calibrated) log-softmax over its ``m`` labels is turned into a lift over
chance, ``log p_i + log m`` (0 = no preference), which is comparable across windows of different sizes; each
order shuffles the whole list before windowing, so with ``n_orders > 1`` a candidate meets different rivals.
We chose this one-round merge over a tournament (winners of each window in a second round) because it keeps
one engine call per stage and scores every candidate, not only the window winners.
Calibration: see :mod:`agent.rerank.calibration`; the lift is computed after subtracting the position prior.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import Any

from agent.llm.base import LLMEngine, OptionScores, log_softmax_subset
from agent.llm.batching import CallFailure, call_batch
from agent.rerank.calibration import PriorCache, PriorKey, content_free_requests, engine_key, prior_from_scores
from agent.rerank.job import Job
from agent.rerank.strategy import PromptStrategy, RankRequest
from prompts import PromptRegistry, option_label

__all__ = ["OptionsStrategy", "calibrate_jobs", "split_windows", "window_lift"]

MAX_LABELS = 26


def labels(m: int) -> list[str]:
    return [option_label(i) for i in range(m)]


def split_windows(order: Sequence[int], size: int) -> list[list[int]]:
    """Cut ``order`` into ``ceil(n / size)`` contiguous windows whose sizes differ by at most one."""
    n = len(order)
    if n == 0:
        return []
    count = math.ceil(n / size)
    base, extra = divmod(n, count)
    out, start = [], 0
    for w in range(count):
        width = base + (1 if w < extra else 0)
        out.append(list(order[start : start + width]))
        start += width
    return out


def window_lift(logprobs: dict[str, float], m: int, prior: Sequence[float] | None) -> list[float]:
    """Lift over chance of each of the first ``m`` labels, after subtracting the position prior if given."""
    sub = log_softmax_subset({lab: logprobs[lab] for lab in labels(m)})
    values = [sub[lab] for lab in labels(m)]
    if prior is not None and all(math.isfinite(p) for p in prior):
        shifted = {str(i): v - p for i, (v, p) in enumerate(zip(values, prior, strict=True))}
        renorm = log_softmax_subset(shifted)
        values = [renorm[str(i)] for i in range(m)]
    return [v + math.log(m) for v in values]


def _windows(job: Job) -> list[tuple[int, list[int]]]:
    """(order index, window) pairs of a job."""
    return [(o, w) for o, perm in enumerate(job.orders()) for w in split_windows(perm, job.config.option_window)]


def calibrate_jobs(engine: LLMEngine, registry: PromptRegistry, jobs: Sequence[Job]) -> dict[PriorKey, list[float]]:
    """The label priors the jobs need: cached ones, plus one batched call for the missing ones."""
    key_of = engine_key(engine)
    needed: dict[PriorKey, PriorCache] = {}
    for job in jobs:
        if job.config.calibrate:
            version = registry.get(job.config.options_template).version_id
            for _, window in _windows(job):
                needed.setdefault((key_of, version, len(window)), PriorCache(job.config.cache_dir))
    priors: dict[PriorKey, list[float]] = {}
    missing: list[PriorKey] = []
    for key, cache in needed.items():
        found = cache.get(key)
        if found is not None:
            priors[key] = found
        else:
            missing.append(key)
    if not missing:
        return priors
    template_of = {registry.get(j.config.options_template).version_id: j.config.options_template for j in jobs}
    requests, owners = [], []
    for key in missing:
        for req in content_free_requests(registry, template_of[key[1]], key[2]):
            requests.append(req)
            owners.append(key)
    width = max(key[2] for key in missing)
    timeouts = [j.config.timeout_s for j in jobs if j.config.timeout_s is not None]
    started = time.perf_counter()
    outcome = call_batch(
        engine,
        len(requests),
        lambda idx: engine.score_options([requests[i] for i in idx], labels(width)),
        timeout=min(timeouts) if timeouts else None,
    )
    for job in jobs:
        job.timings["calibrate"] = (time.perf_counter() - started) * 1000
    for key in missing:
        got = [r for r, o in zip(outcome.results, owners, strict=True) if o == key]
        if got and all(isinstance(r, OptionScores) for r in got):
            prior = prior_from_scores([r for r in got if isinstance(r, OptionScores)], key[2])
            needed[key].put(key, prior)
            priors[key] = prior
    return priors


class OptionsStrategy(PromptStrategy):
    """One ``score_options`` call for every window of every order of every job."""

    name = "options"

    def __init__(self) -> None:
        self.priors: dict[PriorKey, list[float]] = {}
        self.key_of = ""
        self.orders: dict[int, dict[int, list[float]]] = {}  # job index -> order -> score vector
        self.broken: set[tuple[int, int]] = set()  # (job index, order) with a failed window

    def prepare(self, engine: LLMEngine, registry: PromptRegistry, jobs: Sequence[Job]) -> None:
        self.key_of = engine_key(engine)
        if any(j.config.calibrate for j in jobs):
            self.priors = calibrate_jobs(engine, registry, jobs)

    def render(self, registry: PromptRegistry, job: Job) -> list[RankRequest]:
        cfg = job.config
        mine = []
        for o, window in _windows(job):
            rendered = registry.render(
                cfg.options_template,
                {
                    "history": job.ctx.user.prompt_history(cfg.history_limit),
                    "need": job.ctx.user.prompt_need(),
                    "candidates": [job.cands[i].prompt_vars(include_text=cfg.include_text) for i in window],
                },
                allow_extra=True,
            )
            job.add_version(rendered.version_id)
            prior = self.priors.get((self.key_of, rendered.version_id, len(window))) if cfg.calibrate else None
            mine.append((o, window, prior, rendered.chat_messages()))
        job.calibrated = bool(mine) and all(p is not None for _, _, p, _ in mine)
        return [
            RankRequest(job, (o, window, prior if job.calibrated else None), msgs) for o, window, prior, msgs in mine
        ]

    def call(self, engine: LLMEngine, requests: Sequence[RankRequest], timeout: float | None) -> Sequence[Any]:
        width = min(MAX_LABELS, max(len(r.unit[1]) for r in requests))
        prompts = [r.messages for r in requests]
        outcome = call_batch(
            engine,
            len(prompts),
            lambda idx: engine.score_options([prompts[i] for i in idx], labels(width)),
            timeout=timeout,
        )
        return outcome.results

    def parse(self, request: RankRequest, result: OptionScores | CallFailure) -> None:
        job, (o, window, prior) = request.job, request.unit
        if isinstance(result, CallFailure):
            job.llm_calls += 1
            job.reasons.append(result.reason)
            self.broken.add((job.index, o))
            return
        if not any(math.isfinite(result.logprobs.get(lab, -math.inf)) for lab in labels(len(window))):
            job.llm_calls += 1
            job.reasons.append("empty")  # no label has any probability: nothing to rank by
            self.broken.add((job.index, o))
            return
        job.took_scores(
            {"order": o, "window": [job.cands[i].id for i in window], "logprobs": result.logprobs}, result.prompt_tokens
        )
        lifts = window_lift(result.logprobs, len(window), prior)
        vec = self.orders.setdefault(job.index, {}).setdefault(o, [0.0] * job.n)
        for i, lift in zip(window, lifts, strict=True):
            vec[i] = lift

    def vectors(self, job: Job) -> list[list[float]]:
        orders = self.orders.get(job.index, {})
        return [vec for o, vec in sorted(orders.items()) if (job.index, o) not in self.broken]
