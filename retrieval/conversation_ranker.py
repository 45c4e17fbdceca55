"""The conversation ranker's features and its saved form, shared by training (train/crs_ltr.py) and the live chat.

:func:`conversation_rows` is the ONE function computing a turn's feature rows, in the fold arm, in
``recagent train dialogue-sources --ranker`` and in the pipeline's conversation turns: the interaction-log ranker's
:class:`retrieval.ltr_features.FeatureBuilder` rows of the fused candidates, plus the dialogue log's ``dlg.*``
counts (:class:`DialogueStats`) and the turn's position in its dialogue.

:class:`SavedConversationRanker` is the fitted booster kept beside the dialogue model
(``artifact_dir(store, collection, RANKER_KIND)``): ``model.txt`` (LightGBM) and ``manifest.json`` (feature names,
pool size, best iteration, fusion weights, the fit log's fingerprint).

:func:`rank_turn` is the ONE function serving a conversation turn with a fitted ranker: the pipeline's conversation
turns and the held-out score of the live training path (``recagent eval folds --live-ranker``) both call it.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from retrieval.dialogue_log import DialogueLog
from retrieval.errors import ConfigError
from retrieval.ltr_features import FeatureBuilder, Row, feature_matrix
from retrieval.types import Candidate, HistoryEntry, Item, UserQuery

if TYPE_CHECKING:
    from retrieval.candidates import CandidateGenerator

__all__ = [
    "RANKER_KIND",
    "CatalogItems",
    "DialogueStats",
    "SavedConversationRanker",
    "conversation_rows",
    "load_conversation_ranker",
    "rank_turn",
]

RANKER_KIND = "conversation_ranker"
RETRAIN_HINT = (
    "retrain it: `recagent train dialogue-sources LOG... --ranker` (or switch it off: RECAGENT_DIALOGUE_RANKER=0)"
)


class CatalogItems:
    """The feature builder's item source over catalog items in memory (no embeddings: the content sources' ranks
    and scores already carry the similarity)."""

    def __init__(self, items: Mapping[str, Item]) -> None:
        self.items = items

    def get_items(self, ids: Sequence[str]) -> dict[str, Item]:
        return {i: self.items[i] for i in ids if i in self.items}

    def get_embeddings(self, ids: Sequence[str]) -> dict[str, np.ndarray]:
        return {}


@dataclass(frozen=True)
class DialogueStats:
    """Per item, how often a dialogue log's recommenders named it and how often it was mentioned."""

    recommended: Counter[str]
    mentioned: Counter[str]

    @classmethod
    def of(cls, log: DialogueLog) -> DialogueStats:
        rec: Counter[str] = Counter()
        men: Counter[str] = Counter()
        for turn in log.turns:
            rec.update(turn.recommended)
            men.update(turn.mentioned)
        return cls(rec, men)

    def row(self, item_id: str) -> Row:
        r, m = self.recommended.get(item_id, 0), self.mentioned.get(item_id, 0)
        return {"dlg.rec_pop": math.log1p(r), "dlg.mention_pop": math.log1p(m), "dlg.rec_share": (r + 1) / (r + m + 2)}


def conversation_rows(features: FeatureBuilder, liked: Sequence[str], candidates: Sequence[Candidate],
                      stats: DialogueStats, turn: float | None) -> list[Row]:  # fmt: skip
    """The feature rows of one turn's fused candidates (same order): ``features``' rows with the mentioned movies
    as the history, the candidates' ``dlg.*`` counts and the turn's position (``dlg.turn``, when known)."""
    rows = features.rows([HistoryEntry(item_id=i) for i in liked], candidates)
    for row, cand in zip(rows, candidates, strict=True):
        row.update(stats.row(cand.item_id))
        if turn is not None:
            row["dlg.turn"] = float(turn)
    return rows


