"""Provenance of runs: the git commit of the code, and a store whose collections read back deterministically, so the
same case renders the same prompt every run (cache hits, replay). Shared by the evaluator and ``train/``."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from retrieval.embed import Embedder
from retrieval.store import ItemCollection, Store

__all__ = ["DeterministicStore", "git_commit", "load_average"]


def load_average() -> str | None:
    """The 1-, 5- and 15-minute load averages ("0.90 1.47 1.72"), recorded with a run's timings; None where the
    system does not report them."""
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return None


def git_commit(root: Path | None = None) -> str | None:
    try:
        done = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                              cwd=root or Path(__file__).resolve().parents[1], check=False)  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() or None if done.returncode == 0 else None


class _SortedCollection(ItemCollection):
    """Returns item metadata with sorted keys: Chroma does not keep the key order, and the order reaches the
    rendered prompts, so without this the same case renders differently from run to run (no cache hits)."""

    def get_metadata(self, ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        return {i: dict(sorted(m.items())) for i, m in super().get_metadata(ids).items()}


class DeterministicStore(Store):
    """A :class:`Store` whose collections return metadata in a stable (sorted) key order."""

    def open_for(self, embedder: Embedder, name: str | None = None) -> ItemCollection:
        coll = super().open_for(embedder, name)
        return _SortedCollection(coll.store, coll.raw)
