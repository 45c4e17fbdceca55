"""What `make demo` shows: the bundled model generating text, and a structured output constrained to a candidate
list. (Later steps of the pipeline extend this with ingest and explainable recommendations.)"""

from __future__ import annotations

import time
from pathlib import Path

from rich.console import Console
from rich.panel import Panel

from agent.errors import InputError
from agent.llm import create_engine
from agent.settings import Settings


def candidate_ranking_schema(ids: list[str], k: int) -> dict[str, object]:
    return {
        "type": "object",
        "properties": {
            "ranking": {
                "type": "array",
                "items": {"type": "string", "enum": ids},
                "minItems": k,
                "maxItems": k,
            }
        },
        "required": ["ranking"],
        "additionalProperties": False,
    }


DEMO_DATA = Path(__file__).resolve().parents[1] / "data" / "movielens-latest-small"
DEMO_COLLECTION = "movielens-demo"
DEMO_USER = "414"


def run_demo(settings: Settings, console: Console) -> None:
    """Ingest the bundled MovieLens catalog, then explainable suggestions for a sample user and a free-text
    request, and the engine's constrained structured output."""
    from agent.pipeline import Recommender, RecommendRequest
    from recagent.present import print_recommendation
    from retrieval.ingest import ingest
    from retrieval.types import Constraints

    if not (DEMO_DATA / "movies.csv").is_file():
        raise InputError(
            f"the bundled demo catalog is missing ({DEMO_DATA})", hint="run the demo from a checkout of recagent"
        )
    settings = settings.model_copy(update={"interactions": DEMO_DATA / "ratings.csv"})
    console.rule("[bold]1. catalog -> Chroma")
    report = ingest(
        DEMO_DATA,
        store_config=settings.store_config(),
        embed_config=settings.embed_config(),
        collection=DEMO_COLLECTION,
        clean=settings.clean_config(),
    )
    stats = report.store
    console.print(
        f"{report.rows_read} movies read, {report.accepted} accepted, {report.rejected} rejected; "
        f"embedded {stats.embedded if stats else 0} (unchanged {stats.unchanged if stats else 0}) in "
        f"{report.seconds:.0f}s"
    )

    console.rule("[bold]2. the LLM engine")
    started = time.perf_counter()
    engine = create_engine(settings)
    console.print(f"engine ready in {time.perf_counter() - started:.0f}s: {engine.describe()}")
    recommender = Recommender(settings, engine=engine, collection=DEMO_COLLECTION)

    console.rule(f"[bold]3. suggestions for user {DEMO_USER} (history from the ratings log)")
    history = recommender.interactions.history(DEMO_USER) if recommender.interactions else []
    liked = [h.item_id for h in history if (h.rating or 0) >= 4.5][-5:]
    titles = recommender.collection.get_items(liked)
    console.print("recently loved: " + "; ".join(titles[i].title for i in liked if i in titles))
    result = recommender.recommend(RecommendRequest(user_id=DEMO_USER, k=5))
    print_recommendation(result, console)

    console.rule("[bold]4. a free-text request with a constraint")
    need = "a light-hearted animated adventure for the whole family"
    console.print(f"request: {need!r}, released 1990 or later")
    result = recommender.recommend(RecommendRequest(query=need, constraints=Constraints(year_min=1990), k=5))
    print_recommendation(result, console)

    console.rule("[bold]5. structured output straight from the engine")
    prompt = "A good movie for a rainy Sunday afternoon is"
    gen = engine.generate([prompt], max_tokens=30, temperature=0.7, seed=settings.seed)[0]
    console.print(Panel(f"[dim]{prompt}[/]{gen.text}", title="free generation from the bundled model"))
    ids = result.candidate_ids[:8]
    schema = candidate_ranking_schema(ids, 3)
    ask = "Candidates: " + ", ".join(ids) + '.\nReturn the three best candidate ids as JSON {"ranking": [...]}.\nJSON: '
    out = engine.generate([ask], json_schema=schema, max_tokens=80)[0]
    ok = all(i in ids for i in out.parsed["ranking"])
    console.print(
        Panel(
            f"raw: {out.text.strip()}\nparsed: {out.parsed}\nall ids from the candidate list: {ok}",
            title="JSON-schema constrained output (enum of candidate ids)",
        )
    )
