"""The learned ranker's features on a hand-made case (every value computed by hand)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pytest

from retrieval.interactions import Interactions
from retrieval.ltr_features import FeatureBuilder, LogStats, feature_matrix, feature_names
from retrieval.types import Candidate, HistoryEntry, Item, SourceHit

DAY = 86400


class _Items:
    """A collection stand-in: fixed items and embeddings, counting lookups."""

    def __init__(self, items: dict[str, Item], vectors: dict[str, list[float]]) -> None:
        self.items, self.vectors = items, {k: np.asarray(v, np.float32) for k, v in vectors.items()}
        self.item_lookups: list[list[str]] = []

    def get_items(self, ids: Sequence[str]) -> dict[str, Item]:
        self.item_lookups.append(list(ids))
        return {i: self.items[i] for i in ids if i in self.items}

    def get_embeddings(self, ids: Sequence[str]) -> dict[str, np.ndarray]:
        return {i: self.vectors[i] for i in ids if i in self.vectors}


def _log() -> Interactions:
    # item a: 3 interactions (days 1, 2, 10), ratings 4, 2, 5; item b: 1 (day 5, rating 3); h1, h2: the user's
    rows = [("u1", "h1", 5.0, 1), ("u1", "h2", 4.0, 3), ("u2", "a", 4.0, 1), ("u3", "a", 2.0, 2),
            ("u2", "b", 3.0, 5), ("u3", "a", 5.0, 10)]  # fmt: skip
    return Interactions.from_records(
        [r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows], [r[3] * DAY for r in rows]
    )


def _builder() -> tuple[FeatureBuilder, _Items]:
    items = {
        "a": Item(id="a", title="A", metadata={"year": 2000, "genres": ["x"], "flag": True}),
        "b": Item(id="b", title="B", metadata={"year": 1990}),
        "c": Item(id="c", title="C"),
        "h1": Item(id="h1", title="H1", metadata={"year": 1994}),
        "h2": Item(id="h2", title="H2", metadata={"year": 1996}),
    }
    vectors = {"a": [1, 0], "b": [0, 2], "h1": [0, 1], "h2": [1, 0]}
    source = _Items(items, vectors)
    return FeatureBuilder(_log(), source), source


def _candidates() -> list[Candidate]:
    return [
        Candidate(
            item_id="a",
            score=0.03,
            sources={"collab": SourceHit(rank=1, score=0.8), "semantic": SourceHit(rank=4, score=0.5)},
        ),
        Candidate(item_id="b", score=0.02, sources={"collab": SourceHit(rank=2, score=0.6)}),
        Candidate(item_id="c", score=0.01, sources={"popularity": SourceHit(rank=7, score=3.0)}),
    ]


def test_rows_by_hand() -> None:
    builder, source = _builder()
    history = [HistoryEntry(item_id="h2", timestamp=3 * DAY), HistoryEntry(item_id="h1", timestamp=1 * DAY)]
    a, b, c = builder.rows(history, _candidates())
    # fused and per-source ranks and scores
    assert a["fused.rank"] == 1 and b["fused.rank"] == 2 and c["fused.rank"] == 3
    assert a["fused.score"] == 0.03 and a["fused.n_sources"] == 2 and b["fused.n_sources"] == 1
    assert a["src.collab.rank"] == 1 and a["src.semantic.rank"] == 4 and a["src.semantic.score"] == 0.5
    assert "src.semantic.rank" not in b and c["src.popularity.score"] == 3.0
    # log: popularity, recency (log ends on day 10; the user's last entry is day 3), mean rating
    assert a["item.pop"] == pytest.approx(math.log1p(3)) and b["item.pop"] == pytest.approx(math.log1p(1))
    assert a["item.mean_rating"] == pytest.approx(11 / 3)
    assert a["item.days_since_last"] == 0 and b["item.days_since_last"] == 5
    assert a["user.days_item_first"] == 2 and a["user.days_item_last"] == -7
    assert c["item.pop"] == 0 and "item.mean_rating" not in c and "item.days_since_last" not in c
    # latest tenth of the log by time: only the day-10 interaction
    assert a["item.pop_recent"] == pytest.approx(math.log1p(1)) and b["item.pop_recent"] == 0
    assert a["user.history"] == pytest.approx(math.log1p(2))
    # numeric metadata only (no genres list, no bool), and its difference to the history's mean year (1995)
    assert a["meta.year"] == 2000 and a["meta.year.vs_user"] == 5 and b["meta.year.vs_user"] == -5
    assert not any(k.startswith(("meta.genres", "meta.flag")) for k in a)
    assert not any(k.startswith("meta.") for k in c)
    # similarity: h2 = (1,0) is the latest, h1 = (0,1); centre = (1,1)/sqrt2
    assert a["sim.last"] == pytest.approx(1.0) and a["sim.max"] == pytest.approx(1.0)
    assert a["sim.mean"] == pytest.approx(1 / math.sqrt(2), abs=1e-6)
    assert b["sim.last"] == pytest.approx(0.0) and b["sim.max"] == pytest.approx(1.0)
    assert "sim.mean" not in c  # no stored embedding
    assert "llm.score" not in a
    assert source.item_lookups == [["a", "b", "c", "h2", "h1"]]


def test_items_given_are_not_looked_up_and_llm_scores_become_a_feature() -> None:
    builder, source = _builder()
    rows = builder.rows([], _candidates(), items=source.items, llm_scores=[0.5, -1.0, 2.0])
    assert source.item_lookups == []
    assert [r["llm.score"] for r in rows] == [0.5, -1.0, 2.0]
    assert all(not k.startswith(("sim.", "user.days")) for r in rows for k in r)  # no history: no similarity


def test_log_without_times_has_no_recency() -> None:
    log = Interactions.from_records(["u", "u", "v"], ["a", "b", "a"])
    stats = LogStats.of(log)
    assert not stats.timed
    row = FeatureBuilder(log, _Items({}, {})).rows([HistoryEntry(item_id="b")], _candidates()[:1])[0]
    assert row["item.pop"] == pytest.approx(math.log1p(2))
    assert not any(k.startswith(("item.days", "user.days", "item.mean")) for k in row)


def test_matrix_lines_up_rows_on_the_model_names() -> None:
    rows = [{"fused.rank": 1.0, "src.new.rank": 3.0, "meta.year": 2000.0}, {"fused.rank": 2.0, "sim.max": 0.5}]
    names = feature_names(rows)
    assert names == ["fused.rank", "src.new.rank", "meta.year", "sim.max"]
    matrix = feature_matrix(rows, ["sim.max", "fused.rank", "llm.score"])  # a source unknown to the model: ignored
    assert matrix[0, 1] == 1.0 and matrix[1, 0] == 0.5 and matrix[1, 1] == 2.0
    assert np.isnan(matrix[0, 0]) and np.isnan(matrix[:, 2]).all()
