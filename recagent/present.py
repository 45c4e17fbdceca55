"""Terminal rendering of recommendations (rich), shared by the CLI, the demo and the terminal chat."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.table import Table

if TYPE_CHECKING:
    from agent.pipeline import Recommendation


def _short(value: Any, limit: int = 60) -> str:
    text = ", ".join(map(str, value)) if isinstance(value, list) else str(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def print_recommendation(result: Recommendation, console: Console | None = None, *, title: str = "") -> None:
    from rich.markup import escape

    console = console or Console()
    table = Table("#", "item", "about", "why", "sources", title=title or f"recommendations ({result.strategy})")
    for item in result.items:
        about = "; ".join(f"{k}: {_short(v)}" for k, v in list(item.metadata.items())[:3])
        why = escape(item.justification or "")
        if item.grounded is False or "template_justification" in item.flags:
            why += " [dim](template)[/]"
        sources = ", ".join(f"{name}#{hit.rank}" for name, hit in item.sources.items())
        table.add_row(str(item.rank), escape(item.title), escape(about), why, sources)
    console.print(table)
    facts = [
        f"{result.candidates} candidates",
        f"model {result.model}" if result.model else "no LLM",
        f"{result.prompt_tokens} prompt / {result.completion_tokens} completion tokens",
        f"{result.timings_ms.get('total_batch', 0) / 1000:.1f}s",
    ]
    if result.sources:
        facts.append("sources: " + ", ".join(result.sources))
    if result.fallback_reason:
        facts.append(f"[yellow]fallback: {escape(result.fallback_reason)}[/]")
    if result.dialogue_log:
        facts.append(escape(result.dialogue_log))
    console.print("  " + " | ".join(facts))
    for warning in result.warnings:
        console.print(f"[yellow]warning:[/] {escape(warning)}", highlight=False)
