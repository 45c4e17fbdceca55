"""What the chat knows about the catalog's words: titles and attribute values, matched in user text.

Built from the collection's own records (no field or value is hard-coded): every metadata field holding strings
(or lists of strings) becomes a vocabulary of values; numeric fields keep their values for medians; the list field
with the fewest distinct values is the one the hard filters (``Constraints.genre_field``) use; a numeric field whose
name says "year" or "date" is the time axis. Titles are indexed under their normal forms ("Heat (1995)" ->
"heat (1995)", "heat"; "Matrix, The" -> "the matrix").
"""

from __future__ import annotations

import re
import statistics
import unicodedata
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from retrieval.types import Item

if TYPE_CHECKING:
    from agent.chat.title_link import TitleLinker

__all__ = ["COMPARATIVES", "CUE_WORDS", "NEG_CUES", "ONLY_CUES", "STOP", "CatalogIndex", "Match", "Token", "tokenize"]

_TOKEN = re.compile(r"[^\W_]+|[$#]")
_YEAR_TAIL = re.compile(r"\s*\(\s*\d{4}(?:\s*[-–]\s*\d{0,4})?\s*\)\s*$")
_ARTICLE_TAIL = re.compile(r"^(?P<body>.+?),\s*(?P<article>the|a|an|les|la|le|l'|el|il|der|die|das)\s*$", re.IGNORECASE)
MAX_TITLE_TOKENS = 12
INDEX_LIMIT = 50_000
"""Most items read into the index; larger catalogs are indexed on their first INDEX_LIMIT items."""

# English function words, chat filler, generic catalog nouns and conversational cue words: they never make a
# title or a value match on their own, and they are not "content" of a request.
STOP = frozenset(
    """a an the and or but of to in on at for with by from about as into than then so too also very really just
    is are was were be been being am it its it's this that these those there here i me my mine we us our you your
    he she him her his they them their do does did doing done have has had having will would can could should shall
    may might must not no nor never none nothing without only please thanks thank hi hello hey ok okay yes yeah yep
    sure some something anything any more most less much many few other another else one ones what which who whom
    whose when where why how now again still even maybe perhaps like love loved liked likes want wants need needs
    looking look find show give recommend recommendation recommendations suggest suggestion suggestions watch watched
    read see seen saw try lot bit kind sort type stuff thing things item items movie movies film films book books
    shows series product products title titles pick picks option options good great nice cool well let lets let's
    me get got go going make made same similar different instead actually rather enjoy enjoyed all both each every
    s t d ll re ve m don didn doesn isn wasn aren weren won wouldn couldn shouldn dont didnt doesnt isnt wasnt
    first second third fourth fifth sixth seventh eighth ninth tenth last next number mood feel feeling""".split()
)
NEG_CUES = frozenset(
    """not no never without nothing none hate hated hates dislike disliked dislikes avoid except excluding exclude
    skip nope neither nor boring awful terrible seen saw already less fewer enough sick tired don didn doesn isn
    wasn aren weren dont didnt doesnt isnt wasnt""".split()
)
ONLY_CUES = frozenset({"only", "exclusively", "strictly"})
COMPARATIVES: dict[str, tuple[str, str]] = {
    **dict.fromkeys(["older", "earlier", "classic", "classics", "old", "vintage"], ("time", "max")),
    **dict.fromkeys(["newer", "recent", "modern", "latest", "contemporary"], ("time", "min")),
    **dict.fromkeys(["shorter", "short", "quick", "brief"], ("length", "max")),
    **dict.fromkeys(["longer"], ("length", "min")),
    **dict.fromkeys(["cheaper", "cheap", "affordable", "inexpensive", "budget"], ("price", "max")),
    **dict.fromkeys(["pricier", "expensive", "premium"], ("price", "min")),
}
"""comparative word -> (family of numeric fields, side of the range it sets)"""
CUE_WORDS = STOP | NEG_CUES | ONLY_CUES | frozenset(COMPARATIVES)
"""Words that are never a catalog value on their own (a tag "boring" must not turn "it's boring" into a like)."""


@dataclass(frozen=True)
class Token:
    text: str  # lower-case, accents removed
    caps: bool  # the original started with a capital letter
    start: int
    end: int


def _fold(text: str) -> str:
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(c for c in decomposed if not unicodedata.combining(c))


def tokenize(text: str) -> list[Token]:
    folded = _fold(text)
    return [Token(m.group().casefold(), m.group()[:1].isupper(), m.start(), m.end()) for m in _TOKEN.finditer(folded)]


def norm_tokens(text: str) -> tuple[str, ...]:
    return tuple(t.text for t in tokenize(text))


