"""Chroma store: embedded (``PersistentClient``) by default, a ``chroma run`` server (``HttpClient``) when a URL is set.

Items are upserted idempotently: each record carries ``rc_hash``, a hash of its document text, its metadata and the
embedder id, so re-ingesting an unchanged catalog embeds nothing. A collection records the embedder id and the
dimension it was built with and refuses another embedder.

Enrichment (``recagent enrich``, agent/enrich.py): an item may carry an LLM-written description and keywords in
``rc_enrich_*`` metadata keys; its embedded document is then the original document plus those lines, while the
original fields stay as they were (:func:`item_from_record` never returns the ``rc_*`` keys). Re-ingesting an
unchanged item keeps its enrichment (``rc_enrich_base`` is the hash of the record without it); a changed item loses
it and the upsert counts it in ``enrichment_dropped``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import time
from collections.abc import Iterator, Sequence
from typing import Any

import httpx
import numpy as np

from retrieval.catalog import item_document
from retrieval.config import StoreConfig, parse_chroma_url, validate_collection_name
from retrieval.embed import Embedder
from retrieval.errors import InputError, RecagentError, StoreError
from retrieval.types import Enrichment, EnrichmentInfo, Item, MetaValue, UpsertStats, Where

EMBEDDER_KEY = "rc_embedder"
DIM_KEY = "rc_dim"
HASH_KEY = "rc_hash"
TEXTS_KEY = "rc_texts"
SCHEMA_KEY = "rc_schema"
SCHEMA_VERSION = 1
ENRICH_DESCRIPTION_KEY = "rc_enrich_description"
ENRICH_KEYWORDS_KEY = "rc_enrich_keywords"
ENRICH_VERSION_KEY = "rc_enrich_version"
ENRICH_MODEL_KEY = "rc_enrich_model"
ENRICH_BASE_KEY = "rc_enrich_base"
ENRICHMENT_INFO_KEY = "rc_enrichment"
COPY_OF_KEY = "rc_copy_of"


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
    # sorted: Chroma returns metadata keys in no fixed order, and prompts (and their cache keys) must not vary;
    # rc_* keys are recagent's own (hash, enrichment): catalogs may not use that prefix (ColumnMapping refuses it)
    metadata = {k: meta[k] for k in sorted(meta) if k not in skip and not k.startswith("rc_") and meta[k] is not None}
    return Item(id=item_id, title=str(meta.get("title") or item_id), texts=texts, metadata=metadata)


def enriched_document(document: str, enrichment: Enrichment) -> str:
    """The embedded text of an enriched item: its original document, then ``Description:`` and ``Keywords:``."""
    lines = [document, f"Description: {enrichment.description}"]
    if enrichment.keywords:
        lines.append(f"Keywords: {', '.join(enrichment.keywords)}")
    return "\n".join(lines)


def item_record(item: Item, embedder_id: str, enrichment: Enrichment | None = None) -> tuple[str, dict[str, MetaValue]]:
    """The document and metadata (with ``rc_hash``) stored for ``item``, optionally with an enrichment.

    Without one, this is what every upsert stores. With one, the document gains the enrichment lines and the
    metadata carries it in ``rc_enrich_*`` keys, including ``rc_enrich_base``: the hash of the plain record.
    """
    document, meta = item_document(item), item_metadata(item)
    base = content_hash(document, meta, embedder_id)
    if enrichment is None:
        meta[HASH_KEY] = base
        return document, meta
    document = enriched_document(document, enrichment)
    meta[ENRICH_DESCRIPTION_KEY] = enrichment.description
    if enrichment.keywords:
        meta[ENRICH_KEYWORDS_KEY] = list(enrichment.keywords)
    meta[ENRICH_VERSION_KEY] = enrichment.prompt_version
    meta[ENRICH_MODEL_KEY] = enrichment.model
    meta[ENRICH_BASE_KEY] = base
    meta[HASH_KEY] = content_hash(document, meta, embedder_id)
    return document, meta


def enrichment_from_record(meta: dict[str, Any] | None) -> Enrichment | None:
    """The enrichment stored in a record's metadata (None when it has none)."""
    if not meta or not meta.get(ENRICH_DESCRIPTION_KEY):
        return None
    return Enrichment(
        description=str(meta[ENRICH_DESCRIPTION_KEY]),
        keywords=[str(k) for k in meta.get(ENRICH_KEYWORDS_KEY) or []],
        prompt_version=str(meta.get(ENRICH_VERSION_KEY) or ""),
        model=str(meta.get(ENRICH_MODEL_KEY) or ""),
    )


SPACE_SLACK_BYTES = 16 * 2**20


