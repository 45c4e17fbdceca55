"""LoRA ranker training: seconds per optimizer step for the training dtype and the number of adapted layers.

    .venv/bin/python bench/train_step.py                 # bundled Gemma 3 270M, 900-token prompts, batch 4, 3 repeats
    .venv/bin/python bench/train_step.py --quick         # 1 repeat, 300-token prompts (smoke test)
    .venv/bin/python bench/train_step.py --model DIR     # any causal LM folder or Hugging Face id

Every configuration runs the trainer's own code path (``train.model.load_base``, ``wrap_lora`` and ``label_loss``:
the last-position loss over 10 option labels, backward, AdamW step) on the same token batches. The prompts are
random token ids of ``--tokens`` length (900: the measured length of a `--options 10 --history 5` MovieLens prompt
with the `rank_options` template), so the figure is the model's cost, not the data's. Configurations are
interleaved within each repeat (the order rotates from one repeat to the next) so that a shared, noisy CPU slows
them alike; a configuration's speed-up is the median over repeats of (baseline s/step / its s/step in the same
repeat). The baseline is the trainer's former behaviour: the serving dtype (bfloat16) and LoRA on every layer.

Prints a markdown table (the section "LoRA training step" of docs/benchmarks.md) and optionally writes JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from train.config import TrainConfig
from train.model import Encoded, label_loss, load_base, num_layers, wrap_lora

LABELS = 10


@dataclass
class Config:
    name: str
    dtype: str
    layers: int | None
    model: Any = None
    optimizer: Any = None
    seconds: list[float] = field(default_factory=list)


def _batches(n: int, batch: int, tokens: int, vocab: int, seed: int) -> list[list[Encoded]]:
    import random

    rng = random.Random(seed)
    label_ids: list[tuple[int, ...]] = [(i,) for i in rng.sample(range(1000, min(vocab, 50_000)), LABELS)]
    return [
        [
            Encoded(
                ids=[rng.randrange(1000, min(vocab, 200_000)) for _ in range(tokens)],
                label_ids=label_ids,
                target=rng.randrange(LABELS),
            )
            for _ in range(batch)
        ]
        for _ in range(n)
    ]


def _step(cfg: Config, batch: list[Encoded]) -> float:
    t0 = time.perf_counter()
    loss = label_loss(cfg.model, batch, 0)
    loss.backward()
    cfg.optimizer.step()
    cfg.optimizer.zero_grad(set_to_none=True)
    return time.perf_counter() - t0


def main() -> None:
    import torch

    from agent.llm.models import resolve_model
    from agent.settings import load_settings

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=None, help="model folder or id (default: the bundled Gemma 3 270M)")
    ap.add_argument("--tokens", type=int, default=900)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--steps", type=int, default=2, help="timed steps per configuration and repeat")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    if args.quick:
        args.tokens, args.repeats = 300, 1
    torch.set_num_threads(args.threads)
    model_path = resolve_model(load_settings(), args.model)
    probe, _ = load_base(model_path, "float32")
    total = num_layers(probe) or 0
    vocab = probe.config.get_text_config().vocab_size
    del probe
    third = max(1, total // 3)
    configs = [
        Config(f"bfloat16, all {total} layers (baseline)", "bfloat16", None),
        Config(f"float32, all {total} layers", "float32", None),
        Config(f"bfloat16, last {third} layers", "bfloat16", third),
        Config(f"float32, last {third} layers", "float32", third),
        Config(f"float32, last {max(1, third // 2)} layers", "float32", max(1, third // 2)),
    ]
    for c in configs:
        torch.manual_seed(0)
        base, _ = load_base(model_path, c.dtype)
        c.model = wrap_lora(base, TrainConfig(lora_layers=c.layers))
        c.model.train()
        c.optimizer = torch.optim.AdamW([p for p in c.model.parameters() if p.requires_grad], lr=1e-4)
        _step(c, _batches(1, args.batch, args.tokens, vocab, seed=99)[0])  # warm-up, not timed
    batches = _batches(args.steps, args.batch, args.tokens, vocab, seed=0)
    ratios: dict[str, list[float]] = {c.name: [] for c in configs}
    for r in range(args.repeats):
        order = configs[r % len(configs) :] + configs[: r % len(configs)]
        per: dict[str, float] = {}
        for c in order:
            times = [_step(c, b) for b in batches]
            c.seconds.append(statistics.median(times))
            per[c.name] = c.seconds[-1]
            print(f"repeat {r + 1}: {c.name}: {per[c.name]:.2f} s/step", file=sys.stderr, flush=True)
        for c in configs:
            ratios[c.name].append(per[configs[0].name] / per[c.name])
    load = os.getloadavg()
    print(f"Model {model_path}, {args.batch} x {args.tokens}-token prompts per step, {args.threads} threads, "
          f"{args.repeats} repeats x {args.steps} steps; load average after the run {load[0]:.1f}, "
          f"{platform.machine()}, torch {torch.__version__}\n")  # fmt: skip
    print("| configuration | s/step (median) | examples/s | speed-up vs baseline (median of same-repeat ratios) |")
    print("| --- | --- | --- | --- |")
    rows = []
    for c in configs:
        s = statistics.median(c.seconds)
        sp = statistics.median(ratios[c.name])
        rows.append({"config": c.name, "s_per_step": s, "examples_per_s": args.batch / s, "speedup": sp,
                     "seconds": c.seconds})  # fmt: skip
        print(f"| {c.name} | {s:.2f} | {args.batch / s:.3f} | {sp:.2f}x |")
    if args.json:
        args.json.write_text(json.dumps({"args": vars(args) | {"json": str(args.json)}, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
