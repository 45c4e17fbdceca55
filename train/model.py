"""The model side of training: load the base model, wrap it in LoRA, encode examples, the label loss, validation.

Loss: cross-entropy over the option labels' logits at the LAST prompt position only (``logits_to_keep=1``: the
vocabulary head, 262k rows on Gemma 3, is evaluated at one position, not all). Softmax over the labels of the
example is exactly what the option-logit ranker reads at inference (log-softmax over the label tokens of the
next-token distribution), so training moves that distribution and nothing else. Tokens are the inference ones:
the prompt through :func:`agent.llm.prompting.encode_request`, labels through
:func:`agent.llm.prompting.label_token_ids`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from agent.errors import ConfigError, InputError, ModelError
from agent.llm.base import LLMRequest
from agent.llm.prompting import encode_request, label_token_ids
from prompts import PromptRegistry
from train.config import DataConfig, TrainConfig
from train.examples import RankExample, labels, render_messages

__all__ = [
    "Encoded",
    "batch_label_logits",
    "encode_examples",
    "load_base",
    "num_layers",
    "resolve_device",
    "resolve_dtype",
    "validate",
    "wrap_lora",
]


@dataclass(frozen=True)
class Encoded:
    """Token ids of one example, its label token ids (one per option) and the target's index."""

    ids: list[int]
    label_ids: list[int]
    target: int


def load_base(model_path: str, dtype_name: str) -> tuple[Any, Any]:
    """(model, tokenizer) from a model folder or Hugging Face id; ModelError with a hint when it cannot load."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    dtype = getattr(torch, dtype_name, None)
    if not isinstance(dtype, torch.dtype):
        raise ModelError(f"unknown dtype {dtype_name!r}", hint="set RECAGENT_LLM_DTYPE to bfloat16 or float32")
    try:
        tokenizer = AutoTokenizer.from_pretrained(model_path)
        model = AutoModelForCausalLM.from_pretrained(model_path, dtype=dtype)
    except (OSError, ValueError) as exc:
        raise ModelError(
            f"transformers could not load model {model_path!r}: {exc}",
            hint="check RECAGENT_LLM_MODEL points at a complete model folder (config.json, weights, tokenizer)",
        ) from exc
    return model, tokenizer


def resolve_device(name: str) -> str:
    """``auto`` -> ``cuda`` when torch sees a GPU, else ``cpu``; ``cuda`` without one is a ConfigError."""
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            "--device cuda: torch sees no GPU", hint="use --device cpu (or auto), or a CUDA build of torch"
        )
    return name


def resolve_dtype(name: str, device: str, serving: str) -> str:
    """The training dtype: ``auto`` is float32 on a CPU (faster autograd there) and the serving dtype on a GPU."""
    if name != "auto":
        return name
    return "float32" if device == "cpu" else serving


def num_layers(model: Any) -> int | None:
    """The decoder's layer count from the model config (text config of multimodal models), None if unknown."""
    n = getattr(model.config.get_text_config(), "num_hidden_layers", None)
    return n if isinstance(n, int) else None


def wrap_lora(model: Any, cfg: TrainConfig) -> Any:
    """The model with trainable LoRA adapters on ``cfg.target_modules`` (everything else frozen), on the last
    ``cfg.lora_layers`` decoder layers when set."""
    from peft import LoraConfig, get_peft_model

    layers: list[int] | None = None
    if cfg.lora_layers is not None:
        total = num_layers(model)
        if total is None:
            raise ConfigError(
                "--lora-layers: this model's config names no layer count (num_hidden_layers)",
                hint="drop --lora-layers to adapt every layer",
            )
        if cfg.lora_layers > total:
            raise ConfigError(
                f"--lora-layers {cfg.lora_layers}: the model has {total} decoder layers",
                hint=f"give 1..{total}, or drop --lora-layers to adapt every layer",
            )
        layers = list(range(total - cfg.lora_layers, total))
    config = LoraConfig(
        r=cfg.lora_r,
        lora_alpha=cfg.lora_alpha,
        lora_dropout=cfg.lora_dropout,
        target_modules=list(cfg.target_modules),
        layers_to_transform=layers,
        bias="none",
        task_type="CAUSAL_LM",
    )
    try:
        return get_peft_model(model, config)
    except ValueError as exc:
        names = sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules() if type(m).__name__ == "Linear"})
        raise ConfigError(
            f"LoRA target modules {cfg.target_modules} do not fit this model: {exc}",
            hint=f"pick from the model's linear layers: {', '.join(names)}",
        ) from exc


