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
    strategy: str | None = typer.Option(None, help="retrieval, listwise, options or pointwise."),
    collection: str | None = typer.Option(None, help="Collection (catalog) to recommend from."),
    interactions: Path | None = typer.Option(None, help="Interaction log (overrides RECAGENT_INTERACTIONS)."),
    as_json: bool = typer.Option(False, "--json", help="Print the full result as JSON."),
) -> None:
    """Recommend items with grounded justifications (the same pipeline the chat, the server and eval use)."""
    from agent.errors import InputError
    from agent.filters import parse_filters
    from agent.pipeline import Recommender, RecommendRequest
    from agent.present import print_recommendation

    settings = ctx.find_root().obj.settings
    if interactions is not None:
        settings = settings.model_copy(update={"interactions": interactions})
    if not (user or query or like):
        raise InputError("nothing to recommend from", hint="give --user ID, --query TEXT or --like ITEM_ID")
    request = RecommendRequest(
        user_id=user,
        query=query,
        liked=like,
        disliked=dislike,
        constraints=parse_filters(filters),
        k=k or settings.k,
        strategy=strategy,  # type: ignore[arg-type]  # validated by pydantic: a clear error names the choices
    )
    recommender = Recommender(settings, collection=collection)
    result = recommender.recommend(request)
    if as_json:
        typer.echo(result.model_dump_json(indent=2))
    else:
        print_recommendation(result, Console())
