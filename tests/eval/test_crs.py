"""iEvaLM-CRS per-gold recall (hand-computed), dialogue folds (isolation), and the dialogue-log readers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agent.errors import InputError
from eval.crs import dialogue_folds, ievalm_recall, per_gold_hits, train_log
from eval.crs_folds import run_folds
from eval.datasets import EvalCase
from eval.dialogue_log import log_from_cases, read_dialogue_log
from retrieval.candidates import SourceRequest
from retrieval.dialogue_sources import ComentionSource, fit_dialogue_model
from retrieval.types import Item, UserQuery


def test_per_gold_hits_by_hand() -> None:
    ranking = ["a", "b", "c", "d", "e"]
    assert per_gold_hits(["c", "x", "a"], ranking, ks=(1, 3, 5)) == {1: [0, 0, 1], 3: [1, 0, 1], 5: [1, 0, 1]}


def test_ievalm_recall_counts_every_gold_as_one_sample() -> None:
    # turn t1: 2 golds (rank 1 and rank 12), turn t2: 1 gold (not ranked) -> 3 samples
    golds = {"t1": ["a", "l"], "t2": ["z"]}
    rankings = {"t1": [*"abcdefghijk", "l"], "t2": ["a"]}
    got = ievalm_recall(golds, rankings, ks=(1, 10, 50))
    assert got == {
        "recall@1": pytest.approx(1 / 3),
        "recall@10": pytest.approx(1 / 3),
        "recall@50": pytest.approx(2 / 3),
        "samples": 3.0,
    }
    # the per-turn average would give (0.5 + 0) / 2 = 0.25 at 1: the protocols differ on purpose


def _case(dialog: str, turn: int, liked: list[str], gold: list[str]) -> EvalCase:
    return EvalCase(
        case_id=f"{dialog}_{turn}",
        liked=liked,
        gold=dict.fromkeys(gold, 1),
        meta={"dialog_id": dialog, "turn_id": turn},
    )


# every dialogue i pairs its own movie "s<i>" with "t<i>": only a leak could predict t<i> from s<i>
CASES = [_case(f"d{i}", t, [f"s{i}"], [f"t{i}"] if t == 1 else ["common"]) for i in range(10) for t in (1, 2)]


def test_dialogue_folds_partition_the_dialogues() -> None:
    folds = dialogue_folds(CASES, 5, seed=3)
    assert sorted(len(f) for f in folds) == [2] * 5
    assert set().union(*folds) == {f"d{i}" for i in range(10)}
    assert dialogue_folds(CASES, 5, seed=3) == folds
    with pytest.raises(InputError, match="folds"):
        dialogue_folds(CASES, 11)


def test_fold_training_log_never_holds_the_folds_dialogues() -> None:
    log = log_from_cases(CASES)
    for fold in dialogue_folds(CASES, 5):
        assert not train_log(log, fold).dialog_ids & fold
        assert len(train_log(log, fold)) == len(CASES) - 2 * len(fold)


def test_run_folds_has_no_leakage() -> None:
    arms = {"comention": {"comention": 1.0}, "popularity": {"recommended_popularity": 1.0}}
    results, folds = run_folds(CASES, lambda c: {}, folds=5, arms=arms, progress=False)
    assert all(f.leaked_dialogues == 0 for f in folds)
    for fold in folds:
        for case_id, ranking in fold.rankings["comention"].items():
            dialog = case_id.split("_")[0]
            assert f"t{dialog[1:]}" not in ranking  # its own pair was never counted
    # "common" is recommended in every dialogue: the prior finds it for the 10 second turns, never a t<i>
    assert results["popularity"]["recall@1"] == pytest.approx(10 / 20)
    assert results["popularity"]["samples"] == 20
    # the check can fail: a model fitted on every dialogue (a leak) finds t0 for s0
    leaky = fit_dialogue_model(log_from_cases(CASES))
    request = SourceRequest(query=UserQuery(liked=["s0"]), k=5, exclude=frozenset({"s0"}))
    assert "t0" in [i for i, _ in ComentionSource(leaky).retrieve(request)]


ITEMS = [
    Item(id="1", title="The Babadook (2014)"),
    Item(id="2", title="The Shining (1980)"),
    Item(id="3", title="It Follows (2014)"),
]


def _write(path: Path, rows: list[dict[str, object]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_read_generic_log_by_id_and_title_with_unmatched_count(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "log.jsonl",
        [
            {
                "dialog_id": "a",
                "mentioned": ["the babadook (2014)", "Nope (2099)"],
                "recommended": ["2"],
                "rejected": ["3"],
            },
            {"dialog_id": "b", "mentioned": [], "recommended": []},
        ],
    )
    log = read_dialogue_log(path, ITEMS)
    assert [(t.mentioned, t.recommended, t.rejected) for t in log.turns] == [(("1",), ("2",), ("3",))]
    r = log.report
    assert (r.format, r.turns_read, r.turns_kept, r.names_total) == ("generic", 2, 1, 4)
    assert (r.matched_id, r.matched_title, r.unmatched, r.unmatched_examples) == (2, 1, 1, ["Nope (2099)"])


def test_read_turn_file_and_raw_dialogues(tmp_path: Path) -> None:
    turns = _write(
        tmp_path / "turns.jsonl",
        [
            {
                "dialog_id": "7",
                "context": ["hi"],
                "entity": ["horror", "The Babadook (2014)"],
                "rec": ["The Shining (1980)"],
            }
        ],
    )
    log = read_dialogue_log(turns, ITEMS)
    assert log.report.format == "turns" and log.turns[0].mentioned == ("1",) and log.turns[0].recommended == ("2",)
    raw = _write(
        tmp_path / "dialogues.jsonl",
        [
            {
                "conversationId": "9",
                "respondentWorkerId": 2,
                "movieMentions": {"11": "The Babadook (2014)"},
                "messages": [
                    {
                        "senderWorkerId": 1,
                        "text": "like @11",
                        "turn_id": 0,
                        "item": ["The Babadook (2014)"],
                        "entity": [],
                    },
                    {"senderWorkerId": 2, "text": "try it", "turn_id": 1, "item": ["It Follows (2014)"], "entity": []},
                ],
            }
        ],
    )
    log = read_dialogue_log(raw, ITEMS)
    assert log.report.format == "redial-dialogues" and log.report.dialogues == 1
    assert [(t.dialog_id, t.mentioned, t.recommended) for t in log.turns] == [("9", ("1",), ("3",))]


def test_read_log_without_any_match_is_a_clear_error(tmp_path: Path) -> None:
    path = _write(tmp_path / "log.jsonl", [{"dialog_id": "a", "mentioned": [], "recommended": ["Unknown (1900)"]}])
    with pytest.raises(InputError, match="no recommended catalog item") as err:
        read_dialogue_log(path, ITEMS)
    assert err.value.hint and "catalog" in err.value.hint
    with pytest.raises(InputError, match="format"):
        read_dialogue_log(_write(tmp_path / "odd.jsonl", [{"x": 1}]), ITEMS)


def test_dialogue_log_usable_only_without_overlap() -> None:
    from dataclasses import replace

    from eval.crs import dialogue_log_usable

    other = fit_dialogue_model(log_from_cases([_case("x1", 1, ["s0"], ["t0"])]))
    assert other.dialog_ids == frozenset({"x1"})
    assert dialogue_log_usable(other, CASES) is True
    assert dialogue_log_usable(None, CASES) is False
    assert dialogue_log_usable(other, [EvalCase(case_id="u1", liked=["s0"], gold={"t0": 1})]) is False  # no dialogue
    leaky = fit_dialogue_model(log_from_cases([*CASES[:4], _case("x1", 1, ["s0"], ["t0"])]))
    with pytest.raises(InputError, match="holds 2 of the 10 evaluated dialogues"):
        dialogue_log_usable(leaky, CASES)
    with pytest.raises(InputError, match="does not record its dialogue ids"):
        dialogue_log_usable(replace(other, dialog_ids=None), CASES)
