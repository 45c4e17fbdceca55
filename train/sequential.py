"""Training of the sequential (SASRec-style) next-item model: ``recagent train sequential``.

Output folder::

    OUT/model.pt        the best weights (validation NDCG@10)
    OUT/items.json      item ids in token order
    OUT/manifest.json   settings, the split's counts and hashes, the log fingerprints it serves, curve, timing
    OUT/checkpoint.pt   the last epoch's full state (weights, optimizer, RNG, curve) for --resume

The data order of an epoch is a permutation seeded by (seed, epoch), and the checkpoint holds the optimizer and
torch RNG states, so a resumed run ends with the same weights and curve as an uninterrupted one.
"""

from __future__ import annotations

import hashlib
import json
import platform
import resource
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from tqdm import tqdm

from agent.errors import InputError
from retrieval.fitted import log_fingerprint
from retrieval.interactions import Interactions
from retrieval.seqmodel import ITEMS_FILE, MANIFEST, MODEL_FILE, SASRec, SeqModelConfig, right_aligned
from train.seq_data import LooSplit, loo_split, training_windows
from train.seq_metrics import next_item_metrics, target_ranks

__all__ = ["SeqResult", "SeqTrainConfig", "fit_sequential", "heldout_metrics", "train_on_split"]

CHECKPOINT = "checkpoint.pt"


class SeqTrainConfig(BaseModel):
    """How the sequential model is trained (its architecture is ``model``)."""

    model_config = ConfigDict(extra="forbid")

    model: SeqModelConfig = Field(default_factory=SeqModelConfig)
    loss: Literal["ce", "bce"] = Field(
        "ce", description="ce: softmax over every item; bce: one sampled negative per position (original SASRec)."
    )
    min_count: int = Field(5, ge=3, description="k-core threshold of the leave-one-out split.")
    epochs: int = Field(200, ge=1, description="Most passes over the training windows.")
    batch_size: int = Field(64, ge=1, description="Windows per optimizer step.")
    lr: float = Field(3e-3, gt=0, le=1.0, description="AdamW learning rate.")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay.")
    patience: int = Field(4, ge=1, description="Stop after this many validations without a better NDCG@10.")
    eval_every: int = Field(1, ge=1, description="Validate (and checkpoint) every N epochs.")
    seed: int = Field(0, description="Seed of the initial weights, data order, dropout and negatives.")
    threads: int = Field(2, ge=1, le=256, description="torch threads.")


@dataclass
class SeqResult:
    out: Path
    manifest: dict[str, Any]


def _split_hash(split: LooSplit) -> str:
    payload = json.dumps([split.item_ids, split.users, split.train, split.val, split.test])
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def _epoch_batches(n: int, cfg: SeqTrainConfig, epoch: int) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(cfg.seed * 100_003 + epoch)
    order = torch.randperm(n, generator=generator)
    return list(order.split(cfg.batch_size))


def _loss(model: SASRec, windows: torch.Tensor, cfg: SeqTrainConfig) -> torch.Tensor:
    inputs, labels = windows[:, :-1], windows[:, 1:]
    valid = (labels > 0) & (inputs > 0)
    hidden = model.hidden(inputs)[valid]
    target = labels[valid] - 1
    if cfg.loss == "ce":
        return F.cross_entropy(model.logits(hidden), target)
    items = model.item_emb.weight[1:]
    negative = torch.randint(0, model.n_items, target.shape)
    pos = (hidden * items[target]).sum(-1)
    neg = (hidden * items[negative]).sum(-1)
    return F.softplus(-pos).mean() + F.softplus(neg).mean()


def _check_out(out: Path, identity: dict[str, Any], resume: bool) -> dict[str, Any] | None:
    """The checkpoint to resume from, or None for a fresh run; InputError when OUT does not fit the request."""
    checkpoint = out / CHECKPOINT
    if not resume:
        if (out / MANIFEST).exists() or checkpoint.exists():
            raise InputError(
                f"{out} already holds a sequential model run",
                hint="pass --resume to continue it, --force to replace it, or give another --out",
            )
        return None
    if not checkpoint.is_file():
        raise InputError(f"--resume: {out} holds no checkpoint", hint="drop --resume to start a new run there")
    state: dict[str, Any] = torch.load(checkpoint, map_location="cpu", weights_only=False)
    if state["identity"] != identity:
        diff = sorted(k for k in identity if state["identity"].get(k) != identity[k])
        raise InputError(
            f"--resume: {out} holds a run with other {', '.join(diff)}",
            hint="resume with the same log and settings, or give a new --out",
        )
    return state


