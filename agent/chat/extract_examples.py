"""Worked examples of the preference extraction's few-shot layout (``extract_preferences``, ``fewshot:``), built at
run time from the collection's own titles, field names and values (generic: any catalog, no dataset text).

Each example is ``{"message": <what a user might type>, "answer": <the preference update as the JSON schema
shapes it>}``; the messages are short generic sentences around the catalog's values. Up to five kinds, each only
when the catalog has what it needs:

1. a liked title (and what the user is looking for);
2. a disliked title and a disliked value of the catalog's most categorical field;
3. a required value and a range on a numeric field (a year-like field when there is one);
4. an avoidance in the user's words (a soft one, on one of the catalog's common values);
5. a message that says nothing about preferences (every part empty).

Titles are chosen as the explain few-shot layout chooses them (:func:`agent.sentence_check.example_title`: short
form, no markup characters) and must name exactly one catalog item; the choice is deterministic (item ids in
order), so the examples, and with them the prompt's prefix, are the same for every turn of a catalog.
"""

from __future__ import annotations

import statistics
from typing import Any

from agent.chat.catalog import CatalogIndex
from agent.evidence import MIN_TITLE
from agent.sentence_check import example_title

__all__ = ["empty_answer", "extraction_examples"]

TITLES = 2
VALUES = 3


def empty_answer() -> dict[str, Any]:
    """A preference update that says nothing, in the JSON schema's key order (``prompts.preferences_schema``)."""
    return {
        "liked_titles": [],
        "disliked_titles": [],
        "liked_attributes": [],
        "disliked_attributes": [],
        "constraints": {"exclude": [], "require": [], "ranges": []},
        "need": "",
        "avoid": [],
    }


def _titles(index: CatalogIndex, n: int) -> list[str]:
    out: list[str] = []
    for item_id in sorted(index.title_of):
        short = example_title(index.title_of[item_id])
        if short is None or len(short) < MIN_TITLE or short in out:
            continue
        if index.lookup_title(short) == [item_id]:  # the title names this item and no other
            out.append(short)
            if len(out) == n:
                break
    return out


def _value_field(index: CatalogIndex) -> str | None:
    """The catalog's most categorical field with at least two values (the list field first, e.g. genres)."""
    if index.list_field is not None and len(index.fields[index.list_field].counts) >= 2:
        return index.list_field
    fields = [f for f in index.fields.values() if f.kind == "values" and 2 <= len(f.counts) <= max(20, index.size // 2)]
    return min(fields, key=lambda f: (len(f.counts), f.name)).name if fields else None


def _number(value: float) -> int | float:
    return int(value) if float(value).is_integer() else round(value, 2)


def extraction_examples(index: CatalogIndex, n: int = 5) -> list[dict[str, Any]]:
    """Up to ``n`` worked examples ``{message, answer}`` from ``index`` (see the module doc); the empty case is
    always the last one."""
    if n <= 0:
        return []
    titles = _titles(index, TITLES)
    field = _value_field(index)
    values = index.top_values(field, VALUES) if field is not None else []
    numeric = index.year_field or next(iter(index.numeric_fields()), None)
    out: list[dict[str, Any]] = []
    if titles:
        answer = empty_answer()
        answer["liked_titles"] = [titles[0]]
        answer["need"] = f"something like {titles[0]}"
        out.append({"message": f"I loved {titles[0]}. Something like that, please.", "answer": answer})
    if len(titles) > 1 or (field is not None and len(values) > 1):
        answer = empty_answer()
        parts = []
        if len(titles) > 1:
            answer["disliked_titles"] = [titles[1]]
            parts.append(f"I did not like {titles[1]}")
        if field is not None and len(values) > 1:
            answer["disliked_attributes"] = [{"field": field, "value": values[1]}]
            parts.append(f"I am not a fan of {values[1]}")
        out.append({"message": ", and ".join(parts) + ".", "answer": answer})
    if (field is not None and values) or numeric is not None:
        answer = empty_answer()
        parts, need = [], []
        if field is not None and values:
            answer["constraints"]["require"] = [{"field": field, "value": values[0]}]
            parts.append(f"Only {values[0]}")
            need.append(values[0])
        if numeric is not None:
            info = index.fields[numeric]
            middle = _number(statistics.median(info.numbers))
            answer["constraints"]["ranges"] = [{"field": numeric, "min": middle, "max": None}]
            said = f"from after {middle}" if numeric == index.year_field else f"with {numeric} above {middle}"
            parts.append(said)
            need.append(said)
        answer["need"] = " ".join(need)
        out.append({"message": " ".join(parts) + ", please.", "answer": answer})
    if field is not None and values:
        concept = values[-1].casefold()
        answer = empty_answer()
        answer["avoid"] = [{"concept": concept, "strength": "soft"}]
        out.append({"message": f"Not too much {concept}, please.", "answer": answer})
    out.append({"message": "Hi, how are you today?", "answer": empty_answer()})
    return out[:n] if len(out) <= n else [*out[: n - 1], out[-1]]
