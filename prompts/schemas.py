"""JSON schemas of the structured outputs the built-in templates ask for.

A template's front matter names its schema (``output: {format: json, schema: listwise}``); the schema itself is
built per request here, because parts of it depend on the request (the candidate ids become an ``enum``, so a
constrained decoder cannot emit an item that was not offered). The schemas use only keywords that xgrammar / vLLM
guided decoding and ``jsonschema`` (draft 2020-12) both understand: type, properties, required,
additionalProperties, enum, items, minItems, maxItems, minLength, maxLength.

What a schema cannot say (e.g. "no id twice in the ranking") the agent checks after decoding.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from core.errors import PromptError

__all__ = [
    "SCHEMA_BUILDERS",
    "build_schema",
    "enrich_item_schema",
    "explain_schema",
    "listwise_schema",
    "preferences_schema",
    "propose_items_schema",
]

JUSTIFICATION_MAX = 200


def _strings(values: Sequence[Any], what: str, fix: str) -> list[str]:
    if isinstance(values, str | bytes):
        raise PromptError(f"{what} must be a list of strings, got a single string {values!r}", hint=fix)
    out = [str(v) for v in values]
    if not out:
        raise PromptError(f"{what} is empty", hint=fix)
    dupes = sorted({v for v in out if out.count(v) > 1})
    if dupes:
        raise PromptError(f"{what} repeats {', '.join(map(repr, dupes))}", hint=fix)
    return out


def listwise_schema(
    candidate_ids: Sequence[Any], k: int, *, justification_max_length: int = JUSTIFICATION_MAX
) -> dict[str, Any]:
    """Schema of ``{"ranking": [{"id": ..., "justification": ...}]}`` with exactly ``k`` entries.

    ``candidate_ids`` become the ``id`` enum (converted with ``str``; they must be unique).
    """
    ids = _strings(candidate_ids, "candidate_ids", "pass each candidate's id once (de-duplicate the candidates first)")
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= len(ids):
        raise PromptError(
            f"k={k!r} items cannot be ranked out of {len(ids)} candidates",
            hint=f"ask for between 1 and {len(ids)} items (k <= number of candidates)",
        )
    entry = {
        "type": "object",
        "properties": {
            "id": {"type": "string", "enum": ids},
            "justification": {"type": "string", "minLength": 1, "maxLength": justification_max_length},
        },
        "required": ["id", "justification"],
        "additionalProperties": False,
    }
    return {
        "type": "object",
        "properties": {"ranking": {"type": "array", "items": entry, "minItems": k, "maxItems": k}},
        "required": ["ranking"],
        "additionalProperties": False,
    }


def explain_schema(field_names: Sequence[Any], *, max_cited: int = 4) -> dict[str, Any]:
    """Schema of ``{"justification": str, "cited": [{"field": <one of field_names>, "value": str}]}``."""
    fields = _strings(field_names, "field_names", "pass the item's attribute names (e.g. list(item.attributes))")
    cited = {
        "type": "object",
        "properties": {
            "field": {"type": "string", "enum": fields},
            "value": {"type": "string", "minLength": 1, "maxLength": 120},
        },
        "required": ["field", "value"],
        "additionalProperties": False,
    }
    return {
        "type": "object",
        "properties": {
            "justification": {"type": "string", "minLength": 1, "maxLength": JUSTIFICATION_MAX},
            "cited": {"type": "array", "items": cited, "minItems": 1, "maxItems": max_cited},
        },
        "required": ["justification", "cited"],
        "additionalProperties": False,
    }


def preferences_schema(field_names: Sequence[Any] | None = None) -> dict[str, Any]:
    """Schema of the preference updates that ``extract_preferences`` asks for.

    ``{"liked_titles": [str], "disliked_titles": [str], "liked_attributes": [{field, value}],
    "disliked_attributes": [{field, value}], "constraints": {"exclude": [{field, value}], "require": [{field, value}],
    "ranges": [{field, min, max}]}, "need": str, "avoid": [{concept, strength: hard|soft}]}`` ("avoid" optional: what
    the user wants less of, "no gore" / "not too violent"). With ``field_names`` the attribute ``field`` is an enum of
    them.
    """
    field: dict[str, Any] = {"type": "string", "minLength": 1, "maxLength": 60}
    if field_names is not None:
        field = {"type": "string", "enum": _strings(field_names, "field_names", "pass the catalog's attribute names")}
    pair = {
        "type": "object",
        "properties": {"field": field, "value": {"type": "string", "minLength": 1, "maxLength": 120}},
        "required": ["field", "value"],
        "additionalProperties": False,
    }
    number_or_null = {"type": ["number", "null"]}
    span = {
        "type": "object",
        "properties": {"field": field, "min": number_or_null, "max": number_or_null},
        "required": ["field", "min", "max"],
        "additionalProperties": False,
    }
    titles = {"type": "array", "items": {"type": "string", "minLength": 1, "maxLength": 200}, "maxItems": 20}
    pairs = {"type": "array", "items": pair, "maxItems": 20}
    return {
        "type": "object",
        "properties": {
            "liked_titles": titles,
            "disliked_titles": titles,
            "liked_attributes": pairs,
            "disliked_attributes": pairs,
            "constraints": {
                "type": "object",
                "properties": {
                    "exclude": pairs,
                    "require": pairs,
                    "ranges": {"type": "array", "items": span, "maxItems": 10},
                },
                "required": ["exclude", "require", "ranges"],
                "additionalProperties": False,
            },
            "need": {"type": "string", "maxLength": 300},
            "avoid": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "concept": {"type": "string", "minLength": 1, "maxLength": 80},
                        "strength": {"type": "string", "enum": ["hard", "soft"]},
                    },
                    "required": ["concept", "strength"],
                    "additionalProperties": False,
                },
                "maxItems": 8,
            },
        },
        "required": [
            "liked_titles",
            "disliked_titles",
            "liked_attributes",
            "disliked_attributes",
            "constraints",
            "need",
        ],
        "additionalProperties": False,
    }


def enrich_item_schema(
    *, max_keywords: int = 8, description_max_length: int = 400, keyword_max_length: int = 40
) -> dict[str, Any]:
    """Schema of ``{"description": str, "keywords": [str]}`` for ``enrich_item``."""
    return {
        "type": "object",
        "properties": {
            "description": {"type": "string", "minLength": 1, "maxLength": description_max_length},
            "keywords": {
                "type": "array",
                "items": {"type": "string", "minLength": 1, "maxLength": keyword_max_length},
                "minItems": 1,
                "maxItems": max_keywords,
            },
        },
        "required": ["description", "keywords"],
        "additionalProperties": False,
    }


def propose_items_schema(
    max_items: int = 5, *, title_max_length: int = 120, description_max_length: int = 200
) -> dict[str, Any]:
    """Schema of ``{"items": [{"title": str, "year": str, "description": str}]}`` (1 to ``max_items``) for
    ``propose_items``. ``year`` is a string of at most 4 characters ("" when unknown): an integer type would let a
    constrained decoder write digits without end."""
    if isinstance(max_items, bool) or not isinstance(max_items, int) or max_items < 1:
        raise PromptError(f"max_items={max_items!r} must be a positive integer", hint="ask for 1 or more items")
    entry = {
        "type": "object",
        "properties": {
            "title": {"type": "string", "minLength": 1, "maxLength": title_max_length},
            "year": {"type": "string", "maxLength": 4},
            "description": {"type": "string", "maxLength": description_max_length},
        },
        "required": ["title", "year", "description"],
        "additionalProperties": False,
    }
    return {
        "type": "object",
        "properties": {"items": {"type": "array", "items": entry, "minItems": 1, "maxItems": max_items}},
        "required": ["items"],
        "additionalProperties": False,
    }


SCHEMA_BUILDERS: dict[str, Callable[..., dict[str, Any]]] = {
    "listwise": listwise_schema,
    "explain": explain_schema,
    "preferences": preferences_schema,
    "enrich_item": enrich_item_schema,
    "propose_items": propose_items_schema,
}


def build_schema(name: str, /, *args: Any, **kwargs: Any) -> dict[str, Any]:
    """Build the schema a template's ``output.schema`` names, e.g. ``build_schema("listwise", ids, 10)``."""
    builder = SCHEMA_BUILDERS.get(name)
    if builder is None:
        raise PromptError(
            f"unknown output schema {name!r}",
            hint=f"use one of {', '.join(sorted(SCHEMA_BUILDERS))}, or write the JSON schema inline in the "
            "front matter",
        )
    return builder(*args, **kwargs)
