"""Fixtures of the evaluator tests: the scripted engine of the ranking tests, and the 300-movie sample ingested once."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.settings import Settings, load_settings
from retrieval.embed import Embedder, make_embedder
from retrieval.ingest import ingest

EVAL_COLLECTION = "eval-test"


@pytest.fixture(scope="session")
def eval_home(ml_sample: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A recagent home with the 300-movie sample ingested by the real bundled embedder."""
    home = tmp_path_factory.mktemp("eval-home")
    settings = load_settings(home=home)
    report = ingest(ml_sample, store_config=settings.store_config(),
                    embed_config=settings.embed_config(progress=False), collection=EVAL_COLLECTION)  # fmt: skip
    assert report.accepted == 300
    return home


@pytest.fixture(scope="session")
def eval_settings(eval_home: Path) -> Settings:
    return load_settings(home=eval_home, collection=EVAL_COLLECTION)


@pytest.fixture(scope="session")
def eval_embedder(eval_settings: Settings) -> Embedder:
    return make_embedder(eval_settings.embed_config(progress=False))
