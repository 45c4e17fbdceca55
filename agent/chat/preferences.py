"""Deterministic preference rules: what a chat message says, read against the catalog and the last list shown.

:func:`parse_message` turns one message into a :class:`PreferenceUpdate`:

- titles of the catalog ("I loved Heat", a "quoted title"), and references to the last list shown ("the second
  one", "#3", "that one", "none of these") become liked seeds or rejections;
- attribute values of the catalog ("horror", "comedies", "Pixar") become soft likes, exclusions ("no horror",
  "anything but X") or requirements ("only comedies");
- numbers on the catalog's numeric fields ("after 2010", "the 90s", "under 120 minutes", "runtime below 100") and
  comparatives ("older", "shorter", "cheaper", "highly rated") become ranges; a comparative pivots on the median of
  the items just shown (the catalog's median when nothing was shown);
- what is left of a clause that says something positive ("something lighter") is a fragment of the free-text need.

Nothing here knows a domain: fields and values come from :class:`~agent.chat.catalog.CatalogIndex`, built from the
collection. Polarity is per clause (clauses split at punctuation and "but"): a negative cue before a value or title
("no", "not", "without", "anything but", "hate", "seen") or after a reference ("the second one is boring", "seen
it") rejects it; "only" / "nothing but" requires. :func:`apply_update` folds an update into the session state.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from agent.chat.avoid import clause_avoidances, fold_avoidances
from agent.chat.catalog import COMPARATIVES as _COMPARATIVES
from agent.chat.catalog import NEG_CUES as _NEG
from agent.chat.catalog import ONLY_CUES as _ONLY
from agent.chat.catalog import STOP, CatalogIndex, Match, Token, norm_tokens, tokenize
from agent.chat.title_link import TitleLink
from agent.sessions import AttributePref, Avoidance, Preferences, SessionState
from retrieval.types import Constraints, NumericRange

__all__ = ["PreferenceUpdate", "apply_update", "content_words", "parse_message"]

NEED_FRAGMENTS = 3
NEED_MAX_CHARS = 300

_NEG_PAIRS = {("anything", "but"), ("instead", "of"), ("other", "than"), ("rather", "than"), ("no", "more")}
_ONLY_PAIRS = {("nothing", "but")}
_RESET = [("start", "over"), ("reset",), ("forget", "everything"), ("forget", "all"), ("from", "scratch")]
_REPLACE = frozenset({"instead", "actually", "rather", "different", "else"})
_ORDINALS = {
    **{w: i for i, w in enumerate("first second third fourth fifth sixth seventh eighth ninth tenth".split())},
    **{f"{n}{s}": n - 1 for n, s in [(1, "st"), (2, "nd"), (3, "rd")] + [(n, "th") for n in range(4, 21)]},
    "last": -1,
}
_REF_NOUNS = frozenset(
    "one item option pick suggestion recommendation result entry title movie film book show product series song "
    "album game".split()
)
_NUMBER_INTRO = frozenset({"number", "option", "item", "pick", "suggestion", "#", "no"})
_PRONOUNS = [("that", "one"), ("this", "one"), ("the", "one"), ("that",), ("this",), ("it",)]
_GROUP = [("none", "of", "them"), ("none", "of", "these"), ("none", "of", "those"), ("all", "of", "them"),
          ("any", "of", "them"), ("them", "all"), ("these",), ("those",), ("them",)]  # fmt: skip

# comparatives: word -> (family, side); families name numeric fields by what their name contains
_FAMILIES: dict[str, tuple[str, ...]] = {
    "time": ("year", "date", "released", "release", "published", "publication"),
    "length": ("runtime", "duration", "length", "minutes", "pages", "page"),
    "price": ("price", "cost"),
    "rating": ("rating", "score", "stars", "vote"),
}
_RATED = {("highly", "rated"), ("top", "rated"), ("well", "rated"), ("better", "rated"), ("best", "rated")}
_UNITS: dict[str, str] = {
    **dict.fromkeys(["minutes", "minute", "mins", "min", "hours", "hour", "hrs"], "length"),
    **dict.fromkeys(["pages", "page"], "length"),
    **dict.fromkeys(["dollars", "dollar", "euros", "euro", "$"], "price"),
    **dict.fromkeys(["stars", "star", "points"], "rating"),
}
_LOWER_OPS = "over|above|more than|greater than|at least|longer than|min|minimum|after|since|from|newer than|later than"
_UPPER_OPS = "under|below|less than|at most|shorter than|max|maximum|before|until|till|older than|earlier than|prior to"
_NUMERIC_WORDS = frozenset(
    "over above more greater least longer than min minimum under below less most shorter max maximum between and "
    "after since from newer later before until till older earlier prior to in of the year years decade".split()
)
_QUOTED = re.compile(r"\"([^\"]{2,200})\"|“([^”]{2,200})”")
_CLAUSE_SPLIT = re.compile(
    r"[.;!?\n]+|,|(?<!anything )(?<!nothing )\bbut\b|\bhowever\b|\balthough\b|\bthough\b|\bwhereas\b", re.IGNORECASE
)


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PreferenceUpdate(_Model):
    """What one message changes. ``notes`` says which rule (or the LLM) found each part."""

    liked_ids: list[str] = Field(default_factory=list)
    disliked_ids: list[str] = Field(default_factory=list)
    accepted_ids: list[str] = Field(default_factory=list, description="Shown items the user picked.")
    rejected_ids: list[str] = Field(default_factory=list, description="Shown items the user turned down.")
    liked_attributes: list[AttributePref] = Field(default_factory=list)
    disliked_attributes: list[AttributePref] = Field(default_factory=list)
    required_attributes: list[AttributePref] = Field(default_factory=list)
    ranges: dict[str, NumericRange] = Field(default_factory=dict)
    avoid: list[Avoidance] = Field(
        default_factory=list, description='Concepts to avoid ("not too violent", "no gore"): agent.chat.avoid.'
    )
    need: str | None = None
    replace_need: bool = False
    reset: bool = False
    notes: list[str] = Field(default_factory=list)
    understood: list[str] = Field(default_factory=list, description="Loosely typed titles and how they were read.")
    ambiguous: list[list[str]] = Field(
        default_factory=list, description="Loosely typed titles that fit several items (the chat asks which one)."
    )

    def merge(self, other: PreferenceUpdate) -> PreferenceUpdate:
        """Union with ``other``; where the two disagree about an item or a value, ``self`` wins."""
        out = self.model_copy(deep=True)
        mine_ids = set(self.liked_ids) | set(self.disliked_ids)
        out.liked_ids += [i for i in other.liked_ids if i not in mine_ids and i not in out.liked_ids]
        out.disliked_ids += [i for i in other.disliked_ids if i not in mine_ids and i not in out.disliked_ids]
        shown = set(self.accepted_ids) | set(self.rejected_ids)
        out.accepted_ids += [i for i in other.accepted_ids if i not in shown and i not in out.accepted_ids]
        out.rejected_ids += [i for i in other.rejected_ids if i not in shown and i not in out.rejected_ids]
        mine = {_key(p) for p in self.liked_attributes + self.disliked_attributes + self.required_attributes}
        for name in ("liked_attributes", "disliked_attributes", "required_attributes"):
            target: list[AttributePref] = getattr(out, name)
            for p in getattr(other, name):
                if _key(p) not in mine and _key(p) not in {_key(q) for q in target}:
                    target.append(p)
        for f, rng in other.ranges.items():
            out.ranges.setdefault(f, rng)
        concepts = {" ".join(content_words(a.concept)) for a in self.avoid}
        out.avoid += [a for a in other.avoid if " ".join(content_words(a.concept)) not in concepts]
        if not out.need and other.need:
            out.need, out.replace_need = other.need, other.replace_need
        out.reset = self.reset or other.reset
        out.notes += other.notes
        out.understood += [u for u in other.understood if u not in out.understood]
        out.ambiguous += [a for a in other.ambiguous if a not in out.ambiguous]
        return out

    def positive(self) -> bool:
        """Whether the update says something to recommend from (not only what to avoid)."""
        return bool(self.liked_ids or self.liked_attributes or self.required_attributes or self.need or self.ranges)


def _key(p: AttributePref) -> tuple[str, str]:
    return (p.field, " ".join(norm_tokens(p.value)))


def content_words(text: str) -> list[str]:
    """Words of ``text`` that carry meaning (not function words, cues or numbers)."""
    return [t.text for t in tokenize(text) if _is_content(t.text)]


def _is_content(word: str) -> bool:
    return (
        len(word) > 1
        and word not in STOP
        and word not in _NEG
        and word not in _ONLY
        and word not in _COMPARATIVES
        and word not in _NUMERIC_WORDS
        and not any(ch.isdigit() for ch in word)
    )


# ------------------------------------------------------------------------------------------------ parsing
class _Clause:
    """One clause: its tokens, the catalog matches, references and cue positions."""

    def __init__(self, text: str, index: CatalogIndex, shown: Sequence[str], quoted: dict[str, list[str]]) -> None:
        self.text = text.strip()
        self.tokens: list[Token] = tokenize(text)
        words = [t.text for t in self.tokens]
        self.words = words
        self.used = [False] * len(words)
        self.matches: list[Match] = []
        for i, w in enumerate(words):  # quoted titles were replaced by placeholder words
            if quoted.get(w):
                self.matches.append(Match(i, i + 1, "title", ids=tuple(quoted[w])))
                self.used[i] = True
        for m in index.find(self.tokens, known_ids=shown):
            if not any(self.used[m.start : m.end]):
                self.matches.append(m)
                if m.kind == "title":
                    self.used[m.start : m.end] = [True] * (m.end - m.start)
        self._link_titles(index, shown)
        self.neg = _cue_positions(words, _NEG, _NEG_PAIRS)
        self.only = _cue_positions(words, _ONLY, _ONLY_PAIRS)
        self.neg = [p for p in self.neg if p not in self.only and p - 1 not in self.only]

    def _link_titles(self, index: CatalogIndex, shown: Sequence[str]) -> None:
        """Loosely typed titles ("the babadok", "super trooper 2"): a fuzzy link may replace a one-word exact
        title inside it ("Super"); a title that fits several items none of which was shown is ambiguous."""
        one_word = {
            i for m in self.matches if m.kind == "title" and m.end - m.start == 1 for i in range(m.start, m.end)
        }
        free = [u and i not in one_word for i, u in enumerate(self.used)]
        self.links = index.title_linker().link(self.words, free)
        for link in self.links:
            self.matches = [m for m in self.matches if m.end <= link.start or m.start >= link.end]
            self.used[link.start : link.end] = [True] * (link.end - link.start)
            if not link.ambiguous:
                self.matches.append(Match(link.start, link.end, "title", ids=link.ids))
        known = set(shown)
        for m in list(self.matches):
            if m.kind == "title" and len(m.ids) > 1 and not known & set(m.ids):
                self.matches.remove(m)
                text = " ".join(self.words[m.start : m.end])
                self.links.append(TitleLink(m.start, m.end, text, m.ids, 100.0))

    def polarity(self, pos: int, *, reference: bool) -> str:
        if any(p < pos for p in self.only):
            return "only"
        if any(p < pos for p in self.neg) or (reference and any(p >= pos for p in self.neg)):
            return "neg"
        return "pos"

    def has_seq(self, seq: Sequence[str]) -> int | None:
        n = len(seq)
        for i in range(len(self.words) - n + 1):
            if tuple(self.words[i : i + n]) == tuple(seq) and not any(self.used[i : i + n]):
                return i
        return None

    def take(self, start: int, end: int) -> None:
        self.used[start:end] = [True] * (end - start)

    def residual(self) -> list[str]:
        return [w for w, u in zip(self.words, self.used, strict=True) if not u and _is_content(w)]

    def free_text(self) -> str:
        """The normalized words not inside a title (for the number rules)."""
        return " ".join(w for w, u in zip(self.words, self.used, strict=True) if not u)


def _cue_positions(words: list[str], singles: frozenset[str], pairs: set[tuple[str, str]]) -> list[int]:
    out = [i for i, w in enumerate(words) if w in singles]
    out += [i for i in range(len(words) - 1) if (words[i], words[i + 1]) in pairs]
    return sorted(set(out))


def _ordinal_refs(clause: _Clause, shown: Sequence[str]) -> list[tuple[int, str]]:
    """(token position, item id) for "the second one", "#3", "number 2", "2nd"."""
    words, out = clause.words, []
    for i, w in enumerate(words):
        if clause.used[i]:
            continue
        index: int | None = None
        nxt = words[i + 1] if i + 1 < len(words) else None
        prev = words[i - 1] if i > 0 else None
        if w in _ORDINALS and (nxt in _REF_NOUNS or (prev == "the" and (nxt is None or nxt in STOP))):
            index = _ORDINALS[w]
        elif w.isdigit() and prev in _NUMBER_INTRO and len(w) <= 2:
            index = int(w) - 1
        if index is None:
            continue
        position = index if index >= 0 else len(shown) + index
        if 0 <= position < len(shown):
            clause.take(max(0, i - 1), min(len(words), i + 2))
            out.append((i, shown[position]))
    return out


def _numbers(clause: _Clause, index: CatalogIndex, shown: Sequence[str]) -> dict[str, NumericRange]:
    out: dict[str, NumericRange] = {}
    text = clause.free_text()
    year = index.year_field

    def put(name: str | None, low: float | None = None, high: float | None = None) -> None:
        if name is None:
            return
        old = out.get(name, NumericRange())
        low = low if low is not None else old.min
        high = high if high is not None else old.max
        if low is not None and high is not None and low > high:
            low, high = high, low
        out[name] = NumericRange(min=low, max=high)

    if year:
        for m in re.finditer(r"\b(?:between|from) (\d{4}) (?:and|to) (\d{4})\b", text):
            put(year, float(min(m[1], m[2])), float(max(m[1], m[2])))
        for m in re.finditer(r"\b(1[0-9]|20)?(\d)0 ?s\b", text):
            start = int(f"{m[1]}{m[2]}0") if m[1] else (1900 if int(m[2]) >= 3 else 2000) + int(m[2]) * 10
            put(year, float(start), float(start + 9))
        for m in re.finditer(rf"\b({_LOWER_OPS}) (?:the )?(?:year )?(\d{{4}})\b(?! (?:and|to) \d)", text):
            strict = m[1] in ("after", "over", "above", "more than", "greater than", "newer than", "later than")
            put(year, low=float(int(m[2]) + (1 if strict else 0)))
        for m in re.finditer(rf"\b({_UPPER_OPS}) (?:the )?(?:year )?(\d{{4}})\b", text):
            strict = m[1] in ("before", "under", "below", "less than", "older than", "earlier than", "prior to")
            put(year, high=float(int(m[2]) - (1 if strict else 0)))
        for m in re.finditer(r"\b(?:in|of|made in|released in) (\d{4})\b", text):
            put(year, float(m[1]), float(m[1]))
    for name in index.numeric_fields():  # "runtime under 100", "price at most 20"
        spoken = " ".join(norm_tokens(name))
        if not spoken or name == year:
            continue
        for m in re.finditer(
            rf"\b{re.escape(spoken)} (?:of |is )?({_LOWER_OPS}|{_UPPER_OPS}) \$? ?(\d+(?:\.\d+)?)\b", text
        ):
            lower = re.fullmatch(_LOWER_OPS, m[1]) is not None
            put(name, low=float(m[2])) if lower else put(name, high=float(m[2]))
    unit_words = "|".join(re.escape(u) for u in _UNITS if u != "$")
    pattern = rf"\b({_LOWER_OPS}|{_UPPER_OPS}) (\$ )?(\d+(?:\.\d+)?)(?: ({unit_words}))?\b"
    for m in re.finditer(pattern, text):
        unit = m[4] or ("$" if m[2] else None)
        if unit is None:
            continue
        target = index.field_like(_FAMILIES[_UNITS[unit]])
        if target is None or target == year:
            continue
        value = float(m[3]) * (60 if unit in ("hours", "hour", "hrs") and "hour" not in target.casefold() else 1)
        lower = re.fullmatch(_LOWER_OPS, m[1]) is not None
        put(target, low=value) if lower else put(target, high=value)
    words = clause.words
    for i, w in enumerate(words):  # comparatives pivot on what was just shown
        family_side = _COMPARATIVES.get(w)
        if i + 1 < len(words) and (w, words[i + 1]) in _RATED:
            family_side = ("rating", "min")
        if family_side is None or clause.used[i]:
            continue
        target = index.field_like(_FAMILIES[family_side[0]])
        pivot = index.median(target, shown) if target else None
        if target is None or pivot is None or target in out:
            continue
        if family_side[0] == "time":
            high, low = float(math.floor(pivot) - 1), float(math.ceil(pivot) + 1)
        else:
            high = low = float(pivot)
        put(target, low=low) if family_side[1] == "min" else put(target, high=high)
    return out


def _quote_titles(message: str, index: CatalogIndex) -> tuple[str, dict[str, list[str]]]:
    quoted: dict[str, list[str]] = {}

    def sub(m: re.Match[str]) -> str:
        text = m[1] or m[2]
        ids = index.lookup_title(text)
        if not ids:
            return m[0]
        key = f"qtitle{len(quoted)}x"
        quoted[key] = ids
        return f" {key} "

    return _QUOTED.sub(sub, message), quoted


def parse_message(message: str, index: CatalogIndex, shown: Sequence[str]) -> PreferenceUpdate:
    """The rules' reading of ``message``; ``shown`` is the last list shown (what "the second one" means)."""
    up = PreferenceUpdate()
    text, quoted = _quote_titles(message, index)
    fragments: list[str] = []
    last_ref: str | None = None
    for raw in _CLAUSE_SPLIT.split(text):
        if not raw or not raw.strip():
            continue
        clause = _Clause(raw, index, shown, quoted)
        if not clause.words:
            continue
        if any(clause.has_seq(seq) is not None for seq in _RESET):
            up.reset = True
            up.notes.append("reset")
            continue
        for link in clause.links:
            titles = [index.title_of.get(i, i) for i in link.ids]
            if link.ambiguous:
                up.ambiguous.append(list(link.ids))
                up.notes.append(f"ambiguous:{link.text}")
            else:
                up.understood.append(f"{link.text!r} as {titles[0]}")
                up.notes.append(f"fuzzy_title:{link.text}")
        refs: list[tuple[int, str, str]] = []  # position, item id, how
        for m in clause.matches:
            if m.kind == "title":
                refs += [(m.start, i, "title") for i in m.ids]
        refs += [(pos, item, "ordinal") for pos, item in _ordinal_refs(clause, shown)]
        if not refs and shown:
            refs += _pronoun_refs(clause, shown, last_ref)
        for pos, item, how in refs:
            polarity = clause.polarity(pos, reference=True)
            _record_item(up, item, polarity, item in shown, f"{how}:{polarity}")
            last_ref = item
        for m in clause.matches:
            if m.kind == "value":
                pref = AttributePref(field=m.field, value=m.value)
                polarity = clause.polarity(m.start, reference=False)
                if polarity == "neg" and m.field != index.list_field:
                    continue  # "not too violent" on a tag field: an avoidance (below), matched on tags and text
                {"neg": up.disliked_attributes, "only": up.required_attributes, "pos": up.liked_attributes}[
                    polarity
                ].append(pref)
                up.notes.append(f"value:{polarity}:{m.field}={m.value}")
        for name, rng in _numbers(clause, index, shown).items():
            up.ranges[name] = rng
            up.notes.append(f"range:{name}:{rng.min}..{rng.max}")
        hard_values = [m for m in clause.matches if m.kind == "value" and m.field == index.list_field]
        taken = [u or any(m.start <= i < m.end for m in hard_values) for i, u in enumerate(clause.used)]
        for a in clause_avoidances(clause.words, taken, clause.neg, _is_content):
            up.avoid.append(a)
            up.notes.append(f"avoid:{a.strength}:{a.concept}")
        field_words = {w for name in index.field_names() for w in norm_tokens(name)}
        if [w for w in clause.residual() if w not in field_words] and not clause.neg:
            fragments.append(clause.text)
            up.replace_need = up.replace_need or any(w in _REPLACE for w in clause.words)
    if fragments:
        up.need = "; ".join(fragments)[:NEED_MAX_CHARS]
        up.notes.append("need")
    return up


