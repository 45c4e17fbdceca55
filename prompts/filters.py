"""Jinja filters and globals that keep data from turning into instructions.

Every value that comes from a catalog or a user (titles, attributes, reviews, chat messages) goes through
``data`` (or ``as_json``) before it reaches a prompt. ``data``:

* turns the value into text (lists are joined with ", ", mappings become "field: value; ...", None is "");
* removes control and invisible format characters (zero-width spaces, bidi overrides, NUL, ESC ...);
* neutralises our own delimiters: any run of three or more ``<`` / ``>`` (or a look-alike such as ``＜``, ``‹``,
  ``«``) becomes ``<<`` / ``>>``, so a value can never open or close a ``<<<ITEM>>> ... <<<END>>>`` block;
* defuses chat special-token look-alikes (``<|im_start|>``, ``<end_of_turn>``, ``</s>``, ``[INST]`` ...) by turning
  their angle/square brackets into parentheses, and any ``<|`` or ``|>`` left over into ``(|`` / ``|)`` (best effort:
  the engine should also tokenise data without special tokens);
* collapses all whitespace to single spaces, unless ``multiline=true`` (then line breaks are kept, blank-line runs
  are shortened).

Jinja renders a value once and never evaluates its text, so ``{{ 7*7 }}`` inside a title comes out literally; the
filters do not need to (and do not) touch braces.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Mapping
from typing import Any

from core.errors import PromptError

__all__ = ["as_json", "clean_data", "clip", "data", "option_label", "to_text"]

# Characters whose compatibility form is '<', '>' or '|' (NFKC), mapped to ASCII before the other checks.
_COMPAT_MAP = str.maketrans({"\ufe64": "<", "\uff1c": "<", "\ufe65": ">", "\uff1e": ">", "\uff5c": "|"})
# Angle-bracket look-alikes that could imitate a delimiter when repeated.
_LEFT = "<\u2039\u00ab\u02c2\u1438\u27e8\u2329\u3008\u276e\u2770"
_RIGHT = ">\u203a\u00bb\u02c3\u1433\u27e9\u232a\u3009\u276f\u2771"
_LEFT_RUN = re.compile(f"[{_LEFT}]{{3,}}")
_RIGHT_RUN = re.compile(f"[{_RIGHT}]{{3,}}")
# Chat-template special tokens of common model families (ChatML / Llama 3 / Gemma / Llama 2 / sentencepiece).
_SPECIAL_PIPE = re.compile(r"<(\s*\|[^<>\n]{0,64}\|\s*)>")
_SPECIAL_TAG = re.compile(
    r"<(/?(?:s|bos|eos|pad|unk|mask|start_of_turn|end_of_turn|start_of_image|end_of_image|/?SYS))>", re.IGNORECASE
)
_INST = re.compile(r"\[(/?INST)\]", re.IGNORECASE)
_ASCII_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
_INLINE_SPACE = re.compile(r"\s+")
_BLANK_LINES = re.compile(r"\n{3,}")
_LINE_TRAILING = re.compile(r"[ \t]+\n")
_DROPPED_CATEGORIES = frozenset({"Cc", "Cf", "Cs"})


def to_text(value: Any) -> str:
    """Render a variable value as plain text (no cleaning): lists joined by ", ", mappings as "k: v; k: v"."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() and abs(value) < 1e15 else repr(value)
    if isinstance(value, Mapping):
        parts = [f"{to_text(k)}: {to_text(v)}" for k, v in value.items() if v is not None and v != "" and v != []]
        return "; ".join(parts)
    if isinstance(value, list | tuple | set | frozenset):
        items = sorted(value, key=str) if isinstance(value, set | frozenset) else value
        return ", ".join(to_text(v) for v in items if v is not None and v != "")
    dump = getattr(value, "model_dump", None)
    if callable(dump):
        return to_text(dump(mode="json"))
    return str(value)


