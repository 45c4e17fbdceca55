"""The terminal view of one streamed chat turn (``recagent chat``): a spinner while the turn's first stages run, the
reply as it is decoded, the checked reply if it replaces the streamed one, then the items."""

from __future__ import annotations

from collections.abc import Iterable

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.spinner import Spinner
from rich.text import Text

from agent.chat.conversation import ChatEvent, ChatReply
from agent.errors import RecagentError
from recagent.present import print_recommendation

__all__ = ["show_turn"]

PREFIX = ("recagent> ", "bold green")


def _view(reply: Text, note: str | None) -> RenderableType:
    line = Text.assemble(PREFIX, reply)
    return Group(line, Text(note, style="dim")) if note else line


def show_turn(events: Iterable[ChatEvent], console: Console) -> ChatReply:
    """Render the events of :meth:`agent.chat.conversation.Conversation.stream` live and return the turn's
    :class:`ChatReply`. An ``error`` event is raised as a :class:`RecagentError` (the stream is expected to be
    opened with ``raise_errors=True``, which raises the original error instead)."""
    reply = Text()
    note: str | None = None
    final: ChatReply | None = None
    shown, written = 0, 0
    with Live(Spinner("dots", text="thinking..."), console=console, refresh_per_second=12) as live:
        for event in events:
            if event.event == "delta":
                reply.append(str(event.data.get("text", "")))
                live.update(_view(reply, note))
            elif event.event == "replace":
                if reply.plain and event.data.get("reason") not in (None, "cleaned"):
                    note = f"(the streamed reply was replaced: {event.data['reason']})"
                reply = Text(str(event.data.get("text", "")))
                live.update(_view(reply, note))
            elif event.event == "items":
                shown = len(event.data.get("items") or [])
            elif event.event == "justification":  # the table (after the turn) shows them; here: progress
                written += 1
                progress = Text(f"(writing reasons: {written}/{shown})", style="dim")
                live.update(Group(_view(reply, note), progress), refresh=True)
            elif event.event == "done":
                final = ChatReply.model_validate(event.data)
                live.update(_view(Text(final.reply), note))
            elif event.event == "error":
                live.update(Text(""))
                message = str(event.data.get("message") or "the turn failed")
                raise RecagentError(message, hint=str(event.data.get("hint") or ""))
    if not console.is_terminal:
        console.line()  # Live leaves the last line open on a file or pipe
    if final is None:
        raise RecagentError("the chat turn ended without a reply", hint="send the message again")
    if final.recommendation is not None and final.recommendation.items:
        print_recommendation(final.recommendation, console, title=f"turn {final.turn_id}")
    return final
