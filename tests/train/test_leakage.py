"""The leakage guard: a planted test interaction is caught; the real split's examples hold none."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.schemas import CandidateItem, HistoryItem
from eval.datasets import EvalDataset
from eval.protocol import Protocol, make_split
from retrieval.interactions import Interactions
from retrieval.types import Candidate, Item
from train.leakage import LeakageError, assert_no_leakage, find_leaks, held_out_pairs

from toy import toy_examples


def _log() -> Interactions:
    users, items, ratings, times = [], [], [], []
    for u in range(4):
        for i in range(8):
            users.append(f"u{u}")
            items.append(f"i{(u + i) % 10}")
            ratings.append(5.0 if i % 2 == 0 else 3.0)
            times.append(100 * u + i)
    return Interactions.from_records(users, items, ratings, times)


def test_held_out_pairs_are_the_split_test_part() -> None:
    log = _log()
    data = EvalDataset(name="toy", kind="interactions", catalog_path=Path("."), catalog_format="auto", mapping=None,
                       items={}, interactions=log)  # fmt: skip
    split = make_split(data, Protocol(min_history=2))
    assert split.train is not None
    pairs = held_out_pairs(log, split.train)
    for case in split.cases:  # the held-out positive of every test user is forbidden
        assert set(case.gold) <= pairs[str(case.user_id)]
    assert sum(len(v) for v in pairs.values()) == len(log) - len(split.train)


@pytest.mark.parametrize("role", ["history", "option", "target"])
def test_planted_leak_is_caught(role: str) -> None:
    examples = toy_examples(5)
    victim = examples[2]
    forbidden = {victim.user_id: {"secret"}, "someone-else": {victim.options[0].id}}
    assert assert_no_leakage(examples, forbidden) == 5  # other users' test items are not a leak
    if role == "history":
        victim.user.history.append(HistoryItem(item_id="secret", title="Secret"))
    elif role == "option":
        item = Item(id="secret", title="Secret")
        victim.options.append(CandidateItem(item=item, candidate=Candidate(item_id="secret", score=0, sources={})))
    else:
        victim.target_id = "secret"
    assert find_leaks(examples, forbidden) == [(victim.user_id, "secret", role)]
    with pytest.raises(LeakageError, match="secret"):
        assert_no_leakage(examples, forbidden)


def test_trainer_refuses_a_leak(tmp_path: Path) -> None:
    from agent.settings import load_settings
    from train.config import DataConfig, TrainConfig
    from train.trainer import train_ranker

    examples = toy_examples(3)
    forbidden = {examples[0].user_id: {examples[0].target_id}}
    with pytest.raises(LeakageError):
        train_ranker(load_settings(), "unused-model", examples, toy_examples(1, prefix="v"), tmp_path / "out",
                     forbidden=forbidden, data_cfg=DataConfig(), train_cfg=TrainConfig(), progress=False)  # fmt: skip
    assert not (tmp_path / "out").exists()  # refused before anything was written or loaded


@pytest.mark.slow
def test_real_split_examples_hold_no_test_interaction(ml_train_data: object) -> None:
    from train.data import TrainData

    assert isinstance(ml_train_data, TrainData)
    data = ml_train_data
    assert data.train and data.val
    assert find_leaks([*data.train, *data.val], data.forbidden) == []
    # the guard is not vacuous: test users do have training examples, and their held-out items are known
    test_users = {c.user_id for c in data.split.cases}
    trained = {e.user_id for e in data.train} & test_users
    assert trained and all(data.forbidden[u] for u in trained)
    # validation users are not training users; each gives up to 3 examples (distinct targets, its last positives)
    assert not {e.user_id for e in data.train} & {e.user_id for e in data.val}
    per_user: dict[str, list[str]] = {}
    for ex in data.val:
        per_user.setdefault(ex.user_id, []).append(ex.target_id)
    assert len(per_user) == 10 and max(len(t) for t in per_user.values()) == 3 and len(data.val) > 10
    assert all(len(set(t)) == len(t) for t in per_user.values())
    # every example's target is a train-log item of its user, its history the items before it
    for ex in data.train[:50]:
        entries = [h.item_id for h in data.split.train.history(ex.user_id)]  # type: ignore[union-attr]
        assert ex.target_id in entries
        assert ex.history_ids() == entries[: entries.index(ex.target_id)][-50:]  # the pipeline's last 50
    # planting one held-out item into an example is caught
    victim = next(e for e in data.train if e.user_id in trained)
    leak = next(iter(data.forbidden[victim.user_id]))
    planted = victim.model_copy(update={"target_id": leak})
    with pytest.raises(LeakageError):
        assert_no_leakage([planted], data.forbidden)
    stats = data.stats
    assert stats["test_users"] == 40 and len(stats["train"]["labels"]) > 4


@pytest.mark.slow
def test_retrieval_order_examples_on_the_real_split(train_settings: object, train_embedder: object,
                                                    ml_sample: Path) -> None:  # fmt: skip
    """option_order=retrieval on real retrieval: every kept target was retrieved into the window, the label is its
    fused rank, and no test interaction leaks."""
    from eval.provenance import DeterministicStore
    from train.config import DataConfig
    from train.data import build_data, load_data

    from testkit import SAMPLE_COLLECTION

    dataset = load_data(ml_sample, ml_sample / "ratings.csv")
    cfg = DataConfig(users=40, val_users=10, max_train_users=30, examples_per_user=2, history=5, options=8,
                     option_order="retrieval", tries=4)  # fmt: skip
    data = build_data(train_settings, dataset, cfg, embedder=train_embedder,  # type: ignore[arg-type]
                      store=DeterministicStore(train_settings.store_config()),  # type: ignore[attr-defined]
                      collection=SAMPLE_COLLECTION, progress=False)  # fmt: skip
    assert data.train and data.val
    for ex in [*data.train, *data.val]:
        assert ex.target_retrieved and len(ex.options) == 8 and ex.options[ex.label].id == ex.target_id
        scores = [c.candidate.score for c in ex.options]
        assert scores == sorted(scores, reverse=True)  # fused order, the target at its own rank
    assert find_leaks([*data.train, *data.val], data.forbidden) == []
    assert data.stats["train"]["target_retrieved"] == 1.0
