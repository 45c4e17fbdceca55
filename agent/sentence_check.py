"""Is a justification sentence about its item, readable, and free of claims the item contradicts?

The checks :func:`agent.explain.check_grounding` adds to its citation and year checks:

* :func:`broken_text`: replacement or control characters, stray braces / brackets / markup ("H}e", "<b>", "**");
* :func:`references`: what of the item (title, a field value, a word of its free text) and of the user (a liked
  item's title, a stated like, the request's words) the sentence names; a sentence naming nothing of the item
  is not a justification of it;
* :func:`echoes_request`: a sentence that repeats the request (4+ words in a row) and names nothing of the item
  beyond what the request already said ("Here's an adventure for the whole family.");
* :func:`false_values`: values of the candidates' categorical fields that the sentence names although the item
  lacks them (and the user did not bring them up).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from agent.evidence import item_values, norm, short_title
from agent.schemas import CandidateItem, UserContext
from prompts import clean_data

__all__ = [
    "References",
    "broken_text",
    "echoes_request",
    "example_title",
    "false_values",
    "references",
    "repeats_itself",
    "user_references",
]

_BROKEN = re.compile(r"[\ufffd\x00-\x08\x0b-\x1f\x7f{}\[\]<>|\\^~`]|\*\*|__|##|(?<=\w)[#@$%*=+](?=\w)")
_WORD = re.compile(r"[a-z0-9']+")
MIN_VALUE_CHARS = 3
MIN_TEXT_WORD = 5
ECHO_RUN = 4
_STOP = frozenset(
    "a an the and or but of to in on for with as by at from it its this that these those is are was were be been "
    "you your yours i me my we our they them their he she his her here heres here's there theres there's what "
    "which who whom whose all any some one ones more most very just also too so such than then into about over "
    "like likes liked love loved enjoy enjoyed great good fine nice best fun whole".split()
)


def _mentions(text: str, phrase: str) -> bool:
    p = norm(phrase)
    return len(p) >= MIN_VALUE_CHARS and re.search(rf"(?<!\w){re.escape(p)}(?!\w)", text) is not None


def _content_words(text: str) -> list[str]:
    return [w for w in _WORD.findall(text) if w not in _STOP and not w.isdigit()]


def repeats_itself(text: str, n: int = 3) -> bool:
    """Whether ``text`` says the same ``n`` words twice (a model stuck in a loop)."""
    words = _WORD.findall(norm(text))
    grams = [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]
    return len(grams) != len(set(grams))


def broken_text(text: str) -> str | None:
    """Why ``text`` is not clean prose (None when it is)."""
    found = _BROKEN.search(text)
    if found is not None:
        return f"broken characters or markup ({found.group(0)!r})"
    if text.count("(") != text.count(")") or text.count('"') % 2:
        return "unbalanced parentheses or quotes (a cut-off or garbled sentence)"
    return None


def example_title(title: str) -> str | None:
    """The title as a worked example of a few-shot prompt names it (:func:`agent.evidence.short_title`), or None
    when it has markup characters ("B*A*P*S"): models copy such titles, and the checks refuse them."""
    short = short_title(title)
    return short if broken_text(short) is None else None


@dataclass
class References:
    """What a sentence names: of the item (title, field values, free-text words) and of the user."""

    item: list[str] = field(default_factory=list)
    item_beyond_request: list[str] = field(default_factory=list)
    user: list[str] = field(default_factory=list)


def _item_phrases(item: CandidateItem) -> list[str]:
    phrases = [item.title, re.sub(r"\s*\([^()]*\)\s*$", "", item.title)]
    phrases += [v for _, v in item_values(item.item.metadata)]
    for value in item.item.metadata.values():
        if isinstance(value, int | float) and not isinstance(value, bool):
            phrases.append(clean_data(value))
    return phrases


def references(text: str, item: CandidateItem, user: UserContext) -> References:
    """The item and user references in ``text`` (case-insensitive, whole words)."""
    said = norm(text)
    need = norm(user.need)
    out = References()
    for phrase in dict.fromkeys(_item_phrases(item)):
        if _mentions(said, phrase):
            out.item.append(phrase)
            if not _mentions(need, phrase):
                out.item_beyond_request.append(phrase)
    item_text = " ".join(norm(t) for t in item.item.texts.values())
    text_words = {w for w in _content_words(item_text) if len(w) >= MIN_TEXT_WORD}
    need_words = set(_content_words(need))
    for w in dict.fromkeys(_content_words(said)):
        if w in text_words:
            out.item.append(w)
            if w not in need_words:
                out.item_beyond_request.append(w)
    out.user = user_references(text, user)
    return out


def user_references(text: str, user: UserContext) -> list[str]:
    """What of the user ``text`` names: history titles (with or without a trailing "(year)"), stated likes,
    content words of the request."""
    said = norm(text)
    need_words = set(_content_words(norm(user.need)))
    out = [
        h.title
        for h in user.history
        if _mentions(said, h.title) or _mentions(said, re.sub(r"\s*\([^()]*\)\s*$", "", h.title))
    ]
    out += [p.value for p in user.liked_attributes if _mentions(said, p.value)]
    out += [w for w in dict.fromkeys(_content_words(said)) if w in need_words]
    return out


def _longest_run(a: list[str], b: list[str]) -> int:
    best = 0
    for i in range(len(a)):
        for j in range(len(b)):
            k = 0
            while i + k < len(a) and j + k < len(b) and a[i + k] == b[j + k]:
                k += 1
            best = max(best, k)
    return best


def echoes_request(text: str, refs: References, user: UserContext) -> bool:
    """Whether ``text`` repeats ``ECHO_RUN``+ words of the request in a row and names nothing of the item the
    request did not already say, nor any liked item."""
    if not user.need.strip() or refs.item_beyond_request:
        return False
    if any(not _mentions(norm(user.need), u) for u in refs.user):
        return False  # names a liked item or a stated like: not only the request
    return _longest_run(_WORD.findall(norm(text)), _WORD.findall(norm(user.need))) >= ECHO_RUN


def false_values(
    text: str, item: CandidateItem, user: UserContext, pool: Sequence[CandidateItem], *, history: bool = True
) -> list[str]:
    """Categorical values of the ``pool`` items (same field kinds as the item's) that ``text`` names although
    the item has none of them in any field and the user did not mention them (request, stated likes, and with
    ``history`` the values of their history items: "like your Comedy favourites" is about the user)."""
    said = norm(text)
    own = {norm(v) for _, v in item_values(item.item.metadata)}
    own_text = norm(item.title) + " " + " ".join(norm(t) for t in item.item.texts.values())
    user_said = norm(user.need) + " " + " ".join(norm(p.value) for p in user.liked_attributes)
    if history:
        user_said += " " + " ".join(norm(v) for h in user.history for _, v in item_values(h.attributes))
    fields = {name for name, _ in item_values(item.item.metadata)}
    vocabulary = {v for other in pool for name, v in item_values(other.item.metadata) if name in fields}
    wrong = []
    for v in sorted(vocabulary):
        n = norm(v)
        if n in own or len(n) < MIN_VALUE_CHARS + 1 or _mentions(own_text, v) or _mentions(user_said, v):
            continue
        if _mentions(said, v):
            wrong.append(v)
    return wrong
