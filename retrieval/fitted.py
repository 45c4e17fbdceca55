"""Where state learned from an interaction log lives, and how a log is recognised.

Sources and rankers that learn from a log (transition counts, EASE, a sequential model, a learned ranker) are fitted
once per (log, settings) and kept on disk next to the store, per collection: ``artifact_dir(store, collection,
kind)``. A fitted state records the :func:`log_fingerprint` of the log it was fitted on, so a caller can refuse (or
refit) a state whose log has changed since.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import numpy as np

from retrieval.config import StoreConfig, validate_collection_name
from retrieval.errors import ConfigError
from retrieval.interactions import Interactions

__all__ = ["artifact_dir", "log_fingerprint"]

_KIND_RE = re.compile(r"^[a-z][a-z0-9_-]{0,63}$")


def log_fingerprint(interactions: Interactions) -> str:
    """sha256 (first 16 hex characters) over a log's users, items, ratings and times, in its stored order.

    Two logs with the same rows, each user's in the same (time, file) order, share a fingerprint whatever order
    the users come in; any added, removed or changed row gives another one. Raw ids are hashed, not internal
    indices, so the fingerprint does not depend on how the log was read.
    """
    digest = hashlib.sha256()
    ratings = np.nan_to_num(np.asarray(interactions.ratings, dtype=np.float64), nan=-1.0)
    for user in sorted(range(len(interactions.user_ids)), key=lambda u: interactions.user_ids[u]):
        start, end = int(interactions.user_ptr[user]), int(interactions.user_ptr[user + 1])
        digest.update(f"{interactions.user_ids[user]}\x1d".encode("utf-8", "surrogatepass"))
        for row in range(start, end):
            item = interactions.item_ids[int(interactions.items[row])]
            digest.update(
                f"{item}\x1f{ratings[row]!r}\x1f{int(interactions.timestamps[row])}\x1e".encode(
                    "utf-8", "surrogatepass"
                )
            )
    return digest.hexdigest()[:16]


def artifact_dir(store: StoreConfig, collection: str, kind: str) -> Path:
    """The folder for the fitted state of ``kind`` (e.g. "transition", "sequential", "ltr") of ``collection``.

    It sits beside the embedded store's folder (``<store.path>/../artifacts/<collection>/<kind>``), also when the
    collection lives on a Chroma server (the state is fitted and read by this process, not by the server).
    """
    validate_collection_name(collection)
    if not _KIND_RE.match(kind):
        raise ConfigError(
            f"invalid artifact kind {kind!r}", hint="use lower-case letters, digits, '-' or '_' (e.g. sequential)"
        )
    return Path(store.path).parent / "artifacts" / collection / kind