def space_needed(n: int, dim: int, text_bytes: int) -> int:
    """A generous estimate of the disk space Chroma's embedded store needs to write ``n`` records of dimension
    ``dim`` with ``text_bytes`` of documents and metadata (vectors in its log and HNSW index, texts in SQLite and
    its full-text index, copies made while compacting), plus a fixed slack."""
    return n * dim * 4 * 4 + text_bytes * 8 + SPACE_SLACK_BYTES


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

    def field_names(self, sample: int = 1000) -> set[str]:
        """Metadata field names of the first ``sample`` items (``rc_*`` bookkeeping keys left out)."""
        with chroma_errors(f"reading metadata from {self.name!r}"):
            got = self.raw.get(include=["metadatas"], limit=sample)
        return {k for m in got["metadatas"] or [] for k in (m or {}) if not k.startswith("rc_")}

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

    # --- enrichment (recagent enrich) ---
    def get_enrichments(self, ids: Sequence[str]) -> dict[str, Enrichment]:
        """The stored enrichment of each id that has one."""
        out: dict[str, Enrichment] = {}
        for item_id, meta in self.get_metadata(ids).items():
            enrichment = enrichment_from_record(meta)
            if enrichment is not None:
                out[item_id] = enrichment
        return out

    def _fresh_metadata(self) -> dict[str, Any]:
        """The collection-level metadata as stored now (another handle may have changed it)."""
        with chroma_errors(f"reading the metadata of {self.name!r}"):
            return dict(self.store.client.get_collection(name=self.name, embedding_function=None).metadata or {})

    def enrichment_info(self) -> EnrichmentInfo | None:
        """What the last enrichment run recorded on this collection (None: never enriched)."""
        raw = self._fresh_metadata().get(ENRICHMENT_INFO_KEY)
        if not raw:
            return None
        try:
            return EnrichmentInfo.model_validate_json(str(raw))
        except ValueError:
            return None

    def set_enrichment_info(self, info: EnrichmentInfo | None) -> None:
        """Record (or with None remove) the collection-level enrichment record, keeping the other metadata."""
        meta = self._fresh_metadata()
        if info is None:
            meta.pop(ENRICHMENT_INFO_KEY, None)
        else:
            meta[ENRICHMENT_INFO_KEY] = info.model_dump_json()
        with chroma_errors(f"updating the metadata of {self.name!r}"):
            self.raw.modify(metadata=meta)

    def set_enrichments(
        self,
        enrichments: dict[str, Enrichment | None],
        embedder: Embedder,
        *,
        progress: bool | None = None,
    ) -> int:
        """Store (or with None remove) the enrichment of each id and re-embed the documents that changed; the
        original fields are rebuilt from the stored record, so they stay exactly as ingested. Ids not in the
        collection are ignored. Returns how many records were re-embedded."""
        self.check_embedder(embedder)
        current = self.get_metadata(list(enrichments))
        docs: dict[str, str] = {}
        metas: dict[str, dict[str, MetaValue]] = {}
        for item_id, meta in current.items():
            item = item_from_record(item_id, meta)
            doc, new_meta = item_record(item, embedder.id, enrichments[item_id])
            if new_meta[HASH_KEY] != meta.get(HASH_KEY):
                docs[item_id], metas[item_id] = doc, new_meta
        self._write(list(docs), docs, metas, embedder, progress=progress, stored=current)
        return len(docs)

    def _write(
        self,
        todo: list[str],
        docs: dict[str, str],
        metas: dict[str, dict[str, MetaValue]],
        embedder: Embedder,
        *,
        progress: bool | None,
        stored: dict[str, dict[str, Any]] | None = None,
    ) -> None:
        """Embed ``docs`` of ``todo`` and upsert them with their metadata. Chroma merges an upsert's metadata
        into the stored one, so keys of the ``stored`` record that the new one lacks are sent as None (deleted)."""
        if not todo:
            return
        for i in todo:
            stale = set((stored or {}).get(i, {})) - set(metas[i])
            if stale:
                metas[i] = {**metas[i], **dict.fromkeys(stale)}  # type: ignore[dict-item]
        vectors = embedder.embed([docs[i] for i in todo], progress=progress)
        if self.dim is not None and vectors.shape[1] != self.dim:
            raise StoreError(
                f"embedder {embedder.id!r} gives dimension {vectors.shape[1]}, collection {self.name!r} holds "
                f"{self.dim}",
                hint="ingest into a new collection (--collection NAME)",
            )
        text_bytes = sum(len(docs[i].encode()) + len(json.dumps(metas[i], default=str)) for i in todo)
        self.store.check_space(space_needed(len(todo), vectors.shape[1], text_bytes))
        with chroma_errors(f"writing to {self.name!r}"):
            for start in range(0, len(todo), self.store.max_batch):
                part = todo[start : start + self.store.max_batch]
                self.raw.upsert(
                    ids=part,
                    embeddings=vectors[start : start + len(part)],
                    documents=[docs[i] for i in part],
                    metadatas=[metas[i] for i in part],  # type: ignore[misc]
                )

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
        stored = self.get_metadata(ids)
        stats = UpsertStats(collection=self.name, items=len(ids), embedder=embedder.id)
        for item in items:
            doc, meta = item_record(item, embedder.id)
            old = stored.get(item.id)
            enrichment = enrichment_from_record(old)
            if old is not None and enrichment is not None:
                if old.get(ENRICH_BASE_KEY) == meta[HASH_KEY]:  # content unchanged: keep the enrichment
                    doc, meta = item_record(item, embedder.id, enrichment)
                    stats.enrichment_kept += 1
                else:
                    stats.enrichment_dropped += 1
                    if len(stats.enrichment_dropped_ids) < 3:
                        stats.enrichment_dropped_ids.append(item.id)
            docs[item.id], metas[item.id] = doc, meta
        existing = {i: str(m.get(HASH_KEY, "")) for i, m in stored.items()}
        todo = [i for i in ids if existing.get(i) != metas[i][HASH_KEY]]
        stats.added = sum(1 for i in todo if i not in existing)
        stats.updated = len(todo) - stats.added
        stats.unchanged = len(ids) - len(todo)
        if todo:
            self._write(todo, docs, metas, embedder, progress=progress, stored=stored)
            stats.embedded = len(todo)
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

    def check_space(self, needed: int) -> None:
        """StoreError, before anything is written, when the embedded store's disk has less than ``needed`` bytes
        free: Chroma 1.5.9 can leave a collection unreadable when the disk fills up in the middle of a write."""
        if self.config.url:
            return
        path = self.config.path.expanduser()
        try:
            free = shutil.disk_usage(path).free
        except OSError:
            return
        if free < needed:
            raise StoreError(
                f"not enough free disk space for the Chroma store in {path}: about {needed / 2**20:.0f} MiB needed, "
                f"{free / 2**20:.1f} MiB free; nothing was written",
                hint="free some disk space, or set RECAGENT_CHROMA_PATH to a folder on a larger disk, then run the "
                "same command again",
            )

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

    def copy_collection(self, source: str, target: str) -> ItemCollection:
        """Copy every record (ids, embeddings, documents, metadata) of ``source`` into a new collection ``target``,
        which records ``rc_copy_of``. Resumable: a ``target`` already copied from ``source`` receives only the
        records it misses; any other existing ``target`` is refused."""
        src = self.collection(source)
        target = validate_collection_name(target)
        if target == src.name:
            raise InputError(f"cannot copy {source!r} onto itself", hint="give another name with --into")
        if target in self.collection_names():
            dst = self.collection(target)
            if (dst.raw.metadata or {}).get(COPY_OF_KEY) != src.name:
                raise InputError(
                    f"collection {target!r} already exists and is not a copy of {source!r}",
                    hint=f"pick another name for --into, enrich {target!r} directly (--collection {target}), or "
                    "delete it first",
                )
        else:
            meta = {k: v for k, v in (src.raw.metadata or {}).items() if k != ENRICHMENT_INFO_KEY}
            meta[COPY_OF_KEY] = src.name
            cfg = self.config
            hnsw = {
                "space": "cosine",
                "ef_construction": cfg.hnsw_ef_construction,
                "max_neighbors": cfg.hnsw_max_neighbors,
                "ef_search": cfg.hnsw_ef_search,
            }
            with chroma_errors(f"creating {target!r}"):
                raw = self.client.create_collection(
                    name=target, embedding_function=None, metadata=meta, configuration={"hnsw": hnsw}
                )
            dst = ItemCollection(self, raw)
            info = src.enrichment_info()
            if info is not None:
                dst.set_enrichment_info(info)
        have = set(dst.ids())
        page = self.max_batch
        with chroma_errors(f"copying {source!r} into {target!r}"):
            offset = 0
            while True:
                got = src.raw.get(include=["embeddings", "documents", "metadatas"], limit=page, offset=offset)
                rows = [r for r, i in enumerate(got["ids"]) if i not in have]
                if rows:
                    dst.raw.add(
                        ids=[got["ids"][r] for r in rows],
                        embeddings=np.asarray([got["embeddings"][r] for r in rows], dtype=np.float32),
                        documents=[got["documents"][r] for r in rows],
                        metadatas=[got["metadatas"][r] for r in rows],
                    )
                if len(got["ids"]) < page:
                    break
                offset += page
        return dst

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
