"""Shared fixtures: settings in a temp home, the tiny random model, real engines (one per session)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from agent.settings import load_settings

from testkit import tiny_settings
from tiny_model import build_tiny_model, copy_with_chat_template


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests build their settings explicitly: no developer environment leaks in."""
    import os

    for key in list(os.environ):
        if key.startswith("RECAGENT_"):
            monkeypatch.delenv(key)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("models") / "tiny")


@pytest.fixture(scope="session")
def tiny_chat_model_dir(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return copy_with_chat_template(tiny_model_dir, tmp_path_factory.mktemp("models") / "tiny-chat")


@pytest.fixture(scope="session")
def vllm_tiny(tiny_model_dir: Path) -> Iterator[object]:
    from agent.llm.vllm_local import get_engine

    engine = get_engine(tiny_settings(tiny_model_dir), str(tiny_model_dir))
    yield engine
    engine.close()


@pytest.fixture(scope="session")
def hf_tiny(tiny_model_dir: Path) -> object:
    from agent.llm.hf_local import HFEngine

    return HFEngine(tiny_settings(tiny_model_dir), str(tiny_model_dir))


@pytest.fixture(scope="session")
def gemma_dir() -> Path:
    """The bundled default model, prepared by `make setup` (prepared here if missing)."""
    from agent.llm.models import prepare_default_model

    return prepare_default_model(load_settings())


@pytest.fixture(scope="session")
def vllm_gemma(gemma_dir: Path) -> Iterator[object]:
    from agent.llm.vllm_local import get_engine

    engine = get_engine(load_settings(), str(gemma_dir))
    yield engine
    engine.close()
