"""The leave-one-out protocol (``--split loo``): a hand-checked split, the bundled data's counts and baselines."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.errors import InputError
from eval.datasets import EvalDataset, load_dataset
from eval.loo import kcore_filter
from eval.protocol import Protocol, make_split
from eval.runner import run_eval
from retrieval.interactions import Interactions
from retrieval.types import Item

# (user, item, time). With k=3: items 50, 51, 52 have one interaction each and go first; that leaves u4 with two
# (1, 4) and u5 with one (9), so both go; that leaves item 4 with two (u1, u3), so a second round removes it.
# What stays: u1, u2, u3 with items 1, 9, 10. Time ties are broken by the item id as a number (9 before 10).
ROWS = [
    ("u1", "1", 1), ("u1", "10", 5), ("u1", "9", 5), ("u1", "4", 7),
    ("u2", "10", 1), ("u2", "1", 2), ("u2", "9", 3), ("u2", "50", 4),
    ("u3", "9", 1), ("u3", "1", 1), ("u3", "10", 2), ("u3", "4", 3),
    ("u4", "1", 1), ("u4", "51", 2), ("u4", "4", 3),
    ("u5", "9", 1), ("u5", "52", 2),
]  # fmt: skip
# after the filter, per user in sequence order: u1 1, 9, 10 | u2 10, 1, 9 | u3 1, 9, 10
TEST = {"u1": ("10", ["1", "9"]), "u2": ("9", ["10", "1"]), "u3": ("10", ["1", "9"])}
VALIDATION = {"u1": ("9", ["1"]), "u2": ("1", ["10"]), "u3": ("9", ["1"])}


def _dataset(rows: list[tuple[str, str, int]], timed: bool = True) -> EvalDataset:
    users, items, times = zip(*rows, strict=True)
    log = Interactions.from_records(list(users), list(items), [3.0] * len(rows), list(times) if timed else None)
    catalog = {i: Item(id=i, title=f"Item {i}") for i in set(items)}
    return EvalDataset(name="tiny", kind="interactions", catalog_path=Path("x"), catalog_format="csv", mapping=None,
                       items=catalog, interactions=log)  # fmt: skip


def _pairs(log: Interactions | None) -> set[tuple[str, str]]:
    assert log is not None
    return {(u, h.item_id) for u in log.user_ids for h in log.history(u)}


def test_kcore_filter_cascades_until_stable() -> None:
    log = _dataset(ROWS).interactions
    assert log is not None
    core, notes = kcore_filter(log, 3)
    assert _pairs(core) == {(u, i) for u in ("u1", "u2", "u3") for i in ("1", "9", "10")}
    assert notes == {"kcore": 3, "kcore_rounds": 2, "users_before": 5, "items_before": 7, "interactions_before": 17,
                     "users": 3, "items": 3, "interactions": 9}  # fmt: skip


@pytest.mark.parametrize(("part", "expected"), [("test", TEST), ("validation", VALIDATION)])
def test_loo_split_by_hand(part: str, expected: dict[str, tuple[str, list[str]]]) -> None:
    split = make_split(_dataset(ROWS), Protocol(split="loo", kcore=3, part=part))  # type: ignore[arg-type]
    got = {c.user_id: (next(iter(c.gold)), [h.item_id for h in c.history]) for c in split.cases}
    assert got == expected
    assert split.items == frozenset({"1", "9", "10"})  # the ranked universe: the filtered items only
    held = {(u, gold) for u, (gold, _) in TEST.items()}
    if part == "validation":
        held |= {(u, gold) for u, (gold, _) in VALIDATION.items()}
    # the log the recommender sees = every user's history, never a held-out item of anyone
    assert _pairs(split.train) == {(u, i) for u, (_, history) in expected.items() for i in history}
    assert not _pairs(split.train) & held
    for case in split.cases:
        assert not {(case.user_id, h.item_id) for h in case.history} & held
    assert split.notes is not None and split.notes["order"] == "timestamp, then item id"
    assert split.notes["part"] == part
    assert split.notes.get("test_targets_removed") == (3 if part == "validation" else None)


def test_loo_defaults_sampling_file_order_and_errors() -> None:
    assert Protocol(split="loo").ks == (5, 10, 20) and Protocol(split="loo", ks=(10,)).ks == (10,)
    assert Protocol().ks == (10, 20)
    one = make_split(_dataset(ROWS), Protocol(split="loo", kcore=3, users=2, seed=1))
    again = make_split(_dataset(ROWS), Protocol(split="loo", kcore=3, users=2, seed=1))
    assert len(one.cases) == 2 and [c.case_id for c in one.cases] == [c.case_id for c in again.cases]
    assert _pairs(one.train) == {(u, i) for u, (_, h) in TEST.items() for i in h}  # held out for everyone
    listed = make_split(_dataset(ROWS), Protocol(split="loo", kcore=3, user_ids=("u2", "u4", "zz")))
    assert [c.user_id for c in listed.cases] == ["u2"]
    assert listed.notes is not None and listed.notes["user_ids_not_eligible"] == 1  # u4: lost in the filter
    # no timestamps: the file order is the sequence order (u1: 1, 10, 9 -> test 9)
    untimed = make_split(_dataset(ROWS, timed=False), Protocol(split="loo", kcore=3))
    assert {c.user_id: next(iter(c.gold)) for c in untimed.cases} == {"u1": "9", "u2": "9", "u3": "10"}
    assert untimed.notes is not None and untimed.notes["order"] == "file order (the log has no timestamps)"
    with pytest.raises(InputError, match="survives the 6-core filter"):
        make_split(_dataset(ROWS), Protocol(split="loo", kcore=6))
    # sampled negatives come from the filtered items only: every user has seen all three of them
    with pytest.raises(InputError, match="only 0 unseen items"):
        make_split(_dataset(ROWS), Protocol(split="loo", kcore=3, candidates="sampled", n_negatives=1))


def test_bundled_movielens_counts(ml_small: Path) -> None:
    split = make_split(load_dataset(ml_small), Protocol(split="loo"))
    assert split.notes is not None
    assert (split.notes["users"], split.notes["items"], split.notes["interactions"]) == (610, 3650, 90274)
    assert len(split.cases) == 610 and split.items is not None and len(split.items) == 3650
    assert split.train is not None and len(split.train) == 90274 - 610
    val = make_split(load_dataset(ml_small), Protocol(split="loo", part="validation"))
    assert val.train is not None and len(val.train) == 90274 - 2 * 610
    test_items = {(c.user_id, i) for c in split.cases for i in c.gold}
    val_items = {(c.user_id, i) for c in val.cases for i in c.gold}
    assert not test_items & val_items and len(val_items) == 610
    assert not _pairs(split.train) & test_items and val_items <= _pairs(split.train)  # test: train + validation
    assert not _pairs(val.train) & (test_items | val_items)  # validation: neither, for anyone
    for case in val.cases:
        assert not {(case.user_id, h.item_id) for h in case.history} & (test_items | val_items)


@pytest.mark.slow
def test_bundled_movielens_baselines_match_the_published_computations(ml_small: Path, tmp_path: Path) -> None:
    """Issue 23's independent computations on this split: popularity 0.021 / 0.044, item-kNN 0.026 / 0.056
    (NDCG@10 / Recall@10); tie order may move a hit or two (one hit = 0.0016 recall)."""
    from agent.settings import load_settings

    settings = load_settings(home=tmp_path / "home")
    run = run_eval(settings, load_dataset(ml_small), Protocol(split="loo"), tmp_path / "out",
                   baselines=["popularity", "itemknn"], progress=False)  # fmt: skip
    arms = run.results["arms"]
    for name, ndcg, recall in (("popularity", 0.021, 0.044), ("itemknn", 0.026, 0.056)):
        metrics = arms[name]["metrics"]
        assert metrics["ndcg@10"]["mean"] == pytest.approx(ndcg, abs=0.002)
        assert metrics["recall@10"]["mean"] == pytest.approx(recall, abs=0.004)
        assert "ndcg@5" in metrics and "recall@20" in metrics


def test_published_rows_are_validated_and_labelled(tmp_path: Path) -> None:
    from eval.published import load_published, published_section

    good = tmp_path / "pub.json"
    good.write_text('{"source": "Paper, Table 2", "rows": [{"name": "SASRec", "metrics": {"ndcg@10": 0.0522, '
                    '"recall@10": 0.0993, "mrr@50": 0.1}}]}')  # fmt: skip
    table = load_published(good).model_dump()
    lines = published_section(table, ["ndcg@5", "ndcg@10", "recall@10"])
    assert lines[0] == "## Published figures (not re-run)" and "Source: Paper, Table 2" in lines[2]
    assert "| published | ndcg@10 | recall@10 | mrr@50 |" in lines  # the run's columns it has, then its own
    assert "| SASRec (published) | 0.0522 | 0.0993 | 0.1000 |" in lines
    assert published_section(None, ["ndcg@10"]) == []
    for text, problem in (("{", "is not JSON"), ('{"source": "x", "rows": []}', "rows"),
                          ('{"source": "x", "rows": [{"name": "a", "metrics": {"ndcg": 1}}]}', "ndcg@10")):  # fmt: skip
        good.write_text(text)
        with pytest.raises(InputError, match=problem):
            load_published(good)
    with pytest.raises(InputError, match="cannot read"):
        load_published(tmp_path / "missing.json")


def test_loo_report_shows_the_split_and_the_published_rows(tmp_path: Path) -> None:
    from agent.settings import load_settings
    from eval.published import load_published

    pub = Path(__file__).resolve().parents[2] / "eval" / "reports" / "llamarec-ml-latest-small.json"
    run = run_eval(load_settings(home=tmp_path / "home"), _dataset(ROWS), Protocol(split="loo", kcore=3),
                   tmp_path / "out", baselines=["popularity"], progress=False,
                   published=load_published(pub).model_dump())  # fmt: skip
    report = (run.out / "report.md").read_text()
    assert "split loo: every interaction counts" in report and "3-core filter (2 rounds)" in report
    assert "5 users / 7 items / 17 interactions -> 3 / 3 / 9" in report
    assert "| LlamaRec (published) | 0.0759 | 0.1524 |" in report
    assert run.results["published"]["rows"][0]["name"] == "SASRec"
