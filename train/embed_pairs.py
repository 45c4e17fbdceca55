"""Co-interaction pairs for the embedder, cut from the TRAIN part of the evaluator's split.

For each training user, the positives (rating >= ``min_rating``) of the split's train log in time order; each
positive is paired with the next ``window`` positives (anchor = the earlier item, positive = the later one). Pairs are
deduplicated across users (an unordered item pair counts once, the first user's orientation is kept) and optionally
capped by a seeded sample. Validation users (a seeded choice among users with an eligible target) give no pair:
their last eligible positive and the items before it are the validation queries of :mod:`train.embed_eval`.
The leakage guard (:func:`train.leakage.assert_no_pair_leakage`) checks every pair against the split's test pairs.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import Field

from agent.errors import InputError
from eval.datasets import EvalDataset
from eval.protocol import Split, make_split
from retrieval.candidates import seed_weights
from retrieval.config import FusionConfig
from retrieval.interactions import Interactions
from retrieval.types import HistoryEntry, UserQuery
from train.config import SplitOptions
from train.leakage import assert_no_pair_leakage, held_out_pairs

__all__ = [
    "EmbedData",
    "EmbedDataConfig",
    "ItemPair",
    "ValQuery",
    "ValTarget",
    "build_embed_data",
    "build_pairs",
    "val_target",
    "val_targets",
]


ValQuery = Literal["item2item", "recent"]
"""How validation ranks the catalog (see :mod:`train.embed_eval`)."""


class EmbedDataConfig(SplitOptions):
    """How pairs and validation queries are cut; the split options are the evaluator's (give the evaluation's
    values, so its test interactions stay out)."""

    sample_seed: int = Field(0, description="Seed of the validation users and the --max-pairs sample.")
    val_users: int = Field(100, ge=1, description="Users whose interactions only validate (never paired).")
    window: int = Field(3, ge=1, description="Each positive is paired with the next `window` positives.")
    max_pairs: int | None = Field(None, ge=1, description="Cap on training pairs (seeded sample; None: all).")
    val_query: ValQuery = Field(
        "item2item",
        description="Validation query: 'item2item' scores like the pipeline's item-to-item source (its seed "
        "weights over the history before the target, each seed's nearest neighbours summed); 'recent' is the mean "
        "of the last `history` items' embeddings.",
    )
    val_targets: int = Field(
        5, ge=1, description="Validation queries per validation user: its last N eligible positives, newest first."
    )
    history: int = Field(10, ge=1, description="With val_query 'recent': items before the target in the query.")
    fetch_k: int = Field(
        FusionConfig().k, ge=1, description="With val_query 'item2item': results per source (the fusion's k)."
    )


@dataclass(frozen=True)
class ItemPair:
    """Two items one user liked close together in time: ``anchor`` before ``positive``."""

    user_id: str
    anchor: str
    positive: str


@dataclass(frozen=True)
class ValTarget:
    """A validation query: the user's last eligible positive and the items the user had seen before it."""

    user_id: str
    target: str
    history: tuple[str, ...]
    """The last ``history`` items before the target, oldest first (the query)."""
    seen: frozenset[str]
    """Every item before the target (excluded from the ranking)."""
    seeds: tuple[tuple[str, float], ...] = ()
    """The pipeline's item-to-item seeds for the history before the target (``retrieval.candidates.seed_weights``:
    liked items weighted by rating and recency), heaviest first."""


@dataclass
class EmbedData:
    """Pairs, validation targets and where they came from."""

    dataset: EvalDataset
    split: Split
    forbidden: dict[str, set[str]]
    pairs: list[ItemPair]
    val: list[ValTarget]
    stats: dict[str, Any] = field(default_factory=dict)


def val_targets(user: str, entries: Sequence[HistoryEntry], cfg: EmbedDataConfig) -> list[ValTarget]:
    """The user's last ``cfg.val_targets`` positives with at least ``min_history`` earlier interactions, newest
    first; each is ranked from the history before it."""
    out: list[ValTarget] = []
    for pos in range(len(entries) - 1, cfg.min_history - 1, -1):
        if len(out) >= cfg.val_targets:
            break
        rating = entries[pos].rating
        if rating is not None and rating >= cfg.min_rating:
            before = [e.item_id for e in entries[:pos]]
            target = entries[pos].item_id
            history = tuple(i for i in before if i != target)[-cfg.history :]
            earlier = [e for e in entries[:pos] if e.item_id != target]
            seeds = tuple(seed_weights(UserQuery(history=earlier)).items())
            out.append(ValTarget(user, target, history, frozenset(before) - {target}, seeds))
    return out