def _pronoun_refs(clause: _Clause, shown: Sequence[str], last_ref: str | None) -> list[tuple[int, str, str]]:
    for seq in _GROUP:
        at = clause.has_seq(seq)
        if at is not None and len(clause.words) <= 8:
            clause.take(at, at + len(seq))
            return [(at, item, "all") for item in shown]
    if len(clause.words) > 6:
        return []
    for seq in _PRONOUNS:
        at = clause.has_seq(seq)
        if at is not None and (len(seq) == 2 or len(clause.words) <= 4):  # "I want it funny" is not a reference
            clause.take(at, at + len(seq))
            return [(at, last_ref or shown[0], "that")]
    return []


def _record_item(up: PreferenceUpdate, item: str, polarity: str, shown: bool, note: str) -> None:
    if polarity == "neg":
        (up.rejected_ids if shown else up.disliked_ids).append(item)
        for lst in (up.liked_ids, up.accepted_ids):
            if item in lst:
                lst.remove(item)
    else:
        up.liked_ids.append(item)
        if shown:
            up.accepted_ids.append(item)
        for lst in (up.rejected_ids, up.disliked_ids):
            if item in lst:
                lst.remove(item)
    up.notes.append(note)


# ------------------------------------------------------------------------------------------------ applying
def _without(prefs: list[AttributePref], drop: AttributePref) -> list[AttributePref]:
    return [p for p in prefs if _key(p) != _key(drop)]


