"""Shared fixtures: settings in a temp home, the tiny random model, real engines (one per session)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from agent.settings import load_settings

from testkit import ROOT, SAMPLE_COLLECTION, tiny_settings
from tiny_model import build_tiny_model, copy_with_chat_template

ML_SMALL = ROOT / "data" / "movielens-latest-small"  # the bundled copy (same bytes as ../shared/data)


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


@pytest.fixture(scope="session")
def ml_small() -> Path:
    assert (ML_SMALL / "movies.csv").is_file(), f"the bundled MovieLens copy is missing at {ML_SMALL}"
    return ML_SMALL


@pytest.fixture(scope="session")
def ml_sample(ml_small: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A MovieLens-latest folder with 300 movies (the 200 most rated + 100 random), their tags and ratings."""
    import csv
    import random

    folder = tmp_path_factory.mktemp("ml-sample")
    with (ml_small / "ratings.csv").open(newline="", encoding="utf-8") as fh:
        ratings = list(csv.reader(fh))
    counts: dict[str, int] = {}
    for row in ratings[1:]:
        counts[row[1]] = counts.get(row[1], 0) + 1
    popular = sorted(counts, key=lambda m: (-counts[m], int(m)))[:200]
    with (ml_small / "movies.csv").open(newline="", encoding="utf-8") as fh:
        movies = list(csv.reader(fh))
    rest = sorted({r[0] for r in movies[1:]} - set(popular), key=int)
    keep = set(popular) | set(random.Random(0).sample(rest, 100))
    for name, column in (("movies.csv", 0), ("ratings.csv", 1), ("tags.csv", 1)):
        with (ml_small / name).open(newline="", encoding="utf-8") as fh:
            rows = list(csv.reader(fh))
        with (folder / name).open("w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh, lineterminator="\n")
            writer.writerow(rows[0])
            writer.writerows(r for r in rows[1:] if r[column] in keep)
    return folder


@pytest.fixture(scope="session")
def sample_home(ml_sample: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A recagent home with the 300-movie sample ingested once by the real bundled embedder (collection
    ``SAMPLE_COLLECTION``); shared by the evaluator and training tests."""
    from retrieval.ingest import ingest

    home = tmp_path_factory.mktemp("sample-home")
    settings = load_settings(home=home)
    report = ingest(ml_sample, store_config=settings.store_config(),
                    embed_config=settings.embed_config(progress=False), collection=SAMPLE_COLLECTION)  # fmt: skip
    assert report.accepted == 300
    return home
