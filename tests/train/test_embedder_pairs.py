"""Co-interaction pairs for the embedder: hand-made logs, the leakage guard on the real split, the recall metric."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from agent.errors import InputError
from retrieval.types import HistoryEntry
from train.embed_eval import better, retrieval_metrics
from train.embed_pairs import (
    EmbedDataConfig,
    ItemPair,
    ValTarget,
    build_embed_data,
    build_pairs,
    val_target,
    val_targets,
)
from train.leakage import LeakageError, assert_no_pair_leakage, find_pair_leaks


def _log(*rows: tuple[str, float]) -> list[HistoryEntry]:
    return [HistoryEntry(item_id=i, rating=r, timestamp=t + 1) for t, (i, r) in enumerate(rows)]


HISTORIES = {
    "u1": _log(("a", 5), ("b", 2), ("c", 4), ("d", 4.5), ("e", 4)),  # positives a c d e
    "u2": _log(("c", 4), ("a", 5), ("f", 4)),  # c-a duplicates a-c; c-f, a-f new
    "u3": _log(("a", 5), ("b", 1)),  # one positive
    "u4": _log(("g", 4), ("g", 5), ("x", 4)),  # g-g is a self pair; x is not in the catalog
}


def test_pairs_by_hand() -> None:
    pairs, counts = build_pairs(HISTORIES, ["u1", "u2", "u3"], min_rating=4, window=2)
    assert [(p.user_id, p.anchor, p.positive) for p in pairs] == [
        ("u1", "a", "c"),
        ("u1", "a", "d"),
        ("u1", "c", "d"),
        ("u1", "c", "e"),
        ("u1", "d", "e"),
        ("u2", "c", "f"),
        ("u2", "a", "f"),
    ]
    assert counts["duplicate_pairs"] == 1 and counts["users_under_two_positives"] == 1
    assert counts["users_paired"] == 2
    window_one, _ = build_pairs(HISTORIES, ["u1"], min_rating=4, window=1)
    assert [(p.anchor, p.positive) for p in window_one] == [("a", "c"), ("c", "d"), ("d", "e")]
    strict, _ = build_pairs(HISTORIES, ["u1"], min_rating=4.5, window=3)
    assert [(p.anchor, p.positive) for p in strict] == [("a", "d")]
    known = {"a", "b", "c", "d", "e", "f", "g"}
    other, counts = build_pairs(HISTORIES, ["u4"], min_rating=4, window=3, known=known)
    assert other == [] and counts["self_pairs"] == 1 and counts["positives_not_in_catalog"] == 1


def test_validation_target_by_hand() -> None:
    cfg = EmbedDataConfig(min_history=2, history=2)
    got = val_target("u1", HISTORIES["u1"], cfg)
    assert got is not None
    assert (got.user_id, got.target, got.history, got.seen) == ("u1", "e", ("c", "d"), frozenset({"a", "b", "c", "d"}))
    # the pipeline's item-to-item seeds: liked items (b, rated 2, is not), 1 + rating - 4, halved every 20 steps back
    assert [i for i, _ in got.seeds] == ["a", "d", "c"]
    assert dict(got.seeds) == pytest.approx({"a": 2 * 0.5 ** (3 / 20), "d": 1.5, "c": 0.5 ** (1 / 20)})
    assert val_target("u3", HISTORIES["u3"], cfg) is None  # its only positive has no earlier item
    # several queries per validation user: its last liked items, newest first, each ranked from what came before it
    several = val_targets("u1", HISTORIES["u1"], EmbedDataConfig(min_history=2, history=2, val_targets=5))
    assert [(t.target, t.history, t.seen) for t in several] == [
        ("e", ("c", "d"), frozenset("abcd")),
        ("d", ("b", "c"), frozenset("abc")),
        ("c", ("a", "b"), frozenset("ab")),  # a (position 0) has under 2 earlier interactions
    ]
    assert [i for i, _ in several[2].seeds] == ["a"]
    assert val_target("u1", HISTORIES["u1"], EmbedDataConfig(min_history=5)) is None


@pytest.fixture(scope="module")
def sample_data(ml_sample: Path) -> object:
    from train.data import load_data

    dataset = load_data(ml_sample, ml_sample / "ratings.csv")
    return build_embed_data(dataset, EmbedDataConfig(users=40, val_users=10, window=3))


def test_real_split_pairs_hold_no_test_interaction(sample_data: object) -> None:
    from train.embed_pairs import EmbedData

    assert isinstance(sample_data, EmbedData)
    data = sample_data
    assert data.pairs and len({v.user_id for v in data.val}) == 10 and len(data.split.cases) == 40
    assert 10 < len(data.val) <= 50 and data.stats["val_queries"] == len(data.val)  # up to 5 queries per user
    assert not any(v.target in data.forbidden.get(v.user_id, set()) for v in data.val)  # targets are train items
    assert find_pair_leaks(data.pairs, data.forbidden) == []
    # independently of the guard: every test user's held-out target is in no pair of that user
    for case in data.split.cases:
        assert case.user_id is not None
        theirs = {i for p in data.pairs if p.user_id == case.user_id for i in (p.anchor, p.positive)}
        assert not theirs & set(case.gold)
    val_users = {v.user_id for v in data.val}
    assert not val_users & {p.user_id for p in data.pairs}  # validation users give no pair
    assert data.stats["pairs"] == len(data.pairs) and data.stats["val_users"] == 10


def test_a_planted_leak_is_caught(sample_data: object) -> None:
    from train.embed_pairs import EmbedData

    assert isinstance(sample_data, EmbedData)
    user = next(u for u, items in sample_data.forbidden.items() if items)
    leaked = sorted(sample_data.forbidden[user])[0]
    planted = [*sample_data.pairs, ItemPair(user, "1", leaked)]
    with pytest.raises(LeakageError) as caught:
        assert_no_pair_leakage(planted, sample_data.forbidden)
    assert f"user {user} item {leaked} (positive)" in caught.value.message
    assert "train log" in caught.value.hint
    assert assert_no_pair_leakage(sample_data.pairs, sample_data.forbidden) == len(sample_data.pairs)


def test_max_pairs_is_a_seeded_sample(ml_sample: Path, sample_data: object) -> None:
    from train.data import load_data
    from train.embed_pairs import EmbedData

    assert isinstance(sample_data, EmbedData)
    dataset = load_data(ml_sample, ml_sample / "ratings.csv")
    cfg = EmbedDataConfig(users=40, val_users=10, window=3, max_pairs=50)
    one, two = build_embed_data(dataset, cfg), build_embed_data(dataset, cfg)
    assert len(one.pairs) == 50 and one.pairs == two.pairs and set(one.pairs) <= set(sample_data.pairs)
    assert one.stats["pairs_cut_by_max_pairs"] == len(sample_data.pairs) - 50


def test_too_few_users_is_an_input_error(ml_sample: Path) -> None:
    from train.data import load_data

    dataset = load_data(ml_sample, ml_sample / "ratings.csv")
    with pytest.raises(InputError) as caught:
        build_embed_data(dataset, EmbedDataConfig(val_users=100_000))
    assert "too few users" in caught.value.message and "--val-users" in caught.value.hint


def test_recall_and_mrr_by_hand() -> None:
    vectors = np.array([[1, 0], [0.8, 0.6], [0, 1], [-1, 0]], dtype=np.float32)  # x y z w
    ids = ["x", "y", "z", "w"]
    targets = [
        ValTarget("u1", "z", ("x",), frozenset({"x"})),  # query x: y .8, z 0, w -1 -> z at rank 2
        ValTarget("u2", "w", ("z",), frozenset({"z"})),  # query z: y .6, x 0, w 0 -> w at rank 2 (ties count for it)
        ValTarget("u3", "y", ("x", "z"), frozenset({"x", "z"})),  # query (x+z)/|.|: y first
    ]
    got = retrieval_metrics(vectors, ids, targets, ks=(1, 2), query="recent")
    assert got == {"recall@1": pytest.approx(1 / 3, abs=1e-6), "recall@2": 1.0, "mrr": pytest.approx(2 / 3, abs=1e-6)}
    with pytest.raises(ValueError, match="item2item or recent"):
        retrieval_metrics(vectors, ids, targets, query="centroid")
    assert better({"recall@20": 0.5, "mrr": 0.2}, {"recall@20": 0.5, "mrr": 0.1})
    assert not better({"recall@20": 0.5, "mrr": 0.1}, {"recall@20": 0.5, "mrr": 0.1})
    assert not better({"recall@20": 0.4, "mrr": 0.9}, {"recall@20": 0.5, "mrr": 0.1})


def test_item2item_query_by_hand() -> None:
    """As the pipeline's item-to-item source: each seed retrieves its fetch_k + len(seen) nearest items, an item scores
    the weight-averaged similarity over the seeds that retrieved it, an item no seed retrieved is a miss."""
    angles = {"x": 0, "y": 30, "z": 80, "v": 120, "w": 180}
    ids = list(angles)
    vectors = np.array([[np.cos(np.radians(a)), np.sin(np.radians(a))] for a in angles.values()], dtype=np.float32)
    seeds = (("x", 1.0), ("z", 3.0))

    def case(target: str) -> ValTarget:
        return ValTarget("u", target, (), frozenset({"x", "z"}), seeds)

    # fetch_k 1 -> 3 neighbours per seed: x gets x y z, z gets z v y. y = (.866 + 3 * .643) / 4 beats v = 3 * .766 / 4
    # and w is retrieved by neither seed: a miss (reciprocal rank 0)
    targets = [case("y"), case("v"), case("w")]
    got = retrieval_metrics(vectors, ids, targets, ks=(1, 2), fetch_k=1)
    assert got == {"recall@1": pytest.approx(1 / 3, abs=1e-6), "recall@2": pytest.approx(2 / 3, abs=1e-6),
                   "mrr": pytest.approx(0.5, abs=1e-6)}  # fmt: skip
    # with room for every item, w is retrieved and ranks third
    wide = retrieval_metrics(vectors, ids, targets, ks=(1, 2), fetch_k=100)
    assert wide["mrr"] == pytest.approx((1 + 1 / 2 + 1 / 3) / 3, abs=1e-6)
    # no seed at all (nothing liked): every target is a miss
    bare = [ValTarget("u", "y", ("x",), frozenset({"x"}))]
    assert retrieval_metrics(vectors, ids, bare) == {"recall@20": 0.0, "recall@50": 0.0, "mrr": 0.0}
