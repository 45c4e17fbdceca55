"""The training loop and the run folder.

    OUT/adapter_config.json, adapter_model.safetensors   the best adapter (peft; RECAGENT_LLM_ADAPTER=OUT)
    OUT/manifest.json                                     base model, data hashes, split, settings, curves, cost
    OUT/val_users.txt                                     validation users (never trained on): `eval run --user-ids`
    OUT/best/                                             best adapter so far (during training)
    OUT/checkpoint/                                       last checkpoint: adapter + optimizer, scheduler, RNG, state
    OUT/merged/                                           with --merge: base + adapter as one model folder

Steps are optimizer steps (``batch_size * grad_accum`` examples). Validation runs at step 0 (the base model) and
every ``eval_every`` steps; early stopping after ``patience`` validations without a better NDCG@10. Data order is a
seeded permutation per epoch and the checkpoint holds the optimizer, scheduler and torch RNG states, so a resumed
run continues exactly where the checkpoint left it (same batches, same dropout masks, same weights).
"""

from __future__ import annotations

import hashlib
import json
import math
import platform
import random
import shutil
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from agent.errors import InputError
from agent.llm.dtype import resolve_llm_dtype
from agent.settings import Settings
from eval.provenance import git_commit
from prompts import PromptRegistry
from train.config import DataConfig, TrainConfig, fingerprint
from train.examples import RankExample
from train.leakage import assert_no_leakage
from train.model import (
    Encoded,
    encode_examples,
    label_loss,
    load_base,
    resolve_device,
    resolve_dtype,
    validate,
    wrap_lora,
)

__all__ = ["TrainResult", "examples_digest", "train_ranker"]

CHECKPOINT = "checkpoint"
BEST = "best"
MANIFEST = "manifest.json"
VAL_USERS = "val_users.txt"
STATE = "state.json"
TRAINER_STATE = "trainer.pt"


@dataclass
class TrainResult:
    out: Path
    manifest: dict[str, Any]
    interrupted: bool = False


def examples_digest(examples: Sequence[RankExample]) -> str:
    """Hash of what the examples contain (users, targets, options, labels, histories)."""
    digest = hashlib.sha256()
    for ex in examples:
        row = [ex.user_id, ex.target_id, ex.label, ex.option_ids(), ex.history_ids()]
        digest.update(json.dumps(row).encode())
    return digest.hexdigest()[:16]


def _identity(model_path: str, data_cfg: DataConfig, train_cfg: TrainConfig, train: str, val: str) -> dict[str, Any]:
    return {
        "base_model": model_path,
        "data": data_cfg.model_dump(mode="json"),
        "train": train_cfg.model_dump(mode="json", exclude={"threads", "device"}),
        "train_examples": train,
        "val_examples": val,
    }


def _check_out(out: Path, identity: dict[str, Any], resume: bool) -> dict[str, Any] | None:
    """The checkpoint state to resume from, or None for a fresh run; InputError when OUT does not fit."""
    state_file = out / CHECKPOINT / STATE
    if not resume:
        if out.exists() and any(out.iterdir()):
            what = "a training run" if (state_file.is_file() or (out / MANIFEST).is_file()) else "other files"
            raise InputError(
                f"output folder {out} already holds {what}",
                hint="pass --resume to continue that run, or give an empty or new --out",
            )
        return None
    if not state_file.is_file():
        raise InputError(f"--resume: {out} holds no checkpoint", hint="drop --resume to start a new run in it")
    state = json.loads(state_file.read_text(encoding="utf-8"))
    saved = state.get("identity", {})
    if fingerprint(saved) != fingerprint(identity):
        keys = sorted(k for k in set(saved) | set(identity) if saved.get(k) != identity.get(k))
        detail = []
        for k in keys:
            a, b = saved.get(k), identity.get(k)
            if isinstance(a, dict) and isinstance(b, dict):
                detail += [
                    f"{k}.{f}: {a.get(f)!r} -> {b.get(f)!r}" for f in sorted(set(a) | set(b)) if a.get(f) != b.get(f)
                ]
            else:
                detail.append(f"{k}: {a!r} -> {b!r}")
        raise InputError(
            f"--resume: {out} holds a different run ({'; '.join(detail[:6])})",
            hint="resume with the same data and settings, or give a new --out",
        )
    return dict(state)


def _schedule(total: int, warmup_ratio: float) -> Any:
    warmup = int(total * warmup_ratio)

    def factor(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total - step) / max(1, total - warmup))

    return factor


def _save_adapter(model: Any, folder: Path) -> None:
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(str(tmp), save_embedding_layers=False)
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)


