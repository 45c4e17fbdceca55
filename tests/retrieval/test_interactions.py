"""Interaction logs: MovieLens formats, generic CSV, bad rows, the compact structure and the hold-out split."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from retrieval.errors import CatalogError
from retrieval.interactions import InteractionMapping, Interactions, read_interactions


def test_movielens_ratings(ml_sample: Path) -> None:
    log = read_interactions(ml_sample)
    report = log.report
    assert report is not None and report.consistent and report.rejected == 0
    with (ml_sample / "ratings.csv").open(encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert len(log) == len(rows) == report.accepted
    user_rows = [r for r in rows if r["userId"] == "1"]
    history = log.history("1")
    assert [h.timestamp for h in history] == sorted(int(r["timestamp"]) for r in user_rows)
    assert {h.item_id for h in history} == {r["movieId"] for r in user_rows}
    assert history[0].rating is not None
    popularity = log.popularity()
    toy = log.item_index["1"]
    assert popularity[toy] == sum(1 for r in rows if r["movieId"] == "1")
    liked = log.popularity(min_rating=4.0)[toy]
    assert liked == sum(1 for r in rows if r["movieId"] == "1" and float(r["rating"]) >= 4)
    matrix = log.matrix()
    assert matrix.shape == (log.n_users, log.n_items) and matrix.nnz == len(rows) and matrix.max() == 1.0
    assert log.history("no-such-user") == []


def test_100k_and_1m_formats(tmp_path: Path) -> None:
    a = tmp_path / "ml-100k"
    a.mkdir()
    (a / "u.data").write_text("1\t10\t4\t881250949\n1\t11\t2\t881250000\n2\t10\t5\t881251000\n")
    log = read_interactions(a)
    assert [h.item_id for h in log.history("1")] == ["11", "10"]  # sorted by time
    b = tmp_path / "ml-1m"
    b.mkdir()
    (b / "ratings.dat").write_text("1::1193::5::978300760\n1::661::3::978302109\nbroken\n")
    log = read_interactions(b / "ratings.dat")
    assert log.report is not None and log.report.rejections["wrong_column_count"].count == 1
    assert log.history("1")[0].rating == 5.0


def test_generic_csv_with_mapping_and_bad_rows(tmp_path: Path) -> None:
    path = tmp_path / "orders.csv"
    path.write_text(
        "customer;sku;stars;when\n"
        "c1;p1;5;2024-01-02T10:00:00\n"
        "c1;p2;;2024-01-01T10:00:00Z\n"
        "c2;p1;great;2024-01-03\n"
        "c2;;4;2024-01-03\n"
        "c3;p3;3;yesterday\n"
        "c3;p3;3\n"
    )
    mapping = InteractionMapping(user="customer", item="sku", rating="stars", timestamp="when")
    log = read_interactions(path, mapping=mapping)
    report = log.report
    assert report is not None and (report.rows_read, report.accepted, report.rejected) == (6, 2, 4)
    assert set(report.rejections) == {"invalid_rating", "missing_user_or_item", "invalid_timestamp",
                                      "wrong_column_count"}  # fmt: skip
    history = log.history("c1")
    assert [h.item_id for h in history] == ["p2", "p1"] and history[0].rating is None
    with pytest.raises(CatalogError, match="--strict"):
        read_interactions(path, mapping=mapping, strict=True)


def test_defaults_and_errors(tmp_path: Path) -> None:
    path = tmp_path / "log.csv"
    path.write_text("user,item\nu1,a\nu1,b\nu2,a\n")
    log = read_interactions(path)
    assert np.isnan(log.ratings).all() and log.popularity().tolist() == [2, 1]
    with pytest.raises(CatalogError) as err:
        read_interactions(path, mapping=InteractionMapping(user="customer"))
    assert "'customer'" in err.value.message and "'user'" in err.value.message
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(CatalogError, match="empty"):
        read_interactions(empty)
    only_unknown = read_interactions
    with pytest.raises(CatalogError, match="no usable interaction"):
        only_unknown(path, items={"zzz"})
    filtered = read_interactions(path, items={"a"})
    assert filtered.report is not None and filtered.report.rejections["unknown_item"].count == 1


def test_holdout_last_positive() -> None:
    log = Interactions.from_records(
        users=["u1", "u1", "u1", "u1", "u2", "u2", "u3"],
        items=["a", "b", "c", "d", "a", "b", "c"],
        ratings=[5, 3, 4, 2, 5, 1, 5],
        timestamps=[1, 2, 3, 4, 1, 2, 1],
    )
    train, heldout = log.holdout_last_positive(4.0)
    assert heldout == {"u1": "c"}  # u2's only positive is its first rating; u3 has no earlier history
    assert [h.item_id for h in train.history("u1")] == ["a", "b"]
    assert [h.item_id for h in train.history("u2")] == ["a", "b"]
    assert train.item_ids == log.item_ids and train.matrix().shape == log.matrix().shape
    users = [f"u{i}" for i in range(50)]
    many = Interactions.from_records(
        users=[u for u in users for _ in range(3)], items=["x", "y", "z"] * 50, ratings=[5.0, 5.0, 5.0] * 50
    )
    one = many.holdout_last_positive(sample=10, seed=3)[1]
    assert len(one) == 10 and one == many.holdout_last_positive(sample=10, seed=3)[1]
    assert set(one.values()) == {"z"}
