"""Embedding backends: throughput and agreement with torch float32 on real catalog texts.

    .venv/bin/python bench/embed.py              # 2,000 MovieLens item documents, 3 interleaved repeats (~10 min)
    .venv/bin/python bench/embed.py --quick      # 300 texts, 1 repeat, fewer configurations (smoke test)
    .venv/bin/python bench/embed.py --ingest     # the real ingest of the whole catalog, per backend setting

Every configuration embeds the same texts with the real ``SentenceTransformerEmbedder`` (``retrieval/embed.py``),
except ``torch bf16 autocast``, which runs the float32 model under ``torch.autocast`` for comparison. The
configurations are interleaved within each repeat (their order rotates from one repeat to the next), so that a
shared, noisy CPU slows them alike; the speed-up is the median over repeats of (configuration rate / baseline rate
in the same repeat). Quality: mean and minimum cosine to the torch float32 vectors, and item-to-item retrieval
agreement (share of the top-10 neighbours among the texts, excluding the query item, that a configuration's vectors
share with float32's) for ``--queries`` items.

Prints a markdown report (the section "Embedding backends" of docs/benchmarks.md) and optionally writes JSON.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from retrieval.catalog import item_document, read_catalog
from retrieval.config import EmbedConfig
from retrieval.embed import SentenceTransformerEmbedder, cpu_has_native_bf16, make_embedder

ML = ROOT / "data" / "movielens-latest-small"
BASELINE = "torch fp32"
QUALITY_GUARD = 0.99
TARGET = 300.0


@dataclass
class Candidate:
    name: str
    group: str
    run: Callable[[list[str]], np.ndarray]
    load_s: float = 0.0
    rates: list[float] = field(default_factory=list)
    vectors: np.ndarray | None = None
    embedder: SentenceTransformerEmbedder | None = None


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def embedder_candidate(name: str, group: str, cache: Path, **options: Any) -> Candidate:
    """A candidate on the real embedder; ``load_s`` includes the ONNX export when the cache is empty."""
    config = EmbedConfig(progress=False, cache_dir=cache, **options)
    embedder = make_embedder(config)
    started = time.perf_counter()
    _ = embedder.dim
    load = time.perf_counter() - started
    embedder.embed(["warm up", "a second text"], progress=False)
    return Candidate(name, group, lambda texts: embedder.embed(texts, progress=False), load, embedder=embedder)


def autocast_candidate(reference: SentenceTransformerEmbedder) -> Candidate:
    """The float32 model of ``reference`` (a torch embedder) run under ``torch.autocast(bfloat16)``."""
    import torch

    def run(texts: list[str]) -> np.ndarray:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            vectors = reference.embed(texts, progress=False)
        return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)

    return Candidate("torch bf16 autocast", "backend", run)


def topk_agreement(reference: np.ndarray, other: np.ndarray, queries: np.ndarray, k: int = 10) -> float:
    """Mean share of the top-k neighbours (by dot product, the query item excluded) that both matrices agree on."""

    def top(matrix: np.ndarray) -> np.ndarray:
        scores = matrix[queries] @ matrix.T
        scores[np.arange(len(queries)), queries] = -np.inf
        return np.argsort(-scores, axis=1)[:, :k]

    ref, got = top(reference), top(other)
    return float(np.mean([len(set(a) & set(b)) / k for a, b in zip(ref.tolist(), got.tolist(), strict=True)]))


def query_latency_ms(candidate: Candidate, texts: list[str], n: int) -> float:
    """p50 milliseconds to embed one text (the query path: ``query_threads``)."""
    times = []
    for text in texts[:n]:
        started = time.perf_counter()
        candidate.run([text])
        times.append((time.perf_counter() - started) * 1000)
    return float(np.percentile(times, 50))


def build_candidates(cache: Path, quick: bool) -> list[Candidate]:
    base: dict[str, Any] = {"batch_size": 64, "num_threads": 1, "query_threads": 1, "sort_by_length": True}
    out: list[Candidate] = []

    def add(name: str, group: str, **changes: Any) -> None:
        print(f"loading {name} ...", file=sys.stderr)
        out.append(embedder_candidate(name, group, cache, **{**base, **changes}))

    add(BASELINE, "backend", backend="torch")
    add("torch bf16", "backend", backend="torch-bf16")
    assert out[0].embedder is not None
    out.append(autocast_candidate(out[0].embedder))
    add("onnx fp32", "backend", backend="onnx")
    add("onnx int8", "backend", backend="onnx-int8")
    add("torch fp32, unsorted", "sorting", backend="torch", sort_by_length=False)
    if not quick:
        add("torch bf16, unsorted", "sorting", backend="torch-bf16", sort_by_length=False)
        add("onnx int8, unsorted", "sorting", backend="onnx-int8", sort_by_length=False)
    add("torch fp32, 2 threads", "threads", backend="torch", num_threads=2)
    if not quick:
        add("torch bf16, 2 threads", "threads", backend="torch-bf16", num_threads=2)
        add("onnx fp32, 2 threads", "threads", backend="onnx", num_threads=2)
        add("onnx int8, 2 threads", "threads", backend="onnx-int8", num_threads=2)
        for batch in (32, 128):
            add(f"torch fp32, batch {batch}", "batch", backend="torch", batch_size=batch)
            add(f"torch bf16, batch {batch}", "batch", backend="torch-bf16", batch_size=batch)
            add(f"onnx int8, batch {batch}", "batch", backend="onnx-int8", batch_size=batch)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=2000, help="catalog texts embedded per configuration")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--queries", type=int, default=200, help="items whose top-10 neighbours are compared")
    parser.add_argument("--quick", action="store_true", help="300 texts, 1 repeat, fewer configurations")
    parser.add_argument("--json", type=Path, help="also write the raw figures to this file")
    parser.add_argument(
        "--ingest",
        action="store_true",
        help="instead: time the real ingest (read + clean + embed + upsert into embedded Chroma) of the whole "
        "catalog once per backend setting",
    )
    args = parser.parse_args()
    if args.ingest:
        print(bench_ingest())
        return
    if args.quick:
        args.n, args.repeats, args.queries = min(args.n, 300), 1, min(args.queries, 50)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    texts = [item_document(item) for item in read_catalog(ML).items[: args.n]]
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="recagent-embed-bench-") as tmp:
        cache = Path(tmp)
        candidates = build_candidates(cache, args.quick)
        cached = {}  # second load of each onnx backend (and its first text): from the cache, no export
        for backend in ("onnx", "onnx-int8"):
            started = time.perf_counter()
            make_embedder(EmbedConfig(progress=False, cache_dir=cache, backend=backend)).embed(["x"], progress=False)
            cached[backend] = time.perf_counter() - started
        for repeat in range(args.repeats):
            shift = repeat % len(candidates)
            for candidate in candidates[shift:] + candidates[:shift]:
                started = time.perf_counter()
                vectors = candidate.run(texts)
                candidate.rates.append(len(texts) / (time.perf_counter() - started))
                if candidate.vectors is None:
                    candidate.vectors = vectors
                print(f"repeat {repeat + 1}: {candidate.name}: {candidate.rates[-1]:.0f} texts/s", file=sys.stderr)
        latencies = {c.name: query_latency_ms(c, texts, 50) for c in candidates if c.group == "backend"}
    load_after = os.getloadavg()
    out = summarize(candidates, texts, args, cached, latencies, (load_before[0], load_after[0]))
    print(render(out))
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))


INGEST_SETTINGS: list[tuple[str, dict[str, Any]]] = [
    ("torch fp32, unsorted, threads unset (the previous defaults)", {"backend": "torch", "sort_by_length": False}),
    ("torch fp32, threads unset (the new defaults)", {"backend": "torch"}),
    ("torch fp32, 1 thread", {"backend": "torch", "num_threads": 1}),
    ("torch bf16, threads unset", {"backend": "torch-bf16"}),
    ("torch bf16, 1 thread", {"backend": "torch-bf16", "num_threads": 1}),
    ("onnx int8, threads unset", {"backend": "onnx-int8"}),
    ("onnx int8, 1 thread", {"backend": "onnx-int8", "num_threads": 1}),
]


def bench_ingest() -> str:
    """items/s of the real ingest of the whole catalog per setting (one run each, in this order; loads not timed)."""
    from retrieval.config import StoreConfig
    from retrieval.ingest import ingest

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    lines = [
        f"Command: `python bench/embed.py --ingest`; {cpu_model()}, {os.cpu_count()} CPUs; 1-minute load average "
        f"{os.getloadavg()[0]:.1f} at the start. One run per setting, in this order (not interleaved: compare "
        "neighbouring rows with care); 'threads unset' = torch's default (2 here), onnxruntime's default (2 here).",
        "",
        "| ingest setting (batch 64) | items | seconds | items/s |",
        "|---|---|---|---|",
    ]
    with tempfile.TemporaryDirectory(prefix="recagent-embed-ingest-") as tmp:
        for i, (name, options) in enumerate(INGEST_SETTINGS):
            config = EmbedConfig(progress=False, cache_dir=Path(tmp) / "cache", **options)
            embedder = make_embedder(config)
            embedder.embed(["warm up"], progress=False)
            store = StoreConfig(path=Path(tmp) / f"chroma-{i}", collection="movies")
            started = time.perf_counter()
            report = ingest(ML, store_config=store, embed_config=config, embedder=embedder, progress=False)
            seconds = time.perf_counter() - started
            assert report.store is not None and report.store.embedded == report.accepted
            lines.append(f"| {name} | {report.accepted:,} | {seconds:.1f} | {report.accepted / seconds:.0f} |")
            print(lines[-1], file=sys.stderr)
    return "\n".join(lines)


def summarize(
    candidates: list[Candidate],
    texts: list[str],
    args: argparse.Namespace,
    cached: dict[str, float],
    latencies: dict[str, float],
    load: tuple[float, float],
) -> dict[str, Any]:
    baseline = next(c for c in candidates if c.name == BASELINE)
    assert baseline.vectors is not None
    rng = np.random.default_rng(0)
    queries = rng.choice(len(texts), size=min(args.queries, len(texts)), replace=False)
    rows = []
    for c in candidates:
        assert c.vectors is not None
        cos = np.sum(c.vectors * baseline.vectors, axis=1)
        ratios = [rate / base for rate, base in zip(c.rates, baseline.rates, strict=True)]
        rows.append(
            {
                "name": c.name,
                "group": c.group,
                "rates": c.rates,
                "median_rate": statistics.median(c.rates),
                "ratio": statistics.median(ratios),
                "ratios": ratios,
                "cos_mean": float(cos.mean()),
                "cos_min": float(cos.min()),
                "top10_agreement": topk_agreement(baseline.vectors, c.vectors, queries),
                "load_s": c.load_s,
                "query_p50_ms": latencies.get(c.name),
            }
        )
    tokens = [len(t) for t in texts]
    return {
        "command": "python bench/embed.py" + (" --quick" if args.quick else ""),
        "machine": f"{cpu_model()}, {os.cpu_count()} CPUs, native bf16: {cpu_has_native_bf16()}, "
        f"Python {platform.python_version()}",
        "versions": {p: version(p) for p in ("torch", "sentence-transformers", "transformers", "onnxruntime", "onnx")},
        "texts": len(texts),
        "chars_mean": float(np.mean(tokens)),
        "chars_max": int(max(tokens)),
        "repeats": args.repeats,
        "queries": len(queries),
        "load_avg_1min": list(load),
        "cached_load_s": cached,
        "rows": rows,
    }


def render(out: dict[str, Any]) -> str:
    lines = [
        f"Command: `{out['command']}`; machine: {out['machine']}; "
        + ", ".join(f"{k} {v}" for k, v in out["versions"].items())
        + f"; 1-minute load average {out['load_avg_1min'][0]:.1f} before, {out['load_avg_1min'][1]:.1f} after.",
        "",
        f"{out['texts']:,} MovieLens item documents (`item_document`, mean {out['chars_mean']:.0f} characters), "
        f"{out['repeats']} interleaved repeats; batch 64, 1 thread, sorted by length unless the row says otherwise. "
        f"x fp32 = median over repeats of the rate / the `{BASELINE}` rate of the same repeat. cos = cosine to the "
        f"`{BASELINE}` vectors (mean / min); top-10 = item-to-item neighbour agreement on {out['queries']} items.",
        "",
        "| configuration | texts/s (median) | per repeat | x fp32 | cos mean | cos min | top-10 | load s "
        "| query p50 ms |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in out["rows"]:
        latency = "" if row["query_p50_ms"] is None else f"{row['query_p50_ms']:.1f}"
        load = f"{row['load_s']:.1f}" if row["group"] == "backend" and row["load_s"] else ""
        lines.append(
            f"| {row['name']} | {row['median_rate']:.0f} | {' / '.join(f'{r:.0f}' for r in row['rates'])} | "
            f"{row['ratio']:.2f} | {row['cos_mean']:.4f} | {row['cos_min']:.4f} | {row['top10_agreement']:.3f} | "
            f"{load} | {latency} |"
        )
    cached = ", ".join(f"{k} {v:.1f} s" for k, v in out["cached_load_s"].items())
    passing = [r for r in out["rows"] if r["group"] == "backend" and r["cos_mean"] >= QUALITY_GUARD]
    best = max(passing, key=lambda r: r["ratio"])
    lines += [
        "",
        f"Load s: first load of each backend in the process (torch fp32 includes importing sentence-transformers; "
        f"the onnx rows include the local export and its check against torch; a cached export loads in: {cached}). "
        f"Fastest backend with mean cosine >= {QUALITY_GUARD}: {best['name']} ({best['ratio']:.2f}x, "
        f"{best['median_rate']:.0f} texts/s; target {TARGET:.0f}).",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
