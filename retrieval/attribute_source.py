"""The ``attribute`` source: catalog field values named in the conversation ("any good comedy?", "I love Tom Hanks").

An :class:`AttributeIndex` maps every value of the catalog's list and text metadata fields (genre, director, star...;
the fields are chosen in :class:`AttributeConfig`, every list field by default) to the items holding it. A request's
text (the conversation so far, ``query.need``) is cut into word tokens and every n-gram that equals a value (or, for
a one-word value, its plural: ``comedy`` -> ``comedies``, ``thriller`` -> ``thrillers``) counts as named. An item
scores ``hits * (floor + prior)``: how many named values it holds, times a prior, here the share of a dialogue log's
recommendations the item got (:class:`retrieval.dialogue_sources.DialogueModel`, scaled to a maximum of 1), so
that among the comedies the ones recommenders actually named come first.

Matching is exact on lower-cased tokens: no stemming beyond the plural, no fuzzy names (a misspelt actor is not
found). Values shorter than ``min_chars`` are never matched (initials, "tv").
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from retrieval.candidates import Scored, SourceRequest, _top_k
from retrieval.types import Item

__all__ = ["AttributeConfig", "AttributeIndex", "AttributeSource", "tokens"]

_TOKEN = re.compile(r"[a-z0-9]+(?:['-][a-z0-9]+)*")


def tokens(text: str) -> list[str]:
    """Lower-case word tokens (hyphenated and apostrophe words kept whole: ``sci-fi``, ``o'brien``)."""
    return _TOKEN.findall(text.lower())


class AttributeConfig(BaseModel):
    """Which catalog fields are matched and how the matches are scored (chosen on validation,
    docs/eval/redial-folds.md)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    fields: tuple[str, ...] | None = Field(
        default=None,
        description="Metadata fields whose values are matched in the conversation; None = every list field.",
    )
    min_chars: int = Field(default=3, ge=1, description="Shorter values are never matched.")
    floor: float = Field(default=0.1, ge=0, description="Prior given to an item no recommender named.")


def _forms(value_tokens: tuple[str, ...]) -> set[tuple[str, ...]]:
    """The value and, for a one-word value, its plural forms."""
    out = {value_tokens}
    if len(value_tokens) == 1:
        word = value_tokens[0]
        out.add((word + "s",))
        if word.endswith("y") and len(word) > 2:
            out.add((word[:-1] + "ies",))
    return out


class AttributeIndex:
    """Field value -> catalog item positions, and the token n-grams that name each value."""

    def __init__(self, items: Iterable[Item], config: AttributeConfig | None = None) -> None:
        self.config = config or AttributeConfig()
        self.item_ids: list[str] = []
        self.items_of: dict[str, list[int]] = {}
        self.phrases: dict[tuple[str, ...], str] = {}
        for item in items:
            position = len(self.item_ids)
            self.item_ids.append(item.id)
            for name, value in item.metadata.items():
                if self._wanted(name, value):
                    for entry in value if isinstance(value, list) else [value]:
                        self._add(str(entry), position)
        self.max_len = max((len(p) for p in self.phrases), default=0)

    def _wanted(self, name: str, value: object) -> bool:
        if self.config.fields is None:
            return isinstance(value, list)
        return name in self.config.fields and isinstance(value, list | str)

    def _add(self, value: str, position: int) -> None:
        key = value.strip().lower()
        words = tuple(tokens(key))
        if len(key) < self.config.min_chars or not words:
            return
        holders = self.items_of.setdefault(key, [])
        if not holders or holders[-1] != position:
            holders.append(position)
        for form in _forms(words):
            self.phrases.setdefault(form, key)

    def named(self, text: str) -> list[str]:
        """The values named in ``text``, in order of first appearance."""
        words = tokens(text)
        found: dict[str, None] = {}
        for start in range(len(words)):
            for length in range(1, min(self.max_len, len(words) - start) + 1):
                value = self.phrases.get(tuple(words[start : start + length]))
                if value is not None:
                    found.setdefault(value)
        return list(found)

    def hits(self, values: Sequence[str]) -> np.ndarray:
        """Per catalog item, how many of ``values`` it holds."""
        out = np.zeros(len(self.item_ids), np.float64)
        for value in values:
            out[self.items_of.get(value, [])] += 1.0
        return out


class AttributeSource:
    """Items holding the field values named in the request text, ordered by ``hits * (floor + prior)``."""

    name = "attribute"

    def __init__(self, index: AttributeIndex, prior: Mapping[str, float] | None = None) -> None:
        self.index = index
        weights = np.zeros(len(index.item_ids), np.float64)
        if prior:
            top = max(prior.values(), default=0.0)
            position = {item_id: i for i, item_id in enumerate(index.item_ids)}
            for item_id, value in prior.items():
                if item_id in position and top > 0:
                    weights[position[item_id]] = value / top
        self.weights = index.config.floor + weights

    def retrieve(self, request: SourceRequest) -> Scored:
        values = self.index.named(request.query.need or "")
        if not values:
            return []
        return _top_k(self.index.hits(values) * self.weights, self.index.item_ids, request)