def _variants(tokens: tuple[str, ...]) -> set[tuple[str, ...]]:
    """A value's forms as a user may type them: plural of the last word, hyphens joined or split."""
    out = {tokens}
    if len(tokens) > 1:
        out.add(("".join(tokens),))  # "sci fi" -> "scifi"
    last = tokens[-1]
    if len(last) >= 3 and not last.isdigit():
        if last.endswith("y") and len(last) > 3:
            out.add((*tokens[:-1], last[:-1] + "ies"))  # comedy -> comedies
        elif last.endswith(("s", "x", "ch", "sh")):
            out.add((*tokens[:-1], last + "es"))
        else:
            out.add((*tokens[:-1], last + "s"))
    return out


@dataclass(frozen=True)
class Match:
    """A catalog title or attribute value found in a text: token span [start, end) and what it is."""

    start: int
    end: int
    kind: str  # "title" or "value"
    ids: tuple[str, ...] = ()
    field: str = ""
    value: str = ""


@dataclass
class FieldInfo:
    name: str
    kind: str  # "values" (strings or lists of strings) or "number"
    is_list: bool = False
    counts: Counter[str] = field(default_factory=Counter)
    numbers: list[float] = field(default_factory=list)


class CatalogIndex:
    """Titles and attribute values of a catalog (see the module docstring)."""

    def __init__(self, items: Iterable[Item], *, total: int | None = None) -> None:
        self.titles: dict[tuple[str, ...], list[str]] = defaultdict(list)
        self.title_of: dict[str, str] = {}
        self.fields: dict[str, FieldInfo] = {}
        self.metadata: dict[str, dict[str, Any]] = {}
        n = 0
        for item in items:
            n += 1
            self.title_of[item.id] = item.title
            self.metadata[item.id] = dict(item.metadata)
            for form in title_forms(item.title):
                ids = self.titles[form]
                if item.id not in ids:
                    ids.append(item.id)
            for name, value in item.metadata.items():
                self._add_value(name, value)
        self.size = n
        self.total = total if total is not None else n
        self._values = self._build_values(n)
        self.max_value_tokens = max((len(k) for k in self._values), default=1)

    @classmethod
    def from_collection(cls, collection: Any, *, limit: int = INDEX_LIMIT) -> CatalogIndex:
        ids = collection.ids()
        items = collection.get_items(ids[:limit])
        return cls((items[i] for i in ids[:limit] if i in items), total=len(ids))

    # -- building --------------------------------------------------------------------------------------------
    def _add_value(self, name: str, value: Any) -> None:
        info = self.fields.get(name)
        if isinstance(value, bool):
            return
        if isinstance(value, int | float):
            info = info or self.fields.setdefault(name, FieldInfo(name, "number"))
            if info.kind == "number":
                info.numbers.append(float(value))
            return
        values = value if isinstance(value, list) else [value]
        strings = [v for v in values if isinstance(v, str) and v.strip()]
        if not strings:
            return
        info = info or self.fields.setdefault(name, FieldInfo(name, "values"))
        if info.kind != "values":
            return
        info.is_list = info.is_list or isinstance(value, list)
        info.counts.update(strings)

    def _build_values(self, n: int) -> dict[tuple[str, ...], tuple[str, str]]:
        """normal form -> (field, value as the catalog writes it); a value in several fields goes to the field
        with the fewest distinct values (the most categorical one)."""
        out: dict[tuple[str, ...], tuple[str, str]] = {}
        ranked = sorted((f for f in self.fields.values() if f.kind == "values"), key=lambda f: (len(f.counts), f.name))
        for info in ranked:
            if not info.is_list and len(info.counts) > max(20, n // 2):
                continue  # a per-item string (an identifier, a description): not a vocabulary
            for value, _ in info.counts.most_common():
                tokens = norm_tokens(value)
                if not tokens or len(tokens) > 4 or len("".join(tokens)) < 3 or all(t in CUE_WORDS for t in tokens):
                    continue
                for form in _variants(tokens):
                    out.setdefault(form, (info.name, value))
        return out

    # -- facts ---------------------------------------------------------------------------------------------
    @property
    def list_field(self) -> str | None:
        """The list field with the fewest distinct values (``genres`` on MovieLens): the hard-filter field."""
        lists = [f for f in self.fields.values() if f.kind == "values" and f.is_list and f.counts]
        return min(lists, key=lambda f: (len(f.counts), f.name)).name if lists else None

    def numeric_fields(self) -> list[str]:
        return [f.name for f in self.fields.values() if f.kind == "number" and f.numbers]

    def field_like(self, hints: Sequence[str]) -> str | None:
        """The first numeric field whose name contains one of ``hints``."""
        for hint in hints:
            for name in self.numeric_fields():
                if hint in name.casefold():
                    return name
        return None

    @property
    def year_field(self) -> str | None:
        return self.field_like(("year", "date", "released", "published"))

    def median(self, field_name: str, ids: Sequence[str] = ()) -> float | None:
        values = [self.metadata.get(i, {}).get(field_name) for i in ids]
        numbers = [float(v) for v in values if isinstance(v, int | float) and not isinstance(v, bool)]
        if not numbers:
            info = self.fields.get(field_name)
            numbers = info.numbers if info is not None else []
        return statistics.median(numbers) if numbers else None

    def field_names(self) -> list[str]:
        return sorted(self.fields)

    def top_values(self, field_name: str, n: int = 4) -> list[str]:
        info = self.fields.get(field_name)
        return [v for v, _ in info.counts.most_common(n)] if info is not None else []

    def has_value(self, field_name: str, value: str) -> str | None:
        """The catalog's spelling of ``value`` in ``field_name`` (case and plural insensitive), or None."""
        hit = self._values.get(norm_tokens(value))
        if hit is not None and hit[0] == field_name:
            return hit[1]
        info = self.fields.get(field_name)
        if info is None or info.kind != "values":
            return None
        wanted = norm_tokens(value)
        return next((v for v in info.counts if norm_tokens(v) == wanted), None)

    def title_linker(self) -> TitleLinker:
        """The fuzzy title linker over this catalog's titles (built on first use, then kept)."""
        linker = self.__dict__.get("_linker")
        if linker is None:
            from agent.chat.title_link import TitleLinker

            linker = self.__dict__["_linker"] = TitleLinker(self.title_of, skip=self._values)
        return linker

    def lookup_title(self, text: str) -> list[str]:
        """Ids whose title has one of ``text``'s normal forms (e.g. a quoted title or an LLM-extracted one)."""
        for form in sorted(title_forms(text), key=len, reverse=True):
            if form in self.titles:
                return list(self.titles[form][:3])
        return []

    def resolve_title(self, text: str) -> list[str]:
        """:meth:`lookup_title`, then the fuzzy linker on the whole of ``text`` (misspelt titles, e.g. from the
        LLM extractor); [] when nothing matches or the fuzzy match is ambiguous (the rules path asks which one)."""
        exact = self.lookup_title(text)
        if exact:
            return exact
        forms = sorted(title_forms(text), key=len, reverse=True)
        ids = self.title_linker().link_text(forms[0]) if forms else ()
        return list(ids) if len(ids) == 1 else []

    # -- matching ------------------------------------------------------------------------------------------
    def find(self, tokens: Sequence[Token], *, known_ids: Sequence[str] = ()) -> list[Match]:
        """Titles and values in ``tokens``, longest first, not overlapping. A title whose form has only one
        content word matches when that word is capitalized (not at the start) or the title is in ``known_ids``
        (e.g. the items just shown); values match in any case."""
        words = [t.text for t in tokens]
        known = set(known_ids)
        taken = [False] * len(words)
        found: list[Match] = []
        width = min(MAX_TITLE_TOKENS, len(words))
        for size in range(width, 0, -1):
            for start in range(len(words) - size + 1):
                end = start + size
                if any(taken[start:end]):
                    continue
                span = tuple(words[start:end])
                match = self._title_match(span, tokens[start:end], start, known)
                if match is None and size <= self.max_value_tokens and span in self._values:
                    f, v = self._values[span]
                    match = Match(start, end, "value", field=f, value=v)
                if match is not None:
                    taken[start:end] = [True] * size
                    found.append(match)
        return sorted(found, key=lambda m: m.start)

    def _title_match(self, span: tuple[str, ...], toks: Sequence[Token], start: int, known: set[str]) -> Match | None:
        ids = self.titles.get(span)
        if not ids:
            return None
        content = [t for t in toks if t.text not in STOP]
        if not content:
            return None
        if len(content) == 1:
            word = content[0]
            capitalized = word.caps and not (start == 0 and toks[0] is word)
            if not (capitalized or (known & set(ids))) or len(word.text) < 3:
                return None
            value = self._values.get(span)
            if value is not None and (value[0] == self.list_field or not capitalized):
                return None  # "Horror" is the category, not a film of that name; a capitalized tag may be a title
        preferred = [i for i in ids if i in known] or ids
        return Match(start, start + len(span), "title", ids=tuple(preferred[:3]))


def title_forms(title: str) -> set[tuple[str, ...]]:
    """Normal forms a user may type for a title."""
    bare = _YEAR_TAIL.sub("", title).strip()
    forms = {title, bare}
    m = _ARTICLE_TAIL.match(bare)
    if m:
        forms.add(f"{m['article']} {m['body']}")
        forms.add(m["body"])
    out = set()
    for f in forms:
        tokens = norm_tokens(f)
        if tokens and len(tokens) <= MAX_TITLE_TOKENS:
            out.add(tokens)
    return out
