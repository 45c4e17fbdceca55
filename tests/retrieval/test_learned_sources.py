"""The log-learned sources (transition, EASE): hand-checked toy cases, a log whose next item is known, masking,
the on-disk cache of fitted state, and their place among the default sources."""

from __future__ import annotations

import logging
import random
from pathlib import Path

import numpy as np
import pytest

import retrieval.ease as ease_module
import retrieval.transition as transition_module
from retrieval.candidates import CandidateGenerator, SourceRequest
from retrieval.config import DEFAULT_SOURCE_WEIGHTS, FusionConfig, StoreConfig
from retrieval.ease import EaseConfig, EaseSource, fit_ease
from retrieval.fitcache import FitCache
from retrieval.fitted import artifact_dir
from retrieval.interactions import Interactions, read_interactions
from retrieval.learned import LearnedSourcesConfig, learned_sources
from retrieval.seqsource import item_sequence
from retrieval.store import Store
from retrieval.transition import TransitionConfig, TransitionSource, fit_transitions
from retrieval.types import HistoryEntry, UserQuery

from retrieval_helpers import FakeEmbedder


def _log(sequences: dict[str, list[str]]) -> Interactions:
    """One row per (user, item), times 1, 2, 3, ... in list order."""
    users, items, times = [], [], []
    for user, seq in sequences.items():
        for t, item in enumerate(seq, start=1):
            users.append(user)
            items.append(item)
            times.append(t)
    return Interactions.from_records(users, items, None, times)


def _query(items: list[str], **kw: object) -> UserQuery:
    return UserQuery(history=[HistoryEntry(item_id=i, timestamp=t) for t, i in enumerate(items, 1)], **kw)  # type: ignore[arg-type]


def _request(query: UserQuery, k: int = 10) -> SourceRequest:
    return SourceRequest(query=query, k=k, exclude=frozenset(query.excluded_ids()))


TOY = {"u1": ["a", "b", "c"], "u2": ["a", "b", "d"], "u3": ["b", "c"]}


def _scores(source: TransitionSource | EaseSource, items: list[str]) -> dict[str, float]:
    raw = source.scores(items)
    return {i: float(raw[source.interactions.item_index[i]]) for i in source.interactions.item_ids}


def test_transition_counts_hand_checked() -> None:
    log = _log(TOY)
    config = TransitionConfig(window=2, gap_decay=0.5, backward=0.0, normalize="none", history_decay=0.5)
    matrix = fit_transitions(log, config).toarray()
    ix = log.item_index
    expected = {("a", "b"): 2.0, ("b", "c"): 2.0, ("a", "c"): 0.5, ("b", "d"): 1.0, ("a", "d"): 0.5}
    for (x, y), value in expected.items():
        assert matrix[ix[x], ix[y]] == pytest.approx(value)
    assert matrix.sum() == pytest.approx(sum(expected.values()))  # nothing else, nothing backwards
    source = TransitionSource(log, config)
    # history a then b: b weighs 1, a weighs 0.5; seen items score 0
    assert _scores(source, ["a", "b"]) == pytest.approx({"a": 0, "b": 0, "c": 2 + 0.5 * 0.5, "d": 1 + 0.5 * 0.5})
    assert source.retrieve(_request(_query(["a", "b"]))) == [("c", 2.25), ("d", 1.25)]


def test_transition_normalisations_and_backward_pairs() -> None:
    log = _log(TOY)
    ix = log.item_index  # item counts: a 2, b 3, c 2, d 1
    source = fit_transitions(log, TransitionConfig(window=1, backward=0.0, normalize="source")).toarray()
    assert source[ix["a"], ix["b"]] == pytest.approx(2 / 2) and source[ix["b"], ix["c"]] == pytest.approx(2 / 3)
    sqrt = fit_transitions(log, TransitionConfig(window=1, backward=0.0, normalize="sqrt")).toarray()
    assert sqrt[ix["b"], ix["d"]] == pytest.approx(1 / np.sqrt(3 * 1))
    both = fit_transitions(log, TransitionConfig(window=1, normalize="none", backward=0.25)).toarray()
    assert both[ix["b"], ix["a"]] == pytest.approx(0.5) and both[ix["a"], ix["b"]] == pytest.approx(2.0)


def test_transition_finds_the_known_next_item() -> None:
    """Users walk a fixed cycle of 30 items (with a noisy step now and then): the next item is the successor."""
    rng = random.Random(0)
    cycle = [f"i{n}" for n in range(30)]
    nxt = {cycle[n]: cycle[(n + 1) % 30] for n in range(30)}
    sequences = {}
    for u in range(200):
        pos, seq = rng.randrange(30), []
        for _ in range(rng.randrange(5, 15)):
            seq.append(cycle[pos])
            pos = (pos + (1 if rng.random() > 0.1 else rng.randrange(2, 29))) % 30
        sequences[f"u{u}"] = list(dict.fromkeys(seq))
    source = TransitionSource(_log(sequences), TransitionConfig())
    hits = 0
    for _ in range(100):
        start = rng.randrange(30)
        history = [cycle[(start + j) % 30] for j in range(4)]
        top = source.retrieve(_request(_query(history), k=1))
        hits += top[0][0] == nxt[history[-1]]
    assert hits >= 95


