"""Co-mention counts and the dialogue sources on a made-up log (hand-computed), and their cache on disk."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from retrieval.candidates import SourceRequest
from retrieval.dialogue_log import DialogueLog, DialogueTurn, dialogue_fingerprint
from retrieval.dialogue_sources import (
    ComentionSource,
    DialogueSourceConfig,
    RecommendedPopularitySource,
    conversation_seeds,
    fit_cached,
    fit_dialogue_model,
    load_dialogue_model,
)
from retrieval.types import HistoryEntry, UserQuery

# d1: A mentioned -> B, C recommended; then A, B mentioned -> D recommended.  d2: A -> B.  d3: E -> C (rejected F)
LOG = DialogueLog(
    [
        DialogueTurn("d1", ("A",), ("B", "C")),
        DialogueTurn("d1", ("A", "B"), ("D",)),
        DialogueTurn("d2", ("A",), ("B",)),
        DialogueTurn("d3", ("E",), ("C",), ("F",)),
    ]
)


def _dense(model, how: str = "turn") -> dict[tuple[str, str], float]:  # type: ignore[no-untyped-def]
    m = model.comention.toarray()
    ids = model.item_ids
    return {(ids[i], ids[j]): float(m[i, j]) for i, j in zip(*np.nonzero(m), strict=True)}


def test_turn_counts_by_hand() -> None:
    model = fit_dialogue_model(LOG, DialogueSourceConfig(pairs="turn", normalisation="none", prior=0))
    assert _dense(model) == {("A", "B"): 2.0, ("A", "C"): 1.0, ("A", "D"): 1.0, ("B", "D"): 1.0, ("E", "C"): 1.0}
    rec = dict(zip(model.item_ids, model.recommended, strict=True))
    assert rec == {"A": 0, "B": 2, "C": 2, "D": 1, "E": 0}  # the rejected F is never a recommendation


def test_window_keeps_the_last_mentions() -> None:
    model = fit_dialogue_model(LOG, DialogueSourceConfig(pairs="turn", window=1, normalisation="none", prior=0))
    assert _dense(model) == {("A", "B"): 2.0, ("A", "C"): 1.0, ("B", "D"): 1.0, ("E", "C"): 1.0}


def test_row_and_cosine_normalisation_by_hand() -> None:
    row = _dense(fit_dialogue_model(LOG, DialogueSourceConfig(pairs="turn", normalisation="row", prior=0)))
    assert row[("A", "B")] == pytest.approx(2 / 4) and row[("B", "D")] == pytest.approx(1.0)
    cos = _dense(fit_dialogue_model(LOG, DialogueSourceConfig(pairs="turn", normalisation="cosine", prior=0)))
    assert cos[("A", "B")] == pytest.approx(2 / np.sqrt(4 * 2)) and cos[("A", "D")] == pytest.approx(1 / np.sqrt(4))


def test_dialogue_pairs_count_every_two_items_of_a_dialogue_both_ways() -> None:
    model = fit_dialogue_model(LOG, DialogueSourceConfig(pairs="dialogue", normalisation="none", prior=0))
    counts = _dense(model)
    # d1 holds A, B, C, D; d2 holds A, B; d3 holds E, C (never the rejected F)
    assert counts[("A", "B")] == counts[("B", "A")] == 2.0
    assert counts[("D", "C")] == counts[("C", "E")] == 1.0
    assert not any("F" in pair for pair in counts)
    assert len(counts) == 12 + 2  # 4*3 ordered pairs of d1 (A-B counted again by d2) + E-C both ways


def _request(query: UserQuery, k: int = 10) -> SourceRequest:
    return SourceRequest(query=query, k=k, exclude=frozenset(query.excluded_ids()))


def test_comention_source_ranks_follow_ups_and_never_a_seed() -> None:
    model = fit_dialogue_model(LOG, DialogueSourceConfig(pairs="turn", normalisation="none", prior=0.05))
    ranked = ComentionSource(model).retrieve(_request(UserQuery(liked=["A"])))
    ids = [i for i, _ in ranked]
    assert ids[0] == "B" and "A" not in ids
    # scores: B = 2/2 + 0.05*2/2, C = 1/2 + 0.05, D = 1/2 + 0.05*1/2
    assert dict(ranked)["B"] == pytest.approx(1.05) and dict(ranked)["D"] == pytest.approx(0.525)
    assert ComentionSource(model).retrieve(_request(UserQuery(need="any comedy?"))) == []


def test_recommended_popularity_and_exclusions() -> None:
    model = fit_dialogue_model(LOG)
    ranked = RecommendedPopularitySource(model).retrieve(_request(UserQuery(disliked=["B"])))
    assert [i for i, _ in ranked] == ["C", "D"]


def test_conversation_seeds_window_history_and_dislikes() -> None:
    query = UserQuery(liked=["A", "B", "C"], disliked=["X"],
                      history=[HistoryEntry(item_id="H", rating=5), HistoryEntry(item_id="X", rating=5),
                               HistoryEntry(item_id="L", rating=2)])  # fmt: skip
    assert conversation_seeds(query, window=2) == ["B", "C", "H"]


def test_fingerprint_ignores_dialogue_order_and_sees_changes() -> None:
    shuffled = DialogueLog([LOG.turns[3], LOG.turns[2], LOG.turns[0], LOG.turns[1]])
    assert dialogue_fingerprint(shuffled) == dialogue_fingerprint(LOG)
    changed = DialogueLog([*LOG.turns[:3], DialogueTurn("d3", ("E",), ("C",))])
    assert dialogue_fingerprint(changed) != dialogue_fingerprint(LOG)


def test_fit_cached_reuses_and_refits(tmp_path: Path) -> None:
    config = DialogueSourceConfig(pairs="turn")
    model, reused = fit_cached(LOG, config, tmp_path / "comention")
    assert not reused
    again, reused = fit_cached(LOG, config, tmp_path / "comention")
    assert reused and again.item_ids == model.item_ids
    assert (again.comention != model.comention).nnz == 0
    _, reused = fit_cached(LOG, DialogueSourceConfig(pairs="dialogue"), tmp_path / "comention")
    assert not reused
    _, reused = fit_cached(LOG.without(["d3"]), DialogueSourceConfig(pairs="dialogue"), tmp_path / "comention")
    assert not reused
    loaded = load_dialogue_model(tmp_path / "comention")
    assert (
        loaded is not None and loaded.dialogues == 2 and loaded.fingerprint == dialogue_fingerprint(LOG.without(["d3"]))
    )
    assert load_dialogue_model(tmp_path / "nothing") is None