def val_target(user: str, entries: Sequence[HistoryEntry], cfg: EmbedDataConfig) -> ValTarget | None:
    """The user's last positive with at least ``min_history`` earlier interactions, or None."""
    found = val_targets(user, entries, cfg.model_copy(update={"val_targets": 1}))
    return found[0] if found else None


def build_pairs(
    histories: Mapping[str, Sequence[HistoryEntry]],
    users: Sequence[str],
    *,
    min_rating: float,
    window: int,
    known: set[str] | None = None,
) -> tuple[list[ItemPair], dict[str, int]]:
    """Pairs of ``users`` (in that order) and counts: users paired, users skipped (fewer than two positives),
    positives outside the catalog ``known`` (dropped), self pairs and duplicate pairs (dropped)."""
    pairs: list[ItemPair] = []
    seen: set[tuple[str, str]] = set()
    counts = {
        "users_paired": 0,
        "users_under_two_positives": 0,
        "positives_not_in_catalog": 0,
        "self_pairs": 0,
        "duplicate_pairs": 0,
    }
    for user in users:
        positives = [e.item_id for e in histories[user] if e.rating is not None and e.rating >= min_rating]
        if known is not None:
            kept = [i for i in positives if i in known]
            counts["positives_not_in_catalog"] += len(positives) - len(kept)
            positives = kept
        if len(positives) < 2:
            counts["users_under_two_positives"] += 1
            continue
        before = len(pairs)
        for i, anchor in enumerate(positives):
            for positive in positives[i + 1 : i + 1 + window]:
                if anchor == positive:
                    counts["self_pairs"] += 1
                    continue
                key = (anchor, positive) if anchor < positive else (positive, anchor)
                if key in seen:
                    counts["duplicate_pairs"] += 1
                    continue
                seen.add(key)
                pairs.append(ItemPair(user, anchor, positive))
        counts["users_paired"] += len(pairs) > before
    return pairs, counts


def build_embed_data(dataset: EvalDataset, cfg: EmbedDataConfig) -> EmbedData:
    """Split, choose validation users, cut pairs from the train log, run the leakage guard."""
    split = make_split(dataset, cfg.protocol())
    assert split.train is not None and dataset.interactions is not None
    train_log: Interactions = split.train
    forbidden = held_out_pairs(dataset.interactions, train_log)
    histories = {u: train_log.history(u) for u in train_log.user_ids}
    targets = {u: t for u in train_log.user_ids if (t := val_target(u, histories[u], cfg)) is not None}
    if len(targets) < cfg.val_users + 1:
        raise InputError(
            f"too few users for a validation split: {len(targets)} of {len(histories)} users have a positive "
            f"(rating >= {cfg.min_rating}) after {cfg.min_history} earlier train interactions, and {cfg.val_users} "
            "are asked for validation (at least one more must remain to train on)",
            hint="lower --val-users or --min-history, or give a larger interaction log",
        )
    order = sorted(targets)
    random.Random(f"{cfg.sample_seed}:val-users").shuffle(order)
    val_users = set(order[: cfg.val_users])
    val = [t for u in sorted(val_users) for t in val_targets(u, histories[u], cfg)]
    train_users = [u for u in train_log.user_ids if u not in val_users]
    pairs, counts = build_pairs(
        histories, train_users, min_rating=cfg.min_rating, window=cfg.window, known=set(dataset.items)
    )
    all_pairs = len(pairs)
    if cfg.max_pairs is not None and len(pairs) > cfg.max_pairs:
        keep = sorted(random.Random(f"{cfg.sample_seed}:pairs").sample(range(len(pairs)), cfg.max_pairs))
        pairs = [pairs[i] for i in keep]
    if not pairs:
        raise InputError(
            f"no training pairs: none of {len(train_users)} training users has two positives "
            f"(rating >= {cfg.min_rating}) in the train log",
            hint="lower --min-rating, raise --window, or give a larger interaction log",
        )
    assert_no_pair_leakage(pairs, forbidden)
    stats = {
        "users": len(histories),
        "train_users": len(train_users),
        "val_users": len(val_users),
        "val_queries": len(val),
        "eligible_val_users": len(targets),
        "pairs": len(pairs),
        "pairs_before_cap": all_pairs,
        "pairs_cut_by_max_pairs": all_pairs - len(pairs),
        "pair_users": len({p.user_id for p in pairs}),
        "pair_items": len({p.anchor for p in pairs} | {p.positive for p in pairs}),
        **counts,
        "test_users": len(split.cases),
        "test_interactions": sum(len(v) for v in forbidden.values()),
        "train_interactions": len(train_log),
    }
    return EmbedData(dataset, split, forbidden, pairs, val, stats)
