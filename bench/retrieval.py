"""Retrieval benchmarks: ingest throughput, idempotent re-ingest, Chroma query latency/recall, candidate generation
latency and retrieval-only Recall@50 on MovieLens latest-small.

    .venv/bin/python bench/retrieval.py            # full run (several minutes on 2 cores)
    .venv/bin/python bench/retrieval.py --quick    # smaller sizes, for a smoke test

Prints a markdown report (copy it into docs/benchmarks.md) and optionally writes JSON (--json FILE).
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from retrieval.candidates import (
    CandidateGenerator,
    CandidateSource,
    CollaborativeSource,
    ItemToItemSource,
    PopularitySource,
    SemanticSource,
    SourceRequest,
    rrf_fuse,
)
from retrieval.catalog import item_document, read_catalog
from retrieval.config import EmbedConfig, FusionConfig, StoreConfig
from retrieval.embed import make_embedder
from retrieval.ingest import ingest
from retrieval.interactions import read_interactions
from retrieval.store import Store, item_metadata
from retrieval.types import UserQuery

ML = ROOT.parent / "shared" / "data" / "movielens-latest-small"


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def bench_ingest(work: Path, embedder: Any, baseline_n: int, limit: int | None, out: dict[str, Any]) -> None:
    """Batched pipeline on the whole catalog vs one item at a time (embed + upsert per item) on a subset."""
    config = StoreConfig(path=work / "ingest", collection="movies")
    kwargs: dict[str, Any] = {"store_config": config, "embed_config": embedder.config, "embedder": embedder}
    started = time.perf_counter()
    report = ingest(ML, limit=limit, progress=False, **kwargs)
    first = time.perf_counter() - started
    assert report.store is not None and report.store.embedded == report.accepted
    started = time.perf_counter()
    again = ingest(ML, limit=limit, progress=False, **kwargs)
    second = time.perf_counter() - started
    assert again.store is not None and again.store.embedded == 0

    items = read_catalog(ML).items[:baseline_n]
    naive_store = Store(StoreConfig(path=work / "naive"))
    coll = naive_store.open_for(embedder, "naive")
    started = time.perf_counter()
    for item in items:  # the naive way: one embedding call and one Chroma write per item
        vector = embedder.embed([item_document(item)], progress=False)
        coll.raw.upsert(
            ids=[item.id], embeddings=vector, documents=[item_document(item)], metadatas=[item_metadata(item)]
        )
    naive = time.perf_counter() - started
    started = time.perf_counter()
    Store(StoreConfig(path=work / "batched-subset")).upsert(items, embedder, collection="subset", progress=False)
    batched_subset = time.perf_counter() - started
    out["ingest"] = {
        "items": report.accepted,
        "first_s": first,
        "items_per_s": report.accepted / first,
        "reingest_s": second,
        "reingest_pct_of_first": 100 * second / first,
        "baseline_items": len(items),
        "naive_items_per_s": len(items) / naive,
        "batched_subset_items_per_s": len(items) / batched_subset,
        "speedup_vs_naive": naive / batched_subset,
    }


def clustered_vectors(n: int, dim: int, rng: np.random.Generator, centers: np.ndarray) -> np.ndarray:
    """Points around random unit centers; the noise has norm ~0.7 (cosine to the center ~0.8)."""
    labels = rng.integers(0, len(centers), n)
    x = (centers[labels] + rng.normal(0, 0.7 / np.sqrt(dim), (n, dim))).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _client(path: str) -> Any:
    import chromadb
    from chromadb.config import Settings

    return chromadb.PersistentClient(path=path, settings=Settings(anonymized_telemetry=False))


def _hnsw_build(path: str, name: str, data_file: str) -> float:
    """(fresh process) Create the collection and add the vectors; returns seconds."""
    data = np.load(data_file)["data"]
    client = _client(path)
    hnsw = {"space": "cosine", "ef_construction": 200, "max_neighbors": 16, "ef_search": 100}
    coll = client.create_collection(name, embedding_function=None, configuration={"hnsw": hnsw})
    ids = [str(i) for i in range(len(data))]
    batch = client.get_max_batch_size()
    started = time.perf_counter()
    for s in range(0, len(data), batch):
        coll.add(ids=ids[s : s + batch], embeddings=data[s : s + batch])
    return time.perf_counter() - started


def _hnsw_query(path: str, name: str, data_file: str, ef: int) -> dict[str, float]:
    """(fresh process) Set ef_search, then time single top-10 queries and count hits against exact search.

    A fresh process per ef value: Chroma 1.5 reads ef_search when it loads the index, so ``modify`` does not change
    an index that is already loaded in the process."""
    files = np.load(data_file)
    queries, exact = files["queries"], files["exact"]
    coll = _client(path).get_collection(name, embedding_function=None)
    coll.modify(configuration={"hnsw": {"ef_search": ef}})
    coll.query(query_embeddings=queries[:1], n_results=10, include=[])  # loads the index
    latencies, hits = [], 0
    for q in range(len(queries)):
        t = time.perf_counter()
        got = coll.query(query_embeddings=queries[q : q + 1], n_results=10, include=[])
        latencies.append((time.perf_counter() - t) * 1000)
        hits += len({int(i) for i in got["ids"][0]} & set(exact[q].tolist()))
    return {"p50_ms": pct(latencies, 50), "p95_ms": pct(latencies, 95), "recall_at_10": hits / (10 * len(queries))}


def bench_hnsw(work: Path, sizes: list[int], n_queries: int, efs: list[int], out: dict[str, Any]) -> None:
    """Synthetic 384-d clustered unit vectors (~50 per cluster); top-10 recall against exact numpy search."""
    import multiprocessing

    dim = 384
    rng = np.random.default_rng(0)
    ctx = multiprocessing.get_context("spawn")
    results = []
    for n in sizes:
        centers = rng.normal(0, 1, (n // 50, dim)).astype(np.float32)
        centers /= np.linalg.norm(centers, axis=1, keepdims=True)
        data = clustered_vectors(n, dim, rng, centers)
        queries = clustered_vectors(n_queries, dim, rng, centers)
        exact = np.argsort(-(queries @ data.T), axis=1)[:, :10]
        data_file = str(work / f"syn-{n}.npz")
        np.savez(data_file, data=data, queries=queries, exact=exact)
        path, name = str(work / "hnsw"), f"syn-{n}"
        with ctx.Pool(1) as pool:
            build = pool.apply(_hnsw_build, (path, name, data_file))
        for ef in efs:
            with ctx.Pool(1) as pool:
                figures = pool.apply(_hnsw_query, (path, name, data_file, ef))
            results.append({"n": n, "ef_search": ef, "build_s": build, **figures})
            print(f"  hnsw {results[-1]}", file=sys.stderr)
    out["hnsw"] = results


def genre_need(history: list[Any], items: dict[str, Any]) -> str:
    """A pseudo free-text need: the three most frequent genres among the user's last 10 liked movies."""
    liked = [h.item_id for h in history if (h.rating or 0) >= 4][-10:]
    counts = Counter(g for i in liked if i in items for g in items[i].metadata.get("genres", []))
    top = [g for g, _ in counts.most_common(3)]
    return f"{' '.join(top)} movie" if top else ""