@dataclass
class SavedConversationRanker:
    """A conversation ranker fitted on a whole dialogue log (``recagent train dialogue-sources --ranker``)."""

    booster: Any
    names: list[str]
    pool: int
    iteration: int
    fingerprint: str
    weights: dict[str, float]
    info: dict[str, Any]
    stats: DialogueStats = field(default_factory=lambda: DialogueStats(Counter(), Counter()))
    """The ``dlg.*`` counts of the whole fit log (the served turns' features)."""

    def save(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.booster.save_model(str(folder / "model.txt"), num_iteration=self.iteration)
        manifest = {"feature_names": self.names, "pool": self.pool, "best_iteration": self.iteration,
                    "fingerprint": self.fingerprint, "weights": self.weights, "info": self.info}  # fmt: skip
        (folder / "manifest.json").write_text(json.dumps(manifest, indent=1), encoding="utf-8")
        stats = {"recommended": dict(self.stats.recommended), "mentioned": dict(self.stats.mentioned)}
        (folder / "stats.json").write_text(json.dumps(stats), encoding="utf-8")

    def check_log(self, fingerprint: str | None) -> None:
        """Refuse a ranker fitted on another dialogue log than the one the served dialogue sources learned from."""
        if fingerprint != self.fingerprint:
            served = f"log {fingerprint}" if fingerprint else "no fitted dialogue log"
            raise ConfigError(
                f"the conversation ranker was fitted on dialogue log {self.fingerprint}, but the dialogue sources "
                f"serve {served}",
                hint=RETRAIN_HINT,
            )

    def scores(self, rows: Sequence[Row]) -> np.ndarray:
        if not rows:
            return np.zeros(0)
        return np.asarray(self.booster.predict(feature_matrix(list(rows), self.names), num_threads=1), np.float64)

    def order(self, candidates: Sequence[Candidate], rows: Sequence[Row]) -> list[Candidate]:
        """The candidates sorted by the model's score (ties keep the fused order)."""
        scores = self.scores(rows)
        ranked = sorted(range(len(candidates)), key=lambda i: (-float(scores[i]), i))
        return [candidates[i] for i in ranked]


def rank_turn(ranker: SavedConversationRanker, generator: CandidateGenerator, features: FeatureBuilder,
              query: UserQuery, turn: int | None, n: int, *,
              extra: Mapping[str, Sequence[tuple[str, float]]] | None = None,
              weights: Mapping[str, float] | None = None) -> tuple[list[Candidate], int]:  # fmt: skip
    """A conversation turn served with ``ranker``: the ranker's pool of ``generator``'s fused order for ``query``,
    its feature rows (:func:`conversation_rows`, ``turn`` = the turn's position in its conversation), sorted by the
    model's score, the first ``n`` kept; and the pool's size."""
    pooled = query.model_copy(update={"n": max(ranker.pool, n)})
    candidates = generator.generate(pooled, extra=extra, weights=weights)
    rows = conversation_rows(features, query.liked, candidates, ranker.stats, None if turn is None else float(turn))
    return ranker.order(candidates, rows)[:n], len(candidates)


def load_conversation_ranker(folder: Path) -> SavedConversationRanker | None:
    """The ranker kept in ``folder``, or None when none was trained."""
    manifest, model, counts = folder / "manifest.json", folder / "model.txt", folder / "stats.json"
    if not manifest.is_file() or not model.is_file() or not counts.is_file():
        return None
    import lightgbm as lgb

    try:
        meta = json.loads(manifest.read_text(encoding="utf-8"))
        booster = lgb.Booster(model_file=str(model))
        raw = json.loads(counts.read_text(encoding="utf-8"))
        stats = DialogueStats(Counter({str(k): int(v) for k, v in raw["recommended"].items()}),
                              Counter({str(k): int(v) for k, v in raw["mentioned"].items()}))  # fmt: skip
        return SavedConversationRanker(booster, list(meta["feature_names"]), int(meta["pool"]),
                                       int(meta["best_iteration"]), str(meta["fingerprint"]),
                                       {k: float(v) for k, v in meta["weights"].items()},
                                       dict(meta.get("info", {})), stats)  # fmt: skip
    except (ValueError, KeyError, TypeError, lgb.basic.LightGBMError) as exc:
        raise ConfigError(f"the conversation ranker in {folder} cannot be read: {exc}", hint=RETRAIN_HINT) from exc
