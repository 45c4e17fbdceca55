"""Values JSON can carry but a catalog cannot store: lone surrogates and NaN/Infinity.

``json.loads`` turns ``"\\ud800"`` into a str holding a lone surrogate (not encodable as UTF-8: it breaks pydantic,
the store's content hash and every printer) and ``NaN`` / ``Infinity`` / ``1e400`` into non-finite floats (an item
id ``nan``). The catalog cleaner asks :func:`row_problem` first (a bad id, title or any surrogate rejects the row),
then :func:`drop_non_finite` (a non-finite value elsewhere is dropped, and counted).
"""

from __future__ import annotations

import math
import re
from typing import Any

_SURROGATE = re.compile("[\ud800-\udfff]")


def has_surrogate(value: Any) -> bool:
    """True when ``value`` (a str, or a list/dict holding strs at any depth, keys included) has a lone surrogate."""
    if isinstance(value, str):
        return _SURROGATE.search(value) is not None
    if isinstance(value, list):
        return any(has_surrogate(v) for v in value)
    if isinstance(value, dict):
        return any(has_surrogate(k) or has_surrogate(v) for k, v in value.items())
    return False


def is_non_finite(value: Any) -> bool:
    return isinstance(value, float) and not math.isfinite(value)


def row_problem(record: dict[str, Any], id_field: str, title_field: str) -> tuple[str, str] | None:
    """``(reason, detail)`` when the row must be rejected, else None. ``detail`` is printable ASCII."""
    for key, value in record.items():
        if has_surrogate(key) or has_surrogate(value):
            return "lone_surrogate", f"field {key!a} holds a lone surrogate (invalid Unicode): {ascii(value)[:60]}"
    for key in (id_field, title_field):
        if is_non_finite(record.get(key)):
            return "non_finite_number", f"{key!r} is {record[key]!r} (NaN/Infinity is no id or title)"
    return None


def drop_non_finite(record: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """``record`` without NaN/Infinity values (top level and inside lists), and the field name per dropped value."""
    out: dict[str, Any] = {}
    dropped: list[str] = []
    for key, value in record.items():
        if is_non_finite(value):
            dropped.append(key)
            continue
        if isinstance(value, list) and any(is_non_finite(v) for v in value):
            dropped += [key] * sum(is_non_finite(v) for v in value)
            value = [v for v in value if not is_non_finite(v)]
        out[key] = value
    return out, dropped
