"""The sentence-transformers embedder (bundled MiniLM) on each backend, and its LangChain adapter."""

from __future__ import annotations

import importlib.util
import sys
import types
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

import retrieval.embed as embed_module
import retrieval.embed_onnx as embed_onnx
from retrieval.config import EmbedConfig
from retrieval.embed import (
    DEFAULT_MODEL_ID,
    EmbedBackendError,
    LangChainEmbeddings,
    SentenceTransformerEmbedder,
    make_embedder,
    resolve_backend,
)
from retrieval.errors import ConfigError, RecagentError

TEXTS = [
    "Toy Story (1995)\nGenres: Adventure, Animation, Children, Comedy, Fantasy\nTags: Pixar, fun",
    "A funny animated movie about toys",
    "x",
    "Heat (1995)\nGenres: Action, Crime, Thriller",
    "A grim war documentary",
    "Pixar cartoon with talking toys",
    "Lolita (1997)\nGenres: Drama, Romance",
    "heist movie set in Paris with a clever twist and a long chase through the city at night",
    "Jumanji (1995)\nGenres: Adventure, Children, Fantasy\nTags: Robin Williams, game, board game, fantasy",
    "",
    " ".join(["an epic that goes on and on"] * 60),  # longer than the model's 256 tokens
] + [f"movie number {i}" for i in range(30)]


def test_ids_need_no_model_load(tmp_path: Path) -> None:
    default = make_embedder(EmbedConfig())
    assert default.id == DEFAULT_MODEL_ID and default._model is None  # nothing loaded for the id
    assert default.backend == "torch"  # the default backend keeps the ids of existing collections
    assert make_embedder(EmbedConfig(normalize=False)).id == DEFAULT_MODEL_ID + ":unnormalized"
    assert make_embedder(EmbedConfig(model=str(tmp_path))).id == f"folder:{tmp_path.name}"
    assert make_embedder(EmbedConfig(model="org/some-model")).id == "org/some-model"
    with pytest.raises(ConfigError):
        make_embedder(EmbedConfig(model="  "))


def test_backend_ids() -> None:
    def id_of(backend: str, **options: object) -> str:
        return make_embedder(EmbedConfig(backend=backend, device="cpu", **options)).id  # type: ignore[arg-type]

    assert id_of("torch") == id_of("onnx") == DEFAULT_MODEL_ID  # same vectors (to float rounding), same id
    assert id_of("torch-bf16") == DEFAULT_MODEL_ID + ":bf16"
    assert id_of("onnx-int8") == DEFAULT_MODEL_ID + ":onnx-int8"
    assert id_of("onnx-int8", normalize=False) == DEFAULT_MODEL_ID + ":onnx-int8:unnormalized"
    assert len({id_of("torch"), id_of("torch-bf16"), id_of("onnx-int8")}) == 3


def test_auto_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(embed_module, "cpu_has_native_bf16", lambda: True)
    monkeypatch.setattr(embed_module, "_accelerator_available", lambda: False)
    assert resolve_backend(EmbedConfig(backend="auto", device="cpu")) == "torch-bf16"
    assert resolve_backend(EmbedConfig(backend="auto")) == "torch-bf16"
    assert resolve_backend(EmbedConfig(backend="auto", device="cuda")) == "torch"
    assert make_embedder(EmbedConfig(backend="auto", device="cpu")).id.endswith(":bf16")
    monkeypatch.setattr(embed_module, "_accelerator_available", lambda: True)
    assert resolve_backend(EmbedConfig(backend="auto")) == "torch"  # sentence-transformers would pick the GPU
    monkeypatch.setattr(embed_module, "cpu_has_native_bf16", lambda: False)
    assert resolve_backend(EmbedConfig(backend="auto", device="cpu")) == "torch"
    for backend in ("torch", "torch-bf16", "onnx", "onnx-int8"):
        assert resolve_backend(EmbedConfig(backend=backend)) == backend  # type: ignore[arg-type]


def test_onnx_backends_run_on_cpu_only() -> None:
    with pytest.raises(ConfigError, match="runs on the CPU") as err:
        make_embedder(EmbedConfig(backend="onnx-int8", device="cuda"))
    assert "torch" in err.value.hint
    assert make_embedder(EmbedConfig(backend="onnx", device="cpu")).backend == "onnx"


