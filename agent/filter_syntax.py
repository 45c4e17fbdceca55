"""Parse command-line style filters (``genre=Comedy``, ``year>=1990``, ``not-genre=Horror``) into Constraints."""

from __future__ import annotations

import re
from collections.abc import Sequence

from agent.errors import InputError
from retrieval.types import Constraints, NumericRange

_RANGE = re.compile(r"^(?P<field>[A-Za-z_][\w.-]*)\s*(?P<op>>=|<=|>|<)\s*(?P<value>-?\d+(?:\.\d+)?)$")
_EQ = re.compile(r"^(?P<neg>not-)?(?P<field>[A-Za-z_][\w.-]*)\s*=\s*(?P<value>.+)$")
_HINT = "write filters as genre=Comedy, not-genre=Horror, year>=1990, year<=2005, runtime<120 or FIELD=VALUE"


def parse_filters(filters: Sequence[str], *, genre_field: str = "genres", year_field: str = "year") -> Constraints:
    include: list[str] = []
    exclude: list[str] = []
    ranges: dict[str, dict[str, float]] = {}
    equals: dict[str, str | int | float | bool] = {}
    year_min = year_max = None
    for raw in filters:
        text = raw.strip()
        if m := _RANGE.match(text):
            field, op, number = m["field"], m["op"], float(m["value"])
            if field == year_field:  # whole years: > 1990 means from 1991
                year = int(number)
                if op == ">=":
                    year_min = year
                elif op == ">":
                    year_min = year + 1
                elif op == "<=":
                    year_max = year
                else:
                    year_max = year - 1
            elif op.startswith(">"):
                ranges.setdefault(field, {})["min"] = number
            else:
                ranges.setdefault(field, {})["max"] = number
        elif m := _EQ.match(text):
            field, value = m["field"], m["value"].strip()
            if field in ("genre", genre_field):
                (exclude if m["neg"] else include).append(value)
            elif m["neg"]:
                raise InputError(f"filter {raw!r}: not- works with genres only", hint=_HINT)
            else:
                equals[field] = value
        else:
            raise InputError(f"cannot read filter {raw!r}", hint=_HINT)
    try:
        return Constraints(
            include_genres=include,
            exclude_genres=exclude,
            year_min=year_min,
            year_max=year_max,
            ranges={k: NumericRange(**v) for k, v in ranges.items()},
            equals=equals,
            genre_field=genre_field,
            year_field=year_field,
        )
    except ValueError as exc:
        raise InputError(f"contradictory filters {list(filters)}: {exc}", hint=_HINT) from exc
