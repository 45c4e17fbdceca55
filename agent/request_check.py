"""What a request named that the catalog or the log does not know: warnings instead of silent fallbacks.

An unknown user, unknown liked/disliked item ids, and filters no item matches (an unknown field, an impossible
range) are reported in ``Recommendation.warnings`` (terminal output and ``--json``), so a popularity list is never
mistaken for a personal one and an empty table says why it is empty.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from retrieval.types import Constraints

if TYPE_CHECKING:
    from retrieval.interactions import Interactions
    from retrieval.store import ItemCollection
    from retrieval.types import UserQuery


def _shown(ids: list[str], limit: int = 5) -> str:
    more = f" and {len(ids) - limit} more" if len(ids) > limit else ""
    return ", ".join(repr(i) for i in ids[:limit]) + more


def request_warnings(
    query: UserQuery, given_history: bool, collection: ItemCollection, interactions: Interactions | None
) -> list[str]:
    """Warnings about the user and the item ids of one request (before retrieval)."""
    out: list[str] = []
    if query.user_id is not None and not given_history and interactions is not None and not query.history:
        rest = "the request's other signals" if (query.need or query.liked) else "popularity alone"
        out.append(
            f"unknown user {query.user_id!r}: the interaction log has no interaction of this user, so the list "
            f"is not personal (it comes from {rest}); check the user id or RECAGENT_INTERACTIONS"
        )
    named = list(dict.fromkeys([*query.liked, *query.disliked]))
    if named:
        known = collection.get_metadata(named)
        missing = [i for i in named if i not in known]
        if missing:
            out.append(
                f"unknown item id(s) {_shown(missing)}: not in collection {collection.name!r}, ignored; "
                "give ids of the ingested catalog"
            )
    return out


def _bound(value: float | None) -> str:
    return "" if value is None else f"{value:g}"


def _parts(c: Constraints) -> list[tuple[str, str, Constraints]]:
    """(field, description, constraints on that field alone) per filtered field."""
    out: list[tuple[str, str, Constraints]] = []
    if c.include_genres or c.exclude_genres:
        only = Constraints(include_genres=c.include_genres, exclude_genres=c.exclude_genres,
                           genre_match=c.genre_match, genre_field=c.genre_field)  # fmt: skip
        out.append((c.genre_field, f"{c.genre_field} filter", only))
    if c.year_min is not None or c.year_max is not None:
        only = Constraints(year_min=c.year_min, year_max=c.year_max, year_field=c.year_field)
        out.append((c.year_field, f"{c.year_field} {_bound(c.year_min)}..{_bound(c.year_max)}", only))
    for key, rng in c.ranges.items():
        out.append((key, f"{key} {_bound(rng.min)}..{_bound(rng.max)}", Constraints(ranges={key: rng})))
    for key, value in c.equals.items():
        out.append((key, f"{key}={value}", Constraints(equals={key: value})))
    return out


def empty_result_warnings(constraints: Constraints, collection: ItemCollection) -> list[str]:
    """Why a filtered request found nothing: each filter no item matches (naming unknown fields), or the
    combination. Called only when the result is empty, so a normal request pays nothing."""
    if constraints.is_empty():
        return []
    fields = collection.field_names()
    out: list[str] = []
    for field, text, only in _parts(constraints):
        where = only.to_where()
        if where is None or collection.ids(where):
            continue
        if field not in fields:
            known = ", ".join(sorted(fields)) or "none"
            out.append(f"filter {text!r}: no item has a field {field!r} (fields: {known})")
        else:
            out.append(f"filter {text!r}: no item of collection {collection.name!r} matches it")
    if not out and not collection.ids(constraints.to_where()):
        out.append("no item matches all the filters together; drop or widen one of them")
    return out