def test_item_sequence_orders_by_time_and_drops_dislikes() -> None:
    query = UserQuery(
        history=[HistoryEntry(item_id="late", timestamp=9), HistoryEntry(item_id="early", timestamp=1),
                 HistoryEntry(item_id="bad", timestamp=5), HistoryEntry(item_id="early", timestamp=7)],
        liked=["chat"], disliked=["bad"],
    )  # fmt: skip
    assert item_sequence(query) == ["early", "late", "chat"]


EASE_TOY = {"u1": ["a", "b"], "u2": ["b", "c"], "u3": ["a"], "u4": ["c"]}


def test_ease_matches_the_closed_form_by_hand() -> None:
    """G = X^T X + I = [[3,1,0],[1,3,1],[0,1,3]]; P = G^-1 = [[8,-3,1],[-3,9,-3],[1,-3,8]] / 21;
    B_ij = -P_ij / P_jj: B_ab = 1/3, B_ac = -1/8, B_ba = 3/8, B_bc = 3/8, B_ca = -1/8, B_cb = 1/3."""
    log = _log(EASE_TOY)
    fitted = fit_ease(log, EaseConfig(l2=1.0))
    order = [log.item_ids[int(i)] for i in fitted["items"]]
    pos = {item: n for n, item in enumerate(order)}
    hand = {("a", "b"): 1 / 3, ("a", "c"): -1 / 8, ("b", "a"): 3 / 8, ("b", "c"): 3 / 8, ("c", "a"): -1 / 8,
            ("c", "b"): 1 / 3, ("a", "a"): 0.0, ("b", "b"): 0.0, ("c", "c"): 0.0}  # fmt: skip
    for (x, y), value in hand.items():
        assert fitted["weights"][pos[x], pos[y]] == pytest.approx(value, abs=1e-6)
    source = EaseSource(log, EaseConfig(l2=1.0))
    assert _scores(source, ["a"]) == pytest.approx({"a": 0.0, "b": 1 / 3, "c": -1 / 8})
    # both a and c seen: masked, b scores B_ab + B_cb
    assert _scores(source, ["a", "c"]) == pytest.approx({"a": 0.0, "b": 2 / 3, "c": 0.0})
    assert source.retrieve(_request(_query(["a", "c"]))) == [("b", pytest.approx(2 / 3))]
    assert source.retrieve(_request(_query(["a", "c"], exclude_seen=False))) == [("b", pytest.approx(2 / 3))]


def test_ease_above_max_items_models_the_most_active_only() -> None:
    log = _log({**EASE_TOY, "u5": ["a", "b"]})  # counts: a 3, b 3, c 2
    source = EaseSource(log, EaseConfig(l2=1.0, max_items=2, tail_neighbors=0))  # no tail columns
    assert sorted(log.item_ids[int(i)] for i in source.items) == ["a", "b"]
    scores = _scores(source, ["a", "c"])
    assert scores["c"] == 0.0 and scores["b"] > 0  # c is outside the model: scores 0, counts for nothing
    assert scores == _scores(source, ["a"]) | {"a": 0.0, "c": 0.0}


def test_unknown_history_gives_nothing() -> None:
    source = TransitionSource(_log(TOY))
    assert source.retrieve(_request(_query(["zzz"]))) == []
    assert source.retrieve(_request(UserQuery())) == []


def test_fitted_state_is_cached_and_refitted_when_the_log_changes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    calls = {"transition": 0, "ease": 0}
    real_t, real_e = transition_module.fit_transitions, ease_module.fit_ease

    def counting_t(*a: object, **k: object) -> object:
        calls["transition"] += 1
        return real_t(*a, **k)  # type: ignore[arg-type]

    def counting_e(*a: object, **k: object) -> object:
        calls["ease"] += 1
        return real_e(*a, **k)  # type: ignore[arg-type]

    monkeypatch.setattr(transition_module, "fit_transitions", counting_t)
    monkeypatch.setattr(ease_module, "fit_ease", counting_e)
    log = _log(TOY)
    folder = tmp_path / "t"
    first = TransitionSource(log, cache_dir=folder)
    second = TransitionSource(log, cache_dir=folder)
    assert (first.origin, second.origin, calls["transition"]) == ("fit", "cache", 1)
    assert (second.matrix != first.matrix).nnz == 0
    changed = _log({**TOY, "u4": ["c", "d"]})
    assert TransitionSource(changed, cache_dir=folder).origin == "fit" and calls["transition"] == 2
    assert TransitionSource(log, TransitionConfig(window=1), cache_dir=folder).origin == "fit"
    assert TransitionSource(log, cache_dir=folder).origin == "cache"  # the first entry is still there
    for npz in folder.glob("*.npz"):
        npz.write_bytes(b"not a zip file")
    with caplog.at_level(logging.WARNING, logger="retrieval.fitcache"):
        again = TransitionSource(log, cache_dir=folder)
    assert again.origin == "fit" and "unreadable" in caplog.text
    assert TransitionSource(log, cache_dir=folder).origin == "cache"  # the refit was stored
    e1, e2 = EaseSource(log, cache_dir=tmp_path / "e"), EaseSource(log, cache_dir=tmp_path / "e")
    assert (e1.origin, e2.origin, calls["ease"]) == ("fit", "cache", 1)
    assert np.array_equal(e1.weights, e2.weights)


