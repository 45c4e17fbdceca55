"""Dataset -> the evaluator's split -> training and validation examples over the pipeline's fused candidates.

The split is :func:`eval.protocol.make_split` with the evaluator's own protocol options, and examples are cut from
its TRAIN log only; candidates come from the same :class:`~retrieval.candidates.CandidateGenerator` the
Recommender builds (semantic + item-to-item over the Chroma collection, collaborative + popularity over the train
log), and item fields from the collection through the evaluator's :class:`~eval.provenance.DeterministicStore`, so the
prompts are the ones the evaluator's pipeline sends. Validation users are disjoint from training users.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from agent.errors import InputError
from agent.settings import Settings
from eval.datasets import EvalDataset, file_sha256, load_interaction_dataset
from eval.protocol import Split, make_split
from eval.provenance import DeterministicStore
from retrieval.candidates import CandidateGenerator
from retrieval.embed import Embedder, make_embedder
from retrieval.fitted import artifact_dir
from retrieval.interactions import InteractionMapping
from retrieval.mapping import ColumnMapping
from retrieval.store import ItemCollection, Store
from train.config import DataConfig
from train.examples import RankExample, describe_examples, target_positions, user_examples
from train.leakage import assert_no_leakage, held_out_pairs

__all__ = ["TrainData", "build_data", "collection_name", "load_data", "open_collection"]


@dataclass
class TrainData:
    """Examples and where they came from."""

    dataset: EvalDataset
    split: Split
    forbidden: dict[str, set[str]]
    train: list[RankExample]
    val: list[RankExample]
    collection: str
    stats: dict[str, Any] = field(default_factory=dict)


def load_data(
    catalog: Path,
    interactions: Path,
    *,
    mapping: ColumnMapping | None = None,
    log_mapping: InteractionMapping | None = None,
) -> EvalDataset:
    """The catalog and interaction log, as the evaluator loads them (clear errors for missing files); ``mapping``
    and ``log_mapping`` name their columns (``--mapping`` / ``--interactions-mapping``) for any catalog and log."""
    for what, path in (("catalog", catalog), ("interaction log", interactions)):
        if not Path(path).exists():
            raise InputError(
                f"{what} {path} does not exist",
                hint="give --catalog (e.g. a MovieLens folder or movies.csv) and --interactions (ratings.csv)",
            )
    ratings = Path(interactions)
    if ratings.is_dir():
        found = next((ratings / n for n in ("ratings.csv", "u.data", "ratings.dat") if (ratings / n).is_file()), None)
        if found is None:
            raise InputError(
                f"{ratings} holds no ratings.csv, u.data or ratings.dat", hint="give the interaction file itself"
            )
        ratings = found
    return load_interaction_dataset(Path(catalog), ratings, mapping=mapping, log_mapping=log_mapping)


def collection_name(dataset: EvalDataset) -> str:
    """The collection the evaluator ingests this catalog into (shared, so the catalog is embedded once)."""
    path = dataset.catalog_path
    return f"eval-{file_sha256(path)[:12]}" if path.is_file() else f"eval-{dataset.name}"[:60]


def open_collection(
    settings: Settings,
    dataset: EvalDataset,
    embedder: Embedder,
    *,
    store: Store | None = None,
    collection: str | None = None,
) -> ItemCollection:
    """The given collection, or the evaluator's own one for this catalog (``eval-<catalog hash>``), ingested now
    when needed (idempotent: unchanged items are not embedded again), read in the evaluator's deterministic order."""
    store = store or DeterministicStore(settings.store_config())
    name = collection or collection_name(dataset)
    if collection is None:
        from retrieval.ingest import ingest

        ingest(dataset.catalog_path, store_config=settings.store_config(),
               embed_config=settings.embed_config(progress=False), format=dataset.catalog_format,
               mapping=dataset.mapping, collection=name, embedder=embedder, store=store, progress=False)  # fmt: skip
    elif not store.has_collection(name):
        raise InputError(f"collection {name!r} does not exist", hint="ingest the catalog first or drop --collection")
    return store.open_for(embedder, name)


def _eligible(entries: list[Any], cfg: DataConfig) -> bool:
    rng = random.Random(0)
    return bool(target_positions(entries, min_rating=cfg.min_rating, min_history=cfg.min_history, count=1, rng=rng))


def build_data(
    settings: Settings,
    dataset: EvalDataset,
    cfg: DataConfig,
    *,
    embedder: Embedder | None = None,
    store: Store | None = None,
    collection: str | None = None,
    progress: bool = True,
) -> TrainData:
    """Split, pick validation users, build examples, and run the leakage guard."""
    split = make_split(dataset, cfg.protocol())
    assert split.train is not None and dataset.interactions is not None
    train_log = split.train
    forbidden = held_out_pairs(dataset.interactions, train_log)
    histories = {u: train_log.history(u) for u in train_log.user_ids}
    users = [u for u in train_log.user_ids if _eligible(histories[u], cfg)]
    if len(users) < cfg.val_users + 1:
        raise InputError(
            f"too few users for a validation split: {len(users)} users have a positive (rating >= {cfg.min_rating}) "
            f"after {cfg.min_history} earlier train interactions, and {cfg.val_users} are asked for validation",
            hint="lower --val-users or --min-history, or give a larger interaction log",
        )
    order = sorted(users)
    random.Random(f"{cfg.sample_seed}:users").shuffle(order)
    val_users = order[: cfg.val_users]
    train_users = order[cfg.val_users :][: cfg.max_train_users]

    embedder = embedder or make_embedder(settings.embed_config(progress=False))
    coll = open_collection(settings, dataset, embedder, store=store, collection=collection)
    name = coll.name
    store_config = settings.store_config()
    generator = CandidateGenerator.default(coll, embedder, train_log, settings.fusion_config(),
                                           learned=settings.learned_sources,
                                           cache_dir=lambda kind: artifact_dir(store_config, name, kind))  # fmt: skip

    def examples_of(user_list: list[str], count: int, desc: str) -> list[RankExample]:
        out: list[RankExample] = []
        for user in tqdm(user_list, desc=desc, unit="user", disable=not progress, dynamic_ncols=True):
            out += user_examples(
                user,
                histories[user],
                fuse=generator.generate,
                get_items=coll.get_items,
                forbidden=forbidden.get(user, set()),
                min_rating=cfg.min_rating,
                min_history=cfg.min_history,
                count=count,
                options=cfg.options,
                pool=cfg.pool,
                order=cfg.option_order,
                tries=cfg.tries,
                rng=random.Random(f"{cfg.sample_seed}:{user}"),
            )
        return out

    train = examples_of(train_users, cfg.examples_per_user, "train examples")
    val = examples_of(val_users, cfg.val_examples_per_user, "validation examples")
    if not train or not val:
        raise InputError(
            f"no usable examples ({len(train)} train, {len(val)} validation): retrieval found no candidates",
            hint="check that the catalog is the one the interactions were recorded on",
        )
    assert_no_leakage([*train, *val], forbidden)
    stats = {
        "train": describe_examples(train),
        "val": describe_examples(val),
        "test_users": len(split.cases),
        "test_interactions": sum(len(v) for v in forbidden.values()),
        "eligible_users": len(users),
    }
    return TrainData(dataset, split, forbidden, train, val, name, stats)