def bench_candidates(work: Path, embedder: Any, n_users: int, k: int, out: dict[str, Any]) -> None:
    """Recall@k of the held-out last positive, per source and fused; latency of candidate generation."""
    store = Store(StoreConfig(path=work / "ingest", collection="movies"))
    coll = store.collection()
    catalog = {i.id: i for i in coll.get_items(coll.ids()).values()}
    log = read_interactions(ML, items=set(catalog))
    train, heldout = log.holdout_last_positive(4.0, sample=n_users, seed=0)
    sources: dict[str, CandidateSource] = {
        "semantic": SemanticSource(coll, embedder),
        "item2item": ItemToItemSource(coll),
        "collab": CollaborativeSource(train),
        "popularity": PopularitySource(train),
    }
    generator = CandidateGenerator(coll, list(sources.values()), FusionConfig(k=k, n=k))
    no_pop = FusionConfig(weights={"semantic": 1.0, "item2item": 1.0, "collab": 1.0, "popularity": 0.0}, k=k, n=k)
    hits: Counter[str] = Counter()
    timings: dict[str, list[float]] = {name: [] for name in [*sources, "generate (no need text)", "generate (need)"]}
    for user, target in sorted(heldout.items()):
        history = train.history(user)
        need = genre_need(history, catalog)
        query = UserQuery(history=history, need=need or None, k_per_source=k, n=k)
        request = SourceRequest(
            query=query, k=k, allowed=generator.allowed_ids(None), exclude=frozenset(query.excluded_ids())
        )
        rankings = {}
        for name, source in sources.items():
            t = time.perf_counter()
            rankings[name] = source.retrieve(request)
            timings[name].append((time.perf_counter() - t) * 1000)
            hits[name] += target in {i for i, _ in rankings[name]}
        for label, weights in (("fusion (all 4)", generator.fusion), ("fusion (no popularity)", no_pop)):
            fused = rrf_fuse(rankings, weights=weights.weights, rrf_k=weights.rrf_k, n=k)
            hits[label] += target in {c.item_id for c in fused}
        history_only = {n: r for n, r in rankings.items() if n != "semantic"}
        fused = rrf_fuse(history_only, weights=generator.fusion.weights, rrf_k=60, n=k)
        hits["fusion (no semantic)"] += target in {c.item_id for c in fused}
        t = time.perf_counter()
        generator.generate(query.model_copy(update={"need": None}))
        timings["generate (no need text)"].append((time.perf_counter() - t) * 1000)
        t = time.perf_counter()
        generator.generate(query)
        timings["generate (need)"].append((time.perf_counter() - t) * 1000)
    users = len(heldout)
    out["recall"] = {
        "users": users,
        "k": k,
        "catalog": len(catalog),
        "recall": {name: hits[name] / users for name in hits},
    }
    out["latency_ms"] = {name: {"p50": pct(v, 50), "p95": pct(v, 95)} for name, v in timings.items() if v}
    # a random-ranking reference: probability that the target is in k random unseen items
    unseen = [len(catalog) - len(train.history(u)) for u in heldout]
    out["recall"]["random_expected"] = float(np.mean([k / n for n in unseen]))


