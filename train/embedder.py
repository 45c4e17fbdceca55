"""Fine-tuning the catalog embedder on co-interaction pairs (``recagent train embedder``).

The library does the training: sentence-transformers' ``SentenceTransformerTrainer`` with
``MultipleNegativesRankingLoss`` (in-batch negatives; the no-duplicates batch sampler keeps an item from being its own
negative) over (anchor document, positive document) = :func:`retrieval.catalog.item_document` of each pair's items.
:class:`~train.embed_eval.RecallEvaluator` validates at step 0 (the base model) and every ``eval_every`` steps (and
at the last step); a callback keeps the best weights (recall@20, ties by MRR) in memory and stops after ``patience``
validations without a better one.

    OUT/                  the best model, written by SentenceTransformer.save(): RECAGENT_EMBED_MODEL=OUT
    OUT/manifest.json     base model, data hashes, split, settings, pair counts, validation curve, cost
    OUT/val_users.txt     validation users (never paired)
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from agent.errors import InputError
from eval.provenance import git_commit
from retrieval.catalog import item_document
from retrieval.config import EmbedConfig
from retrieval.embed import default_model_path, make_embedder
from retrieval.types import Item
from train.embed_eval import RecallEvaluator, better
from train.embed_pairs import EmbedDataConfig, ItemPair, ValTarget
from train.leakage import assert_no_pair_leakage

__all__ = ["EmbedTrainConfig", "EmbedderResult", "resolve_base", "train_embedder"]

MANIFEST = "manifest.json"
VAL_USERS = "val_users.txt"
KIND = "recagent-embedder"


class EmbedTrainConfig(BaseModel):
    """Optimisation settings of an embedder run."""

    model_config = ConfigDict(extra="forbid")

    epochs: int = Field(1, ge=1, description="Passes over the pairs.")
    max_steps: int | None = Field(None, ge=1, description="Optimizer steps to run (wins over epochs).")
    batch_size: int = Field(32, ge=2, description="Pairs per step (each pair's positive is the others' negative).")
    lr: float = Field(2e-5, gt=0)
    warmup_ratio: float = Field(0.1, ge=0, lt=1)
    weight_decay: float = Field(0.01, ge=0)
    seed: int = 0
    eval_every: int = Field(200, ge=1, description="Validate every N steps (and at the last step).")
    patience: int = Field(3, ge=1, description="Stop after this many validations without a better recall@20.")
    threads: int | None = Field(None, ge=1, description="torch threads (default: torch's own choice).")
    eval_batch_size: int = Field(64, ge=1, description="Documents per batch while validating.")


@dataclass
class EmbedderResult:
    out: Path
    manifest: dict[str, Any]


def resolve_base(base: str) -> str:
    """The model folder or HF id of ``--base-model`` ('default' is the bundled MiniLM)."""
    if base == "default":
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        return str(default_model_path())
    path = Path(base).expanduser()
    if path.exists():
        if not (path / "modules.json").is_file() and not (path / "config.json").is_file():
            raise InputError(
                f"--base-model {base} is not a model folder (no modules.json or config.json)",
                hint="give 'default', a folder written by SentenceTransformer.save(), or a cached Hugging Face id",
            )
        return str(path.resolve())
    return base


def _check_out(out: Path, force: bool) -> None:
    if not out.exists() or not any(out.iterdir()):
        return
    if (out / MANIFEST).is_file():
        try:
            kind = json.loads((out / MANIFEST).read_text(encoding="utf-8")).get("kind")
        except (OSError, ValueError):
            kind = None
        if kind == KIND and force:
            shutil.rmtree(out)
            return
        if kind == KIND:
            raise InputError(
                f"output folder {out} already holds an embedder run",
                hint="pass --force to replace it, or give an empty or new --out",
            )
    raise InputError(
        f"output folder {out} already holds other files",
        hint="give an empty or new --out (--force only replaces an earlier embedder run)",
    )


def _documents(items: dict[str, Item]) -> tuple[list[str], list[str]]:
    ids = list(items)
    return ids, [item_document(items[i]) for i in ids]


def _load_model(path: str) -> Any:
    from sentence_transformers import SentenceTransformer

    try:
        return SentenceTransformer(path)
    except Exception as exc:
        raise InputError(
            f"cannot load the base embedding model {path!r}: {type(exc).__name__}: {exc}",
            hint="give --base-model default (the bundled MiniLM), a folder written by SentenceTransformer.save(), "
            "or a Hugging Face id that is in the local cache",
        ) from exc


def _keep_best_callback(patience: int, record: dict[str, Any]) -> Any:
    """A TrainerCallback that records each validation, keeps the best weights and stops early."""
    from transformers import TrainerCallback

    class KeepBest(TrainerCallback):  # type: ignore[misc]
        def on_log(
            self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kwargs: Any
        ) -> None:
            if logs and "loss" in logs:
                record["loss_curve"].append([state.global_step, round(float(logs["loss"]), 5)])

        def on_evaluate(
            self,
            args: Any,
            state: Any,
            control: Any,
            metrics: dict[str, float] | None = None,
            model: Any = None,
            **kwargs: Any,
        ) -> None:
            found = {
                k.removeprefix("eval_"): float(v)
                for k, v in (metrics or {}).items()
                if k.removeprefix("eval_") in ("recall@20", "recall@50", "mrr")
            }
            if "recall@20" not in found:
                return
            _consider(record, state.global_step, found, model)
            if record["bad_evals"] >= patience:
                record["stopped"] = f"early stop: no better validation recall@20 in {patience} validations"
                control.should_training_stop = True

    return KeepBest()


def _consider(record: dict[str, Any], step: int, metrics: dict[str, float], model: Any) -> None:
    record["val_curve"].append({"step": step, **metrics})
    if better(metrics, record["best"]):
        record.update(best=metrics, best_step=step, bad_evals=0)
        record["best_state"] = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
    else:
        record["bad_evals"] += 1


def _write_val_users(out: Path, val: Sequence[ValTarget]) -> None:
    text = "# validation users of this embedder run (never paired); one id per line\n"
    (out / VAL_USERS).write_text(text + "\n".join(sorted({v.user_id for v in val})) + "\n", encoding="utf-8")


def train_embedder(
    base_model: str,
    pairs: Sequence[ItemPair],
    val: Sequence[ValTarget],
    items: dict[str, Item],
    out: Path,
    *,
    forbidden: dict[str, set[str]],
    data_cfg: EmbedDataConfig,
    train_cfg: EmbedTrainConfig,
    provenance: dict[str, Any] | None = None,
    force: bool = False,
    progress: bool = True,
) -> EmbedderResult:
    """Fine-tune ``base_model`` ('default', a folder or an HF id) on ``pairs``, validate on ``val`` over the whole
    catalog ``items``, write the best model and the manifest to ``out``."""
    started = time.perf_counter()
    if not pairs or not val:
        raise InputError("no training pairs or no validation users", hint="check the data and the split options")
    missing = sorted({i for p in pairs for i in (p.anchor, p.positive) if i not in items})
    if missing:
        raise InputError(
            f"{len(missing)} paired items are not in the catalog (e.g. {', '.join(missing[:3])})",
            hint="give the catalog the interaction log was recorded on",
        )
    assert_no_pair_leakage(pairs, forbidden)
    out = Path(out)
    _check_out(out, force)
    base_path = resolve_base(base_model)

    import torch

    threads_before = torch.get_num_threads()
    if train_cfg.threads:
        torch.set_num_threads(train_cfg.threads)
    try:
        torch.manual_seed(train_cfg.seed)
        model = _load_model(base_path)
        ids, docs = _documents(items)
        evaluator = RecallEvaluator(
            ids, docs, val, batch_size=train_cfg.eval_batch_size, query=data_cfg.val_query, fetch_k=data_cfg.fetch_k
        )
        record: dict[str, Any] = {"val_curve": [], "loss_curve": [], "best": None, "best_step": 0, "bad_evals": 0,
                                  "best_state": None, "stopped": None}  # fmt: skip
        _consider(record, 0, evaluator(model), model)
        steps, train_seconds = _fit(model, pairs, items, evaluator, record, train_cfg, progress)
        model.load_state_dict(record["best_state"])
        out.mkdir(parents=True, exist_ok=True)
        model.save(str(out), create_model_card=False)
        _write_val_users(out, val)
        pairs_seen = steps * train_cfg.batch_size  # an epoch's last batch may be smaller: an upper bound then
        if train_cfg.max_steps is None:
            pairs_seen = min(pairs_seen, len(pairs) * train_cfg.epochs)
        manifest = {
            "kind": KIND,
            "base_model": {"setting": base_model, "path": base_path,
                           "embedder_id": make_embedder(EmbedConfig(model=base_model)).id},
            "embedder_id": make_embedder(EmbedConfig(model=str(out))).id,
            "data": provenance or {},
            "split": data_cfg.protocol().model_dump(mode="json"),
            "data_config": data_cfg.model_dump(mode="json"),
            "hyper_parameters": {**train_cfg.model_dump(mode="json"), "loss": "MultipleNegativesRankingLoss",
                                 "batch_sampler": "no_duplicates"},
            "pairs": {"train": len(pairs), "val_users": len({v.user_id for v in val}),
                      "val_queries": len(val), "catalog_items": len(ids)},
            "steps": {"done": steps, "stopped": record["stopped"] or f"reached {steps} steps"},
            "base": record["val_curve"][0],
            "best": {"step": record["best_step"], **record["best"]},
            "val_curve": record["val_curve"],
            "loss_curve": record["loss_curve"],
            "cost": {"wall_seconds": round(time.perf_counter() - started, 1),
                     "train_seconds": round(train_seconds, 1),
                     "validation_seconds": round(evaluator.seconds, 1), "validations": evaluator.calls,
                     "pairs_seen": pairs_seen, "pairs_per_second": round(pairs_seen / train_seconds, 2),
                     "threads": torch.get_num_threads()},
            "versions": {p: _version(p) for p in ("sentence-transformers", "transformers", "torch", "datasets")}
            | {"python": platform.python_version()},
            "git_commit": git_commit(),
        }  # fmt: skip
        (out / MANIFEST).write_text(json.dumps(manifest, indent=1), encoding="utf-8")
        return EmbedderResult(out, manifest)
    finally:
        torch.set_num_threads(threads_before)


def _fit(model: Any, pairs: Sequence[ItemPair], items: dict[str, Item], evaluator: RecallEvaluator,
         record: dict[str, Any], cfg: EmbedTrainConfig, progress: bool) -> tuple[int, float]:  # fmt: skip
    """Run sentence-transformers' trainer; returns (steps done, training seconds without the validations)."""
    import torch
    from datasets import Dataset
    from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments
    from sentence_transformers.base.sampler import BatchSamplers
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss
    from transformers import PrinterCallback

    data = Dataset.from_dict({"anchor": [item_document(items[p.anchor]) for p in pairs],
                              "positive": [item_document(items[p.positive]) for p in pairs]})  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="recagent-embedder-") as scratch:
        args = SentenceTransformerTrainingArguments(
            output_dir=scratch, num_train_epochs=cfg.epochs, max_steps=cfg.max_steps or -1,
            per_device_train_batch_size=cfg.batch_size, learning_rate=cfg.lr, warmup_steps=cfg.warmup_ratio,
            weight_decay=cfg.weight_decay, seed=cfg.seed, data_seed=cfg.seed,
            batch_sampler=BatchSamplers.NO_DUPLICATES,  # an item is never its own in-batch negative
            eval_strategy="steps", eval_steps=cfg.eval_every, save_strategy="no",
            logging_steps=max(1, min(cfg.eval_every, 50)), report_to="none", disable_tqdm=not progress,
            dataloader_num_workers=0, dataloader_pin_memory=torch.cuda.is_available(),
        )  # fmt: skip
        trainer = SentenceTransformerTrainer(model=model, args=args, train_dataset=data,
                                             loss=MultipleNegativesRankingLoss(model), evaluator=evaluator,
                                             callbacks=[_keep_best_callback(cfg.patience, record)])  # fmt: skip
        if not progress:  # without a progress bar the trainer prints every log dict: keep quiet instead
            trainer.remove_callback(PrinterCallback)
        eval_before = evaluator.seconds
        started = time.perf_counter()
        trainer.train()
        train_seconds = max(time.perf_counter() - started - (evaluator.seconds - eval_before), 1e-9)
    steps = int(trainer.state.global_step)
    if record["val_curve"][-1]["step"] != steps and record["stopped"] is None:
        _consider(record, steps, evaluator(model), model)
    return steps, train_seconds


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return ""