@pytest.mark.parametrize(("module", "backend"), [("onnx", "onnx-int8"), ("onnx", "onnx"), ("onnxruntime", "onnx")])
def test_missing_backend_package_is_a_config_error(
    module: str, backend: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, module, None)  # `import module` now raises ImportError
    embedder = make_embedder(EmbedConfig(backend=backend, cache_dir=tmp_path / "cache", progress=False))  # type: ignore[arg-type]
    with pytest.raises(EmbedBackendError) as err:
        embedder.embed(["a text"])
    assert isinstance(err.value, ConfigError) and isinstance(err.value, RecagentError)
    assert f"'{module}'" in err.value.message and backend in err.value.message
    assert f"pip install {module}" in err.value.hint and "'torch'" in err.value.hint
    assert embedder._model is None  # nothing half-loaded


def test_export_failures_are_backend_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    class Transformer:
        auto_model = object()

    class Pooling:
        pooling_mode = "mean"

    class Dense:
        pass

    with pytest.raises(EmbedBackendError, match=r"Transformer \+ Pooling \+ Dense") as err:
        embed_onnx._onnx_layout([Transformer(), Pooling(), Dense()], "org/model")
    assert "'torch'" in err.value.hint
    assert embed_onnx._onnx_layout([Transformer(), Pooling()], "m")[1:] == ("mean", False)

    class FakeModel:
        def encode(self, texts: list[str], **kwargs: object) -> np.ndarray:
            return np.ones((len(texts), 4), np.float32)

    def broken_export(*args: object) -> None:
        raise RuntimeError("exporter exploded")

    monkeypatch.setitem(sys.modules, "onnx", types.ModuleType("onnx"))  # whether or not it is installed
    monkeypatch.setattr(SentenceTransformerEmbedder, "_load_sentence_transformer", lambda self, device: FakeModel())
    monkeypatch.setattr(embed_onnx, "_export_fp32", broken_export)
    embedder = make_embedder(EmbedConfig(backend="onnx", cache_dir=tmp_path, progress=False))
    with pytest.raises(EmbedBackendError, match=r"cannot export .*RuntimeError: exporter exploded") as err:
        embedder.embed(["a text"])
    assert "'torch'" in err.value.hint


class _LengthRunner:
    """Stands in for a backend: the vector of a text is (its length, its first character code, the batch size)."""

    dim = 3

    def __init__(self) -> None:
        self.batches: list[list[str]] = []

    def encode(self, texts: list[str], threads: int | None) -> np.ndarray:
        self.batches.append(list(texts))
        return np.array([[len(t), ord(t[0]) if t else 0, len(texts)] for t in texts], dtype=np.float32)


@pytest.mark.parametrize("sort", [True, False])
def test_length_sorting_keeps_the_input_order(sort: bool) -> None:
    embedder = make_embedder(EmbedConfig(batch_size=4, sort_by_length=sort, progress=False))
    runner = _LengthRunner()
    embedder._model, embedder._dim = runner, runner.dim  # no model: only the batching is under test
    texts = ["ccc", "a", "bbbbbbbb", "dd", "eeeeee", "f", "gggg", "hhhhh", "i", "jjjjjjjjjjjj"]
    out = embedder.embed(texts)
    assert out.shape == (10, 3)
    assert out[:, 0].tolist() == [len(t) for t in texts] and out[:, 1].tolist() == [ord(t[0]) for t in texts]
    assert [len(b) for b in runner.batches] == [4, 4, 2]
    flat = [t for b in runner.batches for t in b]
    if sort:
        assert [len(t) for t in flat] == sorted(len(t) for t in texts)  # each batch holds texts of similar length
    else:
        assert flat == texts
    assert embedder.calls == 1 and embedder.texts_embedded == 10


@pytest.mark.slow
def test_unloadable_model_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "empty-model").mkdir()
    embedder = make_embedder(EmbedConfig(model=str(tmp_path / "empty-model")))
    with pytest.raises(ConfigError, match="cannot load embedding model") as err:
        embedder.embed(["x"])
    assert "bundled" in err.value.hint


