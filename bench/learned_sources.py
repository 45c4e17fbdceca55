"""Log-learned sources on MovieLens latest-small: fit time and peak memory of each (transition, EASE at several
``max_items``), and the per-request latency of candidate generation with them against today's fusion (same run).

    .venv/bin/python bench/learned_sources.py --store DIR --collection NAME   # collection: the ingested catalog
    .venv/bin/python bench/learned_sources.py --quick ...                     # fewer users and repeats

Each fit runs in a fresh process (spawn): its peak memory is the process's peak resident set (VmHWM) minus the
resident set before the fit, so BLAS/LAPACK work space counts. Latency: ``CandidateGenerator.generate`` for
history-only requests (``recommend --user``), every user once per repeat, both configurations interleaved per
repeat; reported as the median over repeats of each repeat's p50/p95. Prints markdown (docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import sys
import time
from pathlib import Path
from queue import Empty
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from retrieval.candidates import CandidateGenerator
from retrieval.config import DEFAULT_SOURCE_WEIGHTS, EmbedConfig, FusionConfig, StoreConfig
from retrieval.ease import EaseConfig, fit_ease
from retrieval.embed import make_embedder
from retrieval.interactions import read_interactions
from retrieval.learned import LearnedSourcesConfig
from retrieval.store import Store
from retrieval.transition import TransitionConfig, fit_transitions
from retrieval.types import UserQuery

ML = ROOT / "data" / "movielens-latest-small"
OLD_WEIGHTS = {"semantic": 1.0, "item2item": 1.0, "collab": 1.0, "popularity": 0.5, "transition": 0.0, "ease": 0.0}


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def _fit_child(kind: str, options: dict[str, Any], ratings: str, queue: Any) -> None:
    log = read_interactions(ratings)
    before = _status_kib("VmRSS")
    started = time.perf_counter()
    if kind == "transition":
        matrix = fit_transitions(log, TransitionConfig(**options))
        size = matrix.data.nbytes + matrix.indices.nbytes + matrix.indptr.nbytes
        items = log.n_items
    else:
        arrays = fit_ease(log, EaseConfig(**options))
        size, items = arrays["weights"].nbytes, len(arrays["items"])
    seconds = time.perf_counter() - started
    queue.put(
        {
            "kind": kind,
            "options": options,
            "seconds": round(seconds, 2),
            "items": items,
            "peak_mib": round((_status_kib("VmHWM") - before) / 1024, 1),
            "state_mib": round(size / 2**20, 1),
        }
    )


def measure_fit(kind: str, options: dict[str, Any], ratings: Path, repeats: int) -> dict[str, Any]:
    ctx = mp.get_context("spawn")
    runs = []
    for _ in range(repeats):
        queue = ctx.Queue()
        proc = ctx.Process(target=_fit_child, args=(kind, options, str(ratings), queue))
        proc.start()
        while True:
            try:
                runs.append(queue.get(timeout=1))
                break
            except Empty:
                if not proc.is_alive():
                    raise RuntimeError(f"the {kind} fit process died (exit code {proc.exitcode})") from None
        proc.join()
    out = dict(runs[0])
    out["seconds"] = float(np.median([r["seconds"] for r in runs]))
    out["peak_mib"] = float(np.median([r["peak_mib"] for r in runs]))
    return out


def latency(store_path: Path, collection: str, ratings: Path, users: int, repeats: int) -> dict[str, Any]:
    log = read_interactions(ratings)
    store = Store(StoreConfig(path=store_path, collection=collection))
    embedder = make_embedder(EmbedConfig(progress=False))
    coll = store.open_for(embedder, collection)
    cache = Path(store_path).parent / "bench-artifacts"
    configs = {"today (4 sources)": OLD_WEIGHTS, "with transition + ease": dict(DEFAULT_SOURCE_WEIGHTS)}
    generators = {
        name: CandidateGenerator.default(
            coll,
            embedder,
            log,
            FusionConfig(weights=w, n=20),
            learned=LearnedSourcesConfig(),
            cache_dir=lambda kind: cache / kind,
        )
        for name, w in configs.items()
    }
    chosen = [u for u in log.user_ids if len(log.history(u)) >= 5][:users]
    queries = [UserQuery(user_id=u, history=log.history(u)) for u in chosen]
    for gen in generators.values():  # warm-up: Chroma, caches
        for q in queries[:5]:
            gen.generate(q)
    per: dict[str, dict[str, list[float]]] = {name: {"p50": [], "p95": []} for name in generators}
    for _ in range(repeats):
        for name, gen in generators.items():
            times = []
            for q in queries:
                t0 = time.perf_counter()
                gen.generate(q)
                times.append((time.perf_counter() - t0) * 1000)
            per[name]["p50"].append(float(np.percentile(times, 50)))
            per[name]["p95"].append(float(np.percentile(times, 95)))
    return {name: {k: round(float(np.median(v)), 1) for k, v in d.items()} for name, d in per.items()}


def cpu_info() -> str:
    model, flags = platform.machine(), []
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []:
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
        if line.startswith("flags"):
            have = set(line.split(":", 1)[1].split())
            flags = [f for f in ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16") if f in have]
    return f"{model}, {os.cpu_count()} CPUs, flags: {' '.join(flags) or '-'}"


def render(out: dict[str, Any]) -> str:
    lines = [
        f"Machine: {out['machine']}; numpy {np.__version__}; 1-minute load average at start {out['load']}.",
        "",
        "| fit | items | seconds | peak memory (MiB) | fitted state (MiB) |",
        "|---|---:|---:|---:|---:|",
    ]
    for fit in out["fits"]:
        options = ", ".join(f"{k}={v}" for k, v in fit["options"].items())
        lines.append(
            f"| {fit['kind']} ({options}) | {fit['items']} | {fit['seconds']} | {fit['peak_mib']} | "
            f"{fit['state_mib']} |"
        )
    if out.get("latency"):
        lines += [
            "",
            f"Candidate generation, {out['users']} users x {out['repeats']} repeats (median of per-repeat "
            "percentiles, ms):",
            "",
            "| fusion | p50 | p95 |",
            "|---|---:|---:|",
        ]
        for name, row in out["latency"].items():
            lines.append(f"| {name} | {row['p50']} | {row['p95']} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ratings", type=Path, default=ML)
    parser.add_argument("--store", type=Path, help="Chroma folder holding the ingested catalog (latency part)")
    parser.add_argument("--collection", default="movies")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeats", type=int, default=3, help="repeats of each fit and of the latency loop")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    repeats = 1 if args.quick else args.repeats
    out: dict[str, Any] = {"machine": cpu_info(), "load": round(os.getloadavg()[0], 1), "fits": []}
    defaults = LearnedSourcesConfig()
    out["fits"].append(measure_fit("transition", defaults.transition.model_dump(), args.ratings, repeats))
    print(out["fits"][-1], flush=True)
    sizes = (1000, 4000) if args.quick else (2000, 5000, 12_000)
    for size in sizes:
        out["fits"].append(measure_fit("ease", {"l2": defaults.ease.l2, "max_items": size}, args.ratings, repeats))
        print(out["fits"][-1], flush=True)
    if args.store is not None:
        out["users"], out["repeats"] = (50, 2) if args.quick else (200, repeats)
        out["latency"] = latency(args.store, args.collection, args.ratings, out["users"], out["repeats"])
    print(render(out))
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
