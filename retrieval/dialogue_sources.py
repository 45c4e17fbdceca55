"""Candidate sources learned from a dialogue log: ``comention`` and ``recommended_popularity``.

- ``comention``: ``C[m, r]`` counts the turns where item ``r`` was recommended after item ``m`` was mentioned (the
  last ``window`` mentions before the turn; 0 = all of them), normalised (``none``: raw counts; ``row``:
  ``C[m, r] / sum_r C[m, r]``, the share of m's follow-ups that were r; ``cosine``: ``C[m, r] / sqrt(sum_r C[m, r]
  * n_rec[r])``, which also discounts items every dialogue recommends). A request is scored by summing the rows of
  its seeds: the items liked in the conversation (the last ``window`` of them) and the liked history entries.
- ``recommended_popularity``: how many turns recommended each item; a prior for cold openings ("any good comedy?").
- ``attribute`` (:mod:`retrieval.attribute_source`, when the catalog's field values are given): items holding the
  genres, people... named in the conversation, ordered by the log's recommendation counts.

The fitted state (:class:`DialogueModel`) is built once per (log, settings) and kept on disk, in
``retrieval.fitted.artifact_dir(store, collection, "comention")``, with the log's :func:`dialogue_fingerprint`;
:func:`fit_cached` reuses a state whose fingerprint and settings match and refits otherwise.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import scipy.sparse as sp
from pydantic import BaseModel, ConfigDict, Field

from retrieval.attribute_source import AttributeIndex, AttributeSource
from retrieval.candidates import Scored, SourceRequest, _top_k
from retrieval.dialogue_log import DialogueLog, dialogue_fingerprint
from retrieval.errors import ConfigError
from retrieval.types import UserQuery

__all__ = [
    "ARTIFACT_KIND",
    "ComentionSource",
    "DialogueModel",
    "DialogueSource",
    "DialogueSourceConfig",
    "RecommendedPopularitySource",
    "conversation_seeds",
    "dialogue_sources",
    "fit_cached",
    "fit_dialogue_model",
    "load_dialogue_model",
]

ARTIFACT_KIND = "comention"
Normalisation = Literal["none", "row", "cosine"]
Pairs = Literal["turn", "dialogue"]
_STATE, _META = "state.npz", "meta.json"


class DialogueSourceConfig(BaseModel):
    """Settings of the co-mention counts (chosen on a validation fold, see docs/eval/redial-folds.md)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    window: int = Field(default=0, ge=0, description="Mentions before a turn that count (the last N); 0 = all.")
    normalisation: Normalisation = Field(default="none", description="none | row | cosine (see module doc).")
    pairs: Pairs = Field(
        default="dialogue",
        description="turn: a turn's recommended items after its mentioned ones; dialogue: every two items of one "
        "dialogue, both ways (more pairs from the same log).",
    )
    prior: float = Field(
        default=0.05,
        ge=0,
        description="Weight of the recommendation counts added to the (max-scaled) co-mention "
        "scores of a request with seeds: a backoff that fills and orders the tail.",
    )


@dataclass
class DialogueModel:
    """Fitted state: item vocabulary, normalised co-mention matrix (rows mentioned, columns recommended) and the
    per-item recommendation counts."""

    item_ids: list[str]
    comention: sp.csr_matrix
    recommended: np.ndarray
    config: DialogueSourceConfig
    fingerprint: str
    turns: int
    dialogues: int
    dialog_ids: frozenset[str] | None = None
    """The log's dialogue ids (an evaluator refuses to score these dialogues); None in states fitted before they
    were kept."""

    def __post_init__(self) -> None:
        self.index = {item_id: i for i, item_id in enumerate(self.item_ids)}

    def scores(self, seeds: Sequence[str]) -> np.ndarray:
        """Sum of the seeds' rows scaled to a maximum of 1, plus ``prior`` times the scaled recommendation counts
        (seeds unknown to the log add nothing); the seeds themselves score 0."""
        rows = [self.index[s] for s in seeds if s in self.index]
        out = np.zeros(len(self.item_ids), np.float64)
        if rows:
            out += np.asarray(self.comention[rows].sum(axis=0)).ravel()
            top = out.max()
            if top > 0:
                out /= top
        if self.config.prior and len(out) and self.recommended.max() > 0:
            out += self.config.prior * self.recommended / self.recommended.max()
        out[rows] = 0.0
        return out


