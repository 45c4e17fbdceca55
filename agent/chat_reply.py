"""Chat reply texts: the check an LLM-written reply must pass, and the template replies used otherwise.

A reply is shown next to the structured list, so it must agree with it: an LLM reply is kept only when it names
every recommended title, names no other title of the catalog, carries no prompt residue (delimiters, headings)
and echoes no identifier-like word of the user's message that the items do not have (an injected id). Otherwise
the template reply is used: it names every title, in order, and the constraints in force; it quotes nothing the user
wrote unless that text names no title outside the list.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING

from agent.chat_catalog import CatalogIndex, norm_tokens, tokenize
from agent.preferences import describe_constraints
from agent.sessions import Preferences

if TYPE_CHECKING:
    from agent.pipeline import RecommendedItem

__all__ = ["check_reply", "clarifying_reply", "clean_reply", "template_reply"]

_YEAR_TAIL = re.compile(r"\s*\(\s*\d{4}[^()]*\)\s*$")
_RESIDUE = re.compile(r"<<<|>>>|^\s*#|\b(?:User|Assistant|System):", re.MULTILINE)
_SENTENCE = re.compile(r"(?<=[.!?])\s+")
MAX_SENTENCES = 5
MAX_CHARS = 900


def _join(values: Sequence[str]) -> str:
    values = list(values)
    if len(values) <= 1:
        return "".join(values)
    return ", ".join(values[:-1]) + " and " + values[-1]


def clean_reply(text: str) -> str:
    """The reply as shown: whitespace collapsed, cut at the first prompt residue, at most a few sentences."""
    text = text.strip()
    residue = _RESIDUE.search(text)
    if residue is not None:
        text = text[: residue.start()]
    text = " ".join(text.split())
    sentences = _SENTENCE.split(text)[:MAX_SENTENCES]
    text = " ".join(sentences)
    return text if len(text) <= MAX_CHARS else text[: MAX_CHARS - 1].rsplit(" ", 1)[0] + "…"


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
    text: str, items: Sequence[RecommendedItem], index: CatalogIndex | None, message: str
) -> tuple[bool, str]:
    """``(ok, why)`` for an LLM-written reply (already :func:`clean_reply`-ed)."""
    if not text.strip():
        return False, "empty"
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
    rules = describe_constraints(prefs)
    noted = f"Noted: {'; '.join(rules)}. " if rules else ""
    field = f"a {index.list_field.rstrip('s')}" if index is not None and index.list_field else "a kind of thing"
    return (
        f"{noted}What are you in the mood for? Tell me about something you liked, or describe what you want: "
        f"{field}{examples}, a period, a mood."
    )
