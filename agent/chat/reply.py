"""Chat reply texts: the check an LLM-written reply must pass, and the template replies used otherwise.

A reply is shown next to the structured list, so it must agree with it: an LLM reply is kept only when it names
every recommended title, names no other title of the catalog, carries no prompt residue (delimiters, headings)
and echoes no identifier-like word of the user's message that the items do not have (an injected id). Otherwise
the template reply is used: it names every title, in order, and the constraints in force; it quotes nothing the user
wrote unless that text names no title outside the list.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

from agent.chat.avoid import describe_avoidances
from agent.chat.catalog import CatalogIndex, norm_tokens, tokenize
from agent.chat.preferences import describe_constraints
from agent.explain import instruction_text, quotes_prompt
from agent.sentence_check import broken_text
from agent.sessions import Preferences
from prompts import clean_data

if TYPE_CHECKING:
    from agent.pipeline import RecommendedItem
    from prompts import PromptRegistry

__all__ = [
    "REPLY_STOP",
    "REPLY_TEMPLATE",
    "Exchange",
    "ReplyShaper",
    "check_reply",
    "clarifying_reply",
    "clean_reply",
    "reply_examples",
    "reply_instructions",
    "reply_item",
    "reply_messages",
    "reply_text",
    "template_reply",
]

REPLY_TEMPLATE = "chat_reply"

_YEAR_TAIL = re.compile(r"\s*\(\s*\d{4}[^()]*\)\s*$")
_RESIDUE = re.compile(r"<<<|>>>|^\s*#|\b(?:User|Assistant|System):", re.MULTILINE)
_SENTENCE = re.compile(r"(?<=[.!?])\s+")
MAX_SENTENCES = 5
MAX_CHARS = 900
_NEAR_LIMIT = 200
REPLY_STOP = ("User:", "Assistant:", "System:", "<<<", ">>>")
"""Stop strings for a streamed reply: where a base model starts writing the next turn or a data block, which
:func:`clean_reply` would cut anyway; stopping there keeps that text off the user's screen."""


class Exchange(NamedTuple):
    """One earlier turn of a session as the reply prompt shows it: the user's message, the items shown for it
    (:func:`reply_item` form) and the reply that was sent."""

    message: str
    items: list[dict[str, Any]]
    reply: str


REPLY_FIELDS = 3
"""Catalog fields an item shows in the reply prompt (its first ones: the catalog's own order)."""
REPLY_VALUES = 3
"""Values a list field shows there (the first ones)."""
REPLY_VALUE_CHARS = 40
"""Characters a text value shows there."""


def reply_item(title: str, metadata: Mapping[str, Any]) -> dict[str, Any]:
    """An item as the reply prompt shows it: its title and a short line of key details - its first
    :data:`REPLY_FIELDS` catalog fields, a list field's first :data:`REPLY_VALUES` values, a text value's first
    :data:`REPLY_VALUE_CHARS` characters. Read from what the catalog holds for its id, so an earlier turn's items
    render the same on every later turn. Short because every turn's items are new to the engine's prefix cache
    (they are most of what a turn adds to the prompt); the reply needs a few facts per title, not the whole record."""
    details: dict[str, Any] = {}
    for name, value in list(metadata.items())[:REPLY_FIELDS]:
        if isinstance(value, (list, tuple)):
            value = [v for v in value if v is not None and v != ""][:REPLY_VALUES]
        elif isinstance(value, str) and len(value) > REPLY_VALUE_CHARS:
            value = value[: REPLY_VALUE_CHARS - 1].rsplit(" ", 1)[0] + "…"
        if value is not None and value != "" and value != []:
            details[str(name)] = value
    return {"title": title, "attributes": details}


