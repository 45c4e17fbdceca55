"""The ``onnx`` and ``onnx-int8`` embedding backends: export a sentence-transformers model to ONNX locally (no hub
access), quantise it to int8, cache the export, check a fresh export against torch, and run it on onnxruntime.

:class:`retrieval.embed.SentenceTransformerEmbedder` imports this module only when an onnx backend is used.
Exports are cached under ``EmbedConfig.cache_dir``, one folder per model, keyed by :func:`export_key` (the model's
files, the export recipe and the library versions).
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import json
import logging
import os
import shutil
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from retrieval.embed import EmbedBackendError, l2_normalize, model_dimension

__all__ = ["ONNX_FP32_FILE", "ONNX_INT8_FILE", "PROBE_TEXTS", "OnnxRunner", "export_is_cached", "export_key",
           "load_export", "write_export"]  # fmt: skip

ONNX_RECIPE = "1"
"""Version of the export recipe below; part of the cache key (bump it when the export or quantisation changes)."""
ONNX_FP32_FILE = "model.onnx"
ONNX_INT8_FILE = "model-int8.onnx"
META_FILE = "recagent-export.json"
ONNX_POOLING = ("mean", "cls", "max")
ONNX_MIN_COS = {"onnx": 0.999, "onnx-int8": 0.98}
"""Smallest mean cosine to torch float32 on probe texts that a fresh export must reach before it is used."""
PROBE_TEXTS = [
    "Toy Story (1995)\nGenres: Adventure, Animation, Children, Comedy, Fantasy\nTags: Pixar, fun",
    "A grim war documentary",
    "heist movie set in Paris",
    "x",
    " ".join(["a very long description of a film that goes on and on"] * 40),  # longer than max_seq_length
]


def export_key(model_ref: str, folder: Path) -> str:
    """Hash of what an export depends on: the recipe, the model reference and its files, the library versions."""
    files: list[Any] = []
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
    payload = json.dumps([ONNX_RECIPE, model_ref, str(folder), files, versions], sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()


def export_is_cached(folder: Path, file: str) -> bool:
    return (folder / META_FILE).exists() and (folder / file).exists()


def write_export(model: Any, folder: Path, model_ref: str, *, int8: bool) -> None:
    """The float32 export into ``folder`` unless it is complete, and its int8 variant when asked and missing."""
    if not _export_complete(folder):
        _export_fp32(model, folder, model_ref)
    if int8 and not (folder / ONNX_INT8_FILE).exists():
        _quantize_int8(folder)


def load_export(
    ort: Any,
    folder: Path,
    file: str,
    backend: str,
    model_ref: str,
    normalize: bool,
    reference: np.ndarray | None,
) -> OnnxRunner:
    """A runner over the export; a fresh export (``reference``: torch vectors of the probe texts) is checked against
    torch first and deleted if it disagrees."""
    runner = OnnxRunner(ort, folder, file, normalize=normalize)
    if reference is not None:
        got = runner.encode(list(PROBE_TEXTS), 1)
        cos = float(np.mean(np.sum(l2_normalize(got) * l2_normalize(reference), axis=1)))
        if cos < ONNX_MIN_COS[backend]:
            with contextlib.suppress(OSError):
                (folder / file).unlink()
            raise EmbedBackendError(
                f"the {backend} export of {model_ref!r} disagrees with torch (mean cosine {cos:.4f})",
                hint="use the 'torch' backend for this model",
            )
    return runner


class OnnxRunner:
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
        return l2_normalize(vectors) if self.normalize else vectors


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
    if not ok or pooling not in ONNX_POOLING or backbone is None:
        raise EmbedBackendError(
            f"the onnx backends run Transformer + Pooling ({', '.join(ONNX_POOLING)}) [+ Normalize] models; "
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
            "dim": int(model_dimension(model) or len(model.encode(["probe"], convert_to_numpy=True)[0])),
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
