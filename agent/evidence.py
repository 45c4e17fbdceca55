"""Evidence for a justification, chosen from real values before the model writes a word.

For one (user, item) pair :func:`choose_evidence` picks, by computation over the item's and the user's fields:

* the user's liked history item that shares the most attribute values with the item (ties: the more recent one),
  among the user's few most relevant liked items (:func:`relevant_liked`, shown in the prompt);
* the shared values themselves, spelled as the ITEM spells them (so every value named is one the item has);
* the item's values that the user's request names (word match, or a shared stem of >= 5 letters:
  "animated" ~ "Animation").

:meth:`Evidence.prefix` turns it into the start of the answer line of the few-shot prompt ("Like Heat (Crime,
Thriller),"), and the model writes the rest. :func:`fewshot_examples` builds the worked examples of that prompt
from pairs of the batch's own items that share a value (generic: any catalog, any field).
"""

from __future__ import annotations

import re
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from agent.schemas import CandidateItem, Citation, HistoryItem, UserContext
from prompts import clean_data

__all__ = [
    "Evidence",
    "choose_evidence",
    "fewshot_examples",
    "item_values",
    "liked_history",
    "norm",
    "relevant_liked",
    "short_title",
]

MAX_VALUES = 2
LIKED_POOL = 50
STEM = 5
_WORD = re.compile(r"[^\W\d_]+", re.UNICODE)


_PAREN_TAIL = re.compile(r"\s*\([^()]*\)\s*$")
MIN_TITLE = 4


def short_title(title: str) -> str:
    """A title as a sentence names it: without a trailing parenthesis ("Heat (1995)" -> "Heat"), unless too
    little would be left."""
    title = clean_data(title)
    short = _PAREN_TAIL.sub("", title)
    return short if len(short) >= MIN_TITLE else title


def norm(value: Any) -> str:
    """A value as the checks compare it: cleaned, casefolded, whitespace collapsed."""
    return " ".join(clean_data(value).casefold().split())


def _strings(value: Any) -> list[str]:
    values = value if isinstance(value, list) else [value]
    return [clean_data(v) for v in values if isinstance(v, str) and clean_data(v)]


def item_values(attributes: dict[str, Any]) -> list[tuple[str, str]]:
    """The ``(field, value)`` pairs of an item's categorical fields (strings and lists of strings; no title)."""
    return [(name, v) for name, value in attributes.items() if name != "title" for v in _strings(value)]


def _value_set(attributes: dict[str, Any]) -> set[tuple[str, str]]:
    return {(name, norm(v)) for name, v in item_values(attributes)}


def liked_history(user: UserContext) -> list[HistoryItem]:
    """The user's liked entries among the recent history, oldest first: rated at least the user's own mean
    rating (entries without a rating count as liked; a log without ratings makes every entry liked)."""
    recent = user.history[-LIKED_POOL:]
    ratings = [h.rating for h in recent if h.rating is not None]
    bar = statistics.fmean(ratings) if ratings else None
    return [h for h in recent if bar is None or h.rating is None or h.rating >= bar]


def _shared(item: CandidateItem, liked: HistoryItem) -> list[tuple[str, str]]:
    theirs = _value_set(liked.attributes)
    return [(name, v) for name, v in item_values(item.item.metadata) if (name, norm(v)) in theirs]


def relevant_liked(user: UserContext, items: Sequence[CandidateItem], n: int = 3) -> list[HistoryItem]:
    """The user's ``n`` liked items that share values with the most of ``items`` (ties: the more recent),
    in that order: the short history a prompt shows, the same for all the user's items (a shared prefix)."""
    liked = liked_history(user)
    scored = [
        (sum(bool(_shared(it, h)) for it in items), sum(len(_shared(it, h)) for it in items), pos, h)
        for pos, h in enumerate(liked)
    ]
    scored.sort(key=lambda s: (s[0], s[1], s[2]), reverse=True)
    return [s[3] for s in scored[:n]]


def _stems(text: str) -> set[str]:
    return {w[:STEM] if len(w) >= STEM else w for w in _WORD.findall(text.casefold())}


def _asked(item: CandidateItem, need: str) -> list[tuple[str, str]]:
    if not need.strip():
        return []
    stems = _stems(need)
    out = []
    for name, v in item_values(item.item.metadata):
        words = _WORD.findall(v.casefold())
        if words and all((w[:STEM] if len(w) >= STEM else w) in stems for w in words):
            out.append((name, v))
    return out