def reply_messages(
    registry: PromptRegistry, earlier: Sequence[Exchange], message: str, items: Sequence[Mapping[str, Any]]
) -> list[dict[str, str]]:
    """The reply prompt as an append-only transcript: the ``chat_reply`` template's system message, then per earlier
    exchange its user message (message and items) and its reply as sent, then the turn being answered. Each part is
    rendered from what the session stores for its turn alone, so a session's next prompt starts with this one
    (followed by this turn's reply) byte for byte while the history window stays put. An exchange whose rendering
    is not one user and one assistant message is left out (the roles must alternate)."""
    final = registry.render(REPLY_TEMPLATE, {"message": message, "items": list(items)}).chat_messages()
    head = [m for m in final if m["role"] == "system"]
    body: list[dict[str, str]] = []
    for ex in earlier:
        turn = registry.render(REPLY_TEMPLATE, {"message": ex.message, "items": ex.items, "reply": ex.reply})
        parts = [m for m in turn.chat_messages() if m["role"] != "system"]
        if [m["role"] for m in parts] == ["user", "assistant"]:
            body += parts
    return head + body + [m for m in final if m["role"] != "system"]


def reply_text(
    registry: PromptRegistry,
    examples: Sequence[Exchange],
    earlier: Sequence[Exchange],
    message: str,
    items: Sequence[Mapping[str, Any]],
) -> str:
    """The reply prompt in the ``chat_reply`` template's few-shot layout (base models): plain text - a header, the
    worked ``examples`` (:func:`reply_examples`: the same for every prompt of a collection), each earlier exchange
    with the reply as sent, then the turn being answered, open after "Assistant:". Append-only like
    :func:`reply_messages`: every turn renders from its own stored data, so the next prompt starts with this text
    followed by " " and this turn's reply."""
    variables = {
        "examples": [ex._asdict() for ex in examples],
        "history": [ex._asdict() for ex in earlier],
        "message": message,
        "items": list(items),
    }
    return registry.render(REPLY_TEMPLATE, variables, layout="fewshot").text


def reply_instructions(prompt: str | Sequence[dict[str, str]]) -> str:
    """What a reply must not recite: the instructions of a chat-layout prompt (system message, task part), or of a
    few-shot prompt its header line. Not the worked replies: a base model is meant to reuse their phrasing ("X is a
    good place to start, with ..."), and one that copies their titles names titles outside the list, which the
    reply check refuses on its own."""
    if isinstance(prompt, str):
        return prompt.split("\n\n", 1)[0]
    return instruction_text(prompt)


EXAMPLE_ITEMS = 3
"""Items per worked example of the few-shot reply layout."""


def _example_value(item: Mapping[str, Any]) -> str:
    """A short phrase of an item's own details for a worked reply ("Adventure and Animation", "1995")."""
    details = item.get("attributes") or {}
    for value in details.values():
        if isinstance(value, list) and value:
            return _join([str(v) for v in value[:2]])
    for value in details.values():
        if value not in (None, "", []):
            return str(value)
    return ""


def _example_reply(items: Sequence[Mapping[str, Any]]) -> str:
    """A worked reply in the shape the check wants: every title as written, in order, with its own details."""
    parts = []
    for n, it in enumerate(items):
        value = _example_value(it)
        title = str(it["title"])
        if n == 0:
            parts.append(f"{title} is a good place to start" + (f", with {value}." if value else "."))
        elif n == len(items) - 1:
            parts.append(f"And {title}" + (f" has {value}." if value else " is worth a look."))
        else:
            parts.append(f"{title}" + (f" brings {value}." if value else " is another option."))
    return " ".join(parts) + " Tell me which ones you like, or what to change."


