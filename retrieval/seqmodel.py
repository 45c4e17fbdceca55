"""The self-attentive next-item model (SASRec-style) and its saved form.

:class:`SeqModelConfig` is the architecture, :class:`SASRec` the PyTorch module: item embeddings (token 0 pads,
item index ``i`` of the model's item list is token ``i + 1``) plus learned positions, a few causal self-attention
blocks, and next-item logits as the dot product of the last hidden state with the (shared) item embeddings.
Sequences are right-aligned: the most recent item sits at the last position.

A trained model is a folder (written by ``recagent train sequential``): ``model.pt`` (weights), ``items.json``
(the item ids, in token order) and ``manifest.json`` (settings, the fingerprints of the logs it may serve, the
validation curve). :func:`load_model` reads it. The training loop lives in ``train/``; this module is what both the
trainer and the ``sequential`` candidate source need.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from torch import nn

from retrieval.errors import ConfigError

__all__ = [
    "ITEMS_FILE",
    "MANIFEST",
    "MODEL_FILE",
    "SASRec",
    "SavedModel",
    "SeqModelConfig",
    "item_sort_key",
    "load_model",
    "right_aligned",
]

MODEL_FILE = "model.pt"
ITEMS_FILE = "items.json"
MANIFEST = "manifest.json"


def item_sort_key(item_id: str) -> tuple[int, int, str]:
    """Order of items at one timestamp: by id, numerically when the id is an integer, else as text."""
    try:
        return (0, int(item_id), "")
    except ValueError:
        return (1, 0, item_id)


def right_aligned(sequences: Sequence[Sequence[int]], length: int) -> np.ndarray:
    """``[n, length]`` int64 array, each sequence's last ``length`` tokens at the right, 0-padded on the left."""
    out = np.zeros((len(sequences), length), np.int64)
    for row, seq in enumerate(sequences):
        tail = list(seq[-length:]) if length else []
        if tail:
            out[row, length - len(tail) :] = tail
    return out


class SeqModelConfig(BaseModel):
    """Architecture of the sequential model."""

    model_config = ConfigDict(extra="forbid")

    max_len: int = Field(50, ge=2, le=4096, description="Most recent items the model reads (longer histories cut).")
    dim: int = Field(64, ge=8, le=1024, description="Embedding and hidden size.")
    blocks: int = Field(2, ge=1, le=12, description="Self-attention blocks.")
    heads: int = Field(2, ge=1, le=16, description="Attention heads (must divide dim).")
    dropout: float = Field(0.2, ge=0.0, lt=1.0, description="Dropout on embeddings, attention and feed-forward.")

    @model_validator(mode="after")
    def _heads_divide_dim(self) -> SeqModelConfig:
        if self.dim % self.heads:
            raise ValueError(f"dim {self.dim} is not a multiple of heads {self.heads}")
        return self


class SASRec(nn.Module):
    """Item + position embeddings, causal Transformer encoder blocks (pre-norm), shared output embeddings."""

    def __init__(self, n_items: int, config: SeqModelConfig) -> None:
        super().__init__()
        self.n_items, self.config = n_items, config
        self.item_emb = nn.Embedding(n_items + 1, config.dim, padding_idx=0)
        self.pos_emb = nn.Embedding(config.max_len, config.dim)
        self.dropout = nn.Dropout(config.dropout)
        layer = nn.TransformerEncoderLayer(
            config.dim,
            config.heads,
            dim_feedforward=4 * config.dim,
            dropout=config.dropout,
            activation="gelu",
            batch_first=True,
            norm_first=True,
        )
        self.encoder = nn.TransformerEncoder(layer, config.blocks, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(config.dim)
        nn.init.normal_(self.item_emb.weight, std=0.02)
        nn.init.normal_(self.pos_emb.weight, std=0.02)
        with torch.no_grad():
            self.item_emb.weight[0].zero_()

    def hidden(self, tokens: torch.Tensor) -> torch.Tensor:
        """Hidden states ``[batch, length, dim]`` of right-aligned token sequences (0 = padding on the left)."""
        _, length = tokens.shape
        if length > self.config.max_len:
            raise ValueError(f"sequence length {length} exceeds max_len {self.config.max_len}")
        positions = torch.arange(self.config.max_len - length, self.config.max_len, device=tokens.device)
        x = self.item_emb(tokens) * math.sqrt(self.config.dim) + self.pos_emb(positions)[None]
        x = self.dropout(x)
        return self.norm(self.encoder(x, mask=self._mask(tokens)))

    def _mask(self, tokens: torch.Tensor) -> torch.Tensor:
        """Boolean ``[batch * heads, L, L]`` mask (True = blocked): future positions and padded keys, but never a
        position's own key (a padded query would otherwise have no key at all)."""
        length = tokens.shape[1]
        causal = torch.ones(length, length, dtype=torch.bool, device=tokens.device).triu(1)
        blocked = causal[None] | (tokens == 0)[:, None, :]
        blocked = blocked & ~torch.eye(length, dtype=torch.bool, device=tokens.device)[None]
        return blocked.repeat_interleave(self.config.heads, dim=0)

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Scores of every item (``[..., n_items]``, item index order) from hidden states ``[..., dim]``."""
        return hidden @ self.item_emb.weight[1:].T

    def next_item_logits(self, tokens: torch.Tensor) -> torch.Tensor:
        """Scores ``[batch, n_items]`` of the item following each sequence."""
        return self.logits(self.hidden(tokens)[:, -1])


class SavedModel(BaseModel):
    """A loaded model folder: the module (eval mode), its item ids (token order) and its manifest."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    folder: Path
    model: SASRec
    item_ids: list[str]
    manifest: dict[str, Any]

    def accepted_fingerprints(self) -> dict[str, str]:
        """Log fingerprints this model may serve (label -> fingerprint), from its manifest."""
        return dict(self.manifest.get("log", {}).get("serves", {}))


def load_model(folder: str | Path) -> SavedModel:
    """Read a model folder written by ``recagent train sequential``; ConfigError when it is incomplete."""
    folder = Path(folder)
    hint = "train one with `recagent train sequential --catalog ... --interactions ...` (or give its --out folder)"
    missing = [n for n in (MODEL_FILE, ITEMS_FILE, MANIFEST) if not (folder / n).is_file()]
    if missing:
        raise ConfigError(f"{folder} is not a sequential model folder (missing {', '.join(missing)})", hint=hint)
    try:
        manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
        item_ids = [str(i) for i in json.loads((folder / ITEMS_FILE).read_text(encoding="utf-8"))]
        config = SeqModelConfig.model_validate(manifest["settings"]["model"])
        model = SASRec(len(item_ids), config)
        model.load_state_dict(torch.load(folder / MODEL_FILE, map_location="cpu", weights_only=True))
    except (OSError, ValueError, KeyError, TypeError, RuntimeError, ValidationError) as exc:
        raise ConfigError(f"cannot read the sequential model in {folder}: {exc}", hint=hint) from exc
    model.eval()
    return SavedModel(folder=folder, model=model, item_ids=item_ids, manifest=manifest)
