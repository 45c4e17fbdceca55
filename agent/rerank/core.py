"""The one ranking entry point: :func:`rank` for one user, :func:`rank_many` for a batch (one engine call per
stage for all users). Stages: rank (one batch per strategy, see :mod:`agent.rerank.strategy`; options calibrates
first) -> blend (+ popularity penalty, MMR) -> explain (first ask, one re-ask).

Fallback policy: whenever a user's ranking stage fails (engine error, timeout, invalid or empty output), that
user gets the fused retrieval order with template justifications and ``fallback_reason`` set; other users of
the batch are unaffected. ``rank``/``rank_many`` never raise for engine problems and always return
``min(k, len(candidates))`` distinct candidate ids.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence

from agent.explain import ExplainRequest, Justification, explain_many
from agent.llm.base import LLMEngine
from agent.rerank.blend import blend_scores, mmr_order, popularity_shares, rank_normalize
from agent.rerank.job import Job
from agent.rerank.registry import RETRIEVAL, STRATEGY_CLASSES, create_strategy, strategy_class
from agent.schemas import (
    CandidateItem,
    RankedItem,
    RankingContext,
    RerankConfig,
    RerankResult,
    UserContext,
)
from prompts import PromptError, PromptRegistry

__all__ = ["rank", "rank_many"]


def _check_templates(registry: PromptRegistry, jobs: Sequence[Job]) -> None:
    """A template name that does not exist is a configuration error: fail loudly, before any engine call."""
    for job in jobs:
        wanted: list[tuple[str, str]] = []
        if job.strategy != RETRIEVAL:
            strategy = strategy_class(job.strategy)
            name = strategy.template(job.config)
            if name is not None:
                wanted.append((name, strategy.task()))
        if job.config.explain == "llm":
            wanted.append((job.config.explain_template, "explain"))
        for name, task in wanted:
            template = registry.get(name)
            if template.task != task:
                raise PromptError(
                    f"template {name!r} implements task {template.task!r}, not {task!r}",
                    hint=f"pick a template of task {task} (`recagent prompts list` shows each template's task)",
                )


def _order(job: Job) -> tuple[list[int], list[float]]:
    """Top-k candidate positions and the final score of every candidate."""
    n, cfg = job.n, job.config
    own = strategy_class(job.strategy).final_order(job) if job.strategy != RETRIEVAL else None
    if own is not None:
        return own
    if job.llm_scores is None:
        return list(range(job.k)), rank_normalize([float(i + 1) for i in range(n)])
    final = blend_scores(job.llm_scores, n, cfg.llm_weight)
    if cfg.popularity_penalty > 0 and job.ctx.popularity:
        shares = popularity_shares([c.id for c in job.cands], job.ctx.popularity)
        final = [f - cfg.popularity_penalty * s for f, s in zip(final, shares, strict=True)]
    order = sorted(range(n), key=lambda i: (-final[i], i))
    if cfg.mmr_lambda < 1.0 and job.ctx.embeddings:
        vectors = [job.ctx.embeddings.get(c.id) for c in job.cands]
        order = mmr_order(order, final, vectors, cfg.mmr_lambda, job.k)
    return order[: job.k], final


def _explain_config(job: Job) -> RerankConfig:
    if job.fallback_reason is not None and job.config.explain == "llm":
        return job.config.model_copy(update={"explain": "template"})
    return job.config


def _result(job: Job, top: list[int], final: list[float], notes: list[Justification], total_ms: float) -> RerankResult:
    items = []
    for rank, (i, just) in enumerate(zip(top, notes, strict=True), start=1):
        cand = job.cands[i]
        flags = list(just.flags)
        if job.uses_llm_ranking and strategy_class(job.strategy).lists_items and i not in job.listed:
            flags.insert(0, "appended_missing")
        note = just.note
        if job.fallback_reason is not None:
            flags.insert(0, "fallback")
            if just.source == "template":
                note = f"template justification (fallback: {job.fallback_reason})"
        items.append(
            RankedItem(
                item_id=cand.id,
                rank=rank,
                score=final[i],
                llm_score=job.llm_scores[i] if job.llm_scores is not None else None,
                retrieval_score=cand.candidate.score,
                retrieval_rank=i + 1,
                sources=dict(cand.candidate.sources),
                justification=just.text,
                justification_source=just.source,
                grounded=just.grounded,
                grounding_note=note,
                cited=just.cited,
                flags=flags,
            )
        )
        job.llm_calls += just.llm_calls
        job.prompt_tokens += just.prompt_tokens
        job.completion_tokens += just.completion_tokens
        job.raw.extend(just.raw)
        if just.prompt_version:
            job.add_version(just.prompt_version)
    return RerankResult(
        items=items,
        strategy=job.strategy,
        fallback_reason=job.fallback_reason,
        prompt_versions=job.prompt_versions,
        llm_calls=job.llm_calls,
        prompt_tokens=job.prompt_tokens,
        completion_tokens=job.completion_tokens,
        timings_ms={**job.timings, "total": total_ms},
        agreement=job.agreement,
        calibrated=job.calibrated and job.fallback_reason is None,
        raw=job.raw,
        parse_failures=job.parse_failures,
        off_candidate=job.off_candidate,
        duplicates=job.duplicates,
        appended_missing=sum("appended_missing" in it.flags for it in items),
        regenerated=sum("regenerated" in it.flags for it in items),
        template_justifications=sum("template_justification" in it.flags for it in items),
    )


def _run_strategies(engine: LLMEngine | None, registry: PromptRegistry, jobs: Sequence[Job]) -> None:
    """The ranking stage: each strategy scores its jobs in one batch, in registry order."""
    ranking = [j for j in jobs if j.strategy != RETRIEVAL and j.n > 1]
    for job in jobs:
        if job.strategy != RETRIEVAL and job.n == 1 and strategy_class(job.strategy).uses_engine:
            job.llm_scores, job.listed = [0.0], {0}  # nothing to compare: no engine call
    for name in STRATEGY_CLASSES:
        group = [j for j in ranking if j.strategy == name]
        if not group:
            continue
        strategy = create_strategy(name)
        if strategy.uses_engine and engine is None:
            for job in group:
                job.fail("engine_error: no LLM engine is configured")
            continue
        strategy.run(engine, registry, group)


def rank_many(
    engine: LLMEngine | None, registry: PromptRegistry, requests: Sequence[RankingContext]
) -> list[RerankResult]:
    """Rank every request; all LLM requests of a stage go to the engine in one call (per strategy kind).

    Requests in one batch may use different configs; the sampling settings that an engine call shares
    (temperature, seed) come from the first request of that stage, ``max_tokens`` is the largest asked for and
    the timeout the smallest. Results come back in request order.
    """
    started = time.perf_counter()
    jobs = [Job.build(i, ctx) for i, ctx in enumerate(requests)]
    _check_templates(registry, jobs)
    _run_strategies(engine, registry, jobs)
    orders = [_order(job) for job in jobs]
    explain_reqs: list[ExplainRequest] = []
    for job, (top, _) in zip(jobs, orders, strict=True):
        cfg = _explain_config(job)
        for i in top:
            draft = job.drafts.get(i) if job.uses_llm_ranking else None  # drafts: strategies that justify
            explain_reqs.append(ExplainRequest(job.ctx.user, job.cands[i], job.cands, draft, cfg))
    notes, explain_ms = explain_many(engine, registry, explain_reqs)
    total_ms = (time.perf_counter() - started) * 1000
    results, at = [], 0
    for job, (top, final) in zip(jobs, orders, strict=True):
        if explain_ms and any(r.config.explain == "llm" for r in explain_reqs[at : at + len(top)]):
            job.timings.update(explain_ms)
        results.append(_result(job, top, final, notes[at : at + len(top)], total_ms))
        at += len(top)
    return results


def rank(
    engine: LLMEngine | None,
    registry: PromptRegistry,
    user: UserContext,
    candidates: Sequence[CandidateItem],
    *,
    strategy: str | None = None,
    k: int = 10,
    config: RerankConfig | None = None,
    embeddings: Mapping[str, Sequence[float]] | None = None,
    popularity: Mapping[str, float] | None = None,
) -> RerankResult:
    """Rank ``candidates`` (given in fused retrieval order) for ``user`` and justify the top ``k``.

    ``strategy`` overrides ``config.strategy``. Never raises for engine problems: see ``fallback_reason``.
    """
    config = config or RerankConfig()
    if strategy is not None:
        config = RerankConfig.model_validate({**config.model_dump(), "strategy": strategy})
    ctx = RankingContext(
        user=user,
        candidates=list(candidates),
        k=k,
        config=config,
        embeddings={key: list(v) for key, v in embeddings.items()} if embeddings is not None else None,
        popularity=dict(popularity) if popularity is not None else None,
    )
    return rank_many(engine, registry, [ctx])[0]
