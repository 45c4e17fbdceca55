"""Recommendations with LLM justifications on the default model: time per request and what the justifications are.

    .venv/bin/python bench/justify.py [--users 8] [--k 5] [--formats fewshot,chat] [--collection movielens-demo]

Per prompt format (``fewshot``: the few-shot completion layout; ``chat``: the instruction prompt flattened to text,
today's path for a base model), on the same warm engine and the same requests: the sampled users of the bundled
MovieLens log (history from the log, as `make demo` does) and a few free-text requests. Each request is sent alone
(``recommend``, strategy ``options``, k items, justifications by the LLM). Reported: wall time per request
(p50 / p95), the share of justifications that are LLM-written and pass the grounding check, the share of those that
name one of the user's own history items or words of the request, tokens, and sample sentences. The load average
at start and end and the CPU flags are recorded: latency depends on what else runs on the machine.
"""

from __future__ import annotations

import sys
from pathlib import Path

# bench/retrieval.py would shadow the `retrieval` package: drop this folder from the import path
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import argparse
import json
import os
import random
import statistics
import time
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data" / "movielens-latest-small"
REQUESTS = [
    "a light-hearted animated adventure for the whole family",
    "a tense crime thriller with a twist",
    "a romantic comedy for a rainy evening",
]


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, round(q * (len(values) - 1)))]


def cpu_flags() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
        flags = next(line for line in text.splitlines() if line.startswith("flags")).split()
    except (OSError, StopIteration):
        return "?"
    return " ".join(f for f in flags if f.startswith(("avx512_bf16", "amx", "avx512f", "avx2")))


def sample_users(n: int, seed: int) -> list[str]:
    import csv

    counts: dict[str, int] = {}
    with open(DATA / "ratings.csv", newline="") as fh:
        for row in csv.DictReader(fh):
            counts[row["userId"]] = counts.get(row["userId"], 0) + 1
    users = sorted(u for u, c in counts.items() if c >= 20)
    return random.Random(seed).sample(users, n)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--users", type=int, default=8)
    ap.add_argument("--k", type=int, default=5)
    ap.add_argument("--collection", default="movielens-demo")
    ap.add_argument("--formats", default="fewshot,chat")
    ap.add_argument("--requests", type=int, default=len(REQUESTS), help="Free-text requests (besides users).")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--notes", action="store_true", help="Print why each template justification was used.")
    args = ap.parse_args()

    from agent.llm import create_engine
    from agent.pipeline import Recommender, RecommendRequest
    from agent.settings import load_settings
    from recagent.demo import justification_stats

    base = load_settings().model_copy(update={"interactions": DATA / "ratings.csv"})
    load_start = os.getloadavg()
    started = time.perf_counter()
    engine = create_engine(base)
    print(f"engine ready in {time.perf_counter() - started:.0f}s: {engine.describe()}", flush=True)
    users = sample_users(args.users, args.seed)
    requests = [RecommendRequest(user_id=u, k=args.k) for u in users]
    requests += [RecommendRequest(query=q, k=args.k) for q in REQUESTS[: args.requests]]
    report: dict[str, Any] = {"users": users, "k": args.k, "engine": engine.describe(), "cpu_flags": cpu_flags()}
    for fmt in [f.strip() for f in args.formats.split(",") if f.strip()]:
        settings = base.model_copy(update={"prompt_format": fmt})
        rec = Recommender(settings, engine=engine, collection=args.collection)
        rec.recommend(RecommendRequest(user_id=users[0], k=args.k))  # warm-up (caches, first-call costs)
        rows = []
        for req in requests:
            t0 = time.perf_counter()
            result = rec.recommend(req)
            seconds = time.perf_counter() - t0
            stats = justification_stats(rec, req, result)
            explain_s = sum(v for k, v in result.timings_ms.items() if k.startswith("explain")) / 1000
            rows.append({"seconds": seconds, "explain_s": explain_s, "prompt_tokens": result.prompt_tokens,
                         "completion_tokens": result.completion_tokens, **stats})  # fmt: skip
            print(f"[{fmt}] {req.user_id or req.query!r}: {seconds:.2f}s (justifications {explain_s:.2f}s), "
                  f"llm+grounded {stats['llm']}/{stats['n']}, user-linked {stats['linked']}", flush=True)  # fmt: skip
            for s in stats["samples"][:5]:
                print(f"    {s}", flush=True)
            for it in result.items:
                if args.notes and it.justification_source == "template":
                    print(f"      why template ({it.title}): {it.grounding_note}", flush=True)
            if args.notes:
                print("      raw: " + " || ".join(repr(r) for r in result.rerank.raw[-12:]), flush=True)
        times = [r["seconds"] for r in rows]
        n = sum(r["n"] for r in rows)
        llm = sum(r["llm"] for r in rows)
        summary = {
            "requests": len(rows),
            "p50_s": round(statistics.median(times), 2),
            "p95_s": round(pct(times, 0.95), 2),
            "explain_p50_s": round(statistics.median(r["explain_s"] for r in rows), 2),
            "justifications": n,
            "llm_grounded_share": round(llm / n, 3) if n else None,
            "user_linked_share_of_llm": round(sum(r["linked"] for r in rows) / llm, 3) if llm else None,
            "prompt_tokens_mean": round(statistics.fmean(r["prompt_tokens"] for r in rows)),
            "completion_tokens_mean": round(statistics.fmean(r["completion_tokens"] for r in rows)),
            "samples": [s for r in rows for s in r["samples"]][:20],
        }
        report[fmt] = summary
        print(json.dumps({fmt: {k: v for k, v in summary.items() if k != "samples"}}), flush=True)
    report["load_start"] = [round(x, 2) for x in load_start]
    report["load_end"] = [round(x, 2) for x in os.getloadavg()]
    print(json.dumps({k: report[k] for k in ("load_start", "load_end", "cpu_flags")}))
    if args.out:
        args.out.write_text(json.dumps(report, indent=2))
    engine.close()


if __name__ == "__main__":
    main()