def reply_examples(index: CatalogIndex, n: int, per: int = EXAMPLE_ITEMS) -> list[Exchange]:
    """``n`` worked turns for the few-shot reply layout, built from the collection's own items (generic: no text
    of a particular dataset): the first items of the catalog's index with clean titles and details, ``per`` to a
    turn; the first turn asks for one of its first item's values, the second for more like a catalog item not
    shown. Deterministic for a collection, so every prompt of every session starts with the same text (the
    engine's prefix cache serves it)."""
    pool: list[dict[str, Any]] = []
    for item_id, title in index.title_of.items():
        if len(pool) >= n * per + 1:
            break
        item = reply_item(title, index.metadata.get(item_id, {}))
        if item["attributes"] and broken_text(clean_data(title)) is None and _example_value(item):
            pool.append(item)
    out: list[Exchange] = []
    for k in range(n):
        items = pool[k * per : (k + 1) * per]
        if len(items) < per:
            break
        if k % 2 == 0 or len(pool) <= n * per:
            message = f"something with {_example_value(items[0]).split(' and ')[0]}"
        else:
            message = f"more like {pool[n * per]['title']}"
        out.append(Exchange(message, items, _example_reply(items)))
    return out


def _join(values: Sequence[str]) -> str:
    values = list(values)
    if len(values) <= 1:
        return "".join(values)
    return ", ".join(values[:-1]) + " and " + values[-1]


def clean_reply(text: str) -> str:
    """The reply as shown: whitespace collapsed, cut at the first prompt residue, at most a few sentences."""
    return _clean(text)[0]


def _clean(text: str) -> tuple[str, bool]:
    """:func:`clean_reply`'s text, and whether more text after ``text`` could no longer change it (it was cut)."""
    text = text.strip()
    residue = _RESIDUE.search(text)
    if residue is not None:
        text = text[: residue.start()]
    text = " ".join(text.split())
    sentences = _SENTENCE.split(text)
    cut = residue is not None or len(sentences) > MAX_SENTENCES
    text = " ".join(sentences[:MAX_SENTENCES])
    if len(text) <= MAX_CHARS:
        return text, cut
    return text[: MAX_CHARS - 1].rsplit(" ", 1)[0] + "…", True


class ReplyShaper:
    """Turns a reply's raw text deltas into the deltas a user sees while it streams: the text shown is always
    :func:`clean_reply` of the raw text so far (whitespace collapsed, nothing after prompt residue or past the
    sentence limit), so the streamed deltas add up to the cleaned reply. :attr:`complete` turns True once more raw
    text could not change the cleaned reply (the caller may stop the engine). :attr:`consistent` turns False in the
    rare case where the cleaned text stops extending what was already shown (e.g. a residue marker split across
    deltas); the caller then replaces the shown text with the final one."""

    def __init__(self) -> None:
        self.raw = ""
        self.shown = ""
        self.complete = False
        self.consistent = True

    @property
    def text(self) -> str:
        """The cleaned reply of all raw text fed so far."""
        return clean_reply(self.raw)

    def feed(self, delta: str) -> str:
        """Add raw text; return the new text to show (may be empty)."""
        if self.complete or not self.consistent:
            self.raw += delta
            return ""
        self.raw += delta
        cleaned, self.complete = _clean(self.raw)
        if not self.complete and len(cleaned) > MAX_CHARS - _NEAR_LIMIT:
            # near the length limit the cut drops the last word: show complete words only
            cleaned = cleaned[: max(cleaned.rfind(" "), len(self.shown))]
        if not cleaned.startswith(self.shown):
            self.consistent = False
            return ""
        new, self.shown = cleaned[len(self.shown) :], cleaned
        return new


def _names(text_tokens: tuple[str, ...], title: str) -> bool:
    """Whether the tokens contain the title (with or without its year) as a run of words."""
    for form in {norm_tokens(title), norm_tokens(_YEAR_TAIL.sub("", title))}:
        n = len(form)
        if n and any(text_tokens[i : i + n] == form for i in range(len(text_tokens) - n + 1)):
            return True
    return False


def _identifiers(text: str) -> set[str]:
    """Words that look like ids: letters and digits mixed, or long digit runs."""
    out = set()
    for t in tokenize(text):
        w = t.text
        if len(w) >= 4 and any(c.isdigit() for c in w) and (any(c.isalpha() for c in w) or len(w) >= 6):
            out.add(w)
    return out


