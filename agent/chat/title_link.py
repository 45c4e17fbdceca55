"""Fuzzy title linking: catalog titles typed loosely in a chat message ("the babadook", "super trooper 2",
"the babadok") resolved to catalog items with rapidfuzz.

The exact matcher (:meth:`agent.chat.catalog.CatalogIndex.find`) runs first; this one looks only at the words it
left, and only at spans that can be a title: two to eight words, at least one content word (not a stop or cue
word), not starting or ending with a stop word other than a leading article, and not a catalog attribute value
("horror"). A span links to the title form closest by ``fuzz.ratio`` (normal forms of :func:`title_forms`: lower
case, no year, a trailing article moved to the front) when the score reaches ``cutoff``; forms with several items
(remakes: "king kong" 1933 / 1976 / 2005) or several forms within ``tie`` points of the best make the link
**ambiguous**, and the chat asks which one. One-word titles are never linked fuzzily ("heist" is a word before it
is a film); type them with their article or their capital ("the babadook", "Heat").
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from rapidfuzz import fuzz, process

from agent.chat.catalog import CUE_WORDS, title_forms

__all__ = ["TitleLink", "TitleLinker"]

_ARTICLES = frozenset({"the", "a", "an"})
MAX_SPAN = 8


@dataclass(frozen=True)
class TitleLink:
    """Token span [start, end) of the message, what was typed, the candidate ids (one = linked) and the score."""

    start: int
    end: int
    text: str
    ids: tuple[str, ...]
    score: float

    @property
    def ambiguous(self) -> bool:
        return len(self.ids) > 1


class TitleLinker:
    """Fuzzy lookup of title spans over a catalog's title forms."""

    def __init__(self, titles: Mapping[str, str], *, skip: Iterable[tuple[str, ...]] = (), cutoff: float = 88.0,
                 tie: float = 1.0) -> None:  # fmt: skip
        forms: dict[str, list[str]] = {}
        for item_id, title in titles.items():
            for form in title_forms(title):
                if len(form) >= 2 and any(w not in CUE_WORDS for w in form):
                    ids = forms.setdefault(" ".join(form), [])
                    if item_id not in ids:
                        ids.append(item_id)
        self.forms = forms
        self.choices = list(forms)
        self.skip = {" ".join(s) for s in skip}
        self.cutoff, self.tie = cutoff, tie

    def _candidate(self, words: Sequence[str]) -> bool:
        if len(words) < 2 or words[-1] in CUE_WORDS:
            return False
        if words[0] in CUE_WORDS and words[0] not in _ARTICLES:
            return False
        content = [w for w in words if w not in CUE_WORDS]
        return bool(content) and sum(len(w) for w in content) >= 4 and " ".join(words) not in self.skip

    def lookup(self, text: str) -> tuple[tuple[str, ...], float]:
        """(ids, score) of the best-matching forms of ``text``; () when none reaches the cutoff."""
        found = process.extract(text, self.choices, scorer=fuzz.ratio, score_cutoff=self.cutoff, limit=8)
        if not found:
            return (), 0.0
        best = found[0][1]
        ids: list[str] = []
        for form, score, _ in found:
            if score >= best - self.tie:
                ids += [i for i in self.forms[form] if i not in ids]
        return tuple(ids), float(best)

    def link_text(self, words: Sequence[str]) -> tuple[str, ...]:
        """Ids of the titles the whole of ``words`` names loosely (a title an LLM extracted, typo included); ()
        when the words cannot be a title or nothing reaches the cutoff. Several ids: ambiguous."""
        if not self._candidate(words):
            return ()
        return self.lookup(" ".join(words))[0]

    def link(self, words: Sequence[str], used: Sequence[bool]) -> list[TitleLink]:
        """Non-overlapping links in the unused words, the longest spans and the best scores first."""
        found: list[TitleLink] = []
        taken = list(used)
        for size in range(min(MAX_SPAN, len(words)), 1, -1):
            spans = []
            for start in range(len(words) - size + 1):
                span = words[start : start + size]
                if any(taken[start : start + size]) or not self._candidate(span):
                    continue
                ids, score = self.lookup(" ".join(span))
                if ids:
                    spans.append(TitleLink(start, start + size, " ".join(span), ids, score))
            for link in sorted(spans, key=lambda s: -s.score):
                if not any(taken[link.start : link.end]):
                    taken[link.start : link.end] = [True] * size
                    found.append(link)
        return sorted(found, key=lambda s: s.start)