def _add_unique(values: list[str], new: Sequence[str]) -> list[str]:
    out = [v for v in values if v not in new]
    return out + list(dict.fromkeys(new))


def apply_update(state: SessionState, up: PreferenceUpdate, index: CatalogIndex) -> None:
    """Fold ``up`` into ``state`` (preferences, accepted, rejected): later statements win over earlier ones."""
    prefs = Preferences() if up.reset else state.preferences.model_copy(deep=True)
    liked = [i for i in prefs.liked_ids if i not in up.disliked_ids and i not in up.rejected_ids]
    disliked = [i for i in prefs.disliked_ids if i not in up.liked_ids]
    prefs.liked_ids = _add_unique(liked, up.liked_ids)
    prefs.disliked_ids = _add_unique(disliked, up.disliked_ids)
    state.rejected = _add_unique([i for i in state.rejected if i not in up.accepted_ids], up.rejected_ids)
    state.accepted = _add_unique([i for i in state.accepted if i not in up.rejected_ids], up.accepted_ids)

    c = prefs.constraints.model_dump()
    c["genre_field"] = index.list_field or c["genre_field"]
    c["year_field"] = index.year_field or c["year_field"]
    for p in up.liked_attributes:
        prefs.disliked_attributes = _without(prefs.disliked_attributes, p)
        prefs.liked_attributes = [*_without(prefs.liked_attributes, p), p]
        c["exclude_genres"] = [g for g in c["exclude_genres"] if not (p.field == c["genre_field"] and g == p.value)]
    for p in up.required_attributes:
        prefs.disliked_attributes = _without(prefs.disliked_attributes, p)
        if p.field == c["genre_field"]:
            c["include_genres"] = _add_unique(c["include_genres"], [p.value])
            c["exclude_genres"] = [g for g in c["exclude_genres"] if g != p.value]
        else:
            c["equals"][p.field] = p.value
    for p in up.disliked_attributes:
        prefs.liked_attributes = _without(prefs.liked_attributes, p)
        prefs.disliked_attributes = [*_without(prefs.disliked_attributes, p), p]
        if p.field == c["genre_field"]:
            c["exclude_genres"] = _add_unique(c["exclude_genres"], [p.value])
            c["include_genres"] = [g for g in c["include_genres"] if g != p.value]
        elif c["equals"].get(p.field) == p.value:
            del c["equals"][p.field]
    for name, rng in up.ranges.items():
        if name == c["year_field"]:
            low, high = _merge_range(c["year_min"], c["year_max"], rng)
            c["year_min"] = int(low) if low is not None else None
            c["year_max"] = int(high) if high is not None else None
        else:
            old = c["ranges"].get(name) or {"min": None, "max": None}
            low, high = _merge_range(old["min"], old["max"], rng)
            c["ranges"][name] = {"min": low, "max": high}
    prefs.constraints = Constraints.model_validate(c)
    prefs.need = _merge_need(prefs.need, up)
    asked = content_words(" ".join([up.need or "", *(p.value for p in up.liked_attributes + up.required_attributes)]))
    prefs.avoid = fold_avoidances(prefs.avoid, up.avoid, asked)
    state.preferences = prefs