def fit_dialogue_model(log: DialogueLog, config: DialogueSourceConfig | None = None) -> DialogueModel:
    """Count co-mentions and recommendations over ``log`` (see the module doc)."""
    config = config or DialogueSourceConfig()
    index: dict[str, int] = {}
    rows: list[int] = []
    cols: list[int] = []
    rec_items: list[int] = []
    for sources, targets in _pairs(log, config):
        recs = [index.setdefault(r, len(index)) for r in targets]
        seeds = [index.setdefault(m, len(index)) for m in sources]
        for m in seeds:
            for r in recs:
                if m != r:
                    rows.append(m)
                    cols.append(r)
    for turn in log.turns:
        rec_items += [index.setdefault(r, len(index)) for r in dict.fromkeys(turn.recommended)]
    n = len(index)
    counts = sp.csr_matrix((np.ones(len(rows), np.float64), (rows, cols)), shape=(n, n))
    counts.sum_duplicates()
    recommended = np.bincount(np.asarray(rec_items, np.int64), minlength=n).astype(np.float64)
    return DialogueModel(
        item_ids=list(index),
        comention=_normalise(counts, recommended, config.normalisation),
        recommended=recommended,
        config=config,
        fingerprint=dialogue_fingerprint(log),
        turns=len(log.turns),
        dialogues=len(log.dialog_ids),
        dialog_ids=frozenset(log.dialog_ids),
    )


def _pairs(log: DialogueLog, config: DialogueSourceConfig) -> list[tuple[list[str], list[str]]]:
    """(sources, targets) groups whose every pair is counted once."""
    if config.pairs == "turn":
        out = []
        for turn in log.turns:
            mentioned = list(dict.fromkeys(turn.mentioned))
            out.append(
                (mentioned[-config.window :] if config.window else mentioned, list(dict.fromkeys(turn.recommended)))
            )
        return out
    by_dialogue: dict[str, list[str]] = {}
    for turn in log.turns:
        by_dialogue.setdefault(turn.dialog_id, []).extend([*turn.mentioned, *turn.recommended])
    groups = [list(dict.fromkeys(items)) for items in by_dialogue.values()]
    return [(items, items) for items in groups]


def _normalise(counts: sp.csr_matrix, recommended: np.ndarray, how: Normalisation) -> sp.csr_matrix:
    if how == "none":
        return counts
    row_sums = np.asarray(counts.sum(axis=1)).ravel()
    inv_rows = np.divide(1.0, row_sums, out=np.zeros_like(row_sums), where=row_sums > 0)
    if how == "row":
        return sp.csr_matrix(sp.diags(inv_rows) @ counts)
    inv_cols = np.divide(1.0, recommended, out=np.zeros_like(recommended), where=recommended > 0)
    return sp.csr_matrix(sp.diags(np.sqrt(inv_rows)) @ counts @ sp.diags(np.sqrt(inv_cols)))