def render(out: dict[str, Any], command: str) -> str:
    lines = [f"Command: `{command}`  ", f"Machine: {out['machine']}  ", ""]
    ing = out["ingest"]
    lines += [
        "| ingest (MovieLens latest-small catalog) | value |",
        "|---|---|",
        f"| items | {ing['items']:,} |",
        f"| batched pipeline, whole catalog (read+clean+embed+upsert) | {ing['first_s']:.1f} s, "
        f"{ing['items_per_s']:.0f} items/s |",
        f"| naive one-item-at-a-time (embed 1 + upsert 1), first {ing['baseline_items']} items | "
        f"{ing['naive_items_per_s']:.0f} items/s |",
        f"| batched, same {ing['baseline_items']} items | {ing['batched_subset_items_per_s']:.0f} items/s "
        f"(**{ing['speedup_vs_naive']:.1f}x** the naive rate) |",
        f"| re-ingest unchanged (0 embedded) | {ing['reingest_s']:.2f} s = **{ing['reingest_pct_of_first']:.1f} %** "
        "of the first ingest |",
        "",
        "| Chroma HNSW, synthetic 384-d clustered unit vectors | ef_search | build s | p50 ms | p95 ms | recall@10 |",
        "|---|---|---|---|---|---|",
    ]
    for r in out["hnsw"]:
        lines.append(
            f"| {r['n']:,} vectors | {r['ef_search']} | {r['build_s']:.0f} | {r['p50_ms']:.2f} | "
            f"{r['p95_ms']:.2f} | {r['recall_at_10']:.3f} |"
        )
    rec = out["recall"]
    lines += [
        "",
        f"Retrieval-only Recall@{rec['k']} of the held-out last positive (rating >= 4), {rec['users']} users "
        "sampled with seed 0, history = earlier ratings, seen items excluded:",
        "",
        f"| source | Recall@{rec['k']} |",
        "|---|---|",
    ]
    for name, value in sorted(rec["recall"].items(), key=lambda kv: -kv[1]):
        lines.append(f"| {name} | {value:.3f} |")
    lines.append(f"| random unseen items (expected) | {rec['random_expected']:.3f} |")
    lines += ["", f"| latency per user ({rec['catalog']:,}-item catalog) | p50 ms | p95 ms |", "|---|---|---|"]
    for name, v in out["latency_ms"].items():
        lines.append(f"| {name} | {v['p50']:.1f} | {v['p95']:.1f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (smoke test)")
    parser.add_argument("--json", type=Path, help="also write the raw figures to this file")
    args = parser.parse_args()
    if not (ML / "movies.csv").is_file():
        sys.exit(f"MovieLens latest-small not found at {ML}")
    out: dict[str, Any] = {"machine": f"{platform.processor() or platform.machine()}, "
                           f"{__import__('os').cpu_count()} CPUs, Python {platform.python_version()}"}  # fmt: skip
    embedder = make_embedder(EmbedConfig(progress=False, batch_size=64))
    _ = embedder.dim  # load the model outside the timings
    random.seed(0)
    with tempfile.TemporaryDirectory(prefix="recagent-bench-") as tmp:
        work = Path(tmp)
        print("ingest ...", file=sys.stderr)
        bench_ingest(work, embedder, 100 if args.quick else 500, 1500 if args.quick else None, out)
        print(json.dumps(out["ingest"]), file=sys.stderr)
        print("hnsw ...", file=sys.stderr)
        sizes = [10_000] if args.quick else [10_000, 100_000]
        bench_hnsw(work, sizes, 50 if args.quick else 200, [10, 100] if args.quick else [10, 50, 100, 200], out)
        print("candidates ...", file=sys.stderr)
        bench_candidates(work, embedder, 50 if args.quick else 200, 50, out)
    command = "python bench/retrieval.py" + (" --quick" if args.quick else "")
    print(render(out, command))
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
