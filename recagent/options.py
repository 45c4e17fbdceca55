"""Parsing of repeatable NAME=VALUE command-line options into validated values (errors say how to fix them)."""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import ValidationError

from agent.errors import InputError
from retrieval.config import check_source_weights, source_weights_hint


def source_options(specs: Sequence[str]) -> dict[str, float]:
    """``--source NAME=W`` options -> fusion weights, checked like every other place that takes fusion weights."""
    raw: dict[str, str] = {}
    for spec in specs:
        name, eq, value = spec.partition("=")
        if not eq or not name.strip():
            raise InputError(
                f"--source {spec!r} is not NAME=WEIGHT", hint=f"e.g. --source profile=1; {source_weights_hint()}"
            )
        raw[name.strip()] = value.strip()
    try:
        return check_source_weights(raw)
    except ValueError as exc:
        raise InputError(f"--source: {exc}", hint=f"e.g. --source profile=1; {source_weights_hint()}") from exc


def validation_hint(exc: ValidationError) -> str:
    """A "how to fix" line for a pydantic error about command-line values: the allowed choices where known."""
    fixes = []
    for err in exc.errors():
        name = str(err["loc"][-1]) if err["loc"] else "the value"
        expected = (err.get("ctx") or {}).get("expected")
        if expected:
            fixes.append(f"{name}: use one of {expected}")
    if fixes:
        return "; ".join(fixes)
    return "give values of the types and ranges named above (`recagent COMMAND --help` lists every option)"
