"""Ranking strategies on the default model: latency and quality next to the fused retrieval order they start from.

    .venv/bin/python bench/rerank.py [--users 40] [--candidates 20] [--collection movielens-demo]

Protocol (MovieLens latest-small, the catalog ingested by `make demo` into collection movielens-demo): per sampled
user, the last rating >= 4 is held out and removed with everything after it (leave-last-positive-out); the
Recommender (the same pipeline the CLI, server and evaluator use) fuses --candidates candidates from the rest and
ranks them with each strategy. Reported per strategy: NDCG@10 and HR@10 of the held-out item (0 when it was not
retrieved: the same for every strategy, since all rank the same candidates), recall of the candidate list, latency
p50/p95 per request (each request sent alone, warm engine), and the cost of one extra candidate order.
Justifications are switched off here (explain_mode none) so that the figures are about ranking only. The engine's
prefix cache is reset before each configuration (all see the same users). Latency depends on what else runs on the
machine: the load average at start and end is recorded.
"""

from __future__ import annotations

import sys
from pathlib import Path

# bench/retrieval.py would shadow the `retrieval` package: drop this folder from the import path
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import argparse
import json
import math
import os
import statistics
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data" / "movielens-latest-small"


def ndcg_at(ranked: list[str], target: str, k: int = 10) -> float:
    return 1.0 / math.log2(ranked.index(target) + 2) if target in ranked[:k] else 0.0


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, round(q * (len(values) - 1)))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--users", type=int, default=40)
    ap.add_argument("--candidates", type=int, default=20)
    ap.add_argument("--collection", default="movielens-demo")
    ap.add_argument("--strategies", default="retrieval,options,pointwise,listwise")
    ap.add_argument("--weights", default="1.0,0.2", help="LLM blend weights to report (1.0 = pure LLM order)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--skip-orders", action="store_true", help="Do not measure the cost of extra candidate orders.")
    args = ap.parse_args()

    from agent.llm import create_engine
    from agent.pipeline import Recommender, RecommendRequest
    from agent.settings import load_settings
    from retrieval.interactions import read_interactions

    settings = load_settings(collection=args.collection, explain_mode="none")
    full = read_interactions(DATA / "ratings.csv")
    train, heldout = full.holdout_last_positive(4.0, sample=args.users, seed=args.seed)
    engine = create_engine(settings)
    users = sorted(heldout, key=int)
    fig: dict[str, Any] = {"users": len(users), "candidates": args.candidates, "model": engine.model_id}
    fig["load_average_start"] = [round(x, 2) for x in os.getloadavg()]

    def run(strategy: str, weight: float, n_orders: int = 1) -> tuple[list[float], list[float], list[bool]]:
        s = settings.model_copy(
            update={"rerank_strategy": strategy, "rerank_llm_weight": weight, "rerank_n_orders": n_orders}
        )
        rec = Recommender(s, engine=engine, interactions=train)
        # every configuration sees the same users: without this, later runs would be served from the engine's
        # prefix cache and look faster than a fresh request does
        reset = getattr(getattr(engine, "llm", None), "reset_prefix_cache", None)
        if reset is not None:
            reset()
        rec.recommend(RecommendRequest(user_id=users[0], k=10, n_candidates=args.candidates))  # warm-up
        ndcgs, times, retrieved = [], [], []
        for u in users:
            t = time.perf_counter()
            result = rec.recommend(RecommendRequest(user_id=u, k=10, n_candidates=args.candidates))
            times.append(time.perf_counter() - t)
            ranked = [i.item_id for i in result.items]
            ndcgs.append(ndcg_at(ranked, heldout[u]))
            retrieved.append(heldout[u] in result.candidate_ids)
            if result.fallback_reason:
                fig.setdefault("fallbacks", {}).setdefault(f"{strategy}@{weight}", []).append(result.fallback_reason)
        return ndcgs, times, retrieved

    rows = []
    for strategy in args.strategies.split(","):
        weights = [0.0] if strategy == "retrieval" else [float(w) for w in args.weights.split(",")]
        for weight in weights:
            ndcgs, times, retrieved = run(strategy, weight)
            row = {
                "strategy": strategy,
                "llm_weight": weight,
                "ndcg@10": round(statistics.mean(ndcgs), 4),
                "hr@10": round(sum(n > 0 for n in ndcgs) / len(ndcgs), 4),
                "candidate_recall": round(sum(retrieved) / len(retrieved), 4),
                "p50_s": round(statistics.median(times), 3),
                "p95_s": round(pct(times, 0.95), 3),
            }
            rows.append(row)
            print(json.dumps(row), flush=True)
    fig["rows"] = rows
    by = {(r["strategy"], r["llm_weight"]): r for r in rows}
    if ("options", 1.0) in by and ("listwise", 1.0) in by:
        fig["listwise_over_options_p50"] = round(by[("listwise", 1.0)]["p50_s"] / by[("options", 1.0)]["p50_s"], 2)
    if not args.skip_orders:  # cost of order aggregation: options with 1 vs 3 orders, same users
        _, t1, _ = run("options", 1.0, 1)
        _, t3, _ = run("options", 1.0, 3)
        fig["options_p50_1_order_s"] = round(statistics.median(t1), 3)
        fig["options_p50_3_orders_s"] = round(statistics.median(t3), 3)
        fig["cost_per_extra_order_s"] = round((statistics.median(t3) - statistics.median(t1)) / 2, 3)
    fig["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    print(json.dumps(fig, indent=2))
    if args.out:
        args.out.write_text(json.dumps(fig, indent=2))


if __name__ == "__main__":
    main()
