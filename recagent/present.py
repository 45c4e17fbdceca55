"""Terminal rendering of recommendations (rich), shared by the CLI, the demo and the terminal chat."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.table import Table

if TYPE_CHECKING:
    from agent.later import JustificationEvent
    from agent.pipeline import Recommendation


def _short(value: Any, limit: int = 60) -> str:
    text = ", ".join(map(str, value)) if isinstance(value, list) else str(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


PENDING_MARK = "(pending)"


def _why(item: Any) -> str:
    from rich.markup import escape

    why = escape(item.justification or "")
    if "justification_pending" in item.flags:
        return why + f" [dim]{PENDING_MARK}[/]"
    if item.grounded is False or "template_justification" in item.flags:
        why += " [dim](template)[/]"
    return why


def recommendation_table(result: Recommendation, *, title: str = "") -> Table:
    from rich.markup import escape

    table = Table("#", "item", "about", "why", "sources", title=title or f"recommendations ({result.strategy})")
    for item in result.items:
        about = "; ".join(f"{k}: {_short(v)}" for k, v in list(item.metadata.items())[:3])
        sources = ", ".join(f"{name}#{hit.rank}" for name, hit in item.sources.items())
        table.add_row(str(item.rank), escape(item.title), escape(about), _why(item), sources)
    return table


def print_recommendation(result: Recommendation, console: Console | None = None, *, title: str = "") -> None:
    console = console or Console()
    console.print(recommendation_table(result, title=title))
    print_facts(result, console)


def print_facts(result: Recommendation, console: Console) -> None:
    from rich.markup import escape

    facts = [
        f"{result.candidates} candidates",
        f"model {result.model}" if result.model else "no LLM",
        f"{result.prompt_tokens} prompt / {result.completion_tokens} completion tokens",
        f"{result.timings_ms.get('total_batch', 0) / 1000:.1f}s",
    ]
    if "justify_later" in result.timings_ms:
        facts.append(f"justifications +{result.timings_ms['justify_later'] / 1000:.1f}s")
    if result.sources:
        facts.append("sources: " + ", ".join(result.sources))
    if result.fallback_reason:
        facts.append(f"[yellow]fallback: {escape(result.fallback_reason)}[/]")
    if result.dialogue_log:
        facts.append(escape(result.dialogue_log))
    console.print("  " + " | ".join(facts))
    for warning in result.warnings:
        console.print(f"[yellow]warning:[/] {escape(warning)}", highlight=False)


def justification_line(event: JustificationEvent, title: str) -> str:
    """One filled-in justification as a plain line (non-terminal output)."""
    kind: str = event.justification_source or "none"
    if event.grounded:
        kind += ", grounded"
    tail = f" [{kind}]" if not event.error else f" [{kind}: {event.error}]"
    return f"#{event.rank} {title}: {event.justification or '-'}{tail}"


def print_recommendation_later(
    result: Recommendation, events: Iterator[JustificationEvent], console: Console | None = None
) -> None:
    """The table at once (template reasons marked pending), then each LLM justification as it arrives: on a
    terminal the table is redrawn in place (rich Live); elsewhere the table is printed once, then one plain line
    per justification, then the facts line."""
    from rich.live import Live
    from rich.markup import escape

    console = console or Console()
    titles = {item.item_id: item.title for item in result.items}
    if console.is_terminal:
        with Live(recommendation_table(result), console=console, auto_refresh=False) as live:
            for _ in events:
                live.update(recommendation_table(result), refresh=True)
    else:
        console.print(recommendation_table(result))
        for event in events:
            console.print(escape(justification_line(event, titles[event.item_id])), highlight=False, soft_wrap=True)
    print_facts(result, console)
