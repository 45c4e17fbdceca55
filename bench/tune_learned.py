"""Choose the settings of the log-learned sources (transition, EASE) and the fusion weights on the VALIDATION part
of the leave-one-out split, then measure the chosen ones once on the test part.

    .venv/bin/python bench/tune_learned.py                       # bundled ml-latest-small, ~10 min on 2 cores
    .venv/bin/python bench/tune_learned.py --quick               # a small grid, for a smoke test
    .venv/bin/python bench/tune_learned.py --no-fusion           # sources only (no Chroma collection needed)
    .venv/bin/python bench/tune_learned.py --split temporal --no-fusion --no-ease --around-default
                                                                  # another split's validation part, a small grid

Split: the evaluator's ``--split loo`` (eval/loo.py, LlamaRec's preprocessing): every rating is an interaction;
5-core filter repeated until stable; per user sorted by (timestamp, item id): test = last item, validation =
second to last, train = the rest. Validation: models fitted on train, history = train. Test: fitted on train +
validation, history = train + validation. The split's item universe is ranked with the history masked. Prints the
chosen settings and metrics (docs/retrieval.md holds them).
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from eval.datasets import load_dataset
from eval.protocol import Protocol, Split, make_split
from retrieval.candidates import (
    CandidateSource,
    CollaborativeSource,
    ItemToItemSource,
    PopularitySource,
    SourceRequest,
    rrf_fuse,
)
from retrieval.config import DEFAULT_SOURCE_WEIGHTS
from retrieval.ease import EaseConfig, EaseSource
from retrieval.interactions import Interactions
from retrieval.seqsource import LogItemSource
from retrieval.transition import TransitionConfig, TransitionSource
from retrieval.types import UserQuery

ML = ROOT / "data" / "movielens-latest-small"
OLD_WEIGHTS = {"semantic": 1.0, "item2item": 1.0, "collab": 1.0, "popularity": 0.5}  # the fusion before issue 23


@dataclass
class LooSplit:
    """The evaluator's ``--split loo`` parts (eval/loo.py): sources for ``val`` are fitted on ``val.train``,
    for ``test`` on ``test.train`` (the validation items included)."""

    val: Split
    test: Split


def loo_split(path: Path, kind: str = "loo") -> LooSplit:
    """The validation and test parts of the evaluator's split ``kind`` (loo by default; temporal = leave the last
    positive out, its validation part = each user's previous positive with the train history)."""
    dataset = load_dataset(path)
    return LooSplit(val=make_split(dataset, Protocol.model_validate({"split": kind, "part": "validation"})),
                    test=make_split(dataset, Protocol.model_validate({"split": kind, "part": "test"})))  # fmt: skip


def _targets(split: Split) -> dict[str, str]:
    return {str(c.user_id): next(iter(c.gold)) for c in split.cases}


def _sequences(split: Split) -> dict[str, list[str]]:
    return {str(c.user_id): [h.item_id for h in c.history] for c in split.cases}


def _train(split: Split) -> Interactions:
    assert split.train is not None
    return split.train


def rank_metrics(ranked: Sequence[str], target: str, ks: Iterable[int] = (10, 20)) -> dict[str, float]:
    out: dict[str, float] = {}
    position = ranked.index(target) + 1 if target in ranked else None
    for k in ks:
        hit = position is not None and position <= k
        out[f"ndcg@{k}"] = 1.0 / math.log2(position + 1) if hit and position else 0.0
        out[f"recall@{k}"] = 1.0 if hit else 0.0
    return out


def mean_metrics(rows: list[dict[str, float]]) -> dict[str, float]:
    return {k: round(float(np.mean([r[k] for r in rows])), 4) for k in rows[0]}


def score_source(source: LogItemSource, split: Split, k: int = 20) -> dict[str, float]:
    """NDCG/Recall@10/20 of one log-learned source ranking the whole (filtered) catalog, history masked."""
    rows = []
    ids = source.interactions.item_ids
    sequences = _sequences(split)
    for user, target in _targets(split).items():
        scores = source.scores(sequences[user])
        top = np.argsort(-scores, kind="stable")[:k]
        rows.append(rank_metrics([ids[int(j)] for j in top if scores[int(j)] > 0], target))
    return mean_metrics(rows)


