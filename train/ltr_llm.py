"""The learned ranker's LLM feature at training time: an LLM strategy's score of every candidate of every training
group, computed exactly as the serving pipeline does (:func:`agent.rerank.learned.llm_feature_scores`: the same
ranking context, prompts and engine call), stored in the rows as ``llm.score``.

Only the groups the ranker is fitted or early-stopped on are scored (the validation users whose target is among
their fused candidates), after :func:`train.leakage.assert_no_group_leakage` has checked them: the LLM sees the
group's own history and candidates, nothing else, so the leakage guard covers its prompts too. A group whose LLM
pass fails keeps NaN there (LightGBM's "missing") and is counted. Resumable: the engine given by
``recagent train ranker-ltr --llm-strategy`` is wrapped in the evaluator's on-disk LLM cache
(``--out``/llm_cache.sqlite), so an interrupted run answers the scored prompts from disk.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from tqdm import tqdm

from agent.errors import InputError
from agent.llm.base import LLMEngine
from agent.rerank.learned import LLM_FEATURE, llm_feature_scores
from agent.schemas import CandidateItem, RankingContext, UserContext
from agent.settings import Settings
from eval.datasets import EvalCase
from prompts import PromptRegistry
from retrieval.store import ItemCollection
from retrieval.types import UserQuery

__all__ = ["LtrLlm", "add_llm_scores", "group_context"]


@dataclass
class LtrLlm:
    """The LLM feature's settings for training: the engine (None: every group's feature is missing), the prompt
    registry, the strategy (``listwise`` | ``options`` | ``pointwise``) and how many groups go to one batch."""

    engine: LLMEngine | None
    registry: PromptRegistry
    strategy: str
    chunk: int = 8


def group_context(
    settings: Settings, case: EvalCase, candidate_ids: Sequence[str], collection: ItemCollection, strategy: str
) -> RankingContext:
    """The ranking context the serving pipeline builds for this user and these fused candidates (same history
    window, same item lookups, the settings' ranking config with ``strategy``)."""
    from retrieval.types import Candidate

    history_ids = [h.item_id for h in case.history[-50:]]
    items = collection.get_items(list(dict.fromkeys([*candidate_ids, *history_ids])))
    n = max(len(candidate_ids), 1)
    query = UserQuery(user_id=case.user_id or case.case_id, history=case.history, n=n)
    candidates = [Candidate(item_id=i, score=(n - r) / n, sources={}) for r, i in enumerate(candidate_ids)]
    return RankingContext(
        user=UserContext.from_query(query, items),
        candidates=CandidateItem.pair(items, candidates),
        k=n,
        config=settings.rerank_config(strategy=strategy, explain="none"),
    )


def add_llm_scores(
    settings: Settings,
    groups: Sequence[Any],
    cases: Mapping[str, EvalCase],
    collection: ItemCollection,
    llm: LtrLlm,
    *,
    progress: bool = True,
) -> dict[str, Any]:
    """Set ``llm.score`` on every row of ``groups`` (:class:`train.ltr_data.RankGroupRows`, whose ``user_id`` keys
    ``cases``); NaN where the LLM pass failed. Returns the manifest's ``llm_feature`` record."""
    if llm.strategy not in ("listwise", "options", "pointwise"):
        raise InputError(f"unknown LLM strategy {llm.strategy!r} for the learned ranker's feature",
                         hint="use listwise, options or pointwise")  # fmt: skip
    started = time.perf_counter()
    reasons: Counter[str] = Counter()
    calls = prompt_tokens = 0
    versions: list[str] = []
    bar = tqdm(total=len(groups), desc=f"LLM feature ({llm.strategy})", unit="user", disable=not progress,
               dynamic_ncols=True)  # fmt: skip
    try:
        for at in range(0, len(groups), llm.chunk):
            chunk = groups[at : at + llm.chunk]
            contexts = [group_context(settings, cases[g.user_id], g.candidate_ids, collection, llm.strategy)
                        for g in chunk]  # fmt: skip
            features = llm_feature_scores(llm.engine, llm.registry, contexts, llm.strategy)
            for group, ctx, feature in zip(chunk, contexts, features, strict=True):
                by_id = dict(zip([c.id for c in ctx.candidates], feature.scores, strict=True))
                for cid, row in zip(group.candidate_ids, group.rows, strict=True):
                    row[LLM_FEATURE] = by_id.get(cid, math.nan)
                if feature.missing is not None:
                    reasons[feature.missing.split(":", 1)[0]] += 1
                if feature.result is not None:
                    calls += feature.result.llm_calls
                    prompt_tokens += feature.result.prompt_tokens
                versions.extend(feature.prompt_versions)
            bar.update(len(chunk))
            bar.set_postfix(missing=sum(reasons.values()))
    finally:
        bar.close()
    missing = sum(reasons.values())
    if groups and missing == len(groups):
        raise InputError(
            f"the {llm.strategy} strategy gave no LLM score for any of the {len(groups)} training groups "
            f"({dict(reasons)}): a model would learn nothing from the feature",
            hint="check that the LLM engine answers (`recagent llm score ...`), or train without --llm-strategy",
        )
    return {
        "strategy": llm.strategy,
        "feature": LLM_FEATURE,
        "model": llm.engine.model_id if llm.engine is not None else None,
        "groups_scored": len(groups) - missing,
        "groups_missing": missing,
        "missing_by_reason": dict(sorted(reasons.items())),
        "llm_calls": calls,
        "prompt_tokens": prompt_tokens,
        "prompt_versions": list(dict.fromkeys(versions)),
        "seconds": round(time.perf_counter() - started, 2),
        **_cache_counts(llm.engine),
    }


def _cache_counts(engine: LLMEngine | None) -> dict[str, Any]:
    """Hits and misses of the on-disk LLM cache the engine answers from (the evaluator's CachingEngine), if any."""
    cache = getattr(engine, "cache", None)
    hits, misses = getattr(cache, "hits", None), getattr(cache, "misses", None)
    if not isinstance(hits, int) or not isinstance(misses, int):
        return {}
    return {"cache": {"path": str(getattr(cache, "path", "")), "hits": hits, "misses": misses}}
