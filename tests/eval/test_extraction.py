"""`recagent eval extraction`: seeker utterances and their questionnaire labels read from raw dialogues, the scorer
on a hand-computed case, the paired ratio CI, the rules arm end to end, and bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from agent.chat.extract_examples import empty_answer
from agent.chat.preferences import PreferenceUpdate
from agent.errors import InputError
from agent.settings import Settings, load_settings
from eval.compare import paired_ratio_diff_ci
from eval.extraction import Case, parse_arms, read_cases, run_extraction_eval, score
from recagent import cmd_eval

from testkit import cli_app

MOVIES = {
    "101": {
        "name": "Silent Harbor (1990)",
        "genre": ["drama"],
        "plot": "A sailor comes home.",
        "director": ["A"],
        "writer": [],
        "star": [],
        "imdb_id": "tt65",
    },
    "102": {
        "name": "Golden Orchard (2001)",
        "genre": ["comedy"],
        "plot": "Two farmers.",
        "director": ["B"],
        "writer": [],
        "star": [],
        "imdb_id": "tt66",
    },
    "103": {
        "name": "Burning Kingdom (2010)",
        "genre": ["action"],
        "plot": "A siege.",
        "director": ["C"],
        "writer": [],
        "star": [],
        "imdb_id": "tt67",
    },
    "104": {
        "name": "Frozen Lantern (1985)",
        "genre": ["horror"],
        "plot": "A cold night.",
        "director": ["D"],
        "writer": [],
        "star": [],
        "imdb_id": "tt68",
    },
}


def _dialogue(cid: str, messages: list[tuple[int, str]], iq: dict, rq: dict) -> dict:
    mentions = {k: v["name"] for k, v in MOVIES.items()}
    return {
        "conversationId": cid,
        "initiatorWorkerId": 1,
        "respondentWorkerId": 2,
        "movieMentions": mentions,
        "messages": [{"senderWorkerId": s, "text": t, "turn_id": i} for i, (s, t) in enumerate(messages)],
        "initiatorQuestions": iq,
        "respondentQuestions": rq,
    }


def _q(liked: int) -> dict[str, int]:
    return {"suggested": 0, "seen": 1, "liked": liked}


@pytest.fixture()
def redial(tmp_path: Path) -> Path:
    folder = tmp_path / "redial"
    folder.mkdir()
    (folder / "movies.json").write_text(json.dumps(MOVIES), encoding="utf-8")
    dialogues = [
        _dialogue(
            "7",
            [
                (2, "Hi! What do you like?"),
                (1, "I loved @101 so much"),
                (1, "and @102 was awful"),  # merged with the line before: one utterance
                (2, "Have you seen @103 or @104?"),
                (1, "@103 yes, great! @104 meh"),
                (2, "bye"),
            ],
            {"101": _q(1), "102": _q(0), "103": _q(1), "104": _q(2)},
            {"101": _q(1), "102": _q(0), "103": _q(0)},  # 103: the two questionnaires disagree
        ),
        _dialogue("8", [(1, "hello"), (2, "hi, try @104"), (1, "ok thanks")], {"104": _q(1)}, {}),
    ]
    (folder / "dialogues.jsonl").write_text("\n".join(json.dumps(d) for d in dialogues) + "\n", encoding="utf-8")
    return folder


def test_seeker_utterances_and_their_labels(redial: Path) -> None:
    from eval.extraction import _catalog

    dialogues, items = _catalog(redial, None)
    cases, report = read_cases(dialogues, items)
    assert [c.case_id for c in cases] == ["7_1", "7_4"]  # seeker utterances with a mention; dialogue 8 has none
    first, second = cases
    assert first.message == "I loved Silent Harbor (1990) so much and Golden Orchard (2001) was awful"
    assert first.liked == {"101"} and first.disliked == {"102"} and first.shown == []
    assert [t.role for t in first.turns] == ["assistant"]
    assert second.mentioned == ["103", "104"] and second.shown == ["103", "104"]  # the recommender's last mentions
    assert second.liked == set() and second.disliked == set() and second.ignored == {"103"}
    assert [(t.role, t.item_ids) for t in second.turns] == [
        ("assistant", []),
        ("user", []),
        ("assistant", ["103", "104"]),
    ]
    assert (report.dialogues, report.seeker_utterances, report.with_mentions) == (2, 4, 2)
    assert (report.liked, report.disliked, report.unsaid, report.disagreeing) == (1, 1, 1, 1)


def test_the_scorer_on_a_hand_computed_case() -> None:
    case = Case("c", "d", "m", [], [], ["a", "b", "c", "d"], liked={"a", "b"}, disliked={"c"}, ignored={"d"})
    update = PreferenceUpdate(liked_ids=["a", "x", "d"], accepted_ids=["b"], disliked_ids=["b"], rejected_ids=[])
    liked, disliked = score(case, update)
    # liked kept: a, x, d, b; d is ignored -> a, b true positives, x a false positive, nothing missed
    assert (liked.tp, liked.fp, liked.fn) == (2, 1, 0)
    # disliked kept: b (wrong), c missed
    assert (disliked.tp, disliked.fp, disliked.fn) == (0, 1, 1)


def test_paired_ratio_difference() -> None:
    nums, dens = [2.0, 0.0, 2.0, 4.0], [2.0, 1.0, 3.0, 4.0]
    assert paired_ratio_diff_ci(nums, dens, nums, dens) == (0.0, 0.0)
    lo, hi = paired_ratio_diff_ci(nums, dens, [0.0] * 4, dens)
    assert 0 < lo <= 8 / 10 <= hi <= 1
    with pytest.raises(InputError, match="differ in length"):
        paired_ratio_diff_ci(nums, dens, nums[:2], dens)


def test_the_rules_arm_end_to_end(redial: Path) -> None:
    results = run_extraction_eval(load_settings(), redial, messages=5, seed=0, arms=["rules"])
    row = results["per_arm"]["rules"]
    assert results["messages"] == 2 and results["gold"] == {"liked": 1, "disliked": 1, "ignored": 1, "mentioned": 4}
    assert row["layout"] == "rules" and row["llm_failures"] == 0
    assert row["liked"]["tp"] + row["liked"]["fn"] == 1 and row["disliked"]["tp"] + row["disliked"]["fn"] == 1
    assert results["samples"][0]["gold_liked"] == ["Silent Harbor (1990)"]


def _app(settings: Settings) -> typer.Typer:
    return cli_app(settings, "eval", cmd_eval.app)


def test_cli_writes_the_report(redial: Path, tmp_path: Path) -> None:
    out = tmp_path / "docs" / "extraction.md"
    res = CliRunner().invoke(
        _app(load_settings()), ["eval", "extraction", str(redial), "--messages", "2", "-v", "rules", "--out", str(out)]
    )
    assert res.exit_code == 0, res.output
    text = out.read_text(encoding="utf-8")
    assert "| rules | rules |" in text and "recagent eval extraction" in text and "**7_1**" in text
    assert json.loads(out.with_suffix(".json").read_text())["messages"] == 2


@pytest.mark.parametrize(
    ("args", "message", "hint"),
    [
        (["--variant", "rulez"], "unknown --variant 'rulez'", "choose from rules"),
        (["--variant", "rules", "--catalog", "nope.json"], "no catalog", "--catalog"),
    ],
)
def test_cli_bad_input_is_a_clear_error(redial: Path, args: list[str], message: str, hint: str) -> None:
    res = CliRunner().invoke(_app(load_settings()), ["eval", "extraction", str(redial), *args])
    assert isinstance(res.exception, InputError), res.output
    assert message in res.exception.message and hint in (res.exception.hint or "")


def test_a_file_that_is_not_raw_dialogues_is_refused(redial: Path, tmp_path: Path) -> None:
    turns = tmp_path / "turns.jsonl"
    turns.write_text(json.dumps({"dialog_id": "1", "context": ["hi"], "rec": ["Silent Harbor (1990)"]}) + "\n")
    (tmp_path / "movies.json").write_text(json.dumps(MOVIES), encoding="utf-8")
    with pytest.raises(InputError, match="not a raw dialogue file") as err:
        run_extraction_eval(load_settings(), turns, messages=5, seed=0, arms=["rules"])
    assert "dialogues.jsonl" in (err.value.hint or "")
    with pytest.raises(InputError, match="no dialogues file"):
        run_extraction_eval(load_settings(), tmp_path / "missing", messages=5, seed=0, arms=["rules"])
    assert parse_arms([]) == ["rules", "llm-chat", "llm-fewshot"] and parse_arms(["rules,llm-auto"])[1] == "llm-auto"


class _Fixed:
    """A fake engine (no chat template: the few-shot layout) that always answers the same extraction."""

    backend = "fake"
    model_id = "fake"

    def __init__(self) -> None:
        self.prompts: list[object] = []

    def generate(self, requests: list, **kw: object) -> list:
        from agent.llm.base import Generation

        self.prompts += list(requests)
        answer = empty_answer()
        answer["liked_titles"] = ["Golden Orchard"]
        text = json.dumps(answer)
        return [Generation(text=text, parsed=answer, prompt_tokens=1, completion_tokens=1, finish_reason="stop")
                for _ in requests]  # fmt: skip

    def has_chat_template(self) -> bool:
        return False

    def describe(self) -> dict[str, str]:
        return {"backend": "fake"}


def test_an_llm_arm_scores_the_merged_update_and_the_llms_own_part(redial: Path) -> None:
    engine = _Fixed()
    results = run_extraction_eval(
        load_settings(),
        redial,
        messages=5,
        seed=0,
        arms=["rules", "llm-fewshot"],
        engine=engine,  # type: ignore[arg-type]
    )
    assert len(engine.prompts) == 2 and all(isinstance(p, str) and p.endswith("JSON:") for p in engine.prompts)
    row = results["per_arm"]["llm-fewshot"]
    assert row["layout"] == "fewshot" and row["llm_failures"] == 0
    # the LLM likes "Golden Orchard" in both messages: kept where the message names it (7_1, where it is gold
    # disliked: a false positive), dropped by the check where it does not (7_4)
    assert row["llm_only"]["liked"] == {"tp": 0, "fp": 1, "fn": 1}
    assert row["llm_only"]["answers_naming_a_title"] == 2
    rules_liked = results["per_arm"]["rules"]["liked"]
    merged = row["liked"]
    assert merged["tp"] == rules_liked["tp"] and merged["fp"] >= rules_liked["fp"]
    assert {p["a"] for p in results["paired"]} == {"llm-fewshot"}