# ------------------------------------------------------------------------------------------------ on disk
def save_dialogue_model(model: DialogueModel, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    m = model.comention
    tmp = folder / f".{_STATE}.tmp.npz"
    np.savez(tmp, data=m.data, indices=m.indices, indptr=m.indptr, shape=np.asarray(m.shape),
             recommended=model.recommended)  # fmt: skip
    tmp.replace(folder / _STATE)
    meta = {"fingerprint": model.fingerprint, "config": model.config.model_dump(), "turns": model.turns,
            "dialogues": model.dialogues, "item_ids": model.item_ids, "fitted_at": time.time(),
            "dialog_ids": None if model.dialog_ids is None else sorted(model.dialog_ids)}  # fmt: skip
    (folder / _META).write_text(json.dumps(meta), encoding="utf-8")


def load_dialogue_model(folder: Path) -> DialogueModel | None:
    """The fitted state kept in ``folder``, or None when there is none."""
    if not (folder / _META).is_file() or not (folder / _STATE).is_file():
        return None
    try:
        meta = json.loads((folder / _META).read_text(encoding="utf-8"))
        with np.load(folder / _STATE) as state:
            shape = tuple(int(x) for x in state["shape"])
            matrix = sp.csr_matrix((state["data"], state["indices"], state["indptr"]), shape=shape)
            recommended = np.asarray(state["recommended"], np.float64)
        return DialogueModel(
            item_ids=[str(i) for i in meta["item_ids"]],
            comention=matrix,
            recommended=recommended,
            config=DialogueSourceConfig.model_validate(meta["config"]),
            fingerprint=str(meta["fingerprint"]),
            turns=int(meta["turns"]),
            dialogues=int(meta["dialogues"]),
            dialog_ids=None if meta.get("dialog_ids") is None else frozenset(str(d) for d in meta["dialog_ids"]),
        )
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(
            f"the fitted dialogue sources in {folder} cannot be read: {exc}",
            hint="fit them again with `recagent train dialogue-sources LOG` (or delete the folder)",
        ) from exc


def fit_cached(log: DialogueLog, config: DialogueSourceConfig, folder: Path) -> tuple[DialogueModel, bool]:
    """(model, reused): the state in ``folder`` when it was fitted on this log with these settings, else a new fit
    written there."""
    kept = load_dialogue_model(folder)
    if (kept is not None and kept.fingerprint == dialogue_fingerprint(log) and kept.config == config
            and kept.dialog_ids is not None):  # fmt: skip
        return kept, True
    model = fit_dialogue_model(log, config)
    save_dialogue_model(model, folder)
    return model, False


# ------------------------------------------------------------------------------------------------ sources
def conversation_seeds(query: UserQuery, window: int = 0, like_threshold: float = 4.0) -> list[str]:
    """Items liked in the conversation (the last ``window``; 0 = all), then liked history entries; never a
    disliked one."""
    liked = list(dict.fromkeys(query.liked))
    if window:
        liked = liked[-window:]
    history = [h.item_id for h in query.history if h.rating is None or h.rating >= like_threshold]
    disliked = set(query.disliked)
    return [s for s in dict.fromkeys(liked + history) if s not in disliked]


class ComentionSource:
    """Items recommended after the request's seeds in the dialogue log (see the module doc)."""

    name = "comention"

    def __init__(self, model: DialogueModel) -> None:
        self.model = model

    def retrieve(self, request: SourceRequest) -> Scored:
        seeds = conversation_seeds(request.query, self.model.config.window)
        if not seeds:
            return []
        return _top_k(self.model.scores(seeds), self.model.item_ids, request)


class RecommendedPopularitySource:
    """Items the log's recommenders named most."""

    name = "recommended_popularity"

    def __init__(self, model: DialogueModel) -> None:
        self.model = model

    def retrieve(self, request: SourceRequest) -> Scored:
        return _top_k(self.model.recommended, self.model.item_ids, request)


DialogueSource = ComentionSource | RecommendedPopularitySource | AttributeSource


def dialogue_sources(model: DialogueModel, attributes: AttributeIndex | None = None) -> list[DialogueSource]:
    """comention and recommended_popularity of ``model``, and with ``attributes`` (the catalog's field values) the
    attribute source, its prior the model's recommendation counts."""
    sources: list[DialogueSource] = [ComentionSource(model), RecommendedPopularitySource(model)]
    if attributes is not None:
        sources.append(AttributeSource(attributes, dict(zip(model.item_ids, model.recommended.tolist(), strict=True))))
    return sources
