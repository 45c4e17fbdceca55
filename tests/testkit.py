"""Helpers shared by test modules (importable as ``testkit``; conftest modules are not importable by name)."""

from __future__ import annotations

import hashlib
import re
import socket
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import typer

from agent.settings import Settings, load_settings

ROOT = Path(__file__).resolve().parents[1]
SAMPLE_COLLECTION = "eval-test"  # the 300-movie sample of the `sample_home` fixture


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class HashEmbedder:
    """Deterministic bag-of-words hashing embedder (normalised, never the zero vector) that counts its work: a
    real vector store without loading a model. ``name`` and ``dim`` make its id (``<name>-<dim>``)."""

    def __init__(self, name: str = "hash-words", dim: int = 64) -> None:
        self._id = f"{name}-{dim}"
        self._dim = dim
        self.calls = 0
        self.texts_embedded = 0

    @property
    def id(self) -> str:
        return self._id

    @property
    def dim(self) -> int:
        return self._dim

    def embed(self, texts: Sequence[str], *, progress: bool | None = None) -> np.ndarray:
        self.calls += 1
        self.texts_embedded += len(texts)
        out = np.zeros((len(texts), self._dim), np.float32)
        for row, text in enumerate(texts):
            for word in re.findall(r"\w+", text.lower()):
                digest = hashlib.md5(word.encode()).digest()
                out[row, digest[0] % self._dim] += 1.0 if digest[1] % 2 else -1.0
            out[row, -1] += 0.01
        return out / np.linalg.norm(out, axis=1, keepdims=True)


def hashed_sample_home(home: Path, sample: Path, embedder: HashEmbedder, collection: str) -> Path:
    """``home`` with the 300-movie sample ingested into ``collection`` of its embedded Chroma store."""
    from retrieval.ingest import ingest

    settings = load_settings(home=home)
    report = ingest(sample, store_config=settings.store_config(), embed_config=settings.embed_config(progress=False),
                    collection=collection, embedder=embedder)  # type: ignore[arg-type]  # fmt: skip
    assert report.accepted == 300
    return home


def tiny_settings(model: Path, **kw: object) -> Settings:
    """Settings for the tiny random test model (float32 so that engines agree to 1e-3; a small KV cache so that
    several engines fit beside each other)."""
    kw.setdefault("llm_memory_fraction", 0.05)
    return load_settings(llm_model=str(model), llm_dtype="float32", llm_max_model_len=1024, **kw)


def cli_app(settings: Settings, name: str, sub_app: Any) -> Any:
    """A bare typer root whose context carries ``settings``, with one of recagent's sub-apps mounted as ``name``."""
    from recagent.context import AppState

    app = typer.Typer()

    @app.callback()
    def root(ctx: typer.Context) -> None:
        state = AppState(None)
        state.__dict__["settings"] = settings  # cached_property slot
        ctx.obj = state

    app.add_typer(sub_app, name=name)
    return app
