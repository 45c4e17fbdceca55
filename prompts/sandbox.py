"""The Jinja environment every template renders in: the immutable sandbox with a few extra limits."""

from __future__ import annotations

from typing import Any

from jinja2 import StrictUndefined
from jinja2.exceptions import SecurityError
from jinja2.runtime import Context
from jinja2.sandbox import ImmutableSandboxedEnvironment

from prompts.filters import FILTERS, GLOBALS

__all__ = ["MAX_EXPONENT", "MAX_REPEAT", "PromptSandbox", "make_environment"]

MAX_REPEAT = 100_000
MAX_EXPONENT = 100


class PromptSandbox(ImmutableSandboxedEnvironment):
    """Jinja's immutable sandbox, plus limits on ``*`` and ``**`` so a template cannot exhaust memory or CPU."""

    intercepted_binops = frozenset({"*", "**"})

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        if operator == "**" and isinstance(right, int | float) and abs(right) > MAX_EXPONENT:
            raise SecurityError(f"exponent {right} is larger than {MAX_EXPONENT}")
        if operator == "*":
            for seq, times in ((left, right), (right, left)):
                if isinstance(seq, str | list | tuple) and isinstance(times, int) and len(seq) * times > MAX_REPEAT:
                    raise SecurityError(f"repeating a sequence to more than {MAX_REPEAT} elements")
        return super().call_binop(context, operator, left, right)


def make_environment() -> ImmutableSandboxedEnvironment:
    """The one Jinja environment every template renders in: sandboxed, immutable, strict, no autoescape, no loader."""
    env = PromptSandbox(
        undefined=StrictUndefined,
        autoescape=False,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(FILTERS)
    env.globals.update(GLOBALS)
    env.globals.pop("lipsum", None)
    return env
