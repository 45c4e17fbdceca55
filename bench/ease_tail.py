"""EASE above ``max_items``: what the sparse tail columns (retrieval/ease_tail.py) recover of the dense model.

    .venv/bin/python bench/ease_tail.py --json FILE          # bundled ml-latest-small, ~2 min on 2 cores

On the VALIDATION part of the evaluator's ``--split loo`` (fitted on its train log: 3,650 items after the 5-core
filter), the EASE source alone ranks the split's items for every user (history = train, target = the validation
item): the dense model over every item (the reference), then ``max_items`` = N (the N most interacted items
dense) with the others scoring 0 (``tail_neighbors`` 0, the earlier plan) or with sparse tail columns of k
neighbours. Each configuration runs in a fresh process (spawn): fit seconds (wall and the process's CPU time, which
a loaded machine distorts less), peak memory (VmHWM minus the resident
set before the fit, BLAS/LAPACK work space included) and the fitted state's size. Prints markdown
(docs/benchmarks.md, "EASE above max_items").
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import sys
import time
from pathlib import Path
from queue import Empty
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from learned_sources import _status_kib, cpu_info
from tune_learned import ML, loo_split, score_source

from retrieval.ease import EaseConfig, EaseSource


def _child(options: dict[str, Any], ratings: str, queue: Any) -> None:
    split = loo_split(Path(ratings)).val
    assert split.train is not None
    before = _status_kib("VmRSS")
    started, cpu = time.perf_counter(), time.process_time()
    source = EaseSource(split.train, EaseConfig(**options))
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    peak = (_status_kib("VmHWM") - before) / 1024
    state = source.weights.nbytes + (source.tail.data.nbytes + source.tail.indices.nbytes if source.tail is not None
                                     else 0)  # fmt: skip
    metrics = score_source(source, split)
    queue.put({"options": options, "dense_items": len(source.items), "tail_items": len(source.tail_items),
               "seconds": round(seconds, 2), "cpu_seconds": round(cpu, 2), "peak_mib": round(peak, 1),
               "state_mib": round(state / 2**20, 1),
               **metrics})  # fmt: skip


def measure(options: dict[str, Any], ratings: Path) -> dict[str, Any]:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_child, args=(options, str(ratings), queue))
    proc.start()
    while True:
        try:
            out: dict[str, Any] = queue.get(timeout=1)
            break
        except Empty:
            if not proc.is_alive():
                raise RuntimeError(f"the fit process died (exit code {proc.exitcode})") from None
    proc.join()
    return out


def render(rows: list[dict[str, Any]]) -> str:
    head = ("configuration", "dense items", "tail items", "fit s (wall)", "fit s (CPU)", "peak MiB", "state MiB",
            "NDCG@10", "Recall@10", "NDCG@20", "Recall@20")  # fmt: skip
    lines = ["| " + " | ".join(head) + " |", "|---" + "|---:" * (len(head) - 1) + "|"]
    for r in rows:
        o = r["options"]
        name = ("dense, every item" if o["max_items"] >= 12_000 else
                f"max_items {o['max_items']}, tail_neighbors {o['tail_neighbors']}")  # fmt: skip
        lines.append(f"| {name} | {r['dense_items']:,} | {r['tail_items']:,} | {r['seconds']} | {r['cpu_seconds']} | "
                     f"{r['peak_mib']} | "
                     f"{r['state_mib']} | {r['ndcg@10']:.4f} | {r['recall@10']:.4f} | {r['ndcg@20']:.4f} | "
                     f"{r['recall@20']:.4f} |")  # fmt: skip
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ratings", type=Path, default=ML)
    parser.add_argument("--max-items", type=int, default=1000, help="dense items of the restricted configurations")
    parser.add_argument("--neighbors", type=int, nargs="+", default=[0, 50, 100, 200])
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    configs = [{"l2": 50.0, "max_items": 12_000, "tail_neighbors": 0}]
    configs += [{"l2": 50.0, "max_items": args.max_items, "tail_neighbors": k} for k in args.neighbors]
    out: dict[str, Any] = {"machine": cpu_info(), "load_before": round(os.getloadavg()[0], 1), "rows": []}
    for options in configs:
        out["rows"].append(measure(options, args.ratings))
        print(out["rows"][-1], flush=True)
    out["load_after"] = round(os.getloadavg()[0], 1)
    print(render(out["rows"]))
    print(f"load average (1 min): {out['load_before']} before, {out['load_after']} after; {out['machine']}")
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
