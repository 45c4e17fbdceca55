"""Console rendering shared by the commands (presentation only)."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

from agent.network import redact_url
from agent.settings import Settings


def print_settings(settings: Settings, console: Console | None = None) -> None:
    console = console or Console()
    table = Table("setting", "env variable", "value", "description", title="recagent settings")
    for name, field in type(settings).model_fields.items():
        value = getattr(settings, name)
        if "key" in name and value and value != "EMPTY":
            value = "***"
        elif isinstance(value, str) and "://" in value:
            value = redact_url(value)  # postgresql://user:***@host/db
        shown = str(value)
        if name == "llm_dtype" and value == "auto":
            from agent.llm.dtype import resolve_llm_dtype

            shown = f"auto ({resolve_llm_dtype('auto')} on this machine)"
        table.add_row(name, f"RECAGENT_{name.upper()}", shown, field.description or "")
    console.print(table)


def print_rows(title: str, columns: list[str], rows: list[list[Any]], console: Console | None = None) -> None:
    console = console or Console()
    table = Table(*columns, title=title)
    for row in rows:
        table.add_row(*[str(v) for v in row])
    console.print(table)
