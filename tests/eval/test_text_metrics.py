"""Text metrics of justifications on hand-made cases: user links, distinctness, fallback reasons, pooled rates."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from agent.errors import ConfigError
from agent.explain import explain
from agent.settings import Settings
from eval.compare import bootstrap_quantile_ci, bootstrap_ratio_ci, compare_runs
from eval.judge import judge_config
from eval.text_metrics import (
    ShownJustification,
    case_rates,
    case_text,
    distinct_n,
    distinctness,
    fallback_reasons,
    normalise_sentence,
    request_words,
    title_forms,
    user_link,
)
from eval.text_report import text_comparisons, text_summary
from prompts import PromptRegistry

from fakes import FakeEngine, explained_title, make_candidates, make_user

LIKED = ["Heat (1995)", "Matrix, The (1999)", "Toy Story (1995)", "Up (2009)"]


def test_title_forms_drop_the_year_move_the_article_and_skip_tiny_titles() -> None:
    assert title_forms("Matrix, The (1999)") == [("matrix", "the", "1999"), ("matrix", "the"), ("the", "matrix")]
    assert title_forms("Heat (1995)") == [("heat", "1995"), ("heat",)]
    assert title_forms("Up (2009)") == [("up", "2009")]  # "up" alone would match any sentence
    assert title_forms("Love") == []  # a single stop word


@pytest.mark.parametrize(
    ("text", "item", "asked", "title", "words"),
    [
        ("If you liked Heat, this crime story is for you.", "Ronin (1998)", "", "Heat (1995)", ()),
        ("Fans of THE MATRIX will enjoy it.", "Dark City (1998)", "", "Matrix, The (1999)", ()),
        ("A heated drama about a family.", "Ronin (1998)", "", None, ()),  # 'heated' is not 'heat'
        ("Toy Story 2 continues the adventure.", "Toy Story 2 (1999)", "", None, ()),  # own title masked
        ("Toy Story 2 is a sequel to Toy Story.", "Toy Story 2 (1999)", "", "Toy Story (1995)", ()),
        (
            "Here's an adventure for the whole family.",
            "X (2000)",
            "Something for the whole family, an adventure?",
            None,
            ("adventure", "family", "whole"),
        ),
        ("Something you will really like.", "X (2000)", "I would like something really good", None, ()),
        ("It wakes you up with energy.", "X (2000)", "", None, ()),  # 'up' is not Up (2009)
    ],
)
def test_user_link_by_hand(text: str, item: str, asked: str, title: str | None, words: tuple[str, ...]) -> None:
    link = user_link(text, item, LIKED, asked)
    assert (link.title, link.words) == (title, words)
    assert bool(link) == (title is not None or bool(words))


def test_request_words_leave_out_fillers_numbers_and_short_words() -> None:
    assert request_words("I'd like a funny movie from 1990, something with heists and a cat!") == {"heists"}
    assert request_words(None) == set()


def test_normalisation_distinctness_and_distinct_2() -> None:
    a = normalise_sentence("Heat is a great film from 1995!", "Heat (1995)")
    b = normalise_sentence("RONIN is a great film from 1998.", "Ronin (1998)")
    c = normalise_sentence("A tense heist with a great cast.", "Ronin (1998)")
    assert a == b == "<item> is a great film from 0000"
    assert distinctness([a, b, c]) == pytest.approx(2 / 3)
    assert distinctness([]) is None
    # bigrams: a and b 6 each (identical), c 6 of which "a great" is also in a -> 18 bigrams, 11 distinct
    assert distinct_n([a, b, c], 2) == pytest.approx(11 / 18)
    assert distinct_n(["one"], 2) is None


def test_fallback_reasons_from_notes() -> None:
    rejected = (
        "LLM justification rejected (cites genres='Western', which the item does not have; mentions "
        "year(s) 1999 that the item does not show; names another candidate ('A; B')): template justification"
    )
    assert fallback_reasons(rejected) == ["cites genres", "mentions year", "names another candidate"]
    assert fallback_reasons("explain failed (invalid_output): template justification") == ["invalid_output"]
    placeholder = (
        "LLM justification rejected (copies the prompt's placeholder instead of a sentence; cites "
        "title='<the value you used', which the item does not have; cites year=\"it's 1999\", which the "
        "item does not have): template justification"
    )
    assert fallback_reasons(placeholder) == ["copies the prompt's placeholder instead", "cites title", "cites year"]
    assert fallback_reasons(
        "listwise justification rejected: empty justification; explain failed (timeout): template justification"
    ) == ["timeout"]
    assert fallback_reasons("template justification (fallback: engine_error: boom)") == ["ranking fallback"]
    assert fallback_reasons("no LLM engine: template justification") == ["no engine"]
    assert fallback_reasons("something new happened: template justification") == ["something new happened"]
    assert fallback_reasons(None) == ["unknown"]
    # the few-shot path (agent/explain_fewshot.py): the problem of the re-asked answer, the one finally refused
    fewshot = (
        "cut off by the token cap before the sentence ended; re-asked: LLM justification rejected: broken "
        "characters or markup ('|'): template justification"
    )
    assert fallback_reasons(fewshot) == ["broken characters or markup"]
    assert fallback_reasons(
        "LLM justification rejected: names nothing of the item (no title); re-asked: cut off by the token cap "
        "before the sentence ended: template justification"
    ) == ["cut off by the token"]


def test_fallback_reasons_read_the_explain_modules_own_notes() -> None:
    def lie(req: Any, schema: Any) -> str:
        return json.dumps(
            {
                "justification": f"{explained_title(req)} is a Western.",
                "cited": [{"field": "genres", "value": "Western"}],
            }
        )

    cands = make_candidates(2)
    notes = explain(FakeEngine(lie), PromptRegistry(), make_user(), cands, others=cands)
    assert [n.source for n in notes] == ["template", "template"]
    assert [fallback_reasons(n.note) for n in notes] == [["cites genres"], ["cites genres"]]


def _shown(text: str | None, source: str, title: str, grounded: bool | None = True, note: str | None = None) -> Any:
    return ShownJustification(text=text, source=source, grounded=grounded, note=note, title=title)


def test_case_text_counts_by_hand() -> None:
    shown = [
        _shown("Like Heat, a tense crime story.", "llm", "Ronin (1998)"),
        _shown("A heist for you.", "listwise", "Thief (1981)"),
        _shown("Great film.", "llm", "Up (2009)"),
        _shown(
            "Matches your interest in Crime (genres).",
            "template",
            "Fargo (1996)",
            note="explain failed (invalid_output): template justification",
        ),
    ]
    text = case_text(shown, LIKED, "a heist please")
    assert {k: text[k] for k in ("asked", "llm", "passing", "linked", "title_linked", "request_linked")} == {
        "asked": 4,
        "llm": 3,
        "passing": 3,
        "linked": 2,
        "title_linked": 1,
        "request_linked": 1,
    }
    assert text["words"] == [6, 4, 2]
    assert text["reasons"] == {"invalid_output": 1}
    assert text["links"] == ["names Heat (1995)", "request words: heist", None, None]
    assert case_rates(text) == {
        "text.grounding_rate": 0.75,
        "text.user_link_rate": 2 / 3,
        "text.title_link_rate": 1 / 3,
        "text.request_link_rate": 1 / 3,
    }
    assert case_rates(None) == {}
    assert case_rates({**text, "llm": 0}) == {"text.grounding_rate": 0.75}  # no LLM sentence: no link rates


def _record(case: str, variant: str, text: dict[str, Any] | None) -> dict[str, Any]:
    return {"case_id": case, "variant": variant, "text": text, "metrics": {"ndcg@10": 0.5}, "kind": "pipeline"}


def _counts(
    asked: int, llm: int, linked: int, norm: list[str], reasons: dict[str, int] | None = None
) -> dict[str, Any]:
    return {
        "asked": asked,
        "llm": llm,
        "passing": llm,
        "linked": linked,
        "title_linked": linked,
        "request_linked": 0,
        "words": [5] * llm,
        "norm": norm,
        "links": [],
        "reasons": reasons or {},
    }


def test_text_summary_pools_cases_and_weights_copies() -> None:
    records = [
        _record("c1", "a", _counts(2, 2, 1, ["x", "y"])),
        _record("c2", "a", _counts(2, 1, 1, ["x"], {"invalid_output": 1})),
        _record("c3", "a", None),  # an arm's case without text (e.g. none asked) is left out
    ]
    s = text_summary(records, seed=0)
    assert s is not None
    assert (s["asked"], s["llm"], s["cases"], s["fallbacks"]) == (4, 3, 2, 1)
    assert s["grounding_rate"]["mean"] == pytest.approx(3 / 4)
    assert s["user_link_rate"]["mean"] == pytest.approx(2 / 3)
    assert s["distinctness"]["mean"] == pytest.approx(2 / 3)  # "x" twice, "y" once: 2 distinct of 3
    assert s["mean_words"]["mean"] == 5.0 and s["mean_words"]["ci_low"] == s["mean_words"]["ci_high"] == 5.0
    assert s["fallbacks_by_reason"] == {"invalid_output": 1}
    for key in ("grounding_rate", "user_link_rate", "distinctness"):
        assert s[key]["ci_low"] <= s[key]["mean"] <= s[key]["ci_high"]
    assert text_summary([_record("c1", "a", None)], seed=0) is None


def test_ratio_and_quantile_bootstrap() -> None:
    assert bootstrap_ratio_ci([1, 2, 3], [2, 4, 6]) == (0.5, 0.5)  # the same share in every case
    lo, hi = bootstrap_ratio_ci([0, 5, 1, 4], [5, 5, 5, 5], seed=1)
    assert 0 <= lo < 0.5 < hi <= 1
    assert all(v != v for v in bootstrap_ratio_ci([], []))  # NaN for no data
    lo, hi = bootstrap_quantile_ci([float(x) for x in range(101)], 50)
    assert 35 <= lo <= 50 <= hi <= 65


def test_paired_text_comparisons_and_eval_compare(tmp_path: Path) -> None:
    a = [_record(f"c{i}", "a", _counts(5, 5, 5, ["s"])) for i in range(12)]
    b = [_record(f"c{i}", "b", _counts(5, 5, 0, ["s"])) for i in range(12)]
    rows = {r["metric"]: r for r in text_comparisons({"a": a, "b": b, "base": [_record("c0", "base", None)]}, 0)}
    assert rows["text.user_link_rate"]["diff"] == -1.0 and rows["text.user_link_rate"]["verdict"] == "lower"
    assert rows["text.grounding_rate"]["diff"] == 0.0 and rows["text.grounding_rate"]["verdict"] == "tie"
    assert text_comparisons({"a": a}, 0) == []
    # a rate defined in both arms for too few cases (an arm that wrote almost nothing) gets no verdict
    few = [_record(f"c{i}", "f", _counts(5, 5 if i < 2 else 0, 0, ["s"] if i < 2 else [])) for i in range(12)]
    rows = {r["metric"]: r for r in text_comparisons({"a": a, "f": few}, 0)}
    assert rows["text.user_link_rate"]["cases"] == 2
    assert rows["text.user_link_rate"]["verdict"].startswith("not tested")
    assert rows["text.grounding_rate"]["cases"] == 12 and rows["text.grounding_rate"]["verdict"] == "lower"
    for name, records in (("ra", a), ("rb", b)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "cases.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    result = compare_runs(tmp_path / "ra", tmp_path / "rb")
    by_metric = {r["metric"]: r for r in result["rows"]}
    assert by_metric["text.user_link_rate"]["diff"] == 1.0 and by_metric["text.user_link_rate"]["winner"] == "A"
    assert by_metric["ndcg@10"]["winner"] == "tie"


def test_judge_config_needs_both_url_and_model() -> None:
    settings = Settings()
    assert judge_config(settings) is None
    config = judge_config(settings, "http://127.0.0.1:9", "big-model", 50)
    assert config is not None and (config.url, config.model, config.max_items) == (
        "http://127.0.0.1:9",
        "big-model",
        50,
    )
    with pytest.raises(ConfigError, match="both a server URL and a model"):
        judge_config(settings, "http://127.0.0.1:9")
    with pytest.raises(ConfigError, match="judge-max"):
        judge_config(settings, "http://127.0.0.1:9", "m", 0)
    from_settings = judge_config(settings.model_copy(update={"judge_server_url": "http://j", "judge_model": "m"}))
    assert from_settings is not None and from_settings.model == "m"
