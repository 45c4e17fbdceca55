"""The ``learned`` strategy: a LightGBM lambdarank model (``recagent train ranker-ltr``) reorders the fused candidates.

No LLM: the model scores every fused candidate from the features of :mod:`retrieval.ltr_features` (every source's
rank and score, popularity, recency, numeric item attributes, similarity to the recent history) and the candidates
are sorted by that score (ties keep the retrieval order). The candidate set is never changed, only its order.

A model is fitted against one interaction log: its manifest records that log's
:func:`~retrieval.fitted.log_fingerprint`, and :meth:`LearnedModel.check_log` refuses to serve a different log
(popularity, recency and the collaborative source's scores would no longer mean what the model learned).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from agent.errors import ConfigError, InputError
from agent.llm.base import LLMEngine
from agent.rerank.blend import rank_normalize
from agent.rerank.job import Job
from agent.rerank.strategy import RankingStrategy
from agent.schemas import RerankConfig
from prompts import PromptRegistry
from retrieval.ltr_features import FeatureBuilder, feature_matrix
from retrieval.types import Candidate, HistoryEntry, Item

__all__ = [
    "MANIFEST_FILE",
    "MODEL_FILE",
    "LearnedModel",
    "LearnedRanker",
    "LearnedStrategy",
    "StaleModelError",
    "learned_order",
]

MODEL_FILE = "model.txt"
MANIFEST_FILE = "manifest.json"
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
    ) -> list[float]:
        rows = self.features.rows(history, candidates, items=items)
        return self.model.predict(feature_matrix(rows, self.model.feature_names)).tolist()


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
