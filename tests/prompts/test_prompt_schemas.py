"""Output schemas: valid JSON Schema, accept good outputs, reject what a constrained decoder must not emit."""

from __future__ import annotations

from typing import Any

import jsonschema
import pytest

from prompts import (
    PromptError,
    build_schema,
    enrich_item_schema,
    explain_schema,
    listwise_schema,
    preferences_schema,
)

VALIDATOR = jsonschema.Draft202012Validator


def _valid(schema: dict[str, Any], instance: Any) -> bool:
    VALIDATOR.check_schema(schema)
    return VALIDATOR(schema).is_valid(instance)


def test_listwise_accepts_a_good_ranking() -> None:
    schema = listwise_schema(["2355", "1258", "4886"], 2)
    good = {
        "ranking": [
            {"id": "4886", "justification": "Animated comedy like Toy Story."},
            {"id": "2355", "justification": "Also animated."},
        ]
    }
    assert _valid(schema, good)
    assert schema["properties"]["ranking"]["items"]["properties"]["id"]["enum"] == ["2355", "1258", "4886"]


@pytest.mark.parametrize(
    "bad",
    [
        {"ranking": [{"id": "9999", "justification": "x"}, {"id": "2355", "justification": "y"}]},  # id not offered
        {"ranking": [{"id": "2355", "justification": "x"}]},  # too few
        {"ranking": [{"id": i, "justification": "x"} for i in ("2355", "1258", "4886")]},  # too many
        {"ranking": [{"id": "2355", "justification": "x" * 201}, {"id": "1258", "justification": "y"}]},
        {"ranking": [{"id": "2355", "justification": ""}, {"id": "1258", "justification": "y"}]},
        {"ranking": [{"id": "2355"}, {"id": "1258", "justification": "y"}]},
        {"ranking": [{"id": 2355, "justification": "x"}, {"id": "1258", "justification": "y"}]},
        {"ranking": [{"id": "2355", "justification": "x", "score": 1}, {"id": "1258", "justification": "y"}]},
        {"items": []},
    ],
)
def test_listwise_rejects(bad: dict[str, Any]) -> None:
    assert not _valid(listwise_schema(["2355", "1258", "4886"], 2), bad)


def test_listwise_argument_errors() -> None:
    assert listwise_schema([1, 2], 1)["properties"]["ranking"]["items"]["properties"]["id"]["enum"] == ["1", "2"]
    with pytest.raises(PromptError, match="k=3 items cannot be ranked out of 2"):
        listwise_schema(["a", "b"], 3)
    with pytest.raises(PromptError, match="repeats 'a'"):
        listwise_schema(["a", "b", "a"], 1)
    with pytest.raises(PromptError, match="empty"):
        listwise_schema([], 1)
    with pytest.raises(PromptError, match="single string"):
        listwise_schema("abc", 1)


def test_explain_schema() -> None:
    schema = explain_schema(["genres", "year"])
    assert _valid(schema, {"justification": "A 2001 comedy.", "cited": [{"field": "year", "value": "2001"}]})
    assert not _valid(schema, {"justification": "x", "cited": [{"field": "plot", "value": "a"}]})
    assert not _valid(schema, {"justification": "x", "cited": []})
    assert not _valid(schema, {"justification": "x"})


def test_preferences_schema() -> None:
    good: dict[str, Any] = {
        "liked_titles": ["Toy Story (1995)"],
        "disliked_titles": [],
        "liked_attributes": [{"field": "genres", "value": "Animation"}],
        "disliked_attributes": [],
        "constraints": {
            "exclude": [{"field": "genres", "value": "Horror"}],
            "require": [],
            "ranges": [{"field": "year", "min": 1995, "max": None}],
        },
        "need": "animated comedies for kids",
    }
    assert _valid(preferences_schema(), good)
    assert _valid(preferences_schema(["genres", "year"]), good)
    assert not _valid(preferences_schema(["genres"]), good)  # year is not a field of this catalog
    assert not _valid(preferences_schema(), {k: v for k, v in good.items() if k != "constraints"})
    constraints: dict[str, Any] = dict(good["constraints"], ranges=[{"field": "year"}])  # min/max missing
    assert not _valid(preferences_schema(), good | {"constraints": constraints})


def test_enrich_item_schema() -> None:
    assert _valid(enrich_item_schema(), {"description": "A wireless keyboard.", "keywords": ["keyboard", "wireless"]})
    assert not _valid(enrich_item_schema(), {"description": "x", "keywords": []})
    assert not _valid(enrich_item_schema(max_keywords=2), {"description": "x", "keywords": ["a", "b", "c"]})


def test_build_schema_by_name() -> None:
    assert build_schema("listwise", ["a", "b"], 2) == listwise_schema(["a", "b"], 2)
    with pytest.raises(PromptError, match="unknown output schema 'ranking'"):
        build_schema("ranking")
