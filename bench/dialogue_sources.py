"""Cost of the dialogue sources: fitting them on a dialogue log, and a conversation turn's retrieval latency with
and without them (docs/benchmarks.md).

    RECAGENT_HOME=.recagent RECAGENT_COLLECTION=eval-7bdfe9a9c7f1 \
        python -m bench.dialogue_sources ../shared/data/redial-dev --turns 300

The collection must hold the dataset's catalog (`recagent eval folds` ingests it as eval-<catalog hash>).
"""

from __future__ import annotations

import argparse
import statistics
import time
import tracemalloc
from pathlib import Path

from agent.settings import load_settings
from eval.datasets import load_dataset
from eval.dialogue_log import read_dialogue_log
from retrieval.candidates import CandidateGenerator, SourceRequest
from retrieval.dialogue_sources import dialogue_sources, fit_dialogue_model
from retrieval.embed import make_embedder
from retrieval.store import Store
from retrieval.types import UserQuery


def _p(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[int(q) - 1] if len(values) > 1 else values[0]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("dataset", type=Path)
    parser.add_argument("--turns", type=int, default=300)
    args = parser.parse_args()
    settings = load_settings()
    dataset = load_dataset(args.dataset)
    tracemalloc.start()
    started = time.perf_counter()
    log = read_dialogue_log(args.dataset / "dialogues.jsonl", dataset.items.values())
    read_s = time.perf_counter() - started
    model = fit_dialogue_model(log)
    fit_s = time.perf_counter() - started - read_s
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    print(f"log: {len(log)} turns, {log.report.dialogues} dialogues, {log.report.unmatched} unmatched names; "
          f"read+match {read_s:.2f} s, fit {fit_s:.3f} s, peak {peak / 2**20:.1f} MiB traced; "
          f"{len(model.item_ids)} items, {model.comention.nnz} pairs")  # fmt: skip
    embedder = make_embedder(settings.embed_config(progress=False))
    collection = Store(settings.store_config()).open_for(embedder, settings.collection)
    plain = CandidateGenerator.default(collection, embedder, None, settings.fusion_config())
    learned = CandidateGenerator.default(collection, embedder, None, settings.fusion_config())
    learned.sources += dialogue_sources(model)
    cases = dataset.cases[: args.turns]
    own = dialogue_sources(model)
    times: dict[str, list[float]] = {"content only": [], "with dialogue sources": [], "the two dialogue sources": []}
    for generator in (plain, learned):
        generator.generate(UserQuery(need="warm-up", n=20))
    for case in cases:  # interleaved, so that load on a shared machine hits both alike
        query = UserQuery(need=case.query, liked=case.liked, n=20)
        for name, generator in (("content only", plain), ("with dialogue sources", learned)):
            t0 = time.perf_counter()
            generator.generate(query)
            times[name].append((time.perf_counter() - t0) * 1000)
        request = SourceRequest(query=query, k=100, exclude=frozenset(query.excluded_ids()))
        t0 = time.perf_counter()
        for source in own:
            source.retrieve(request)
        times["the two dialogue sources"].append((time.perf_counter() - t0) * 1000)
    for name, values in times.items():
        print(f"{name}: {len(values)} turns, p50 {_p(values, 50):.1f} ms, p95 {_p(values, 95):.1f} ms")


if __name__ == "__main__":
    main()