def _merge_range(low: float | None, high: float | None, new: NumericRange) -> tuple[float | None, float | None]:
    """New sides replace old ones; an old side that contradicts a new one is dropped."""
    low = new.min if new.min is not None else low
    high = new.max if new.max is not None else high
    if low is not None and high is not None and low > high:
        if new.min is not None and new.max is None:
            high = None
        elif new.max is not None and new.min is None:
            low = None
        else:
            low, high = high, low
    return low, high


def _merge_need(old: str | None, up: PreferenceUpdate) -> str | None:
    if not up.need:
        return old
    if up.replace_need or not old:
        return up.need[:NEED_MAX_CHARS]
    parts = [p for p in old.split("; ") if p] + [up.need]
    while len(parts) > NEED_FRAGMENTS or (len(parts) > 1 and len("; ".join(parts)) > NEED_MAX_CHARS):
        parts.pop(0)
    return "; ".join(parts)[:NEED_MAX_CHARS]


def describe_constraints(prefs: Preferences) -> list[str]:
    """Short phrases for the constraints in force (for replies): 'no Horror', 'year 1990-1999'."""
    c = prefs.constraints
    out = [f"no {v}" for v in c.exclude_genres]
    out += [f"only {v}" for v in c.include_genres]
    out += [f"{k} {v}" for k, v in c.equals.items()]
    spans: list[tuple[str, Any, Any]] = [(c.year_field, c.year_min, c.year_max)]
    spans += [(k, r.min, r.max) for k, r in c.ranges.items()]
    for name, low, high in spans:
        if low is not None and high is not None:
            out.append(f"{name} {_num(low)}-{_num(high)}")
        elif low is not None:
            out.append(f"{name} from {_num(low)}")
        elif high is not None:
            out.append(f"{name} up to {_num(high)}")
    listed = set(c.exclude_genres)
    out += [f"no {p.value}" for p in prefs.disliked_attributes if p.value not in listed]
    return out


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"
