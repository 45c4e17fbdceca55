"""The Recommender builds the `sequential` source from the collection's artifact folder and refuses a stale model
(real embedded Chroma, the real MovieLens sample log, a hashing embedder, a tiny trained model)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from seq_toy import TINY

from agent.errors import ConfigError
from agent.pipeline import Recommender, RecommendRequest
from agent.settings import load_settings
from retrieval.fitted import artifact_dir
from retrieval.interactions import read_interactions
from train.sequential import SeqTrainConfig, fit_sequential

from fakes import FakeEngine
from testkit import HashEmbedder, hashed_sample_home

COLLECTION = "seq-pipeline"


def test_pipeline_uses_the_trained_model_and_refuses_a_stale_one(tmp_path: Path, ml_sample: Path) -> None:
    embedder = HashEmbedder()
    home = hashed_sample_home(tmp_path / "home", ml_sample, embedder, COLLECTION)
    settings = load_settings(home=home, collection=COLLECTION, interactions=ml_sample / "ratings.csv",
                             rerank_strategy="retrieval", explain_mode="template")  # fmt: skip
    log = read_interactions(ml_sample / "ratings.csv")
    user = log.user_ids[0]
    absent = Recommender(settings, engine=FakeEngine(), embedder=embedder, interactions=log)
    assert "sequential" not in {s.name for s in absent.generator.sources}  # no model yet: no source, no error
    folder = artifact_dir(settings.store_config(), COLLECTION, "sequential")
    fit_sequential(log, folder, SeqTrainConfig(model=TINY.model_copy(update={"max_len": 20}), epochs=1, threads=1),
                   progress=False)  # fmt: skip
    rec = Recommender(settings, engine=FakeEngine(), embedder=embedder, interactions=log)
    assert "sequential" in {s.name for s in rec.generator.sources}
    result = rec.recommend(RecommendRequest(user_id=user, k=5))
    assert len(result.items) == 5
    keep = np.ones(len(log), bool)
    keep[-3:] = False  # the log changed since training
    stale = Recommender(settings, engine=FakeEngine(), embedder=embedder, interactions=log.subset(keep))
    with pytest.raises(ConfigError, match="trained on another interaction log") as info:
        _ = stale.generator
    assert "recagent train sequential" in info.value.hint
    off = settings.model_copy(update={"fusion_weights": {**settings.fusion_weights, "sequential": 0.0}})
    assert "sequential" not in {
        s.name
        for s in Recommender(
            off, engine=FakeEngine(), embedder=embedder, interactions=log.subset(keep)
        ).generator.sources
    }
    named = settings.model_copy(update={"sequential_model": tmp_path / "missing"})
    with pytest.raises(ConfigError, match="not a sequential model folder"):
        _ = Recommender(named, engine=FakeEngine(), embedder=embedder, interactions=log).generator
