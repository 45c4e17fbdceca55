"""`recagent chat`: a terminal chat over the conversation layer. Thin wiring only."""

from __future__ import annotations

import sys

import typer
from rich.console import Console

app = typer.Typer()

QUIT = {"/quit", "/exit", "/q"}


@app.command("chat")
def chat(
    ctx: typer.Context,
    session: str | None = typer.Option(None, "--session", help="Resume this session id (printed at the start)."),
    user: str | None = typer.Option(None, "--user", help="User id (history from RECAGENT_INTERACTIONS)."),
    collection: str | None = typer.Option(None, help="Collection (catalog) to recommend from."),
) -> None:
    """Chat about what you want; each answer lists items with their justifications. /quit ends the chat."""
    from rich.markup import escape

    from agent.chat.conversation import Conversation
    from agent.errors import InputError
    from agent.pipeline import Recommender
    from agent.sessions import open_session_store
    from recagent.chat_console import show_turn

    settings = ctx.find_root().obj.settings
    console = Console(highlight=False, soft_wrap=not sys.stdout.isatty())
    store = open_session_store(settings)
    recommender = Recommender(settings, collection=collection)
    conv = Conversation(recommender, store, settings)
    try:
        if session:
            state = conv.get(session)
            console.print(f"[bold]session[/] {state.session_id} (resumed, {len(state.turns)} turns)")
            for turn in state.turns[-2:]:
                who = "you" if turn.role == "user" else "recagent"
                console.print(f"[dim]{who}: {escape(turn.content)}[/]")
        else:
            state = conv.start(user)
            console.print(f"[bold]session[/] {state.session_id}  (resume with --session {state.session_id})")
        console.print("Tell me what you are looking for; /quit to leave.")
        interactive = sys.stdin.isatty()
        while True:
            try:
                line = console.input("[bold cyan]you>[/] ") if interactive else sys.stdin.readline()
            except EOFError:
                break
            if not interactive and line == "":
                break
            message = line.strip()
            if not message:
                continue
            if message.lower() in QUIT:
                break
            if not interactive:
                console.print(f"[bold cyan]you>[/] {escape(message)}")
            try:  # the reply is shown as the engine decodes it, then the items
                show_turn(conv.stream(state.session_id, message, raise_errors=True), console)
            except InputError as exc:
                console.print(f"[yellow]{escape(exc.message)}[/] {escape(exc.hint)}")
                continue
        console.print(f"bye - resume with: recagent chat --session {state.session_id}")
    finally:
        store.close()
        recommender.close()
