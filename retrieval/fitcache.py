"""A small on-disk cache of fitted state, keyed by (log fingerprint, settings).

A fitted state is a dict of numpy arrays. It is stored as ``<folder>/<key>.npz`` beside ``<key>.json`` (the log's
fingerprint, the settings, the array names, the format version); ``key`` hashes the fingerprint and the settings,
so a changed log or changed settings miss the cache and refit, and several logs (e.g. the validation and the test
part of a split) keep their own entry. An unreadable or mismatching entry is refitted with a warning, never used.
Only the ``keep`` most recently used entries of a folder are kept.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

__all__ = ["FitCache", "Fitted", "cache_key"]

FORMAT = 1
Arrays = dict[str, np.ndarray]


@dataclass(frozen=True)
class Fitted:
    """Fitted arrays and where they came from: ``"fit"`` (computed now) or ``"cache"`` (read from disk)."""

    arrays: Arrays
    origin: str
    key: str


def cache_key(fingerprint: str, settings: Mapping[str, Any]) -> str:
    """Hex key (16 characters) of a log fingerprint and a JSON-able settings mapping."""
    text = json.dumps({"log": fingerprint, "settings": settings, "format": FORMAT}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class FitCache:
    """Fitted states of one kind (e.g. ``transition``) in ``folder``; ``folder=None`` never touches the disk."""

    def __init__(self, folder: Path | None, *, keep: int = 4) -> None:
        self.folder = Path(folder) if folder is not None else None
        self.keep = max(1, keep)

    def get_or_fit(self, fingerprint: str, settings: Mapping[str, Any], fit: Callable[[], Arrays]) -> Fitted:
        """The cached arrays for (fingerprint, settings), or ``fit()``'s, stored for the next call."""
        key = cache_key(fingerprint, settings)
        if self.folder is None:
            return Fitted(fit(), "fit", key)
        found = self._load(key, fingerprint, settings)
        if found is not None:
            return Fitted(found, "cache", key)
        arrays = fit()
        self._save(key, fingerprint, settings, arrays)
        return Fitted(arrays, "fit", key)

    def _paths(self, key: str) -> tuple[Path, Path]:
        assert self.folder is not None
        return self.folder / f"{key}.npz", self.folder / f"{key}.json"

    def _load(self, key: str, fingerprint: str, settings: Mapping[str, Any]) -> Arrays | None:
        data_path, meta_path = self._paths(key)
        if not data_path.exists() and not meta_path.exists():
            return None
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
            expected = json.loads(json.dumps(dict(settings), sort_keys=True, default=str))
            same = (meta.get("format"), meta.get("fingerprint"), meta.get("settings")) == (
                FORMAT,
                fingerprint,
                expected,
            )
            if not same:
                raise ValueError("its fingerprint or settings differ from the requested ones")
            with np.load(data_path, allow_pickle=False) as npz:
                arrays = {name: npz[name] for name in meta["arrays"]}
        except (OSError, ValueError, KeyError, TypeError, zipfile.BadZipFile, EOFError) as exc:
            log.warning("fitted state %s is unreadable (%s); fitting it again", data_path, exc)
            return None
        os.utime(meta_path)  # most recently used: kept by _prune
        return arrays

    def _save(self, key: str, fingerprint: str, settings: Mapping[str, Any], arrays: Arrays) -> None:
        assert self.folder is not None
        data_path, meta_path = self._paths(key)
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=self.folder, suffix=".npz", delete=False) as tmp:
                np.savez(tmp, **arrays)  # type: ignore[arg-type]
            os.replace(tmp.name, data_path)
            meta = {"format": FORMAT, "fingerprint": fingerprint, "settings": dict(settings), "arrays": list(arrays)}
            meta_path.write_text(json.dumps(meta, sort_keys=True, default=str, indent=1), encoding="utf-8")
        except OSError as exc:  # a read-only or full disk: the state still serves this process
            log.warning("cannot store fitted state in %s (%s); it will be fitted again next time", self.folder, exc)
            return
        self._prune()

    def _prune(self) -> None:
        assert self.folder is not None
        metas = sorted(self.folder.glob("*.json"), key=lambda p: p.stat().st_mtime, reverse=True)
        for old in metas[self.keep :]:
            for path in (old, old.with_suffix(".npz")):
                path.unlink(missing_ok=True)
