"""Cost of the dialogue sources: fitting them on a dialogue log, and a conversation turn's retrieval latency with
and without them (docs/benchmarks.md).

    RECAGENT_HOME=.recagent RECAGENT_COLLECTION=eval-7bdfe9a9c7f1 \
        python -m bench.dialogue_sources ../shared/data/redial-dev --turns 300
    python -m bench.dialogue_sources ../shared/data/redial-dev --turns 2716 --sources-only

The collection must hold the dataset's catalog (`recagent eval folds` ingests it as eval-<catalog hash>);
``--sources-only`` times the dialogue sources (and the attribute index) alone, without the store.
"""

from __future__ import annotations

import argparse
import statistics
import time
import tracemalloc
from pathlib import Path

from agent.settings import load_settings
from eval.datasets import EvalCase, load_dataset
from eval.dialogue_log import read_dialogue_log
from retrieval.attribute_source import AttributeIndex
from retrieval.candidates import CandidateGenerator, SourceRequest
from retrieval.dialogue_sources import DialogueSource, dialogue_sources, fit_dialogue_model
from retrieval.embed import make_embedder
from retrieval.store import Store
from retrieval.types import UserQuery


def _p(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[int(q) - 1] if len(values) > 1 else values[0]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("dataset", type=Path)
    parser.add_argument("--turns", type=int, default=300)
    parser.add_argument("--sources-only", action="store_true", help="time the dialogue sources alone (no store)")
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
    tracemalloc.start()
    started = time.perf_counter()
    attributes = AttributeIndex(dataset.items.values())
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    print(f"attribute index: {len(attributes.item_ids)} items, {len(attributes.items_of)} values, "
          f"{time.perf_counter() - started:.2f} s, peak {peak / 2**20:.1f} MiB traced")  # fmt: skip
    if args.sources_only:
        _sources_only(dataset.cases[: args.turns], dialogue_sources(model, attributes))
        return
    embedder = make_embedder(settings.embed_config(progress=False))
    collection = Store(settings.store_config()).open_for(embedder, settings.collection)
    plain = CandidateGenerator.default(collection, embedder, None, settings.fusion_config())
    learned = CandidateGenerator.default(collection, embedder, None, settings.fusion_config())
    learned.sources += dialogue_sources(model, attributes)
    cases = dataset.cases[: args.turns]
    own = dialogue_sources(model, attributes)
    times: dict[str, list[float]] = {"content only": [], "with dialogue sources": [], "the dialogue sources": []}
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
        times["the dialogue sources"].append((time.perf_counter() - t0) * 1000)
    _print(times)


def _sources_only(cases: list[EvalCase], sources: list[DialogueSource]) -> None:
    times: dict[str, list[float]] = {s.name: [] for s in sources}
    for case in cases:
        query = UserQuery(need=case.query, liked=case.liked, n=20)
        request = SourceRequest(query=query, k=100, exclude=frozenset(query.excluded_ids()))
        for source in sources:
            t0 = time.perf_counter()
            source.retrieve(request)
            times[source.name].append((time.perf_counter() - t0) * 1000)
    _print(times)


def _print(times: dict[str, list[float]]) -> None:
    for name, values in times.items():
        print(f"{name}: {len(values)} turns, p50 {_p(values, 50):.2f} ms, p95 {_p(values, 95):.2f} ms")


if __name__ == "__main__":
    main()