def test_fit_cache_keeps_the_most_recent_entries(tmp_path: Path) -> None:
    cache = FitCache(tmp_path, keep=2)
    for n in range(4):
        cache.get_or_fit(f"log{n}", {}, lambda n=n: {"x": np.arange(n + 1)})  # type: ignore[misc]
    assert len(list(tmp_path.glob("*.npz"))) == 2
    hit = cache.get_or_fit("log3", {}, lambda: {"x": np.zeros(1)})
    assert hit.origin == "cache" and hit.arrays["x"].tolist() == [0, 1, 2, 3]


def test_learned_sources_follow_the_weights(tmp_path: Path) -> None:
    log = _log(TOY)
    assert learned_sources(log, {"transition": 0.0, "ease": 0.0}) == []
    assert [s.name for s in learned_sources(log, {"collab": 1.0})] == ["transition", "ease"]  # missing weighs 1
    built = learned_sources(log, {"transition": 1.0, "ease": 0.5}, LearnedSourcesConfig(),
                            cache_dir=lambda kind: tmp_path / kind)  # fmt: skip
    assert [s.name for s in built] == ["transition", "ease"]
    assert (tmp_path / "transition").is_dir() and (tmp_path / "ease").is_dir()
    assert DEFAULT_SOURCE_WEIGHTS["transition"] > 0 and DEFAULT_SOURCE_WEIGHTS["ease"] >= 0


def test_default_generator_uses_the_learned_sources_on_a_real_log(
    ml_sample: Path, embedded_config: StoreConfig, fake_embedder: FakeEmbedder
) -> None:
    """Real catalog sample, real embedded Chroma, real ratings file; fitted state cached in the artifact folder."""
    from retrieval.catalog import read_catalog

    store = Store(embedded_config)
    store.upsert(read_catalog(ml_sample).items, fake_embedder)
    coll = store.collection()
    log = read_interactions(ml_sample)
    weights = {**DEFAULT_SOURCE_WEIGHTS, "transition": 1.0, "ease": 1.0}
    folders = lambda kind: artifact_dir(embedded_config, coll.name, kind)  # noqa: E731
    generator = CandidateGenerator.default(coll, fake_embedder, log, FusionConfig(weights=weights, n=20),
                                           cache_dir=folders)  # fmt: skip
    assert {"transition", "ease"} <= set(generator.source_names)
    assert list(folders("ease").glob("*.npz")) and list(folders("transition").glob("*.npz"))
    user = next(u for u in log.user_ids if len(log.history(u)) >= 20)
    query = UserQuery(user_id=user, history=log.history(user))
    lists = generator.run_sources(query)
    seen = {h.item_id for h in query.history}
    for name in ("transition", "ease"):
        assert lists[name] and not seen & {i for i, _ in lists[name]}
    fused = generator.generate(query)
    assert any("transition" in c.sources or "ease" in c.sources for c in fused)
    again = CandidateGenerator.default(coll, fake_embedder, log, FusionConfig(weights=weights), cache_dir=folders)
    assert {s.name: getattr(s, "origin", None) for s in again.sources}["ease"] == "cache"
    off = CandidateGenerator.default(coll, fake_embedder, log, FusionConfig(weights={**weights, "ease": 0.0}))
    assert "ease" not in off.source_names
    assert "transition" not in CandidateGenerator.default(coll, fake_embedder, None).source_names


def test_log_learned_sources_serve_conversation_seeds() -> None:
    """A chat request has no history, only the items liked in the conversation: transition and EASE score from
    those alone (the same list as when the items are the user's history), and a disliked one is no seed."""
    log = _log(TOY)
    for source in (TransitionSource(log, TransitionConfig()), EaseSource(log, EaseConfig(l2=1.0))):
        chat = source.retrieve(_request(UserQuery(liked=["a"], need="something like a")))
        assert chat, source.name
        assert chat == source.retrieve(_request(_query(["a"])))
        assert "a" not in [i for i, _ in chat]
        assert source.retrieve(_request(UserQuery(liked=["a"], disliked=["a"]))) == []
