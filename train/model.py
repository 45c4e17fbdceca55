"""The model side of training: load the base model, wrap it in LoRA, encode examples, the label loss, validation.

Loss: cross-entropy over the labels' logits at the LAST prompt position only (``logits_to_keep=1``: the
vocabulary head, 262k rows on Gemma 3, is evaluated at one position, not all). Softmax over the labels of the
example is exactly what the option-logit ranker reads at inference (log-softmax over the label tokens of the
next-token distribution), so training moves that distribution and nothing else. Tokens are the inference ones:
the prompt through :func:`agent.llm.prompting.encode_request`, labels through
:func:`agent.llm.prompting.label_token_ids`.

Pointwise runs (``strategy=pointwise``) have two labels per prompt, Yes and No, and a label's logit is the
log-sum-exp over its token variants (``" Yes"`` and ``"Yes"`` on Gemma), the score ``run_pointwise`` reads
(:data:`agent.rerank.pointwise.YES_NO_VARIANTS`, the first variant set whose tokens are all single tokens).
Validation then scores every option of a window (score = logit Yes - logit No) and ranks them, so the curve's
NDCG@10 is the same window metric as an options run's.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from agent.errors import ConfigError, InputError, ModelError
from agent.llm.base import LLMRequest
from agent.llm.dtype import resolve_llm_dtype
from agent.llm.prompting import encode_request, label_token_ids
from agent.rerank.pointwise import YES_NO_VARIANTS
from prompts import PromptRegistry
from train.config import DataConfig, TrainConfig
from train.examples import RankExample, labels, pointwise_options, render_messages, render_pointwise

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
    "yes_no_token_ids",
]


@dataclass(frozen=True)
class Encoded:
    """Token ids of one prompt, its labels' token ids and the target label's index.

    A label is one token (options: a letter) or several variants of one answer (pointwise: ``" Yes"``/``"Yes"``);
    its logit is the log-sum-exp over them. Pointwise prompts also name their ``window`` (index of the example
    they come from) and ``option`` (the judged option's position in it); options prompts have ``window`` -1.
    """

    ids: list[int]
    label_ids: list[tuple[int, ...]]
    target: int
    window: int = -1
    option: int = 0


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
    """The training dtype: ``auto`` is float32 on a CPU (faster autograd there) and the serving dtype on a GPU
    (resolved for the GPU when the serving dtype is itself ``auto``)."""
    if name != "auto":
        return name
    return "float32" if device == "cpu" else resolve_llm_dtype(serving, accelerator=True)


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


def yes_no_token_ids(tokenizer: Any) -> list[tuple[int, ...]]:
    """[Yes variants' ids, No variants' ids]: the first of the pointwise ranker's variant sets whose answers are all
    single tokens for this tokenizer (the set ``run_pointwise`` settles on)."""
    for yes, no in YES_NO_VARIANTS:
        try:
            ids = label_token_ids(tokenizer, [*yes, *no])
        except InputError:
            continue
        return [tuple(ids[y] for y in yes), tuple(ids[n] for n in no)]
    raise InputError(
        "this model's tokenizer has no single-token Yes/No answer, which pointwise ranking reads",
        hint="train --strategy options, or use a model whose tokenizer has ' Yes'/' No' or 'Yes'/'No' tokens",
    )


def _checked(ids: list[int], ex: RankExample, max_len: int) -> list[int]:
    if len(ids) > max_len:
        raise InputError(
            f"example of user {ex.user_id} is {len(ids)} tokens, over the limit of {max_len}",
            hint="show fewer history items or options (--history, --options), or raise --max-len",
        )
    return ids


def encode_examples(
    tokenizer: Any,
    registry: PromptRegistry,
    examples: Sequence[RankExample],
    data_cfg: DataConfig,
    max_len: int,
    *,
    every_option: bool = False,
) -> list[Encoded]:
    """Render and tokenize every example exactly as the inference engines do.

    Options: one prompt per example. Pointwise: one prompt per judged option of each example, Yes (label 0) for the
    target and No (label 1) for the others: the target and ``data_cfg.negatives`` sampled options, or with
    ``every_option`` (validation) all of them.
    """
    if data_cfg.strategy == "pointwise":
        return _encode_pointwise(tokenizer, registry, examples, data_cfg, max_len, every_option)
    by_m: dict[int, list[tuple[int, ...]]] = {}
    out: list[Encoded] = []
    for ex in examples:
        m = len(ex.options)
        if m not in by_m:
            by_m[m] = [(i,) for i in label_token_ids(tokenizer, labels(m)).values()]
        msgs = render_messages(
            registry, data_cfg.template, ex, history_limit=data_cfg.history, include_text=data_cfg.include_text
        )
        ids = _checked(encode_request(tokenizer, LLMRequest.of(msgs)), ex, max_len)
        out.append(Encoded(ids=ids, label_ids=by_m[m], target=ex.label))
    return out


def _encode_pointwise(
    tokenizer: Any,
    registry: PromptRegistry,
    examples: Sequence[RankExample],
    data_cfg: DataConfig,
    max_len: int,
    every_option: bool,
) -> list[Encoded]:
    answers = yes_no_token_ids(tokenizer)
    out: list[Encoded] = []
    for w, ex in enumerate(examples):
        judged = (
            range(len(ex.options)) if every_option else pointwise_options(ex, data_cfg.negatives, data_cfg.sample_seed)
        )
        for i in judged:
            msgs = render_pointwise(registry, data_cfg.pointwise_template, ex, i, history_limit=data_cfg.history,
                                    include_text=data_cfg.include_text)  # fmt: skip
            ids = _checked(encode_request(tokenizer, LLMRequest.of(msgs)), ex, max_len)
            out.append(Encoded(ids=ids, label_ids=answers, target=0 if i == ex.label else 1, window=w, option=i))
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
    g = max(len(v) for e in batch for v in e.label_ids)
    label_ids = torch.zeros((len(batch), m, g), dtype=torch.long)
    label_mask = torch.zeros((len(batch), m, g), dtype=torch.bool)
    for row, e in enumerate(batch):
        for col, variants in enumerate(e.label_ids):
            label_ids[row, col, : len(variants)] = torch.tensor(variants)
            label_mask[row, col, : len(variants)] = True
    targets = torch.tensor([e.target for e in batch])
    out = {"ids": ids, "mask": mask, "positions": positions, "label_ids": label_ids, "label_mask": label_mask,
           "targets": targets}  # fmt: skip
    return {k: v.to(device) for k, v in out.items()} if device is not None else out


def batch_label_logits(model: Any, batch: Sequence[Encoded], pad_id: int) -> tuple[Any, Any]:
    """(label logits [B, m] with -inf on padding labels, targets [B]) from one forward pass, last position only; a
    label's logit is the log-sum-exp over its token variants."""
    import torch

    t = _collate(batch, pad_id, getattr(model, "device", None))
    out = model(input_ids=t["ids"], attention_mask=t["mask"], position_ids=t["positions"], logits_to_keep=1)
    last = out.logits[:, -1, :].float()
    rows, m, g = t["label_ids"].shape
    picked = last.gather(1, t["label_ids"].view(rows, m * g)).view(rows, m, g)
    picked = torch.logsumexp(picked.masked_fill(~t["label_mask"], -math.inf), dim=-1)
    return picked, t["targets"]


def label_loss(model: Any, batch: Sequence[Encoded], pad_id: int) -> Any:
    import torch.nn.functional as F

    logits, targets = batch_label_logits(model, batch, pad_id)
    return F.cross_entropy(logits, targets)


def _ndcg_at_10(rank: int) -> float:
    """NDCG@10 of one relevant option ranked ``rank`` (1 = first)."""
    return 1.0 / math.log2(rank + 1) if rank <= 10 else 0.0


def validate(
    model: Any, examples: Sequence[Encoded], pad_id: int, batch_size: int, *, progress: bool = False
) -> dict[str, float]:
    """Mean loss, NDCG@10, accuracy (target ranked first), MRR of the label ranking, the share of prompts
    whose top label is the last one (the base model's position bias), and ``order_ndcg@10``: the NDCG@10 of the
    options' own order (A first), what the model must beat when the options come in retrieval order.

    Pointwise prompts (``window`` >= 0) are grouped by window: the options are ranked by logit Yes - logit No and
    the metrics are those of the target's rank among its window's options (the loss is the mean Yes/No
    cross-entropy per prompt, and ``last_label_share`` the share of windows whose top option is the last)."""
    import torch
    from tqdm import tqdm

    was_training = model.training
    model.eval()
    losses: list[float] = []
    ranked: list[tuple[int, bool, int]] = []  # (rank of the target, top is the last option, target position)
    windows: dict[int, dict[int, float]] = {}
    targets_at: dict[int, int] = {}
    bar = tqdm(total=len(examples), desc="validate", unit="prompt", disable=not progress, leave=False,
               dynamic_ncols=True)  # fmt: skip
    with torch.inference_mode():
        for at in range(0, len(examples), batch_size):
            chunk = examples[at : at + batch_size]
            logits, _ = batch_label_logits(model, chunk, pad_id)
            bar.update(len(chunk))
            logp = torch.log_softmax(logits, dim=-1)
            for row, e in enumerate(chunk):
                scores = logp[row, : len(e.label_ids)]
                losses.append(-float(scores[e.target]))
                if e.window >= 0:
                    windows.setdefault(e.window, {})[e.option] = float(scores[0] - scores[1])
                    if e.target == 0:
                        targets_at[e.window] = e.option
                    continue
                rank = int((scores > scores[e.target]).sum().item()) + 1
                ranked.append((rank, int(scores.argmax()) == len(e.label_ids) - 1, e.target))
    for w, by_option in windows.items():
        if w not in targets_at:
            continue
        target = targets_at[w]
        rank = sum(v > by_option[target] for v in by_option.values()) + 1
        top = max(by_option, key=lambda o: (by_option[o], -o))
        ranked.append((rank, top == max(by_option), target))
    bar.close()
    if was_training:
        model.train()
    n = max(len(ranked), 1)
    return {
        "loss": sum(losses) / max(len(losses), 1),
        "ndcg@10": sum(_ndcg_at_10(r) for r, _, _ in ranked) / n,
        "accuracy": sum(r == 1 for r, _, _ in ranked) / n,
        "mrr": sum(1.0 / r for r, _, _ in ranked) / n,
        "last_label_share": sum(last for _, last, _ in ranked) / n,
        "order_ndcg@10": sum(_ndcg_at_10(t + 1) for _, _, t in ranked) / n,
    }