def transition_grid(quick: bool) -> list[TransitionConfig]:
    windows = (1, 3) if quick else (1, 2, 3, 4, 5)
    gap = (0.5,) if quick else (0.5, 0.8, 1.0)
    norms = ("none", "sqrt") if quick else ("none", "source", "sqrt")
    hist = (0.7,) if quick else (0.5, 0.7, 0.9)
    back = (0.0,) if quick else (0.0, 0.3)
    return [TransitionConfig(window=w, gap_decay=g, normalize=n, history_decay=h, backward=b)  # type: ignore[arg-type]
            for w, g, n, h, b in itertools.product(windows, gap, norms, hist, back)
            if not (w == 1 and g != gap[0])]  # fmt: skip


def around_default() -> list[TransitionConfig]:
    """The default settings and each one changed alone (a small grid for a split the full grid is too slow for)."""
    base = TransitionConfig()
    options = {"window": (1, 3, 8), "gap_decay": (0.5, 0.8), "normalize": ("none", "sqrt"),
               "history_decay": (0.5, 0.9), "backward": (0.0,)}  # fmt: skip
    return [base] + [base.model_copy(update={key: v}) for key, values in options.items() for v in values]


def tune(name: str, configs: list[Any], make: Callable[[Interactions, Any], LogItemSource], split: LooSplit,
         ) -> tuple[Any, list[dict[str, Any]], dict[str, float]]:  # fmt: skip
    """Each config on validation; the best (NDCG@10) once on test."""
    results = []
    for config in tqdm(configs, desc=f"{name} grid", unit="cfg"):
        metrics = score_source(make(_train(split.val), config), split.val)
        results.append({"config": config.model_dump(), **metrics})
    best = max(range(len(configs)), key=lambda i: (results[i]["ndcg@10"], results[i]["recall@10"]))
    chosen = configs[best]
    test = score_source(make(_train(split.test), chosen), split.test)
    return chosen, results, test


def source_lists(sources: list[CandidateSource], split: Split, k: int) -> list[dict[str, list[tuple[str, float]]]]:
    """Per case: every source's ranked list, history excluded, catalog = the split's item universe."""
    out = []
    for case in tqdm(split.cases, desc="sources", unit="user"):
        query = UserQuery(user_id=case.user_id, history=case.history)
        request = SourceRequest(query=query, k=k, allowed=split.items, exclude=frozenset(query.excluded_ids()))
        out.append({s.name: s.retrieve(request) for s in sources})
    return out


def fused_metrics(lists: list[dict[str, list[tuple[str, float]]]], split: Split,
                  weights: dict[str, float]) -> dict[str, float]:  # fmt: skip
    rows = []
    for rankings, target in zip(lists, _targets(split).values(), strict=True):
        fused = rrf_fuse(rankings, weights=weights, rrf_k=60, n=20)
        rows.append(rank_metrics([c.item_id for c in fused], target))
    return mean_metrics(rows)


def weight_grid(quick: bool) -> list[dict[str, float]]:
    levels = (0.0, 1.0) if quick else (0.0, 0.25, 0.5, 1.0)
    out = []
    for item2item, collab, pop, ease in itertools.product(levels, levels, (0.0, 0.25, 0.5), levels):
        out.append({"semantic": 1.0, "item2item": item2item, "collab": collab, "popularity": pop,
                    "transition": 1.0, "ease": ease})  # fmt: skip
    return out


def sources_for(log: Interactions, collection: Any, transition: TransitionConfig, ease: EaseConfig) -> list[Any]:
    sources: list[Any] = [CollaborativeSource(log), PopularitySource(log), TransitionSource(log, transition),
                          EaseSource(log, ease)]  # fmt: skip
    if collection is not None:
        sources.insert(0, ItemToItemSource(collection))
    return sources