def _drop_invisible(text: str, *, multiline: bool) -> str:
    if text.isascii():
        return _ASCII_CONTROL.sub("", text)
    keep = "\n\t" if multiline else ""
    return "".join(ch for ch in text if ch in keep or unicodedata.category(ch) not in _DROPPED_CATEGORIES)


def clean_data(value: Any, *, multiline: bool = False) -> str:
    """The ``data`` filter as a Python function (the agent may use it to compare against what the model saw)."""
    text = to_text(value)
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\u2028", "\n").replace("\u2029", "\n")
    if not multiline:
        text = _INLINE_SPACE.sub(" ", text)
    text = _drop_invisible(text, multiline=multiline)
    text = text.translate(_COMPAT_MAP)
    if not multiline:  # again: a dropped control character can leave two spaces side by side ("0 \x1b 0")
        text = _INLINE_SPACE.sub(" ", text)
    text = _LEFT_RUN.sub("<<", text)
    text = _RIGHT_RUN.sub(">>", text)
    text = _SPECIAL_PIPE.sub(r"(\1)", text)
    text = text.replace("<|", "(|").replace("|>", "|)")  # half a token: "<|" alone could still open one
    text = _SPECIAL_TAG.sub(r"(\1)", text)
    text = _INST.sub(r"(\1)", text)
    if multiline:
        text = _LINE_TRAILING.sub("\n", text.replace("\t", "    "))
        text = _BLANK_LINES.sub("\n\n", text)
    return text.strip()


def data(value: Any, multiline: bool = False) -> str:
    """Jinja filter: ``{{ item.title | data }}``, ``{{ item.text | data(multiline=true) | clip(300) }}``."""
    return clean_data(value, multiline=multiline)


def clip(value: Any, limit: int) -> str:
    """Jinja filter: shorten text to at most ``limit`` characters, cutting at a word boundary and adding "…"."""
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise PromptError(
            f"clip() needs a positive whole number of characters, got {limit!r}",
            hint="write the limit as a literal in the template, e.g. {{ item.text | data | clip(300) }}",
        )
    text = to_text(value)
    if len(text) <= limit:
        return text
    if limit == 1:
        return "…"
    cut = text[: limit - 1]
    space = cut.rfind(" ")
    if not text[limit - 1].isspace() and space >= (limit * 2) // 3:  # do not end on half a word
        cut = cut[:space]
    return cut.rstrip(" ,;:.-") + "…"


def as_json(value: Any, compact: bool = False) -> str:
    """Jinja filter: a JSON literal of the value, every string inside cleaned like ``data(multiline=true)``;
    ``as_json(compact=true)`` without spaces after ``,`` and ``:`` (as structured output decodes JSON)."""

    def scrub(v: Any) -> Any:
        if isinstance(v, str):
            return clean_data(v, multiline=True)
        if isinstance(v, Mapping):
            return {clean_data(k): scrub(x) for k, x in v.items()}
        if isinstance(v, list | tuple):
            return [scrub(x) for x in v]
        if isinstance(v, bool | int | float) or v is None:
            return v
        dump = getattr(v, "model_dump", None)
        if callable(dump):
            return scrub(dump(mode="json"))
        return clean_data(v, multiline=True)

    return json.dumps(scrub(value), ensure_ascii=False, separators=(",", ":") if compact else None)


def option_label(index: int) -> str:
    """Jinja global and Python helper: 0 -> "A", 1 -> "B" ... 25 -> "Z" (one token each in common tokenizers)."""
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < 26:
        raise PromptError(
            f"option labels run from A to Z; there is no label for position {index!r}",
            hint="score at most 26 candidates per option prompt: split the candidates into batches of 26 or fewer",
        )
    return chr(ord("A") + index)


FILTERS: dict[str, Any] = {"data": data, "clip": clip, "as_json": as_json}
GLOBALS: dict[str, Any] = {"option_label": option_label}
