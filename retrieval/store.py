"""Chroma store: embedded (``PersistentClient``) by default, a ``chroma run`` server (``HttpClient``) when a URL is set.

Items are upserted idempotently: each record carries ``rc_hash``, a hash of its document text, its metadata and the
embedder id, so re-ingesting an unchanged catalog embeds nothing. A collection records the embedder id and the
dimension it was built with and refuses another embedder.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
from collections.abc import Iterator, Sequence
from typing import Any

import httpx
import numpy as np

from retrieval.catalog import item_document
from retrieval.config import StoreConfig, parse_chroma_url, validate_collection_name
from retrieval.embed import Embedder
from retrieval.errors import InputError, RecagentError, StoreError
from retrieval.types import Item, MetaValue, UpsertStats, Where

EMBEDDER_KEY = "rc_embedder"
DIM_KEY = "rc_dim"
HASH_KEY = "rc_hash"
TEXTS_KEY = "rc_texts"
SCHEMA_KEY = "rc_schema"
SCHEMA_VERSION = 1


@contextlib.contextmanager
def chroma_errors(action: str, hint: str = "check the Chroma store (path or server) and retry") -> Iterator[None]:
    """Turn any unexpected Chroma/HTTP failure during ``action`` into a StoreError."""
    try:
        yield
    except RecagentError:
        raise
    except Exception as exc:
        raise StoreError(f"Chroma failed while {action}: {type(exc).__name__}: {exc}", hint=hint) from exc


def content_hash(document: str, metadata: dict[str, Any], embedder_id: str) -> str:
    """sha256 over the document, the metadata (sorted keys) and the embedder id; 32 hex characters."""
    payload = json.dumps([document, metadata, embedder_id], sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:32]


def item_metadata(item: Item) -> dict[str, MetaValue]:
    """The Chroma metadata of an item: its metadata, ``title``, its text fields, and the names of those fields.

    Lists of strings are stored as Chroma 1.5 array metadata (filter with ``{"genres": {"$contains": "Comedy"}}``);
    empty lists are left out because Chroma rejects them.
    """
    meta: dict[str, MetaValue] = {k: v for k, v in item.metadata.items() if v != []}
    meta["title"] = item.title
    meta.update(item.texts)
    if item.texts:
        meta[TEXTS_KEY] = list(item.texts)
    return meta


def item_from_record(item_id: str, meta: dict[str, Any]) -> Item:
    """Rebuild an :class:`Item` from a record's metadata (inverse of :func:`item_metadata`)."""
    text_keys = list(meta.get(TEXTS_KEY) or [])
    texts = {k: str(meta[k]) for k in text_keys if k in meta}
    skip = {"title", HASH_KEY, TEXTS_KEY, *text_keys}
    # sorted: Chroma returns metadata keys in no fixed order, and prompts (and their cache keys) must not vary
    metadata = {k: meta[k] for k in sorted(meta) if k not in skip and meta[k] is not None}
    return Item(id=item_id, title=str(meta.get("title") or item_id), texts=texts, metadata=metadata)


def _chunks(values: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(values), size):
        yield values[start : start + size]


