"""`recagent recommend`: explainable suggestions for a user id or a free-text request. Thin wiring only."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

app = typer.Typer()


@app.command("recommend")
def recommend(
    ctx: typer.Context,
    user: str | None = typer.Option(None, "--user", help="User id; history comes from RECAGENT_INTERACTIONS."),
    query: str | None = typer.Option(None, "--query", "-q", help="Free-text need, e.g. 'a light comedy'."),
    like: list[str] = typer.Option([], "--like", help="Item id the user likes (repeatable)."),
    dislike: list[str] = typer.Option([], "--dislike", help="Item id never to recommend (repeatable)."),
    filters: list[str] = typer.Option(
        [], "--filter", help="Constraint: genre=Comedy, not-genre=Horror, year>=1990, FIELD<=N (repeatable)."
    ),
    k: int | None = typer.Option(None, "-k", min=1, max=100, help="How many items (default RECAGENT_K)."),
    strategy: str | None = typer.Option(None, help="retrieval, listwise, options, pointwise or learned (no LLM)."),
    collection: str | None = typer.Option(None, help="Collection (catalog) to recommend from."),
    interactions: Path | None = typer.Option(None, help="Interaction log (overrides RECAGENT_INTERACTIONS)."),
    as_json: bool = typer.Option(False, "--json", help="Print the full result as JSON."),
    explain_profile: bool = typer.Option(
        False, "--explain-profile", help="Write the user's taste profile with the LLM and print it."
    ),
    sources: list[str] = typer.Option(
        [], "--source", help="Fusion weight for this request, NAME=W, e.g. profile=1 or generated=1 (repeatable)."
    ),
    later: bool = typer.Option(
        True,
        "--later/--wait",
        help="Show the table at once (template reasons marked pending) and fill in the LLM justifications as they "
        "arrive, or wait for all of them. --json always waits.",
    ),
) -> None:
    """Recommend items with grounded justifications (the same pipeline the chat, the server and eval use)."""
    from agent.errors import InputError
    from agent.filter_syntax import parse_filters
    from agent.pipeline import Recommender, RecommendRequest
    from recagent.options import source_options
    from recagent.present import print_recommendation, print_recommendation_later

    settings = ctx.find_root().obj.settings
    if interactions is not None:
        settings = settings.model_copy(update={"interactions": interactions})
    if not (user or query or like):
        raise InputError("nothing to recommend from", hint="give --user ID, --query TEXT or --like ITEM_ID")
    weights = source_options(sources)
    request = RecommendRequest(
        user_id=user,
        query=query,
        liked=like,
        disliked=dislike,
        constraints=parse_filters(filters),
        k=k or settings.k,
        strategy=strategy,  # type: ignore[arg-type]  # validated by pydantic: a clear error names the choices
        explain_profile=explain_profile,
        source_weights=weights or None,
    )
    recommender = Recommender(settings, collection=collection)
    result = recommender.recommend(request, explain="later" if later and not as_json else "now")
    if as_json:
        typer.echo(result.model_dump_json(indent=2))
    else:
        from rich.markup import escape

        console = Console()
        if result.justifications_pending:
            print_recommendation_later(result, recommender.justify_events(result), console)
        else:
            print_recommendation(result, console)
        if explain_profile or result.profile is not None:
            console.print(f"[bold]profile[/] ({escape(result.profile_note or '')}): {escape(result.profile or '-')}")
        if result.grounding is not None:
            g = result.grounding
            failed = f"; failed: {escape(g.failed)}" if g.failed else ""
            console.print(
                f"[bold]generated[/]: {g.proposed} proposed, {g.grounded} grounded, {g.discarded_no_match} matched "
                f"nothing (discarded), {g.duplicates} duplicates{failed}"
            )
