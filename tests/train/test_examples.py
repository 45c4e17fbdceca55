"""Training examples: targets, negatives, label positions, and prompts identical to the ranker's."""

from __future__ import annotations

import random

from agent.llm.base import LLMRequest
from agent.rerank import rank
from agent.schemas import RerankConfig
from prompts import PromptRegistry
from retrieval.types import Candidate, HistoryEntry, Item, SourceHit, UserQuery
from train.examples import RankExample, render_messages, target_positions, user_examples

from fakes import FakeEngine, kind_of
from toy import toy_examples

CATALOG = {f"m{i}": Item(id=f"m{i}", title=f"Movie {i}", metadata={"genres": ["Drama"], "year": 1990 + i % 20})
           for i in range(60)}  # fmt: skip


def _fuse_all(seen: list[UserQuery]):  # type: ignore[no-untyped-def]
    def fuse(query: UserQuery) -> list[Candidate]:
        seen.append(query)
        blocked = query.excluded_ids()
        ids = [i for i in CATALOG if i not in blocked][: query.n or 50]
        return [Candidate(item_id=i, score=1 / (r + 1), sources={"collab": SourceHit(rank=r + 1, score=1.0)})
                for r, i in enumerate(ids)]  # fmt: skip

    return fuse


def _entries(n: int, rating: float = 5.0) -> list[HistoryEntry]:
    return [HistoryEntry(item_id=f"m{i}", rating=rating, timestamp=1000 + i) for i in range(n)]


def test_target_positions_last_positive_first() -> None:
    entries = _entries(12)
    entries[11] = HistoryEntry(item_id="m11", rating=2.0, timestamp=2000)  # not a positive
    got = target_positions(entries, min_rating=4.0, min_history=5, count=3, rng=random.Random(0))
    assert got[0] == 10 and len(got) == 3 and all(5 <= t < 10 for t in got[1:])
    assert target_positions(_entries(4), min_rating=4.0, min_history=5, count=2, rng=random.Random(0)) == []


def test_user_examples_target_negatives_and_history() -> None:
    entries = _entries(20)
    queries: list[UserQuery] = []
    forbidden = {"m40", "m41"}
    examples = user_examples("u1", entries, fuse=_fuse_all(queries), get_items=lambda ids: {i: CATALOG[i] for i in ids},
                             forbidden=forbidden, min_rating=4.0, min_history=5, count=4, options=8, pool=30,
                             rng=random.Random(1))  # fmt: skip
    assert len(examples) == 4
    for ex in examples:
        t = int(ex.target_id[1:])
        assert ex.options[ex.label].id == ex.target_id and len(ex.options) == 8
        assert ex.history_ids() == [f"m{i}" for i in range(t)]  # everything before the target, oldest first
        others = set(ex.option_ids()) - {ex.target_id}
        assert not others & {e.item_id for e in entries}  # no item of the user is a negative
        assert not others & forbidden
    assert {q.user_id for q in queries} == {"u1"} and all("m19" in q.exclude for q in queries[1:])


def test_label_positions_are_spread() -> None:
    queries: list[UserQuery] = []
    labels = []
    for u in range(60):
        ex = user_examples(f"u{u}", _entries(10), fuse=_fuse_all(queries),
                           get_items=lambda ids: {i: CATALOG[i] for i in ids}, forbidden=(), min_rating=4.0,
                           min_history=5, count=1, options=6, pool=20, rng=random.Random(u))  # fmt: skip
        labels.append(ex[0].label)
    assert set(labels) == set(range(6))  # not always the same (or the last) letter


def test_retrieval_order_examples_are_inference_windows() -> None:
    """option_order=retrieval: the options are the first fused candidates in fused order, the label is the target's
    own fused rank, a target retrieval missed is skipped and an earlier positive is tried instead."""
    fused_lists: dict[str, list[str]] = {}

    def fuse(query: UserQuery) -> list[Candidate]:
        t = len(query.history)  # the target of this query is m{t}
        blocked = query.excluded_ids()
        others = [i for i in CATALOG if i not in blocked and i != f"m{t}"]
        ids = others[:] if t % 3 == 0 else [*others[: t % 7], f"m{t}", *others[t % 7 :]]  # missed when t % 3 == 0
        fused_lists[f"m{t}"] = ids
        return [Candidate(item_id=i, score=1 / (r + 1), sources={}) for r, i in enumerate(ids[: query.n or 50])]

    forbidden = {"m30", "m33"}
    examples = user_examples("u1", _entries(19), fuse=fuse, get_items=lambda ids: {i: CATALOG[i] for i in ids},
                             forbidden=forbidden, min_rating=4.0, min_history=5, count=4, options=8, pool=30,
                             rng=random.Random(2), order="retrieval", tries=3)  # fmt: skip
    assert len(examples) == 4
    for ex in examples:
        t = int(ex.target_id[1:])
        assert t % 3 != 0 and ex.label == t % 7 and ex.target_retrieved  # its fused rank, never a missed target
        expected = [i for i in fused_lists[ex.target_id] if i not in forbidden][:8]
        assert ex.option_ids() == expected  # the inference window: fused order, forbidden items dropped
    assert "m18" in fused_lists and "m18" not in {e.target_id for e in examples}  # the last positive was missed
    # tries bound the search: one try per wanted example finds only what the first targets give
    few = user_examples("u1", _entries(19), fuse=fuse, get_items=lambda ids: {i: CATALOG[i] for i in ids},
                        forbidden=forbidden, min_rating=4.0, min_history=5, count=2, options=8, pool=30,
                        rng=random.Random(2), order="retrieval", tries=1)  # fmt: skip
    assert len(few) == 1 and few[0].target_id != "m18"  # 2 targets tried: the last (missed) and one earlier


def test_prompt_is_the_rankers_prompt() -> None:
    """The training prompt is token for token what the option-logit ranker sends for the same user and options."""
    registry = PromptRegistry()
    ex: RankExample = toy_examples(1, options=7)[0]
    engine = FakeEngine()
    config = RerankConfig(strategy="options", calibrate=False, explain="none", n_orders=1, option_window=26)
    rank(engine, registry, ex.user, ex.options, config=config, k=3)
    sent = [r for c in engine.calls if c.method == "score_options" for r in c.requests]
    assert len(sent) == 1 and kind_of(sent[0]) == "options"
    ours = render_messages(registry, "rank_options", ex, history_limit=config.history_limit,
                           include_text=config.include_text)  # fmt: skip
    assert LLMRequest.of(ours) == sent[0]
    assert next(c.labels for c in engine.calls if c.method == "score_options")[:7] == list("ABCDEFG")
