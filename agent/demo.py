"""What `make demo` shows: the bundled model generating text, and a structured output constrained to a candidate
list. (Later steps of the pipeline extend this with ingest and explainable recommendations.)"""

from __future__ import annotations

import time

from rich.console import Console
from rich.panel import Panel

from agent.llm import create_engine
from agent.settings import Settings

DEMO_CANDIDATES = ["item-17", "item-42", "item-7", "item-99", "item-3"]


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


def run_demo(settings: Settings, console: Console) -> None:
    started = time.perf_counter()
    console.print("[bold]recagent demo[/] - starting the LLM engine (about a minute on 2 CPU cores) ...")
    engine = create_engine(settings)
    console.print(f"engine ready in {time.perf_counter() - started:.0f}s: {engine.describe()}")

    prompt = "A good movie for a rainy Sunday afternoon is"
    gen = engine.generate([prompt], max_tokens=40, temperature=0.7, seed=settings.seed)[0]
    console.print(Panel(f"[dim]{prompt}[/]{gen.text}", title="free generation from the bundled model"))

    schema = candidate_ranking_schema(DEMO_CANDIDATES, 3)
    ask = (
        "Candidates: " + ", ".join(DEMO_CANDIDATES) + ".\nReturn the three best candidate ids as JSON "
        '{"ranking": [...]}.\nJSON: '
    )
    out = engine.generate([ask], json_schema=schema, max_tokens=80)[0]
    ok = all(i in DEMO_CANDIDATES for i in out.parsed["ranking"])
    console.print(
        Panel(
            f"raw: {out.text.strip()}\nparsed: {out.parsed}\nall ids from the candidate list: {ok}",
            title="structured output (JSON schema with an enum of candidate ids)",
        )
    )
