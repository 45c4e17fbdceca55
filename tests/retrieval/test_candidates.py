"""Candidate sources, constraints, exclusions and reciprocal-rank fusion."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from retrieval.candidates import (
    CandidateGenerator,
    CollaborativeSource,
    ItemToItemSource,
    PopularitySource,
    SemanticSource,
    SourceRequest,
    rrf_fuse,
    seed_weights,
)
from retrieval.catalog import item_document, read_catalog
from retrieval.config import FusionConfig, StoreConfig
from retrieval.interactions import Interactions, read_interactions
from retrieval.store import ItemCollection, Store
from retrieval.types import Constraints, HistoryEntry, Item, UserQuery

from retrieval_helpers import FakeEmbedder, assert_ann_top_k


@pytest.fixture(scope="module")
def sample(ml_sample: Path) -> tuple[list[Item], Interactions]:
    return read_catalog(ml_sample).items, read_interactions(ml_sample)


@pytest.fixture
def loaded(
    store_config: StoreConfig, fake_embedder: FakeEmbedder, sample: tuple[list[Item], Interactions]
) -> ItemCollection:
    store = Store(store_config)
    store.upsert(sample[0], fake_embedder)
    return store.collection()


def test_rrf_fuse_hand_computed() -> None:
    rankings = {
        "a": [("x", 0.9), ("y", 0.8), ("z", 0.1)],
        "b": [("y", 5.0), ("w", 4.0), ("y", 3.0)],
        "off": [("q", 1.0)],
    }
    fused = rrf_fuse(rankings, weights={"a": 1.0, "b": 2.0, "off": 0.0}, rrf_k=10, n=10)
    assert [c.item_id for c in fused] == ["y", "w", "x", "z"]
    expected = {"y": 1 / 12 + 2 / 11, "w": 2 / 12, "x": 1 / 11, "z": 1 / 13}
    assert {c.item_id: c.score for c in fused} == pytest.approx(expected)
    y = fused[0]
    assert (y.sources["a"].rank, y.sources["a"].score, y.sources["b"].rank, y.sources["b"].score) == (2, 0.8, 1, 5.0)
    excluded = rrf_fuse(rankings, weights={"b": 2.0}, rrf_k=10, n=2, exclude=["w", "x"])
    assert [c.item_id for c in excluded] == ["y", "q"]  # 'q' weighs 1 by default; ranks recomputed
    assert excluded[0].sources["a"].rank == 1
    assert rrf_fuse({}, n=5) == []


def test_seed_weights() -> None:
    history = [
        HistoryEntry(item_id="old-love", rating=5.0, timestamp=1),
        HistoryEntry(item_id="meh", rating=3.0, timestamp=2),
        HistoryEntry(item_id="new-like", rating=4.0, timestamp=3),
        HistoryEntry(item_id="hated", rating=1.0, timestamp=4),
    ]
    weights = seed_weights(UserQuery(history=history, liked=["chat"], disliked=["new-like"]), half_life=1.0)
    assert set(weights) == {"old-love", "chat"}
    assert weights["chat"] == 2.0
    assert weights["old-love"] == pytest.approx(2.0 * 0.5**3)  # rating 5 -> 2, three interactions ago
    low = [HistoryEntry(item_id=i, rating=r) for i, r in (("a", 3.0), ("b", 2.0), ("c", 1.0))]
    assert set(seed_weights(UserQuery(history=low))) == {"a", "b"}  # none >= 4: at or above the mean
    implicit = [HistoryEntry(item_id=str(i)) for i in range(30)]
    assert len(seed_weights(UserQuery(history=implicit), max_seeds=5)) == 5


def test_ann_top_k_check_allows_near_ties_only() -> None:
    """Hand-checked: c and d are near-tied for the 3rd place (0.7000 vs 0.6995), b is clearly in the top 3."""
    sims = {"a": 0.9, "b": 0.8, "c": 0.7, "d": 0.6995, "e": 0.3}
    assert_ann_top_k([("a", 0.9), ("b", 0.8), ("c", 0.7)], sims, 3)
    assert_ann_top_k([("a", 0.9), ("b", 0.8), ("d", 0.6995)], sims, 3)  # the near-tie took the last slot
    for wrong in (
        [("a", 0.9), ("c", 0.7), ("d", 0.6995)],  # b missed
        [("b", 0.8), ("a", 0.9), ("c", 0.7)],  # not in similarity order
        [("a", 0.9), ("b", 0.8), ("e", 0.3)],  # e is far below the 3rd
        [("a", 0.9), ("b", 0.8), ("c", 0.75)],  # a wrong score
    ):
        with pytest.raises(AssertionError):
            assert_ann_top_k(wrong, sims, 3)


def test_semantic_source_matches_brute_force(
    loaded: ItemCollection, fake_embedder: FakeEmbedder, sample: tuple[list[Item], Interactions]
) -> None:
    items = sample[0]
    source = SemanticSource(loaded, fake_embedder)
    need = "toy story animation children"
    got = source.retrieve(SourceRequest(query=UserQuery(need=need), k=5))
    docs = fake_embedder.embed([item_document(i) for i in items])
    sims = docs @ fake_embedder.embed([need])[0]
    brute = [items[i].id for i in np.argsort(-sims)[:5]]
    # an approximate index over near-tied similarities: no exact order, the top-5 up to near-ties
    assert_ann_top_k(got, {item.id: float(s) for item, s in zip(items, sims, strict=True)}, 5)
    assert source.retrieve(SourceRequest(query=UserQuery(), k=5)) == []
    comedy = Constraints(include_genres=["Comedy"], year_min=1995)
    request = SourceRequest(query=UserQuery(need=need), k=20, where=comedy.to_where(), exclude=frozenset(brute[:2]))
    filtered = source.retrieve(request)
    meta = loaded.get_metadata([i for i, _ in filtered])
    assert len(filtered) == 20 and not set(brute[:2]) & {i for i, _ in filtered}
    assert all(comedy.matches(i, meta[i]) for i, _ in filtered)


def test_item_to_item_source(loaded: ItemCollection, sample: tuple[list[Item], Interactions]) -> None:
    items = sample[0]
    source = ItemToItemSource(loaded)
    query = UserQuery(history=[HistoryEntry(item_id="1", rating=5.0, timestamp=10)])
    got = source.retrieve(SourceRequest(query=query, k=10, exclude=frozenset(query.excluded_ids())))
    ids = [item.id for item in items]
    vectors = loaded.get_embeddings(ids)
    matrix = np.stack([vectors[i] for i in ids])
    sims = matrix @ vectors["1"]
    assert_ann_top_k(got, {i: float(s) for i, s in zip(ids, sims, strict=True) if i != "1"}, 10)
    assert "1" not in {i for i, _ in got}
    nobody = UserQuery(history=[HistoryEntry(item_id="not-in-catalog", rating=5.0)])
    assert source.retrieve(SourceRequest(query=nobody, k=10)) == []


def test_collaborative_source_is_summed_item_cosine() -> None:
    log = Interactions.from_records(
        users=["u1", "u1", "u2", "u2", "u2", "u3", "u3", "u4"],
        items=["a", "b", "a", "b", "c", "a", "c", "d"],
    )
    source = CollaborativeSource(log)
    dense = log.matrix().toarray()
    norms = np.linalg.norm(dense, axis=0)
    cos = (dense.T @ dense) / np.outer(norms, norms)
    idx = log.item_index
    got = dict(source.retrieve(SourceRequest(query=UserQuery(history=[HistoryEntry(item_id="a")]), k=10)))
    assert set(got) == {"b", "c"}  # 'd' never co-occurs with 'a'; the seed itself is left out
    assert got["b"] == pytest.approx(cos[idx["a"], idx["b"]])
    assert got["c"] == pytest.approx(cos[idx["a"], idx["c"]])
    two = UserQuery(history=[HistoryEntry(item_id="a", timestamp=1), HistoryEntry(item_id="b", timestamp=2)])
    scores = source.scores(seed_weights(two))
    weights = seed_weights(two)
    expected = weights["a"] * cos[idx["a"], idx["c"]] + weights["b"] * cos[idx["b"], idx["c"]]
    assert scores[idx["c"]] == pytest.approx(expected)


def test_popularity_source(sample: tuple[list[Item], Interactions]) -> None:
    items, log = sample
    source = PopularitySource(log)
    top = source.retrieve(SourceRequest(query=UserQuery(), k=5))
    counts = log.popularity()
    assert [c for _, c in top] == sorted(counts.tolist(), reverse=True)[:5]
    horror = Constraints(include_genres=["Horror"])
    allowed = frozenset(i.id for i in items if horror.matches(i.id, i.metadata))
    within = source.retrieve(SourceRequest(query=UserQuery(), k=5, allowed=allowed))
    assert len(within) == 5 and {i for i, _ in within} <= allowed
    best_horror = max(allowed, key=lambda i: counts[log.item_index[i]] if i in log.item_index else -1)
    assert within[0][0] == best_horror


def test_generator_excludes_seen_rejected_and_respects_constraints(
    loaded: ItemCollection, fake_embedder: FakeEmbedder, sample: tuple[list[Item], Interactions]
) -> None:
    _, log = sample
    generator = CandidateGenerator.default(loaded, fake_embedder, log, FusionConfig(k=40, n=30))
    history = log.history("414")  # a heavy rater
    assert len(history) > 50
    constraints = Constraints(exclude_genres=["Horror"], year_min=1980, exclude_ids=["2571"])
    query = UserQuery(
        history=history, need="space adventure", disliked=["260", "1196"], exclude=["1210"], constraints=constraints
    )
    rankings = generator.run_sources(query)
    assert set(rankings) == {"semantic", "item2item", "transition", "ease"}  # default weights: collab, popularity 0
    assert all(len(r) > 0 for r in rankings.values())
    candidates = generator.generate(query)
    assert len(candidates) == 30
    ids = [c.item_id for c in candidates]
    banned = {h.item_id for h in history} | {"260", "1196", "1210", "2571"}
    assert not banned & set(ids)
    assert not banned & {i for r in rankings.values() for i, _ in r}
    meta = loaded.get_metadata(ids)
    assert all(constraints.matches(i, meta[i]) for i in ids)
    for candidate in candidates:  # provenance: each source's rank and score as that source reported them
        for name, hit in candidate.sources.items():
            assert rankings[name][hit.rank - 1] == (candidate.item_id, pytest.approx(hit.score))
    scores = [c.score for c in candidates]
    assert scores == sorted(scores, reverse=True)
    popular = {name: 0.0 for name in generator.fusion.weights} | {"popularity": 1.0}  # popular items: seen by 414
    seen_allowed = generator.generate(query.model_copy(update={"exclude_seen": False}), weights=popular)
    assert {h.item_id for h in history} & {c.item_id for c in seen_allowed}


def test_generator_weights_and_catalog_restriction(
    loaded: ItemCollection, fake_embedder: FakeEmbedder, sample: tuple[list[Item], Interactions]
) -> None:
    _, log = sample
    outside = Interactions.from_records(
        users=[*log.user_ids[:3], "x"], items=["not-in-catalog"] * 3 + ["1"], ratings=[5.0] * 4
    )
    generator = CandidateGenerator(
        loaded,
        [PopularitySource(outside), SemanticSource(loaded, fake_embedder)],
        FusionConfig(weights={"semantic": 0.0}, k=5, n=5),
    )
    rankings = generator.run_sources(UserQuery(need="anything"))
    assert set(rankings) == {"popularity"}  # weight 0: the source is not even run
    assert rankings["popularity"] == [("1", 1.0)]  # 'not-in-catalog' is not in the collection


def test_cold_user_gets_popular_items_after_the_fused_ones(
    loaded: ItemCollection, fake_embedder: FakeEmbedder, sample: tuple[list[Item], Interactions]
) -> None:
    _, log = sample
    generator = CandidateGenerator.default(loaded, fake_embedder, log, FusionConfig(k=40, n=10))
    assert generator.fusion.weights["popularity"] == 0  # the default: popularity only fills
    cold = generator.generate(UserQuery())  # no history, no text: no source has anything
    counts = log.popularity()
    top = [log.item_ids[i] for i in np.argsort(-counts, kind="stable")[:10]]
    assert [c.item_id for c in cold] == top and all(set(c.sources) == {"popularity"} for c in cold)
    half = generator.generate(UserQuery(need="space adventure", k_per_source=4))  # 4 fused, 6 filled after them
    assert len(half) == 10 and all(c.score > 0 for c in half[:4]) and all(c.score == 0 for c in half[4:])
    assert len({c.item_id for c in half}) == 10
    warm = generator.generate(UserQuery(need="space adventure"))  # enough fused candidates: no filling
    assert all("popularity" not in c.sources for c in warm)


@pytest.mark.slow
def test_semantic_with_real_embedder(tmp_path: Path, ml_sample: Path, real_embedder: object) -> None:
    from retrieval.embed import SentenceTransformerEmbedder

    assert isinstance(real_embedder, SentenceTransformerEmbedder)
    store = Store(StoreConfig(path=tmp_path / "chroma"))
    store.upsert(read_catalog(ml_sample).items, real_embedder)
    coll = store.collection()
    source = SemanticSource(coll, real_embedder)
    got = source.retrieve(SourceRequest(query=UserQuery(need="Pixar animated movie about toys"), k=5))
    titles = [coll.get_items([i])[i].title for i, _ in got]
    assert any(t.startswith("Toy Story") for t in titles), titles
    scary = Constraints(include_genres=["Horror"])
    horror = source.retrieve(SourceRequest(query=UserQuery(need="scary"), k=5, where=scary.to_where()))
    assert len(horror) == 5
    assert all("Horror" in coll.get_items([i])[i].metadata["genres"] for i, _ in horror)
