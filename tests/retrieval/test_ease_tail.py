"""EASE above max_items: the tail items' sparse columns (retrieval/ease_tail.py) against the closed form."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from retrieval.ease import EaseConfig, EaseSource, fit_ease
from retrieval.ease_tail import tail_matrix
from retrieval.interactions import Interactions

# 6 users over 5 items; counts: a 6, b 4, c 3, d 3, e 2 (so max_items=2 keeps a, b and leaves c, d, e to the tail)
LOG = {"u1": "abcd", "u2": "abce", "u3": "abd", "u4": "acd", "u5": "ab", "u6": "ae"}


def _log() -> Interactions:
    users = [u for u, items in LOG.items() for _ in items]
    items = [i for seq in LOG.values() for i in seq]
    return Interactions.from_records(users, items, None, list(range(1, len(items) + 1)))


def _full(log: Interactions, l2: float) -> np.ndarray:
    """EASE's B over every item by the closed form, in log item order."""
    x = log.matrix(binary=True).toarray()
    p = np.linalg.inv(x.T @ x + l2 * np.eye(x.shape[1]))
    b = -p / np.diag(p)[None, :]
    np.fill_diagonal(b, 0.0)
    return b


def test_with_enough_neighbours_the_tail_columns_are_eases() -> None:
    log = _log()
    full = _full(log, 2.0)
    fitted = fit_ease(log, EaseConfig(l2=2.0, max_items=2, tail_neighbors=10))
    head = sorted(log.item_ids[int(i)] for i in fitted["items"])
    tail = [log.item_ids[int(i)] for i in fitted["tail_items"]]
    assert head == ["a", "b"] and sorted(tail) == ["c", "d", "e"]
    w = tail_matrix(fitted, log.n_items)
    assert w is not None
    for t, j in enumerate(fitted["tail_items"]):
        assert w[:, t].toarray().ravel() == pytest.approx(full[:, int(j)], abs=1e-5)  # every other item a predictor


def test_k_neighbours_solve_the_restricted_ridge_by_hand() -> None:
    """Item e co-occurs with a (2 users), b (1), c (1): with k=1 its column is the ridge of e on a alone:
    (G_aa + l2)^-1 G_ae = 2 / (6 + 1)."""
    log = _log()
    fitted = fit_ease(log, EaseConfig(l2=1.0, max_items=2, tail_neighbors=1))
    w = tail_matrix(fitted, log.n_items)
    assert w is not None
    t = [log.item_ids[int(i)] for i in fitted["tail_items"]].index("e")
    column = dict(zip(log.item_ids, w[:, t].toarray().ravel(), strict=True))
    assert column == pytest.approx({"a": 2 / 7, "b": 0.0, "c": 0.0, "d": 0.0, "e": 0.0})
    assert np.diff(fitted["tail_indptr"]).tolist() == [1, 1, 1]  # one weight per tail item


def test_scores_add_the_tail_and_zero_keeps_the_old_plan(tmp_path: Path) -> None:
    log = _log()
    full = _full(log, 2.0)
    source = EaseSource(log, EaseConfig(l2=2.0, max_items=2, tail_neighbors=10), cache_dir=tmp_path)
    history = ["a", "c"]
    raw = source.scores(history)
    index = log.item_index
    for item in ("d", "e"):  # tail items: x_u B over the whole history, as full EASE would score them
        assert raw[index[item]] == pytest.approx(full[index["a"], index[item]] + full[index["c"], index[item]], 1e-5)
    assert raw[index["a"]] == raw[index["c"]] == 0.0  # seen
    again = EaseSource(log, EaseConfig(l2=2.0, max_items=2, tail_neighbors=10), cache_dir=tmp_path)
    assert again.origin == "cache" and again.scores(history) == pytest.approx(raw)  # the tail is cached too
    none = EaseSource(log, EaseConfig(l2=2.0, max_items=2, tail_neighbors=0), cache_dir=tmp_path)
    assert none.origin == "fit" and all(none.scores(history)[index[i]] == 0.0 for i in "cde")


def test_the_cache_key_of_a_log_below_max_items_is_unchanged() -> None:
    config = EaseConfig(l2=50.0, max_items=100)
    assert config.cache_settings(100) == {"l2": 50.0, "max_items": 100}  # entries written before the tail existed
    assert config.cache_settings(101) == {"l2": 50.0, "max_items": 100, "tail_neighbors": 100}
