"""Fixtures of the evaluator tests: the scripted engine of the ranking tests, and the 300-movie sample ingested once."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.settings import Settings, load_settings
from retrieval.embed import Embedder, make_embedder

from testkit import SAMPLE_COLLECTION

EVAL_COLLECTION = SAMPLE_COLLECTION


@pytest.fixture(scope="session")
def eval_home(sample_home: Path) -> Path:
    return sample_home


@pytest.fixture(scope="session")
def eval_settings(eval_home: Path) -> Settings:
    return load_settings(home=eval_home, collection=EVAL_COLLECTION)


@pytest.fixture(scope="session")
def eval_embedder(eval_settings: Settings) -> Embedder:
    return make_embedder(eval_settings.embed_config(progress=False))
