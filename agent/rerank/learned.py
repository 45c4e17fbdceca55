"""The ``learned`` strategy: a LightGBM lambdarank model (``recagent train ranker-ltr``) reorders the fused candidates.

No LLM: the model scores every fused candidate from the features of :mod:`retrieval.ltr_features` (every source's
rank and score, popularity, recency, numeric item attributes, similarity to the recent history) and the candidates
are sorted by that score (ties keep the retrieval order). The candidate set is never changed, only its order.

A model is fitted against one interaction log: its manifest records that log's
:func:`~retrieval.fitted.log_fingerprint`, and :meth:`LearnedModel.check_log` refuses to serve a different log
(popularity, recency and the collaborative source's scores would no longer mean what the model learned).

The LLM feature (``Settings.ltr_llm_strategy``, e.g. ``options``): a model trained with
``recagent train ranker-ltr --llm-strategy NAME`` has the column ``llm.score``: that LLM strategy's per-candidate
score (:func:`llm_feature_scores` runs it through :func:`agent.rerank.rank_many`, the strategy's own prompts and
engine call). A request whose LLM pass fails gets NaN there (the booster's "missing") and ``llm_feature_missing``
says why. :meth:`LearnedModel.check_llm` refuses a model trained without the feature when it is switched on, and
the reverse.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from agent.errors import ConfigError, InputError
from agent.llm.base import LLMEngine
from agent.rerank.blend import rank_normalize
from agent.rerank.job import Job
from agent.rerank.strategy import RankingStrategy
from agent.schemas import RankingContext, RerankConfig, RerankResult
from prompts import PromptRegistry
from retrieval.ltr_features import FeatureBuilder, feature_matrix
from retrieval.types import Candidate, HistoryEntry, Item

__all__ = [
    "LLM_FEATURE",
    "MANIFEST_FILE",
    "MODEL_FILE",
    "LLMFeature",
    "LearnedModel",
    "LearnedRanker",
    "LearnedStrategy",
    "StaleModelError",
    "learned_order",
    "llm_feature_scores",
]

MODEL_FILE = "model.txt"
MANIFEST_FILE = "manifest.json"
LLM_FEATURE = "llm.score"
_TRAIN_HINT = "train one with `recagent train ranker-ltr --catalog ... --interactions ...` (see docs/training.md)"


class StaleModelError(ConfigError):
    """The learned ranker was fitted on another interaction log than the one being served."""


@dataclass
class LearnedModel:
    """A trained ranker: the LightGBM booster and its manifest (feature names, log fingerprint, settings)."""

    folder: Path
    booster: Any
    manifest: dict[str, Any]

    @classmethod
    def load(cls, folder: Path) -> LearnedModel:
        model, manifest = Path(folder) / MODEL_FILE, Path(folder) / MANIFEST_FILE
        if not model.is_file() or not manifest.is_file():
            raise InputError(f"no learned ranker in {folder} (needs {MODEL_FILE} and {MANIFEST_FILE})",
                             hint=f"{_TRAIN_HINT}, or point RECAGENT_LTR_MODEL at its --out folder")  # fmt: skip
        import lightgbm as lgb

        try:
            data = json.loads(manifest.read_text(encoding="utf-8"))
            booster = lgb.Booster(model_file=str(model))
        except (ValueError, lgb.basic.LightGBMError) as exc:
            raise InputError(f"the learned ranker in {folder} cannot be read: {exc}", hint=_TRAIN_HINT) from exc
        names = data.get("feature_names")
        if not isinstance(names, list) or list(booster.feature_name()) != names:
            raise InputError(f"the learned ranker in {folder}: model and manifest disagree on the features",
                             hint=f"the folder was edited by hand or mixes two runs; {_TRAIN_HINT}")  # fmt: skip
        return cls(Path(folder), booster, data)

    @property
    def feature_names(self) -> list[str]:
        return list(self.manifest["feature_names"])

    @property
    def fingerprint(self) -> str | None:
        value = self.manifest.get("log_fingerprint")
        return str(value) if value else None

    @property
    def llm_strategy(self) -> str | None:
        """The LLM strategy whose score the model was trained on (its ``llm.score`` feature), None without one."""
        info = self.manifest.get("llm_feature")
        if isinstance(info, dict) and info.get("strategy"):
            return str(info["strategy"])
        return "unknown" if LLM_FEATURE in self.feature_names else None

    def check_llm(self, strategy: str | None) -> None:
        """Raise :class:`~agent.errors.ConfigError` unless the served LLM feature (``Settings.ltr_llm_strategy``) is
        the one the model was trained with (both off, or the same strategy)."""
        trained = self.llm_strategy
        if trained == strategy:
            return
        if trained is None:
            raise ConfigError(
                f"the learned ranker in {self.folder} was trained without the LLM feature, but ltr_llm_strategy is "
                f"{strategy!r}: the model has no {LLM_FEATURE} column to use it",
                hint=f"unset ltr_llm_strategy (RECAGENT_LTR_LLM_STRATEGY), or train a model with it: `recagent train "
                f"ranker-ltr ... --llm-strategy {strategy}`",
            )
        if strategy is None:
            raise ConfigError(
                f"the learned ranker in {self.folder} was trained with the LLM feature ({trained} strategy's score "
                f"as {LLM_FEATURE}), but ltr_llm_strategy is unset: that column would be missing for every request",
                hint=f"set ltr_llm_strategy={trained} (RECAGENT_LTR_LLM_STRATEGY, or the variant key), or use a "
                "model trained without --llm-strategy",
            )
        raise ConfigError(
            f"the learned ranker in {self.folder} was trained on the {trained} strategy's LLM score, not {strategy}'s "
            "(the scores of two strategies do not share a scale)",
            hint=f"set ltr_llm_strategy={trained}, or train a model with `--llm-strategy {strategy}`",
        )

    def check_log(self, fingerprint: str | None) -> None:
        """Raise :class:`StaleModelError` unless the served log is the one the model was fitted for."""
        if fingerprint is None:
            raise StaleModelError(f"the learned ranker in {self.folder} needs the interaction log it was trained for",
                                  hint="set RECAGENT_INTERACTIONS (or --interactions) to that log")  # fmt: skip
        if fingerprint != self.fingerprint:
            raise StaleModelError(
                f"the learned ranker in {self.folder} was fitted on another interaction log (fingerprint "
                f"{self.fingerprint}, the log served now is {fingerprint}): its popularity, recency and source "
                "features would not mean what it learned",
                hint="retrain it for this log (`recagent train ranker-ltr --catalog ... --interactions LOG --serve "
                "full` for recommend and serve; `--serve eval` with the evaluation's --split/--users/--seed for the "
                "evaluator), or serve the log it was trained for",
            )

    def predict(self, matrix: np.ndarray) -> np.ndarray:
        if matrix.shape[0] == 0:
            return np.zeros(0)
        return np.asarray(self.booster.predict(matrix, num_threads=1), dtype=np.float64)


class LearnedRanker:
    """A model and the feature builder of the log and collection it serves: candidates in, scores out."""

    def __init__(self, model: LearnedModel, features: FeatureBuilder) -> None:
        self.model, self.features = model, features

    def scores(
        self,
        history: Sequence[HistoryEntry],
        candidates: Sequence[Candidate],
        items: Mapping[str, Item] | None = None,
        *,
        llm_scores: Sequence[float] | None = None,
    ) -> list[float]:
        """The model's score of each candidate; ``llm_scores`` (one per candidate, NaN = missing) is the LLM
        feature, required exactly when the model was trained with it."""
        wants = LLM_FEATURE in self.model.feature_names
        if wants and llm_scores is None:
            self.model.check_llm(None)
        if not wants and llm_scores is not None:
            raise ConfigError(f"the learned ranker in {self.model.folder} was trained without the LLM feature, but "
                              "LLM scores were given", hint="unset ltr_llm_strategy, or train a model with "
                              "`recagent train ranker-ltr ... --llm-strategy NAME`")  # fmt: skip
        rows = self.features.rows(history, candidates, items=items, llm_scores=llm_scores)
        return self.model.predict(feature_matrix(rows, self.model.feature_names)).tolist()


@dataclass
class LLMFeature:
    """One request's LLM feature: a score per candidate (NaN where missing), why it is missing (the LLM pass's
    fallback reason, None when scored) and what the pass cost (for the request's accounting)."""

    scores: list[float]
    missing: str | None
    result: RerankResult | None = None
    ms: float = 0.0
    prompt_versions: list[str] = field(default_factory=list)


def llm_feature_scores(
    engine: LLMEngine | None,
    registry: PromptRegistry,
    contexts: Sequence[RankingContext],
    strategy: str,
) -> list[LLMFeature]:
    """Run the LLM ``strategy`` on each context's candidates (one :func:`~agent.rerank.rank_many` batch: the
    strategy's own prompts, engine call and failure handling; no justifications) and return each candidate's LLM
    score in ``ctx.candidates`` order. A context whose LLM pass falls back (engine error, timeout, invalid output)
    gets NaN for every candidate and the reason; never raises for engine problems."""
    from agent.rerank.core import rank_many  # core imports the registry, which imports this module

    if not contexts:
        return []
    copies = []
    for ctx in contexts:
        config = ctx.config.model_copy(update={"strategy": strategy, "explain": "none"})
        k = max(1, len(ctx.candidates))
        copies.append(ctx.model_copy(update={"config": config, "k": k, "learned_scores": None}))
    started = time.perf_counter()
    results = rank_many(engine, registry, copies)
    ms = (time.perf_counter() - started) * 1000
    out = []
    for ctx, res in zip(contexts, results, strict=True):
        by_id = {item.item_id: item.llm_score for item in res.items}
        scores = [math.nan if by_id.get(c.id) is None else float(by_id[c.id] or 0.0) for c in ctx.candidates]
        missing = res.fallback_reason
        if missing is None and all(math.isnan(v) for v in scores) and len(scores) > 1:
            missing = "empty"
        if missing is not None:
            scores = [math.nan] * len(ctx.candidates)
        out.append(LLMFeature(scores, missing, res, ms, list(res.prompt_versions)))
    return out


def learned_order(scores: Sequence[float] | None, n: int, k: int) -> tuple[list[int], list[float]] | None:
    """Top-``k`` candidate positions by model score (ties: retrieval order) and every candidate's final score
    (the model's, rank-normalised to (0, 1], best 1); None when no scores were given."""
    if scores is None or len(scores) != n:
        return None
    order = sorted(range(n), key=lambda i: (-scores[i], i))
    final = [0.0] * n
    for place, score in zip(order, rank_normalize([float(r + 1) for r in range(n)]), strict=True):
        final[place] = score
    return order[:k], final


class LearnedStrategy(RankingStrategy):
    """The ``learned`` strategy: no prompt, no engine; the order is the model's (``RankingContext.learned_scores``,
    given by the pipeline), and a job without scores goes to fallback."""

    name = "learned"
    uses_engine = False

    @classmethod
    def template(cls, config: RerankConfig) -> str | None:
        return None

    @classmethod
    def final_order(cls, job: Job) -> tuple[list[int], list[float]] | None:
        return learned_order(job.ctx.learned_scores, job.n, job.k)

    def run(self, engine: LLMEngine | None, registry: PromptRegistry, jobs: Sequence[Job]) -> None:
        for job in jobs:
            if self.final_order(job) is None:
                job.fail("no_model: no learned-ranker scores were given")
