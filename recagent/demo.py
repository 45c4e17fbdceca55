"""What `make demo` shows: the bundled model generating text, and a structured output constrained to a candidate
list. (Later steps of the pipeline extend this with ingest and explainable recommendations.)"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.panel import Panel

from agent.errors import InputError
from agent.llm import create_engine
from agent.settings import Settings

if TYPE_CHECKING:
    from agent.pipeline import Recommendation, Recommender, RecommendRequest


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


def justification_stats(rec: Recommender, req: RecommendRequest, result: Recommendation) -> dict[str, Any]:
    """Of ``result``'s justifications: how many (``n``), how many LLM-written and passing the grounding check
    (``llm``), how many of those name one of the user's history items or words of the request (``linked``), and
    the sentences as ``title: text [source]`` (``samples``)."""
    from agent.schemas import HistoryItem, UserContext
    from agent.sentence_check import user_references

    titles: list[str] = []
    if req.user_id and rec.interactions is not None:
        ids = [h.item_id for h in rec.interactions.history(req.user_id)]
        items = rec.collection.get_items(ids)
        titles = [items[i].title for i in ids if i in items]
    user = UserContext(history=[HistoryItem(title=t) for t in titles], need=req.query or "")
    said = [it for it in result.items if it.justification]
    llm = [it for it in said if it.justification_source == "llm" and it.grounded]
    return {
        "n": len(said),
        "llm": len(llm),
        "linked": sum(bool(user_references(it.justification or "", user)) for it in llm),
        "samples": [f"{it.title}: {it.justification} [{it.justification_source}]" for it in said],
    }


def _timed(rec: Recommender, req: RecommendRequest, console: Console) -> Recommendation:
    """One request, shown with its wall time and the share of LLM-written justifications."""
    from recagent.present import print_recommendation

    started = time.perf_counter()
    result = rec.recommend(req)
    seconds = time.perf_counter() - started
    print_recommendation(result, console)
    stats = justification_stats(rec, req, result)
    share = f"{stats['llm']}/{stats['n']} justifications LLM-written and grounded" if stats["n"] else "none"
    console.print(f"  [bold]{seconds:.1f}s[/] for this request; {share} ({stats['linked']} name your items or request)")
    return result


DEMO_DATA = Path(__file__).resolve().parents[1] / "data" / "movielens-latest-small"
DEMO_COLLECTION = "movielens-demo"
DEMO_USER = "414"


def run_demo(settings: Settings, console: Console) -> None:
    """Ingest the bundled MovieLens catalog, then explainable suggestions for a sample user and a free-text
    request, and the engine's constrained structured output."""
    from agent.pipeline import Recommender, RecommendRequest
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
    console.print(f"prompt format: {settings.prompt_format} (chat template: {engine.has_chat_template()})")
    recommender = Recommender(settings, engine=engine, collection=DEMO_COLLECTION)

    console.rule(f"[bold]3. suggestions for user {DEMO_USER} (history from the ratings log)")
    history = recommender.interactions.history(DEMO_USER) if recommender.interactions else []
    liked = [h.item_id for h in history if (h.rating or 0) >= 4.5][-5:]
    titles = recommender.collection.get_items(liked)
    console.print("recently loved: " + "; ".join(titles[i].title for i in liked if i in titles))
    recommender.recommend(RecommendRequest(user_id=DEMO_USER, k=5))  # warm-up: first-call costs, caches
    result = _timed(recommender, RecommendRequest(user_id=DEMO_USER, k=5), console)

    console.rule("[bold]4. a free-text request with a constraint")
    need = "a light-hearted animated adventure for the whole family"
    console.print(f"request: {need!r}, released 1990 or later")
    result = _timed(recommender, RecommendRequest(query=need, constraints=Constraints(year_min=1990), k=5), console)

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
