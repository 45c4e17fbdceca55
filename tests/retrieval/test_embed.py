"""The sentence-transformers embedder (bundled MiniLM) and its LangChain adapter."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from retrieval.config import EmbedConfig
from retrieval.embed import DEFAULT_MODEL_ID, LangChainEmbeddings, SentenceTransformerEmbedder, make_embedder
from retrieval.errors import ConfigError


def test_ids_need_no_model_load(tmp_path: Path) -> None:
    default = make_embedder(EmbedConfig())
    assert default.id == DEFAULT_MODEL_ID and default._model is None  # nothing loaded for the id
    assert make_embedder(EmbedConfig(normalize=False)).id == DEFAULT_MODEL_ID + ":unnormalized"
    assert make_embedder(EmbedConfig(model=str(tmp_path))).id == f"folder:{tmp_path.name}"
    assert make_embedder(EmbedConfig(model="org/some-model")).id == "org/some-model"
    with pytest.raises(ConfigError):
        make_embedder(EmbedConfig(model="  "))


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
