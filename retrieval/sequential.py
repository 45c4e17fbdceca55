"""The ``sequential`` candidate source: a trained self-attentive next-item model (``recagent train sequential``).

The model reads the user's history in time order (ties by item id, as in training), scores every item as the next
one, and returns the best ``k`` the request keeps, seen items masked. Items the model was not trained on are
skipped in the history and never returned.

A model is tied to the log it learned from: :func:`open_sequential` refuses a model whose manifest does not list
the fingerprint (:func:`retrieval.fitted.log_fingerprint`) of the log being served, and says to retrain.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from retrieval.candidates import Scored, SourceRequest, _top_k
from retrieval.config import StoreConfig
from retrieval.errors import ConfigError
from retrieval.fitted import artifact_dir, log_fingerprint
from retrieval.interactions import Interactions
from retrieval.seqmodel import MANIFEST, SavedModel, item_sort_key, load_model, right_aligned

__all__ = ["SequentialSource", "default_model_dir", "open_sequential"]

KIND = "sequential"


class SequentialSource:
    """Next-item scores of a trained :class:`~retrieval.seqmodel.SASRec` over the user's history."""

    name = "sequential"

    def __init__(self, saved: SavedModel) -> None:
        self.saved = saved
        self.model = saved.model
        self.token = {item_id: index + 1 for index, item_id in enumerate(saved.item_ids)}

    def history_tokens(self, request: SourceRequest) -> list[int]:
        """The user's known items in time order (ties by item id; the given order when no entry has a time), then
        items liked in the conversation."""
        query = request.query
        timed = any(h.timestamp for h in query.history)
        ordered = sorted(
            enumerate(query.history),
            key=lambda p: (p[1].timestamp or 0, item_sort_key(p[1].item_id), p[0]) if timed else (0, (0, 0, ""), p[0]),
        )
        ids = [h.item_id for _, h in ordered] + [i for i in query.liked if i not in {h.item_id for h in query.history}]
        return [self.token[i] for i in ids if i in self.token]

    @torch.no_grad()
    def scores(self, tokens: list[int]) -> np.ndarray:
        """Next-item probabilities (item index order) after ``tokens``, the tokens themselves at 0."""
        length = self.model.config.max_len
        logits = self.model.next_item_logits(torch.from_numpy(right_aligned([tokens], length)))[0]
        logits[torch.tensor(sorted(set(tokens)), dtype=torch.long) - 1] = -torch.inf
        return torch.softmax(logits, dim=0).numpy().astype(np.float64)

    def retrieve(self, request: SourceRequest) -> Scored:
        tokens = self.history_tokens(request)
        if not tokens or request.k <= 0:
            return []
        return _top_k(self.scores(tokens), self.saved.item_ids, request)


def default_model_dir(store: StoreConfig, collection: str) -> Path:
    """Where ``recagent train sequential`` puts the model of ``collection`` by default (and the pipeline looks)."""
    return artifact_dir(store, collection, KIND)


def open_sequential(
    folder: Path, interactions: Interactions | None, *, required: bool = False
) -> SequentialSource | None:
    """The source of the model in ``folder``; None when the folder holds no model (the source is then absent;
    ConfigError instead when ``required``: a folder the user named).

    Without a served log (``interactions`` None) there is nothing to check the model against, so the source is
    absent too (ConfigError when ``required``). ConfigError when the model was trained on another log."""
    if not (Path(folder) / MANIFEST).is_file() and not required:
        return None
    if interactions is None:
        if required:
            raise ConfigError(
                f"the sequential model {folder} needs the interaction log it was trained on",
                hint="set RECAGENT_INTERACTIONS (or the evaluator's dataset) to that log",
            )
        return None
    saved = load_model(folder)
    served = log_fingerprint(interactions)
    accepted = saved.accepted_fingerprints()
    if served not in accepted.values():
        raise ConfigError(
            f"the sequential model in {folder} was trained on another interaction log (log fingerprint {served} is "
            f"none of {', '.join(f'{k}={v}' for k, v in accepted.items()) or 'the manifest lists none'}): the log "
            "changed since training",
            hint="retrain it on this log (`recagent train sequential --catalog ... --interactions LOG --force`), "
            "or set fusion weight sequential=0 to serve without it",
        )
    return SequentialSource(saved)