def encode_examples(
    tokenizer: Any,
    registry: PromptRegistry,
    examples: Sequence[RankExample],
    data_cfg: DataConfig,
    max_len: int,
) -> list[Encoded]:
    """Render and tokenize every example exactly as the inference engines do."""
    by_m: dict[int, list[int]] = {}
    out: list[Encoded] = []
    for ex in examples:
        m = len(ex.options)
        if m not in by_m:
            by_m[m] = list(label_token_ids(tokenizer, labels(m)).values())
        msgs = render_messages(
            registry, data_cfg.template, ex, history_limit=data_cfg.history, include_text=data_cfg.include_text
        )
        ids = encode_request(tokenizer, LLMRequest.of(msgs))
        if len(ids) > max_len:
            raise InputError(
                f"example of user {ex.user_id} is {len(ids)} tokens, over the limit of {max_len}",
                hint="show fewer history items or options (--history, --options), or raise --max-len",
            )
        out.append(Encoded(ids=ids, label_ids=by_m[m], target=ex.label))
    return out


def _collate(batch: Sequence[Encoded], pad_id: int, device: Any = None) -> dict[str, Any]:
    """Left-padded ids (the last position is every prompt's last token), mask, position ids, label index, on
    ``device`` (the model's)."""
    import torch

    width = max(len(e.ids) for e in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for row, e in enumerate(batch):
        ids[row, width - len(e.ids) :] = torch.tensor(e.ids)
        mask[row, width - len(e.ids) :] = 1
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    m = max(len(e.label_ids) for e in batch)
    label_ids = torch.zeros((len(batch), m), dtype=torch.long)
    label_mask = torch.zeros((len(batch), m), dtype=torch.bool)
    for row, e in enumerate(batch):
        label_ids[row, : len(e.label_ids)] = torch.tensor(e.label_ids)
        label_mask[row, : len(e.label_ids)] = True
    targets = torch.tensor([e.target for e in batch])
    out = {"ids": ids, "mask": mask, "positions": positions, "label_ids": label_ids, "label_mask": label_mask,
           "targets": targets}  # fmt: skip
    return {k: v.to(device) for k, v in out.items()} if device is not None else out


def batch_label_logits(model: Any, batch: Sequence[Encoded], pad_id: int) -> tuple[Any, Any]:
    """(label logits [B, m] with -inf on padding labels, targets [B]) from one forward pass, last position only."""
    t = _collate(batch, pad_id, getattr(model, "device", None))
    out = model(input_ids=t["ids"], attention_mask=t["mask"], position_ids=t["positions"], logits_to_keep=1)
    last = out.logits[:, -1, :].float()
    picked = last.gather(1, t["label_ids"]).masked_fill(~t["label_mask"], -math.inf)
    return picked, t["targets"]


def label_loss(model: Any, batch: Sequence[Encoded], pad_id: int) -> Any:
    import torch.nn.functional as F

    logits, targets = batch_label_logits(model, batch, pad_id)
    return F.cross_entropy(logits, targets)


def _ndcg_at_10(rank: int) -> float:
    """NDCG@10 of one relevant option ranked ``rank`` (1 = first)."""
    return 1.0 / math.log2(rank + 1) if rank <= 10 else 0.0


def validate(model: Any, examples: Sequence[Encoded], pad_id: int, batch_size: int) -> dict[str, float]:
    """Mean loss, NDCG@10, accuracy (target ranked first), MRR of the label ranking, the share of prompts
    whose top label is the last one (the base model's position bias), and ``order_ndcg@10``: the NDCG@10 of the
    options' own order (A first), what the model must beat when the options come in retrieval order."""
    import torch

    was_training = model.training
    model.eval()
    loss = ndcg = acc = mrr = last = order = 0.0
    with torch.inference_mode():
        for at in range(0, len(examples), batch_size):
            chunk = examples[at : at + batch_size]
            logits, targets = batch_label_logits(model, chunk, pad_id)
            logp = torch.log_softmax(logits, dim=-1)
            for row, e in enumerate(chunk):
                scores = logp[row, : len(e.label_ids)]
                rank = int((scores > scores[e.target]).sum().item()) + 1
                loss -= float(scores[e.target])
                ndcg += _ndcg_at_10(rank)
                acc += rank == 1
                mrr += 1.0 / rank
                last += int(scores.argmax()) == len(e.label_ids) - 1
                order += _ndcg_at_10(e.target + 1)
            del targets
    if was_training:
        model.train()
    n = max(len(examples), 1)
    return {"loss": loss / n, "ndcg@10": ndcg / n, "accuracy": acc / n, "mrr": mrr / n, "last_label_share": last / n,
            "order_ndcg@10": order / n}  # fmt: skip
