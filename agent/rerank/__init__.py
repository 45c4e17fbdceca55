"""Ranking strategies behind one interface, and the fallback policy.

    from agent.rerank import rank, rank_many
    result = rank(engine, registry, user, candidates, strategy="options", k=10, config=RerankConfig(n_orders=3))

Strategies (``RerankConfig.strategy``): ``retrieval`` (fused retrieval order, no LLM ranking: the baseline and
the fallback), ``listwise`` (JSON ranking under a per-request id enum), ``options`` (option-letter log-probs,
windows, calibration), ``pointwise`` (Yes/No per candidate), ``learned`` (the LightGBM ranker of
``recagent train ranker-ltr``, no LLM: the pipeline passes its scores in ``RankingContext.learned_scores``,
see ``learned``). Every LLM strategy blends its score with the
retrieval rank (``llm_weight``), then applies the optional popularity penalty and MMR; see the modules
``blend``, ``listwise``, ``options``, ``pointwise`` and ``calibration`` for the design notes.

Every strategy but ``retrieval`` is a :class:`~agent.rerank.strategy.RankingStrategy` registered by name in
:mod:`agent.rerank.registry` (its docstring says how to add one); :mod:`agent.rerank.core` runs them.
"""

from __future__ import annotations

from agent.rerank.calibration import PriorCache
from agent.rerank.core import rank, rank_many
from agent.rerank.registry import STRATEGY_CLASSES
from agent.rerank.strategy import PromptStrategy, RankingStrategy, RankRequest
from agent.schemas import (
    STRATEGIES,
    CandidateItem,
    RankedItem,
    RankingContext,
    RerankConfig,
    RerankResult,
    UserContext,
)

__all__ = [
    "STRATEGIES",
    "STRATEGY_CLASSES",
    "CandidateItem",
    "PriorCache",
    "PromptStrategy",
    "RankRequest",
    "RankedItem",
    "RankingContext",
    "RankingStrategy",
    "RerankConfig",
    "RerankResult",
    "UserContext",
    "rank",
    "rank_many",
]