def check_reply(
    text: str, items: Sequence[RecommendedItem], index: CatalogIndex | None, message: str, instructions: str = ""
) -> tuple[bool, str]:
    """``(ok, why)`` for an LLM-written reply (already :func:`clean_reply`-ed); ``instructions`` are the prompt's
    instructions (:func:`agent.explain.instruction_text`), which a reply must not recite."""
    if not text.strip():
        return False, "empty"
    if quotes_prompt(text, instructions):
        return False, "quotes the prompt's instructions"
    tokens = tuple(t.text for t in tokenize(text))
    missing = [it.title for it in items if not _names(tokens, it.title)]
    if missing:
        return False, f"does not name {len(missing)} of the titles"
    ours = {it.item_id for it in items}
    if index is not None:
        others = [m for m in index.find(tokenize(text), known_ids=list(ours)) if m.kind == "title"]
        foreign = [m for m in others if not set(m.ids) & ours]
        if foreign:
            return False, "names a title that is not in the list"
    allowed = set().union(*(_identifiers(f"{it.title} {it.item_id} {it.metadata}") for it in items)) if items else set()
    echoed = (_identifiers(message) - allowed) & _identifiers(text)
    if echoed:
        return False, "echoes an identifier from the message"
    return True, "ok"


def _need_phrase(prefs: Preferences, items: Sequence[RecommendedItem], index: CatalogIndex | None) -> str:
    need = (prefs.need or "").strip()
    if not need or len(need) > 120:
        return ""
    if index is not None:
        ours = {it.item_id for it in items}
        if any(m.kind == "title" and not set(m.ids) <= ours for m in index.find(tokenize(need), known_ids=[])):
            return ""  # the need names a title outside the list: do not repeat it
    if _RESIDUE.search(need) or any(c in need for c in "<>{}[]"):
        return ""
    if any(unicodedata.category(c) in ("Cc", "Cf") for c in need):
        return ""  # control or invisible format characters (bidi overrides, zero-width spaces): do not echo them
    return f' for "{need}"'


def template_reply(items: Sequence[RecommendedItem], prefs: Preferences, index: CatalogIndex | None) -> str:
    """Names every title in order, and the constraints in force."""
    rules = describe_constraints(prefs)
    kept = f" Keeping to: {'; '.join(rules)}." if rules else ""
    if not items:
        return (
            "I could not find anything new that matches all of that." + kept + " Try relaxing a constraint, or "
            "describe what you want in other words."
        )
    n = len(items)
    head = f"Here {'is one suggestion' if n == 1 else f'are {n} suggestions'}{_need_phrase(prefs, items, index)}: "
    return head + _join([it.title for it in items]) + "." + kept + " Tell me which ones you like, or what to change."


def clarifying_reply(prefs: Preferences, index: CatalogIndex | None) -> str:
    """A question for a request that gives nothing to recommend from."""
    examples = ""
    if index is not None and index.list_field:
        values = index.top_values(index.list_field, 4)
        if values:
            examples = f" (for example {_join(values)})"
    rules = describe_constraints(prefs) + describe_avoidances(prefs.avoid)
    noted = f"Noted: {'; '.join(rules)}. " if rules else ""
    field = f"a {index.list_field.rstrip('s')}" if index is not None and index.list_field else "a kind of thing"
    return (
        f"{noted}What are you in the mood for? Tell me about something you liked, or describe what you want: "
        f"{field}{examples}, a period, a mood."
    )


def which_one_reply(ambiguous: Sequence[Sequence[str]], index: CatalogIndex) -> str:
    """A question for loosely typed titles that fit several catalog items: which one was meant."""
    questions = []
    for ids in ambiguous:
        titles = [index.title_of.get(i, i) for i in ids[:5]]
        questions.append(", ".join(titles[:-1]) + f" or {titles[-1]}" if len(titles) > 1 else titles[0])
    return "Which one do you mean: " + "? Or: ".join(questions) + "? Type the title with its year."