def tune_fusion(split: LooSplit, collection: Any, transition: TransitionConfig, ease: EaseConfig, quick: bool,
                ) -> dict[str, Any]:  # fmt: skip
    old = OLD_WEIGHTS | {"transition": 0.0, "ease": 0.0}
    val_lists = source_lists(sources_for(_train(split.val), collection, transition, ease), split.val, 100)
    grid = weight_grid(quick)
    scored = [(w, fused_metrics(val_lists, split.val, w)) for w in tqdm(grid, desc="fusion grid", unit="cfg")]
    best, best_val = max(scored, key=lambda p: (p[1]["ndcg@10"], p[1]["recall@20"]))
    test_lists = source_lists(sources_for(_train(split.test), collection, transition, ease), split.test, 100)
    return {
        "chosen": best,
        "validation": {"old": fused_metrics(val_lists, split.val, old), "new": best_val},
        "test": {"old": fused_metrics(test_lists, split.test, old), "new": fused_metrics(test_lists, split.test, best)},
        "grid_size": len(grid),
    }


def open_collection(store_path: Path, name: str) -> Any:
    from retrieval.config import EmbedConfig, StoreConfig
    from retrieval.embed import make_embedder
    from retrieval.store import Store

    store = Store(StoreConfig(path=store_path, collection=name))
    return store.open_for(make_embedder(EmbedConfig(progress=False)), name)


def _print_chosen(out: dict[str, Any], name: str) -> None:
    best = max(out[name]["grid"], key=lambda r: (r["ndcg@10"], r["recall@10"]))
    print(f"{name}: chosen {out[name]['chosen']} | validation {best} | test {out[name]['test']}", flush=True)
    for row in out[name]["grid"]:
        print(f"  {row}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ratings", type=Path, default=ML)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument(
        "--around-default", action="store_true", help="transition: the default and one change at a time"
    )
    parser.add_argument("--no-ease", action="store_true", help="skip the EASE grid (its fits are the slow part)")
    parser.add_argument("--no-fusion", action="store_true", help="skip the fusion weights (no collection needed)")
    parser.add_argument("--store", type=Path, default=Path(".recagent/chroma"), help="Chroma folder (item2item)")
    parser.add_argument("--collection", default="movies", help="ingested catalog of the same items (item2item)")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--split", default="loo", help="the evaluator's split (loo, temporal, ratio, random)")
    parser.add_argument("--ease-l2", type=float, nargs="+", help="EASE L2 values tried (default: a fixed grid)")
    args = parser.parse_args()
    started = time.perf_counter()
    split = loo_split(args.ratings, args.split)
    notes = split.test.notes or {}
    print(f"split (eval --split {args.split}): {notes}")
    t_configs = around_default() if args.around_default else transition_grid(args.quick)
    t_conf, t_grid, t_test = tune("transition", t_configs,
                                  lambda log, c: TransitionSource(log, c), split)  # fmt: skip
    out: dict[str, Any] = {
        "split": {"kind": args.split, **notes},
        "transition": {"chosen": t_conf.model_dump(), "grid": t_grid, "test": t_test},
    }
    _print_chosen(out, "transition")
    e_conf = EaseConfig()
    if not args.no_ease:
        l2s = args.ease_l2 or ((100.0, 200.0) if args.quick else (50.0, 100.0, 200.0, 500.0))
        e_configs = [EaseConfig(l2=v) for v in l2s]
        e_conf, e_grid, e_test = tune("ease", e_configs, lambda log, c: EaseSource(log, c), split)
        out["ease"] = {"chosen": e_conf.model_dump(), "grid": e_grid, "test": e_test}
        _print_chosen(out, "ease")
    if not args.no_fusion:
        collection = open_collection(args.store, args.collection)
        out["fusion"] = tune_fusion(split, collection, t_conf, e_conf, args.quick)
        print(f"fusion: {json.dumps(out['fusion'])}")
    out["seconds"] = round(time.perf_counter() - started, 1)
    print(f"done in {out['seconds']} s; default weights today: {DEFAULT_SOURCE_WEIGHTS}")
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