@dataclass(frozen=True)
class Evidence:
    """What a justification rests on: a liked item of the user and the values the item shares with it, the
    item's values the request names. Every value is copied from the item (see :func:`choose_evidence`)."""

    liked: str | None = None
    shared: tuple[tuple[str, str], ...] = ()
    asked: tuple[tuple[str, str], ...] = ()
    request: bool = False

    def prefix(self) -> str:
        """The start of the answer line ("" when there is no evidence)."""
        parts = []
        if self.request:
            asked = ", ".join(v for _, v in self.asked[:MAX_VALUES])
            parts.append(f"For your request ({asked})" if asked else "For your request")
        if self.liked is not None:
            shared = ", ".join(v for _, v in self.shared[:MAX_VALUES])
            like = f"like {self.liked} ({shared})" if shared else f"for a fan of {self.liked}"
            parts.append(like if parts else like[0].upper() + like[1:])
        return " and ".join(parts) + "," if parts else ""

    def citations(self) -> list[Citation]:
        """The item values the prefix names."""
        values = [*self.asked[:MAX_VALUES], *self.shared[:MAX_VALUES]]
        seen: set[tuple[str, str]] = set()
        out = []
        for name, v in values:
            if (name, v) not in seen:
                seen.add((name, v))
                out.append(Citation(field=name, value=v))
        return out


def choose_evidence(item: CandidateItem, user: UserContext, liked: Sequence[HistoryItem]) -> Evidence:
    """The evidence for ``item``: the entry of ``liked`` sharing the most values with it (ties: the later one;
    none shared: the last one, named as "a fan of"), and the item's values the request names."""
    best: tuple[int, HistoryItem | None, list[tuple[str, str]]] = (-1, None, [])
    for h in liked:
        shared = _shared(item, h)
        if len(shared) >= best[0]:
            best = (len(shared), h, shared)
    _, chosen, shared = best
    return Evidence(
        liked=short_title(chosen.title) if chosen is not None else None,
        shared=tuple(shared),
        asked=tuple(_asked(item, user.need)),
        request=bool(user.need.strip()),
    )


# ------------------------------------------------------------------------------------------------ examples
def _text_snippet(texts: dict[str, str], words: int = 12) -> str:
    text = next((clean_data(t) for t in texts.values() if t and clean_data(t)), "")
    first = re.split(r"(?<=[.!?])\s", text, maxsplit=1)[0].rstrip(".!?")
    cut = first.split()
    return " ".join(cut[:words]) + ("…" if len(cut) > words else "")


def example_answer(prefix: str, title: str, new_values: Sequence[str], shared: Sequence[str], snippet: str) -> str:
    """A worked answer: the evidence, then the item's title and what it has (values copied from its fields)."""
    rest = f"{title} adds {' and '.join(new_values[:MAX_VALUES])}" if new_values else f"{title} is another "
    if not new_values:
        rest += f"{shared[0]} pick" if shared else "pick"
    if snippet:
        rest += f": {snippet}"
    return f"{prefix} {rest}."


def fewshot_examples(
    pool: Iterable[CandidateItem], avoid: set[str], n: int, *, with_request: bool = False
) -> list[dict[str, Any]]:
    """Up to ``n`` worked examples from pairs of ``pool`` items (the batch's own catalog items) that share a
    value; items whose id is in ``avoid`` (the ones being justified) never appear. With ``with_request`` the first
    example is a request case (its request names two of the example item's own values). Deterministic."""
    unique = list({it.id: it for it in pool if it.id not in avoid}.values())
    out: list[dict[str, Any]] = []
    used: set[str] = set()
    for x in unique:
        if len(out) >= n:
            break
        for liked in unique:
            if liked.id == x.id or liked.id in used or x.id in used:
                continue
            shared = _shared(x, HistoryItem.from_item(liked.item))
            if not shared:
                continue
            request = with_request and not out
            asked = tuple(item_values(x.item.metadata)[:MAX_VALUES]) if request else ()
            evidence = Evidence(liked=None if request else short_title(liked.title), shared=tuple(shared),
                                asked=asked, request=request)  # fmt: skip
            named = {(f, norm(v)) for f, v in (asked if request else shared)}
            new = [v for f, v in item_values(x.item.metadata) if (f, norm(v)) not in named]
            answer = example_answer(
                evidence.prefix(), short_title(x.title), new, [v for _, v in shared], _text_snippet(x.item.texts)
            )
            attributes = {k: v for k, v in x.item.metadata.items() if k != "title"}
            out.append({
                "liked": "(nothing yet)" if request else short_title(liked.title),
                "need": " and ".join(v for _, v in asked).lower() if request else "",
                "item": {"title": x.title, "attributes": attributes},
                "answer": answer,
            })  # fmt: skip
            used.update({x.id, liked.id})
            break
    return out
