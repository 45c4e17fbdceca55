"""Catalog file -> clean/validate -> embed -> Chroma collection, in one call (what ``recagent ingest`` runs)."""

from __future__ import annotations

import time
from pathlib import Path

from retrieval.catalog import read_catalog
from retrieval.config import CleanConfig, EmbedConfig, StoreConfig, validate_collection_name
from retrieval.embed import Embedder, make_embedder
from retrieval.errors import InputError
from retrieval.mapping import ColumnMapping
from retrieval.store import Store
from retrieval.types import IngestReport, ReasonCount


def ingest(
    path: str | Path,
    *,
    store_config: StoreConfig,
    embed_config: EmbedConfig,
    format: str = "auto",
    mapping: ColumnMapping | None = None,
    collection: str | None = None,
    strict: bool = False,
    prune: bool = False,
    limit: int | None = None,
    clean: CleanConfig | None = None,
    embedder: Embedder | None = None,
    store: Store | None = None,
    progress: bool | None = None,
) -> IngestReport:
    """Read, clean and upsert a catalog; the report's ``store`` part says what was added/updated/pruned/embedded.

    ``embedder`` and ``store`` may be passed to reuse loaded ones (tests, long-lived servers).
    """
    started = time.perf_counter()
    name = validate_collection_name(collection or store_config.collection)
    if prune and limit is not None:
        raise InputError(
            "--prune with --limit would delete every stored item beyond the limit",
            hint="drop --prune when reading part of a file with --limit",
        )
    catalog = read_catalog(path, format=format, mapping=mapping, strict=strict, limit=limit, clean=clean)
    store = store or Store(store_config)
    embedder = embedder or make_embedder(embed_config)
    report = catalog.report
    existed = store.has_collection(name)
    try:
        report.store = store.upsert(catalog.items, embedder, collection=name, prune=prune, progress=progress)
    except BaseException:  # a failed first ingest (or Ctrl-C) leaves no empty collection behind
        _drop_if_new_and_empty(store, name, existed)
        raise
    stats = report.store
    if stats.enrichment_dropped:  # never drop LLM enrichment silently (agent/enrich.py)
        reason = "LLM enrichment removed from changed items (run `recagent enrich` to enrich them again)"
        for item_id in stats.enrichment_dropped_ids:
            report.note(reason, item_id)
        report.notes[reason].count = stats.enrichment_dropped
    if stats.enrichment_kept:
        report.notes["LLM enrichment kept on unchanged items"] = ReasonCount(count=stats.enrichment_kept)
    report.seconds = round(time.perf_counter() - started, 3)
    return report


def _drop_if_new_and_empty(store: Store, name: str, existed: bool) -> None:
    if existed:
        return
    try:
        if store.has_collection(name) and store.collection(name).count() == 0:
            store.delete_collection(name)
    except Exception:  # the store itself is failing: the original error is the one to report
        return