class ItemCollection:
    """One Chroma collection of items, with the embedder it was built with."""

    def __init__(self, store: Store, raw: Any) -> None:
        self.store = store
        self.raw = raw
        self.name: str = raw.name
        meta = raw.metadata or {}
        self.embedder_id: str | None = meta.get(EMBEDDER_KEY)
        self.dim: int | None = meta.get(DIM_KEY)

    # --- checks ---
    def check_embedder(self, embedder: Embedder) -> None:
        """StoreError unless ``embedder`` is the one this collection was built with."""
        if self.embedder_id is None:
            raise StoreError(
                f"collection {self.name!r} was not created by recagent (no embedder recorded)",
                hint="ingest into another collection (--collection NAME) or delete this one",
            )
        if embedder.id != self.embedder_id:
            raise StoreError(
                f"collection {self.name!r} holds embeddings of {self.embedder_id!r} (dim {self.dim}); "
                f"the configured embedder is {embedder.id!r}",
                hint="use the same embedding model (RECAGENT_EMBED_MODEL), or ingest into a new collection "
                "(--collection NAME); embeddings of two models cannot be mixed",
            )

    # --- reads ---
    def count(self) -> int:
        with chroma_errors(f"counting {self.name!r}"):
            return int(self.raw.count())

    def ids(self, where: Where | None = None) -> list[str]:
        """All ids (matching ``where``), paged."""
        out: list[str] = []
        page = self.store.max_batch
        with chroma_errors(f"listing ids of {self.name!r}", hint="check the filter's field names and types"):
            offset = 0
            while True:
                got = self.raw.get(where=where, include=[], limit=page, offset=offset)
                out.extend(got["ids"])
                if len(got["ids"]) < page:
                    return out
                offset += page

    def get_metadata(self, ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        with chroma_errors(f"reading metadata from {self.name!r}"):
            for part in _chunks(list(ids), self.store.max_batch):
                got = self.raw.get(ids=list(part), include=["metadatas"])
                out.update({i: dict(m or {}) for i, m in zip(got["ids"], got["metadatas"], strict=True)})
        return out

    def get_items(self, ids: Sequence[str]) -> dict[str, Item]:
        """Items by id (ids not in the collection are absent from the result)."""
        return {i: item_from_record(i, m) for i, m in self.get_metadata(ids).items()}

    def get_embeddings(self, ids: Sequence[str]) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        with chroma_errors(f"reading embeddings from {self.name!r}"):
            for part in _chunks(list(ids), self.store.max_batch):
                got = self.raw.get(ids=list(part), include=["embeddings"])
                vectors = got["embeddings"]
                if vectors is None:
                    continue
                for i, v in zip(got["ids"], vectors, strict=True):
                    out[i] = np.asarray(v, dtype=np.float32)
        return out

    def query(self, vectors: np.ndarray, k: int, where: Where | None = None) -> list[list[tuple[str, float]]]:
        """Top-``k`` (id, cosine similarity) per query vector, best first, within ``where``."""
        vectors = np.atleast_2d(np.asarray(vectors, dtype=np.float32))
        if len(vectors) == 0 or k < 1:
            return [[] for _ in range(len(vectors))]
        if self.dim is not None and vectors.shape[1] != self.dim:
            raise StoreError(
                f"query vectors have dimension {vectors.shape[1]}, collection {self.name!r} holds {self.dim}",
                hint="query with the embedder the collection was built with",
            )
        n = min(k, self.count())
        if n == 0:
            return [[] for _ in range(len(vectors))]
        with chroma_errors(f"querying {self.name!r}", hint="check the filter's field names and types"):
            got = self.raw.query(query_embeddings=vectors, n_results=n, where=where, include=["distances"])
        return [
            [(i, 1.0 - float(d)) for i, d in zip(ids, dists, strict=True)]
            for ids, dists in zip(got["ids"], got["distances"], strict=True)
        ]

    def set_search_ef(self, ef: int) -> None:
        """Persist a new HNSW ``ef_search`` (recall/latency trade-off) for this collection.

        Chroma 1.5.9 reads ``ef_search`` when it loads an index: a process that has already queried the collection
        keeps the old value (checked by hand), so the change shows in the next process (or server restart). Set
        ``StoreConfig.hnsw_ef_search`` before creating a collection to have it from the start.
        """
        with chroma_errors(f"configuring {self.name!r}"):
            self.raw.modify(configuration={"hnsw": {"ef_search": int(ef)}})

    def hashes(self, ids: Sequence[str]) -> dict[str, str]:
        return {i: str(m.get(HASH_KEY, "")) for i, m in self.get_metadata(ids).items()}

    # --- writes ---
    def upsert(
        self,
        items: Sequence[Item],
        embedder: Embedder,
        *,
        prune: bool = False,
        progress: bool | None = None,
    ) -> UpsertStats:
        """Add new items, re-embed changed ones, skip unchanged ones; with ``prune`` delete ids not in ``items``."""
        started = time.perf_counter()
        self.check_embedder(embedder)
        ids = [item.id for item in items]
        if len(set(ids)) != len(ids):
            dupes = sorted({i for i in ids if ids.count(i) > 1})[:3]
            raise InputError(f"duplicate item ids given to upsert: {dupes}", hint="de-duplicate items first")
        docs: dict[str, str] = {}
        metas: dict[str, dict[str, MetaValue]] = {}
        for item in items:
            doc, meta = item_document(item), item_metadata(item)
            meta[HASH_KEY] = content_hash(doc, meta, embedder.id)
            docs[item.id], metas[item.id] = doc, meta
        existing = self.hashes(ids)
        todo = [i for i in ids if existing.get(i) != metas[i][HASH_KEY]]
        stats = UpsertStats(collection=self.name, items=len(ids), embedder=embedder.id)
        stats.added = sum(1 for i in todo if i not in existing)
        stats.updated = len(todo) - stats.added
        stats.unchanged = len(ids) - len(todo)
        if todo:
            vectors = embedder.embed([docs[i] for i in todo], progress=progress)
            if self.dim is not None and vectors.shape[1] != self.dim:
                raise StoreError(
                    f"embedder {embedder.id!r} gives dimension {vectors.shape[1]}, collection {self.name!r} holds "
                    f"{self.dim}",
                    hint="ingest into a new collection (--collection NAME)",
                )
            stats.embedded = len(todo)
            with chroma_errors(f"writing to {self.name!r}"):
                for start in range(0, len(todo), self.store.max_batch):
                    part = todo[start : start + self.store.max_batch]
                    self.raw.upsert(
                        ids=part,
                        embeddings=vectors[start : start + len(part)],
                        documents=[docs[i] for i in part],
                        metadatas=[metas[i] for i in part],  # type: ignore[misc]
                    )
        if prune:
            stale = sorted(set(self.ids()) - set(ids))
            with chroma_errors(f"pruning {self.name!r}"):
                for chunk in _chunks(stale, self.store.max_batch):
                    self.raw.delete(ids=list(chunk))
            stats.pruned = len(stale)
        stats.seconds = round(time.perf_counter() - started, 3)
        return stats


class Store:
    """A Chroma client (embedded or server) and the collections in it."""

    def __init__(self, config: StoreConfig | None = None) -> None:
        self.config = config or StoreConfig()
        self.client = _connect(self.config)
        with chroma_errors("asking the maximum batch size"):
            self.max_batch = max(1, min(int(self.client.get_max_batch_size()), 5000))

    @property
    def location(self) -> str:
        return self.config.url or str(self.config.path)

    def collection_names(self) -> list[str]:
        with chroma_errors("listing collections"):
            return sorted(c.name if hasattr(c, "name") else str(c) for c in self.client.list_collections())

    def has_collection(self, name: str) -> bool:
        return validate_collection_name(name) in self.collection_names()

    def collection(self, name: str | None = None) -> ItemCollection:
        """An existing collection (StoreError naming the existing ones if it is missing)."""
        name = validate_collection_name(name or self.config.collection)
        names = self.collection_names()
        if name not in names:
            existing = ", ".join(names) or "none"
            raise StoreError(
                f"collection {name!r} does not exist in {self.location} (existing: {existing})",
                hint=f"ingest a catalog first: `recagent ingest PATH --collection {name}`, or pick an existing one",
            )
        with chroma_errors(f"opening {name!r}"):
            raw = self.client.get_collection(name=name, embedding_function=None)
        return ItemCollection(self, raw)

    def open_for(self, embedder: Embedder, name: str | None = None) -> ItemCollection:
        """The collection for ``embedder``, created (recording embedder id and dimension) if missing."""
        name = validate_collection_name(name or self.config.collection)
        if name in self.collection_names():
            coll = self.collection(name)
            coll.check_embedder(embedder)
            return coll
        cfg = self.config
        hnsw = {
            "space": "cosine",
            "ef_construction": cfg.hnsw_ef_construction,
            "max_neighbors": cfg.hnsw_max_neighbors,
            "ef_search": cfg.hnsw_ef_search,
        }
        meta = {EMBEDDER_KEY: embedder.id, DIM_KEY: int(embedder.dim), SCHEMA_KEY: SCHEMA_VERSION}
        with chroma_errors(f"creating {name!r}"):
            raw = self.client.get_or_create_collection(
                name=name, embedding_function=None, metadata=meta, configuration={"hnsw": hnsw}
            )
        return ItemCollection(self, raw)

    def upsert(
        self,
        items: Sequence[Item],
        embedder: Embedder,
        *,
        collection: str | None = None,
        prune: bool = False,
        progress: bool | None = None,
    ) -> UpsertStats:
        """Open (or create) the collection for ``embedder`` and upsert ``items`` into it."""
        return self.open_for(embedder, collection).upsert(items, embedder, prune=prune, progress=progress)

    def delete_collection(self, name: str) -> None:
        name = validate_collection_name(name)
        with chroma_errors(f"deleting {name!r}"):
            self.client.delete_collection(name=name)


def _connect(config: StoreConfig) -> Any:
    import chromadb
    from chromadb.config import Settings as ChromaSettings

    settings = ChromaSettings(anonymized_telemetry=False)
    if config.url:
        host, port, ssl = parse_chroma_url(config.url)
        base = f"{'https' if ssl else 'http'}://{host}:{port}"
        hint = (
            f"start a server (`chroma run --path DIR --host {host} --port {port}`), fix RECAGENT_CHROMA_URL, "
            f"or unset it to use the embedded store at {config.path}"
        )
        try:
            response = httpx.get(f"{base}/api/v2/heartbeat", timeout=config.timeout_s)
            response.raise_for_status()
        except httpx.HTTPError as exc:
            raise StoreError(f"cannot reach the Chroma server at {config.url}: {exc}", hint=hint) from exc
        with chroma_errors(f"connecting to {config.url}", hint=hint):
            return chromadb.HttpClient(host=host, port=port, ssl=ssl, settings=settings)
    path = config.path.expanduser()
    hint = "set RECAGENT_CHROMA_PATH to a writable folder (or fix the folder's permissions)"
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreError(f"cannot create the Chroma folder {path}: {exc.strerror or exc}", hint=hint) from exc
    if not os.access(path, os.W_OK | os.X_OK):
        raise StoreError(f"the Chroma folder {path} is not writable", hint=hint)
    with chroma_errors(f"opening the Chroma folder {path}", hint=hint):
        return chromadb.PersistentClient(path=str(path), settings=settings)