@pytest.mark.slow
def test_real_embedder(real_embedder: SentenceTransformerEmbedder) -> None:
    import torch

    threads = torch.get_num_threads()
    before = real_embedder.calls
    texts = ["A funny animated movie about toys", "Pixar cartoon with talking toys", "A grim war documentary"]
    vectors = real_embedder.embed(texts)
    assert vectors.shape == (3, 384) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2] + 0.2
    assert real_embedder.calls == before + 1
    assert torch.get_num_threads() == threads  # query_threads is restored after the call
    assert real_embedder.embed([]).shape == (0, 384)
    many = real_embedder.embed([f"movie number {i}" for i in range(70)])  # more than one batch of 64
    assert many.shape == (70, 384)
    assert np.allclose(many[3], real_embedder.embed(["movie number 3"])[0], atol=1e-4)  # batching changes nothing
    adapter = LangChainEmbeddings(real_embedder)
    query = adapter.embed_query(texts[0])
    assert len(query) == 384 and np.allclose(query, vectors[0], atol=1e-4)
    assert len(adapter.embed_documents(texts)) == 3


@pytest.fixture(scope="module")
def export_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One export cache for the onnx tests of this module (the int8 model reuses the float32 export)."""
    yield tmp_path_factory.mktemp("embed-cache")


needs_onnx = pytest.mark.skipif(
    importlib.util.find_spec("onnx") is None, reason="the optional package onnx (ONNX export) is not installed"
)
# (backend, smallest mean cosine, smallest cosine) to torch float32 on TEXTS; int8's worst rows are the odd ones
# ("x", the 300-token epic), at 0.967 when written
AGREEMENT = [
    pytest.param("onnx", 0.9999, 0.999, marks=needs_onnx),
    ("torch-bf16", 0.999, 0.998),
    pytest.param("onnx-int8", 0.99, 0.95, marks=needs_onnx),
]


@pytest.mark.slow
@pytest.mark.parametrize(("backend", "mean_cos", "min_cos"), AGREEMENT)
def test_backend_agrees_with_torch_fp32(
    backend: str, mean_cos: float, min_cos: float, export_cache: Path, real_embedder: SentenceTransformerEmbedder
) -> None:
    config = EmbedConfig(backend=backend, cache_dir=export_cache, progress=False, batch_size=16)  # type: ignore[arg-type]
    embedder = make_embedder(config)
    assert embedder.backend == backend and embedder.dim == 384
    reference = real_embedder.embed(TEXTS)
    vectors = embedder.embed(TEXTS)
    assert vectors.shape == (len(TEXTS), 384) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)
    cos = np.sum(vectors * reference, axis=1)
    assert cos.mean() >= mean_cos and cos.min() >= min_cos, (cos.mean(), cos.min())
    # length sorting returns rows in the input order: each row is the text's own vector. int8 activations are
    # quantised per batch, so a text's int8 vector depends a little on its batch ("x": cosine 0.979 when written)
    same = 0.95 if backend == "onnx-int8" else 0.999
    for row in (0, 2, 7, 9, 10):
        alone = embedder.embed([TEXTS[row]])[0]
        assert float(alone @ vectors[row]) >= same and int(np.argmax(vectors @ alone)) == row, row
    unsorted = make_embedder(config.model_copy(update={"sort_by_length": False})).embed(TEXTS)
    assert float(np.min(np.sum(unsorted * vectors, axis=1))) >= same
    assert vectors[1] @ vectors[5] > vectors[1] @ vectors[4] + 0.2  # toys are closer to toys than to war


@pytest.mark.slow
@needs_onnx
def test_onnx_export_is_cached(export_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = make_embedder(EmbedConfig(backend="onnx-int8", cache_dir=export_cache, progress=False))
    vectors = first.embed(TEXTS[:5])
    folder = first.cache_folder()
    assert folder.parent == export_cache.resolve() and folder.name.startswith("all-MiniLM-L6-v2-")
    assert {"model.onnx", "model-int8.onnx", "recagent-export.json"} <= {p.name for p in folder.iterdir()}
    assert not [p for p in export_cache.iterdir() if p.name.startswith(".tmp")]  # no leftovers

    def no_export(*args: object, **kwargs: object) -> None:
        raise AssertionError("a cached export must not be exported again")

    monkeypatch.setattr(SentenceTransformerEmbedder, "_export_onnx", no_export)
    monkeypatch.setitem(sys.modules, "onnx", None)  # a cached export needs only onnxruntime
    again = make_embedder(EmbedConfig(backend="onnx-int8", cache_dir=export_cache, progress=False))
    assert again.cache_folder() == folder
    assert np.allclose(again.embed(TEXTS[:5]), vectors, atol=1e-6)
