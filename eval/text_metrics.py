"""Text metrics of the justifications an arm shows: what the LLM wrote, whether it passed, whether it is about the user.

Definitions (one justification = the sentence shown for one recommended item of one case):

- **asked**: justifications of an arm whose explain mode is ``llm`` (every item it shows); arms that explain with
  templates or not at all ask nothing and get no text metrics.
- **LLM-written**: source ``llm`` or ``listwise`` (a failing LLM sentence is never shown: it is replaced by the
  template, whose note says why). **grounding rate** = LLM-written and passing the check / asked.
- **user link**: an LLM-written sentence that, once the item's own title is masked out, names one of the user's
  liked items (a title of the case's history with no rating or a rating >= the protocol's ``min_rating``, or an
  item liked in the conversation; the title, the title without its trailing ``(...)``, or ``Matrix, The`` as
  ``The Matrix``; at least 4 characters and not a single stop word), or uses a word of the request (a word of the
  request of at least 4 letters, not a number and not in :data:`STOPWORDS`). Matching is on word tokens (case- and
  punctuation-insensitive), whole words only. **user-link rate** = linked / LLM-written.
- **distinctness**: distinct normalised sentences / LLM-written sentences over the whole arm; normalised = word
  tokens, casefolded, the item's own title replaced by ``<item>`` and digits by ``0`` (so "X is a great film" for
  every X counts once). **distinct-2**: distinct word bigrams / bigrams over the same sentences.
- **length**: words per LLM-written sentence.
- **fallbacks by reason**: the template justifications of an arm that asked, by the reason in their note (an
  explain failure such as ``invalid_output`` or ``timeout``, each grounding problem of a rejected sentence, a
  ranking fallback, no engine); one justification can count under several problems.

:func:`case_text` computes one case's counts at run time (the runner stores them in the record as ``text``);
:mod:`eval.text_report` aggregates them per arm with CIs.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "LLM_SOURCES",
    "STOPWORDS",
    "ShownJustification",
    "case_rates",
    "case_text",
    "distinct_n",
    "distinctness",
    "fallback_reasons",
    "normalise_sentence",
    "request_words",
    "title_forms",
    "tokens",
    "user_link",
]

LLM_SOURCES = frozenset({"llm", "listwise"})
MIN_TITLE_CHARS = 4
MIN_REQUEST_WORD = 4
ITEM = "<item>"

STOPWORDS = frozenset(
    """
    about above after again against also although among another anything anyone around away back because been before
    being below best better between both bring came come comes could does doing done down during each either else
    enjoy enjoyed enjoys even ever every fact feel find first from funny give gives going good great have having here
    hers herself himself into itself just kind know last least less like liked likes little long look looking lots
    love loved loves made make makes many maybe more most much must myself need needs never nice none nothing once
    only other others ours ourselves over please pretty quite rather really recommend recommendation recommendations
    recommended same seen seem seems should show shows similar since some someone something sometimes sort still
    such suggest suggestion sure take tell than thank thanks that their theirs them themselves then there these they
    thing things think this those though through together true very want wanted wants watch watched watching well
    went were what whatever when where whether which while will with within without would yeah year years your yours
    yourself movie movies film films book books song songs item items
    """.split()
)
"""Request words that carry no taste: function words, chat fillers ("something", "recommend", "watch") and the
generic names of catalog things. A sentence sharing only these with the request is not linked to it."""

_TOKEN = re.compile(r"[^\W_]+(?:'[^\W_]+)?")
_PAREN_TAIL = re.compile(r"\s*\([^()]*\)\s*$")
_ARTICLE_TAIL = re.compile(r"^(.*),\s*(the|a|an|les|la|le|el|il|die|der|das)$", re.IGNORECASE)
_DIGIT = re.compile(r"\d")


def tokens(text: str | None) -> list[str]:
    """Word tokens of ``text``: NFKC, casefolded, letters and digits (an inner apostrophe kept: ``don't``)."""
    if not text:
        return []
    return _TOKEN.findall(unicodedata.normalize("NFKC", text).casefold())


def title_forms(title: str) -> list[tuple[str, ...]]:
    """The token sequences that count as naming ``title``: as written, without a trailing ``(...)`` (year), and
    with a trailing article moved to the front (``Matrix, The (1999)`` -> ``the matrix``). Forms shorter than
    4 characters, and single stop words, are left out (they would match ordinary words)."""
    bare = _PAREN_TAIL.sub("", title).strip()
    names = [title, bare]
    moved = _ARTICLE_TAIL.match(bare)
    if moved:
        names.append(f"{moved.group(2)} {moved.group(1)}")
    out: list[tuple[str, ...]] = []
    for name in names:
        form = tuple(tokens(name))
        if len("".join(form)) < MIN_TITLE_CHARS or (len(form) == 1 and form[0] in STOPWORDS):
            continue
        if form not in out:
            out.append(form)
    return out


def _replace(toks: list[str], forms: Sequence[tuple[str, ...]], mark: str) -> list[str]:
    """``toks`` with every occurrence of a form (longest first) replaced by the single token ``mark``."""
    out, i = [], 0
    ordered = sorted(forms, key=len, reverse=True)
    while i < len(toks):
        hit = next((f for f in ordered if f and tuple(toks[i : i + len(f)]) == f), None)
        if hit is None:
            out.append(toks[i])
            i += 1
        else:
            out.append(mark)
            i += len(hit)
    return out


def _masked(text: str, item_title: str) -> list[str]:
    return _replace(tokens(text), title_forms(item_title), ITEM)


def normalise_sentence(text: str, item_title: str) -> str:
    """The sentence as distinctness compares it: tokens, own title -> ``<item>``, digits -> ``0``."""
    return " ".join(_DIGIT.sub("0", t) for t in _masked(text, item_title))


def request_words(request: str | None) -> set[str]:
    """The words of a request that carry taste (>= 4 letters, not a number, not a stop word)."""
    return {t for t in tokens(request) if len(t) >= MIN_REQUEST_WORD and not t.isdigit() and t not in STOPWORDS}


@dataclass(frozen=True)
class Link:
    """Why a sentence is linked to its user: the liked title it names and/or the request words it uses."""

    title: str | None = None
    words: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return self.title is not None or bool(self.words)

    def describe(self) -> str | None:
        parts = ([f"names {self.title}"] if self.title else []) + (
            [f"request words: {', '.join(self.words)}"] if self.words else []
        )
        return "; ".join(parts) or None


def _ngrams(toks: Sequence[str], sizes: Iterable[int]) -> set[tuple[str, ...]]:
    return {tuple(toks[i : i + n]) for n in set(sizes) for i in range(len(toks) - n + 1)}


def user_link(text: str, item_title: str, liked_titles: Sequence[str], request: str | None) -> Link:
    """Whether ``text`` (a justification of ``item_title``) names a liked title or uses a request word; the
    item's own title is masked out first (a sequel's sentence naming its own title is not a link)."""
    toks = _masked(text, item_title)
    forms = [(t, f) for t in liked_titles for f in title_forms(t)]
    grams = _ngrams(toks, (len(f) for _, f in forms))
    named = next((t for t, f in forms if f in grams), None)
    words = tuple(sorted(request_words(request) & set(toks)))
    return Link(named, words)


def distinctness(sentences: Sequence[str]) -> float | None:
    """Distinct sentences / sentences (already normalised); None for none."""
    return len(set(sentences)) / len(sentences) if sentences else None


def distinct_n(sentences: Sequence[str], n: int = 2) -> float | None:
    """Distinct word n-grams / n-grams over all ``sentences`` (distinct-n); None when there is no n-gram."""
    grams = [tuple(w[i : i + n]) for s in sentences for w in [s.split()] for i in range(len(w) - n + 1)]
    return len(set(grams)) / len(grams) if grams else None


# ------------------------------------------------------------------------------------------------ fallback reasons
_FAILED = re.compile(r"explain failed \(([^()]*)\)")
_REJECTED = re.compile(r"LLM justification rejected \((.*)\): template", re.DOTALL)
_QUOTED = re.compile(r"(?<=[=(])(?:'[^']*'|\"[^\"]*\")")  # a value as the note quotes it: field='x', ('x')
_CUT = re.compile(r"[=(,:]")
REASON_WORDS = 5


def _reason_key(problem: str) -> str:
    """A grounding problem without its values: ``cites genres='X', which...`` -> ``cites genres``."""
    text = _QUOTED.sub("", problem)
    text = _CUT.split(text, maxsplit=1)[0]
    words = [w for w in text.split() if not any(ch.isdigit() for ch in w)]
    return " ".join(words[:REASON_WORDS]).strip().casefold() or "unknown"


def fallback_reasons(note: str | None) -> list[str]:
    """Why a template justification replaced the LLM's, read from its note (see the module doc)."""
    if not note:
        return ["unknown"]
    if "(fallback:" in note:
        return ["ranking fallback"]
    if "no LLM engine" in note:
        return ["no engine"]
    rejected = _REJECTED.search(note)
    if rejected:
        problems = _QUOTED.sub("''", rejected.group(1)).split("; ")  # values may hold '; '
        return list(dict.fromkeys(_reason_key(p) for p in problems if p.strip()))
    failed = _FAILED.findall(note)
    if failed:
        return [_reason_key(failed[-1])]
    # the few-shot path: "<first answer's problem>; re-asked: LLM justification rejected: <problem>: template
    # justification" -> the problem of the answer that was finally refused
    last = note.rsplit("re-asked: ", 1)[-1] if "re-asked: " in note else note.rsplit("; ", 1)[-1]
    last = last.removesuffix(": template justification").removeprefix("LLM justification rejected: ")
    return [_reason_key(last)]


# ------------------------------------------------------------------------------------------------ one case
@dataclass(frozen=True)
class ShownJustification:
    """One shown justification and what the text metrics need of it."""

    text: str | None
    source: str | None
    grounded: bool | None
    note: str | None
    title: str


def case_text(shown: Sequence[ShownJustification], liked_titles: Sequence[str], request: str | None) -> dict[str, Any]:
    """One case's counts (stored in its record as ``text``): ``asked``, ``llm`` (LLM-written), ``passing``,
    ``linked`` / ``title_linked`` / ``request_linked``, ``words`` and ``norm`` (per LLM-written sentence),
    ``reasons`` (template fallbacks by reason), ``links`` (per item: why it is linked, or None)."""
    out: dict[str, Any] = {"asked": len(shown), "llm": 0, "passing": 0, "linked": 0, "title_linked": 0,
                           "request_linked": 0, "words": [], "norm": [], "links": []}  # fmt: skip
    reasons: Counter[str] = Counter()
    for j in shown:
        if j.source in LLM_SOURCES and j.text:
            out["llm"] += 1
            out["passing"] += int(j.grounded is True)
            link = user_link(j.text, j.title, liked_titles, request)
            out["linked"] += int(bool(link))
            out["title_linked"] += int(link.title is not None)
            out["request_linked"] += int(bool(link.words))
            out["words"].append(len(tokens(j.text)))
            out["norm"].append(normalise_sentence(j.text, j.title))
            out["links"].append(link.describe())
            continue
        out["links"].append(None)
        if j.source == "template":
            reasons.update(fallback_reasons(j.note))
    out["reasons"] = dict(sorted(reasons.items()))
    return out


RATE_METRICS: dict[str, tuple[str, str]] = {
    "grounding_rate": ("passing", "asked"),
    "user_link_rate": ("linked", "llm"),
    "title_link_rate": ("title_linked", "llm"),
    "request_link_rate": ("request_linked", "llm"),
}
"""Rate metrics as (numerator, denominator) counts of :func:`case_text`; paired comparisons use their per-case
values (cases with a zero denominator left out)."""


def case_rates(text: dict[str, Any] | None) -> dict[str, float]:
    """``{"text.<rate>": value}`` of one case's counts, for the rates whose denominator is not zero."""
    if not text:
        return {}
    return {f"text.{name}": text[num] / text[den] for name, (num, den) in RATE_METRICS.items() if text.get(den)}