def train_on_split(
    split: LooSplit,
    out: Path,
    cfg: SeqTrainConfig,
    *,
    log_info: dict[str, Any] | None = None,
    resume: bool = False,
    stop_after: int | None = None,
    progress: bool = True,
) -> SeqResult:
    """Train on ``split.train``, validate on ``split.val`` and write OUT (see the module docstring).

    ``stop_after`` ends the run after that many epochs in this call, as an interruption would (for tests)."""
    identity = {"settings": cfg.model_dump(mode="json"), "split": _split_hash(split)}
    out.mkdir(parents=True, exist_ok=True)
    state = _check_out(out, identity, resume)
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    model = SASRec(len(split.item_ids), cfg.model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    run: dict[str, Any] = {"epoch": 0, "best": None, "bad": 0, "curve": [], "seconds": 0.0, "stopped": None}
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["torch_rng"])
        run = state["run"]
    else:
        (out / ITEMS_FILE).write_text(json.dumps(split.item_ids), encoding="utf-8")
    windows = torch.from_numpy(right_aligned(training_windows(split.train, cfg.model.max_len), cfg.model.max_len + 1))
    if len(windows) == 0:
        raise InputError(
            "no training window: every train sequence has fewer than 2 items",
            hint="give a log with longer user histories",
        )
    val_hist = split.train
    done_here = 0
    bar = tqdm(total=cfg.epochs, initial=run["epoch"], desc="sequential", unit="epoch", disable=not progress)
    while run["stopped"] is None and run["epoch"] < cfg.epochs:
        if stop_after is not None and done_here >= stop_after:
            break
        started = time.perf_counter()
        model.train()
        losses = []
        for batch in _epoch_batches(len(windows), cfg, run["epoch"]):
            optimizer.zero_grad()
            loss = _loss(model, windows[batch], cfg)
            loss.backward()
            optimizer.step()
            losses.append(float(loss.detach()))
        run["epoch"] += 1
        done_here += 1
        point: dict[str, Any] = {"epoch": run["epoch"], "loss": round(float(np.mean(losses)), 5)}
        if run["epoch"] % cfg.eval_every == 0 or run["epoch"] == cfg.epochs:
            metrics = next_item_metrics(target_ranks(model, val_hist, split.val))
            point.update({k: round(v, 5) for k, v in metrics.items()})
            if run["best"] is None or metrics["ndcg@10"] > run["best"]["ndcg@10"]:
                run["best"], run["bad"] = dict(point), 0
                torch.save(model.state_dict(), out / MODEL_FILE)
            else:
                run["bad"] += 1
                if run["bad"] >= cfg.patience:
                    run["stopped"] = f"early stop: no better validation NDCG@10 in {cfg.patience} validations"
        run["seconds"] += time.perf_counter() - started
        run["curve"].append(point)
        bar.update(1)
        bar.set_postfix(loss=point["loss"], val_ndcg10=point.get("ndcg@10", "-"))
        torch.save(
            {
                "identity": identity,
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "torch_rng": torch.get_rng_state(),
                "run": run,
            },
            out / CHECKPOINT,
        )
    bar.close()
    if run["stopped"] is None and run["epoch"] >= cfg.epochs:
        run["stopped"] = f"reached --epochs {cfg.epochs}"
    manifest = _manifest(split, cfg, run, log_info or {}, len(windows))
    (out / MANIFEST).write_text(json.dumps(manifest, indent=1), encoding="utf-8")
    return SeqResult(out, manifest)


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _manifest(
    split: LooSplit, cfg: SeqTrainConfig, run: dict[str, Any], log_info: dict[str, Any], n_windows: int
) -> dict[str, Any]:
    epochs = max(1, len(run["curve"]))
    return {
        "kind": "sequential",
        "settings": cfg.model_dump(mode="json"),
        "split": {
            "protocol": "leave-one-out",
            "min_count": cfg.min_count,
            "hash": _split_hash(split),
            **split.counts,
            "training_windows": n_windows,
        },
        "log": log_info,
        "best": run["best"],
        "epochs": {"done": run["epoch"], "stopped": run["stopped"] or "interrupted (resume with --resume)"},
        "curve": run["curve"],
        "cost": {
            "train_seconds": round(run["seconds"], 1),
            "seconds_per_epoch": round(run["seconds"] / epochs, 2),
            "torch_threads": torch.get_num_threads(),
            "cpu": _cpu(),
            "max_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "torch": torch.__version__,
        },
        "complete": run["stopped"] is not None,
    }


def fit_sequential(
    log: Interactions,
    out: Path,
    cfg: SeqTrainConfig,
    *,
    provenance: dict[str, Any] | None = None,
    resume: bool = False,
    force: bool = False,
    progress: bool = True,
) -> tuple[SeqResult, LooSplit]:
    """Split ``log`` (leave-one-out), train, and record which logs the model may serve: the log itself, its k-core,
    the train part (the evaluator's validation part) and train + validation items (its test part)."""
    split = loo_split(log, min_count=cfg.min_count)
    if force and not resume and out.exists():
        for name in (MODEL_FILE, ITEMS_FILE, MANIFEST, CHECKPOINT):
            (out / name).unlink(missing_ok=True)
    serves = {
        "log": log_fingerprint(log),
        "k_core": log_fingerprint(split.core),
        "train": log_fingerprint(split.train_log()),
        "train_and_validation": log_fingerprint(split.train_log(with_validation=True)),
    }
    info = {"train_fingerprint": serves["train"], "serves": serves, **(provenance or {})}
    result = train_on_split(split, out, cfg, log_info=info, resume=resume, progress=progress)
    return result, split


def heldout_metrics(folder: Path, split: LooSplit) -> dict[str, float]:
    """Test-part metrics of the saved best model: history = train + validation item, target = the test item."""
    from retrieval.seqmodel import load_model

    saved = load_model(folder)
    histories = [[*t, v] for t, v in zip(split.train, split.val, strict=True)]
    return next_item_metrics(target_ranks(saved.model, histories, split.test))