class _Loop:
    def __init__(self, settings: Settings, model_path: str, data_cfg: DataConfig, cfg: TrainConfig, out: Path,
                 registry: PromptRegistry, progress: bool) -> None:  # fmt: skip
        import torch

        self.torch = torch
        self.cfg, self.data_cfg, self.out, self.progress = cfg, data_cfg, out, progress
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        torch.manual_seed(cfg.seed)
        self.device = resolve_device(cfg.device)
        self.dtype = resolve_dtype(cfg.dtype, self.device, settings.llm_dtype)
        base, self.tokenizer = load_base(model_path, self.dtype)
        self.model = wrap_lora(base, cfg).to(self.device)
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        self.registry = registry
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(self.params, lr=cfg.lr, weight_decay=cfg.weight_decay)

    def encode(self, examples: Sequence[RankExample], *, every_option: bool = False) -> list[Encoded]:
        return encode_examples(
            self.tokenizer, self.registry, examples, self.data_cfg, self.cfg.max_len, every_option=every_option
        )

    def validate(self, val: Sequence[Encoded]) -> dict[str, float]:
        return validate(self.model, val, self.pad_id, max(self.cfg.batch_size, 8), progress=self.progress)

    def save_checkpoint(self, scheduler: Any, state: dict[str, Any]) -> None:
        from peft import get_peft_model_state_dict

        torch = self.torch
        folder = self.out / CHECKPOINT
        tmp = folder.with_name(folder.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        torch.save(
            {
                "adapter": get_peft_model_state_dict(self.model),
                "optimizer": self.optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "torch_rng": torch.get_rng_state(),
                "cuda_rng": torch.cuda.get_rng_state_all() if self.device == "cuda" else None,
                "python_rng": random.getstate(),
            },
            tmp / TRAINER_STATE,
        )
        (tmp / STATE).write_text(json.dumps(state, indent=1), encoding="utf-8")
        shutil.rmtree(folder, ignore_errors=True)
        tmp.rename(folder)

    def load_checkpoint(self, scheduler: Any) -> None:
        from peft import set_peft_model_state_dict

        torch = self.torch
        # on the CPU: RNG states must stay CPU byte tensors; the adapter and optimizer state follow their parameters
        saved = torch.load(self.out / CHECKPOINT / TRAINER_STATE, weights_only=False, map_location="cpu")
        set_peft_model_state_dict(self.model, saved["adapter"])
        self.optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        torch.set_rng_state(saved["torch_rng"])
        if self.device == "cuda" and saved.get("cuda_rng") is not None:
            torch.cuda.set_rng_state_all(saved["cuda_rng"])
        random.setstate(saved["python_rng"])

    def step(self, groups: Sequence[Sequence[Encoded]]) -> float:
        """One optimizer step over the micro-batches ``groups``; returns the mean example loss."""
        n = sum(len(g) for g in groups)
        total = 0.0
        for group in groups:
            loss = label_loss(self.model, group, self.pad_id) * (len(group) / n)
            loss.backward()
            total += float(loss.detach())
        if self.cfg.max_grad_norm:
            self.torch.nn.utils.clip_grad_norm_(self.params, self.cfg.max_grad_norm)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return total


def _epoch_steps(n: int, cfg: TrainConfig, epoch: int) -> list[list[list[int]]]:
    """The optimizer steps of one epoch: groups of ``grad_accum`` micro-batches of example indices."""
    order = list(range(n))
    random.Random(f"{cfg.seed}:epoch:{epoch}").shuffle(order)
    micro = [order[i : i + cfg.batch_size] for i in range(0, n, cfg.batch_size)]
    return [micro[i : i + cfg.grad_accum] for i in range(0, len(micro), cfg.grad_accum)]


def _write_val_users(out: Path, val: Sequence[RankExample]) -> None:
    """The validation users (never trained on), for `recagent eval run --part validation --user-ids OUT/val_users.txt`
    to choose inference settings such as the blend weight."""
    users = sorted({e.user_id for e in val})
    out.mkdir(parents=True, exist_ok=True)
    text = "# validation users of this training run (never trained on); one id per line\n" + "\n".join(users) + "\n"
    (out / VAL_USERS).write_text(text, encoding="utf-8")


def train_ranker(
    settings: Settings,
    model_path: str,
    train: Sequence[RankExample],
    val: Sequence[RankExample],
    out: Path,
    *,
    forbidden: Mapping[str, set[str]],
    data_cfg: DataConfig,
    train_cfg: TrainConfig,
    provenance: dict[str, Any] | None = None,
    resume: bool = False,
    merge: bool = False,
    progress: bool = True,
    registry: PromptRegistry | None = None,
    stop_after: int | None = None,
) -> TrainResult:
    """LoRA-train ``model_path`` on ``train``, validate on ``val``, write the run folder ``out``.

    ``forbidden`` is the split's test pairs ({user: items}); the leakage guard refuses examples that hold one.
    ``stop_after`` stops (checkpointed, like an interruption) after that many steps in total: for tests.
    """
    started = time.perf_counter()
    if not train or not val:
        raise InputError("no training or no validation examples", hint="check the data and the split options")
    assert_no_leakage([*train, *val], forbidden)
    out = Path(out)
    identity = _identity(model_path, data_cfg, train_cfg, examples_digest(train), examples_digest(val))
    state = _check_out(out, identity, resume)
    _write_val_users(out, val)
    if state is not None and state.get("finished"):
        manifest = json.loads((out / MANIFEST).read_text(encoding="utf-8")) if (out / MANIFEST).is_file() else {}
        return TrainResult(out, manifest)
    out.mkdir(parents=True, exist_ok=True)
    registry = registry or PromptRegistry()
    loop = _Loop(settings, model_path, data_cfg, train_cfg, out, registry, progress)
    torch = loop.torch
    enc_train, enc_val = loop.encode(train), loop.encode(val, every_option=True)
    cfg = train_cfg
    per_epoch = len(_epoch_steps(len(enc_train), cfg, 0))
    total = cfg.max_steps or cfg.epochs * per_epoch
    scheduler = torch.optim.lr_scheduler.LambdaLR(loop.optimizer, _schedule(total, cfg.warmup_ratio))
    if state is None:
        state = _first_state(loop, enc_val, identity, out)
    else:
        loop.load_checkpoint(scheduler)
    bar = tqdm(total=total, initial=state["step"], desc="train", unit="step", disable=not progress,
               dynamic_ncols=True)  # fmt: skip
    interrupted = _train_steps(loop, scheduler, state, enc_train, enc_val, cfg, total, per_epoch, out, bar, stop_after)
    bar.close()
    if interrupted:
        return TrainResult(out, {}, interrupted=True)
    state["finished"] = True
    state["stopped"] = state["stopped"] or f"reached {total} steps"
    loop.save_checkpoint(scheduler, state)
    _keep_adapter(loop, cfg, out)
    if merge:
        merge_adapter(settings, model_path, out, out / "merged")
    counts = {"train": len(train), "val": len(val), "train_prompts": len(enc_train), "val_prompts": len(enc_val)}
    manifest = _manifest(settings, model_path, data_cfg, cfg, state, total, per_epoch, counts, provenance or {},
                         registry, merged=merge, wall=time.perf_counter() - started,
                         runtime={"device": loop.device, "dtype": loop.dtype})  # fmt: skip
    (out / MANIFEST).write_text(json.dumps(manifest, indent=1), encoding="utf-8")
    return TrainResult(out, manifest)


def _first_state(loop: _Loop, enc_val: list[Encoded], identity: dict[str, Any], out: Path) -> dict[str, Any]:
    """The state of a new run: validated once before any step (step 0), whose adapter is the first best."""
    state: dict[str, Any] = {"identity": identity, "step": 0, "examples": 0, "train_seconds": 0.0,
                             "wall_seconds": 0.0, "loss_curve": [], "val_curve": [], "best_step": 0,
                             "best_score": None, "bad_evals": 0, "finished": False, "stopped": None}  # fmt: skip
    metrics = loop.validate(enc_val)
    state["val_curve"].append({"step": 0, **metrics})
    state["best_score"] = metrics["ndcg@10"]
    _save_adapter(loop.model, out / BEST)
    return state


def _train_steps(
    loop: _Loop,
    scheduler: Any,
    state: dict[str, Any],
    enc_train: list[Encoded],
    enc_val: list[Encoded],
    cfg: TrainConfig,
    total: int,
    per_epoch: int,
    out: Path,
    bar: Any,
    stop_after: int | None,
) -> bool:
    """Optimizer steps from ``state["step"]`` to ``total`` (or an early stop), validating and checkpointing on the
    way; True when ``stop_after`` interrupted the run."""
    save_every = cfg.save_every or cfg.eval_every
    session_start = time.perf_counter()
    wall_before = state["wall_seconds"]
    while state["step"] < total and state["stopped"] is None:
        epoch, skip = divmod(state["step"], per_epoch)
        for groups in _epoch_steps(len(enc_train), cfg, epoch)[skip:]:
            t0 = time.perf_counter()
            loss = loop.step([[enc_train[i] for i in g] for g in groups])
            scheduler.step()
            state["train_seconds"] += time.perf_counter() - t0
            state["step"] += 1
            state["examples"] += sum(len(g) for g in groups)
            state["loss_curve"].append([state["step"], round(loss, 5)])
            step = state["step"]
            if step % cfg.eval_every == 0 or step == total:
                _validate(loop, state, enc_val, cfg, step, out)
            ex_s = state["examples"] / max(state["train_seconds"], 1e-9)
            val_now = state["val_curve"][-1]["ndcg@10"]
            bar.set_postfix_str(f"loss {loss:.3f} val ndcg {val_now:.3f} {ex_s:.2f} ex/s")
            bar.update(1)
            state["wall_seconds"] = wall_before + time.perf_counter() - session_start
            done = step >= total or state["stopped"] is not None
            if step % save_every == 0 or done or (stop_after is not None and step >= stop_after):
                loop.save_checkpoint(scheduler, state)
            if stop_after is not None and step >= stop_after and not done:
                return True
            if done:
                break
    return False


def _validate(
    loop: _Loop, state: dict[str, Any], enc_val: list[Encoded], cfg: TrainConfig, step: int, out: Path
) -> None:
    """One validation: a better NDCG@10 saves the best adapter, ``patience`` validations without one stop early."""
    metrics = loop.validate(enc_val)
    state["val_curve"].append({"step": step, **metrics})
    if metrics["ndcg@10"] > state["best_score"] + cfg.min_delta:
        state.update(best_score=metrics["ndcg@10"], best_step=step, bad_evals=0)
        _save_adapter(loop.model, out / BEST)
    else:
        state["bad_evals"] += 1
        if state["bad_evals"] >= cfg.patience:
            state["stopped"] = f"early stop: no better validation NDCG@10 in {cfg.patience} validations"


def _keep_adapter(loop: _Loop, cfg: TrainConfig, out: Path) -> None:
    """The adapter the run keeps (best or last) copied to the top of ``out``."""
    if cfg.keep == "last":
        _save_adapter(loop.model, out / "last")
    for f in (out / (BEST if cfg.keep == "best" else "last")).iterdir():
        shutil.copy2(f, out / f.name)


def merge_adapter(settings: Settings, model_path: str, adapter: Path, target: Path) -> Path:
    """Base model + adapter merged into one model folder (loads anywhere, vLLM without LoRA included)."""
    from peft import PeftModel

    base, tokenizer = load_base(model_path, resolve_llm_dtype(settings.llm_dtype))
    merged = PeftModel.from_pretrained(base, str(adapter)).merge_and_unload()
    tmp = target.with_name(target.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    merged.save_pretrained(str(tmp))
    tokenizer.save_pretrained(str(tmp))
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)
    return target


def _manifest(settings: Settings, model_path: str, data_cfg: DataConfig, cfg: TrainConfig, state: dict[str, Any],
              total: int, per_epoch: int, counts: dict[str, int], provenance: dict[str, Any],
              registry: PromptRegistry, *, merged: bool, wall: float,
              runtime: dict[str, str]) -> dict[str, Any]:  # fmt: skip
    import peft
    import torch
    import transformers

    train_s = state["train_seconds"]
    steps = state["step"]
    return {
        "kind": "recagent-ranker-adapter",
        "base_model": {
            "path": model_path,
            "setting": settings.llm_model,
            "dtype": resolve_llm_dtype(settings.llm_dtype),
        },
        "adapter": ".",
        "merged": "merged" if merged else None,
        "strategy": data_cfg.strategy,
        "template": {"name": data_cfg.prompt_template, "version": registry.get(data_cfg.prompt_template).version_id},
        "data": provenance,
        "split": data_cfg.protocol().model_dump(mode="json"),
        "data_config": data_cfg.model_dump(mode="json"),
        "hyper_parameters": cfg.model_dump(mode="json"),
        "examples": counts,
        "steps": {"done": steps, "planned": total, "per_epoch": per_epoch, "stopped": state["stopped"]},
        "best": {"step": state["best_step"], "val_ndcg@10": state["best_score"]},
        "kept": {"which": cfg.keep, "step": state["best_step"] if cfg.keep == "best" else steps},
        "val_curve": state["val_curve"],
        "loss_curve": state["loss_curve"],
        "cost": {
            "wall_seconds": round(state["wall_seconds"], 1),
            "train_seconds": round(train_s, 1),
            "examples_per_second": round(state["examples"] / train_s, 3) if train_s else None,  # prompts/s
            "seconds_per_step": round(train_s / steps, 3) if steps else None,
            "examples_seen": state["examples"],
            "threads": torch.get_num_threads(),
            "device": runtime["device"],
            "dtype": runtime["dtype"],
            "this_session_seconds": round(wall, 1),
        },
        "versions": {
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "peft": peft.__version__,
            "python": platform.python_version(),
        },
        "git_commit": git_commit(),
        "nan_check": all(math.isfinite(v) for _, v in state["loss_curve"]),
    }
