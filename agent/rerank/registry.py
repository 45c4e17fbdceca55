"""The name -> ranking strategy registry.

``retrieval`` is not a strategy here: it is the fused retrieval order itself (no ranking stage), the baseline and
the fallback of every strategy. Every other ``RerankConfig.strategy`` value names a class below.

Adding a strategy (e.g. a learned ranker):

1. one new file ``agent/rerank/NAME.py`` with a :class:`~agent.rerank.strategy.RankingStrategy` subclass whose
   ``name`` is ``NAME``: subclass :class:`~agent.rerank.strategy.PromptStrategy` and implement ``render``, ``call``,
   ``parse`` and ``vectors`` when it prompts the LLM (the loop is shared), or implement ``run`` directly when it
   scores otherwise (set ``uses_engine = False`` if it needs no LLM engine, and override ``template`` to return
   None if it renders no prompt);
2. one entry in :data:`STRATEGY_CLASSES` below;
3. the name in ``agent.schemas.Strategy`` (the validated config value; ``STRATEGIES`` follows it), in
   ``Settings.rerank_strategy``, and in ``agent.schemas.LLM_STRATEGIES`` if it calls the engine (the evaluator starts
   an engine for those; a test checks that list against ``uses_engine``).

``learned`` (:mod:`agent.rerank.learned`) is the example of a strategy without the LLM: it orders the job itself
(``final_order``) from the scores the pipeline computed.

Nothing in :mod:`agent.rerank.core` branches on strategy names: it groups jobs by name and runs each group's
strategy, in the order of :data:`STRATEGY_CLASSES`.
"""

from __future__ import annotations

from agent.rerank.learned import LearnedStrategy
from agent.rerank.listwise import ListwiseStrategy
from agent.rerank.options import OptionsStrategy
from agent.rerank.pointwise import PointwiseStrategy
from agent.rerank.strategy import RankingStrategy

__all__ = ["RETRIEVAL", "STRATEGY_CLASSES", "create_strategy", "strategy_class"]

RETRIEVAL = "retrieval"

STRATEGY_CLASSES: dict[str, type[RankingStrategy]] = {
    cls.name: cls for cls in (OptionsStrategy, ListwiseStrategy, PointwiseStrategy, LearnedStrategy)
}


def strategy_class(name: str) -> type[RankingStrategy]:
    """The class registered under ``name`` (``KeyError`` for ``retrieval`` and unknown names)."""
    return STRATEGY_CLASSES[name]


def create_strategy(name: str) -> RankingStrategy:
    """A fresh strategy object for one batch (it keeps that batch's per-job score vectors)."""
    return strategy_class(name)()
