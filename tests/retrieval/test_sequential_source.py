"""The `sequential` candidate source: it masks seen items, returns at most k, and refuses a model of another log."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from seq_toy import TINY, cyclic_log

from retrieval.candidates import CandidateGenerator, SourceRequest
from retrieval.catalog import read_catalog
from retrieval.config import DEFAULT_SOURCE_WEIGHTS, FusionConfig, StoreConfig
from retrieval.errors import ConfigError
from retrieval.interactions import Interactions, read_interactions
from retrieval.sequential import SequentialSource, open_sequential
from retrieval.store import Store
from retrieval.types import HistoryEntry, UserQuery
from train.sequential import SeqTrainConfig, fit_sequential

from retrieval_helpers import FakeEmbedder


@pytest.fixture(scope="module")
def cyclic_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Interactions]:
    log = cyclic_log()
    out = tmp_path_factory.mktemp("seq") / "model"
    cfg = SeqTrainConfig(model=TINY, epochs=15, batch_size=16, lr=1e-2, patience=40, threads=1)
    fit_sequential(log, out, cfg, progress=False)
    return out, log


def _query(items: list[str], **kw: object) -> UserQuery:
    return UserQuery(history=[HistoryEntry(item_id=i, timestamp=10 + n) for n, i in enumerate(items)], **kw)  # type: ignore[arg-type]


def test_registered_with_weight_one() -> None:
    assert DEFAULT_SOURCE_WEIGHTS["sequential"] == 1.0


def test_masks_seen_items_and_returns_at_most_k(cyclic_model: tuple[Path, Interactions]) -> None:
    folder, log = cyclic_model
    source = open_sequential(folder, log)
    assert isinstance(source, SequentialSource)
    seen = ["103", "104", "105", "106", "107"]
    out = source.retrieve(SourceRequest(query=_query(seen), k=3))
    assert len(out) == 3 and not set(seen) & {i for i, _ in out}
    assert out[0][0] == "108"  # the cycle's next item
    assert [s for _, s in out] == sorted((s for _, s in out), reverse=True)
    excluded = source.retrieve(SourceRequest(query=_query(seen), k=3, exclude=frozenset({"108"})))
    assert "108" not in {i for i, _ in excluded} and len(excluded) == 3
    allowed = source.retrieve(SourceRequest(query=_query(seen), k=5, allowed=frozenset({"101", "110"})))
    assert {i for i, _ in allowed} <= {"101", "110"}
    everything = source.retrieve(SourceRequest(query=_query(seen), k=1000))
    assert len(everything) == log.n_items - len(seen)  # every unseen item, no seen one
    unknown_only = source.retrieve(SourceRequest(query=_query(["nope", "never"]), k=3))
    assert unknown_only == []
    # time order, not list order, decides: the same items given newest first give the same answer
    shuffled = UserQuery(
        history=[HistoryEntry(item_id=i, timestamp=10 + n) for n, i in reversed(list(enumerate(seen)))]
    )
    assert source.retrieve(SourceRequest(query=shuffled, k=3)) == out
    untimed = UserQuery(history=[HistoryEntry(item_id=i) for i in seen])  # no times: the given order
    assert source.retrieve(SourceRequest(query=untimed, k=3)) == out


def test_a_model_of_another_log_is_refused(cyclic_model: tuple[Path, Interactions], tmp_path: Path) -> None:
    folder, log = cyclic_model
    keep = np.ones(len(log), bool)
    keep[-1] = False  # one interaction less: another log
    with pytest.raises(ConfigError, match="trained on another interaction log") as info:
        open_sequential(folder, log.subset(keep))
    assert "recagent train sequential" in info.value.hint
    assert open_sequential(tmp_path, log) is None  # no model: the source is absent
    assert open_sequential(folder, None) is None
    with pytest.raises(ConfigError, match="not a sequential model folder"):
        open_sequential(tmp_path, log, required=True)


def test_generator_uses_the_collections_model(tmp_path: Path, ml_sample: Path) -> None:
    """Real Chroma, the real MovieLens sample: the generator builds the source from the folder, refuses it for a
    changed log, and leaves it out when its weight is 0 or no model exists."""
    items, log = read_catalog(ml_sample).items, read_interactions(ml_sample)
    embedder = FakeEmbedder()
    store = Store(StoreConfig(path=tmp_path / "chroma"))
    store.upsert(items, embedder)
    collection = store.collection()
    folder = tmp_path / "seq"
    cfg = SeqTrainConfig(model=TINY.model_copy(update={"max_len": 20}), epochs=1, threads=1)
    _, split = fit_sequential(log, folder, cfg, progress=False)
    generator = CandidateGenerator.default(collection, embedder, log, FusionConfig(k=20, n=10), sequential_dir=folder)
    user = split.users[0]
    query = UserQuery(history=log.history(user))
    rankings = generator.run_sources(query)
    assert 0 < len(rankings["sequential"]) <= 20
    assert not {h.item_id for h in query.history} & {i for i, _ in rankings["sequential"]}
    assert any("sequential" in c.sources for c in generator.generate(query))
    served_for_test = split.train_log(with_validation=True)  # the evaluator's loo train log
    assert "sequential" in CandidateGenerator.default(
        collection, embedder, served_for_test, sequential_dir=folder
    ).run_sources(query)
    keep = np.ones(len(log), bool)
    keep[0] = False
    with pytest.raises(ConfigError, match="trained on another"):
        CandidateGenerator.default(collection, embedder, log.subset(keep), sequential_dir=folder)
    off = FusionConfig(weights={**DEFAULT_SOURCE_WEIGHTS, "sequential": 0.0})
    assert "sequential" not in CandidateGenerator.default(
        collection, embedder, log.subset(keep), off, sequential_dir=folder
    ).run_sources(query)
    absent = CandidateGenerator.default(collection, embedder, log, sequential_dir=tmp_path / "none")
    assert "sequential" not in absent.run_sources(query)
