"""A collection narrowed to a protocol's item universe (``--split loo`` ranks only the k-core items).

The pipeline's Chroma sources search a whole collection; to rank exactly the protocol's items, the evaluator gives
the pipeline a copy of the catalog's collection holding only them (embeddings copied, nothing embedded again).
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection

from retrieval.store import Store

__all__ = ["restricted_collection"]


def restricted_collection(store: Store, source: str, items: Collection[str]) -> str:
    """The name of a collection holding the records of ``source`` whose ids are in ``items``: made once per
    (source, item set) by copying ``source`` and deleting the other ids; reused when it already holds exactly them."""
    wanted = sorted(items)
    digest = hashlib.sha256("\n".join(wanted).encode()).hexdigest()[:10]
    target = f"{source[:48]}-u{digest}"
    keep = set(wanted) & set(store.collection(source).ids())
    if store.has_collection(target):
        if set(store.collection(target).ids()) == keep:
            return target
        store.delete_collection(target)  # an interrupted earlier build: start again
    copy = store.copy_collection(source, target)
    stale = sorted(set(copy.ids()) - keep)
    for at in range(0, len(stale), store.max_batch):
        copy.raw.delete(ids=stale[at : at + store.max_batch])
    return target
