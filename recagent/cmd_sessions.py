"""`recagent sessions export`: the chat sessions as a dialogue log. Thin wiring of :mod:`agent.sessions.log`."""

from __future__ import annotations

from pathlib import Path

import typer

app = typer.Typer(help="Chat sessions: export what users accepted and rejected.", no_args_is_help=True)


@app.command("export")
def export_cmd(
    ctx: typer.Context,
    out: Path = typer.Argument(..., help="JSONL file to write ({dialog_id, mentioned, recommended, rejected})."),
) -> None:
    """Write every session that accepted or rejected something as one line of a dialogue log (the form
    `recagent train dialogue-sources LOG` reads): liked items as mentioned, accepted as recommended."""
    from agent.sessions import open_session_store
    from agent.sessions.log import iter_sessions, session_log, write_log_jsonl

    store = open_session_store(ctx.find_root().obj.settings)
    try:
        log = session_log(iter_sessions(store))
    finally:
        store.close()
    lines = write_log_jsonl(log, out)
    r = log.report
    typer.echo(f"{r.dialogues} sessions read, {lines} written to {out}, {r.skipped} without accepted or rejected items")
