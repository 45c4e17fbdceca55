"""Settings of a training run: which examples (:class:`DataConfig`) and how to train on them (:class:`TrainConfig`).

Both are pydantic models that forbid unknown fields; their dumps go into the run's ``manifest.json`` and the
checkpoint, and ``--resume`` refuses a run whose settings differ.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, field_validator

from agent.schemas import RerankConfig
from eval.protocol import Protocol
from train.examples import OptionOrder, RankerStrategy

__all__ = ["DataConfig", "SplitOptions", "TrainConfig", "fingerprint", "split_kinds"]

_RERANK = RerankConfig()


def split_kinds() -> tuple[str, ...]:
    """The split kinds the evaluator knows (training must cut the same split as the evaluation it prepares)."""
    return tuple(str(a) for a in get_args(Protocol.model_fields["split"].annotation))


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SplitOptions(_Model):
    """The evaluator's protocol options a training run must share with the evaluation it prepares
    (``split``/``min_rating``/``min_history``/``users``/``seed``): with the evaluation's values, its test interactions
    are the ones the leakage guard keeps out."""

    split: str = Field("temporal", description="The evaluator's split (temporal = leave last positive out).")
    min_rating: float = Field(4.0, description="Ratings >= this are positives (targets).")
    min_history: int = Field(5, ge=1, description="Earlier interactions a target needs (also the evaluator's).")
    users: int | None = Field(None, ge=1, description="The evaluator's --users (test users sampled; None: all).")
    seed: int = Field(0, description="The evaluator's split seed.")

    @field_validator("split")
    @classmethod
    def _known_split(cls, value: str) -> str:
        if value not in split_kinds():
            raise ValueError(f"unknown split {value!r}; the evaluator knows {', '.join(split_kinds())}")
        return value

    def protocol(self) -> Protocol:
        """The evaluator's protocol these examples respect."""
        return Protocol.model_validate(
            {
                "split": self.split,
                "min_rating": self.min_rating,
                "min_history": self.min_history,
                "users": self.users,
                "seed": self.seed,
            }
        )


class DataConfig(SplitOptions):
    """How examples are cut. ``split``/``min_rating``/``min_history``/``users``/``seed`` are the evaluator's
    protocol options: give the values the evaluation will use, so that its test interactions are the ones the
    leakage guard keeps out."""

    sample_seed: int = Field(0, description="Seed of the validation users, targets, negatives and label positions.")
    val_users: int = Field(50, ge=1, description="Users whose examples only validate (never trained on).")
    val_examples_per_user: int = Field(
        3,
        ge=1,
        le=50,
        description="Validation examples per validation user: its last positive + earlier ones. More than one makes "
        "the validation curve less noisy without taking users from training.",
    )
    max_train_users: int | None = Field(None, ge=1, description="Cap on training users (None: all others).")
    examples_per_user: int = Field(2, ge=1, le=50, description="Targets per user: the last positive + earlier ones.")
    history: int = Field(_RERANK.history_limit, ge=1, le=50, description="History items shown in the prompt.")
    options: int = Field(_RERANK.option_window, ge=2, le=26, description="Options per prompt (labels A..).")
    pool: int = Field(50, ge=2, le=500, description="Fused candidates the negatives are drawn from.")
    option_order: OptionOrder = Field(
        "random",
        description="random: sampled negatives, target at a random letter; retrieval: the first `options` fused "
        "candidates in fused order, the target at its own rank (targets retrieval missed are skipped).",
    )
    tries: int = Field(5, ge=1, le=100, description="With option_order=retrieval: targets tried per wanted example.")
    strategy: RankerStrategy = Field(
        "options",
        description="The ranking strategy trained: options (one prompt per window, the target's letter is the "
        "label) or pointwise (one Yes/No prompt per option: Yes for the target, No for `negatives` other options "
        "of its window; validation scores every option of a window and ranks them).",
    )
    negatives: int = Field(
        3, ge=1, le=25, description="With strategy=pointwise: No prompts (other options) per target in training."
    )
    template: str = Field(_RERANK.options_template, description="The option-logit template (task rank_options).")
    pointwise_template: str = Field(
        _RERANK.pointwise_template, description="The pointwise template (task rank_pointwise)."
    )
    include_text: bool = Field(_RERANK.include_text, description="Show item free text, as the ranker does.")

    @property
    def prompt_template(self) -> str:
        """The template the trained strategy renders."""
        return self.pointwise_template if self.strategy == "pointwise" else self.template


class TrainConfig(_Model):
    """LoRA and optimisation settings."""

    lora_r: int = Field(8, ge=1, le=256)
    lora_alpha: int = Field(16, ge=1)
    lora_dropout: float = Field(0.05, ge=0, lt=1)
    target_modules: list[str] = Field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"], min_length=1)
    lora_layers: int | None = Field(
        None,
        ge=1,
        description="Adapt only the last N decoder layers (None: all). The backward pass then stops at the first "
        "adapted layer: cheaper steps, a smaller adapter.",
    )
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto",
        description="Training compute dtype. auto: float32 on a CPU (PyTorch's CPU autograd is faster in float32 "
        "than in bfloat16, docs/benchmarks.md), the serving dtype (RECAGENT_LLM_DTYPE) on a GPU.",
    )
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto: cuda when torch sees a GPU, else cpu.")
    lr: float = Field(2e-4, gt=0)
    weight_decay: float = Field(0.01, ge=0)
    warmup_ratio: float = Field(0.05, ge=0, lt=1)
    max_grad_norm: float | None = Field(1.0, gt=0)
    epochs: int = Field(1, ge=1)
    max_steps: int | None = Field(
        None, ge=1, description="Optimizer steps to run (wins over epochs; the data is cycled as needed)."
    )
    batch_size: int = Field(4, ge=1)
    grad_accum: int = Field(1, ge=1)
    seed: int = 0
    eval_every: int = Field(50, ge=1, description="Validate (and checkpoint) every N optimizer steps.")
    patience: int = Field(3, ge=1, description="Stop after this many validations without improvement.")
    min_delta: float = Field(0.0, ge=0, description="Improvement of the validation NDCG@10 that counts.")
    keep: Literal["best", "last"] = Field("best", description="Adapter written to OUT: best validation or last step.")
    save_every: int | None = Field(None, ge=1, description="Checkpoint every N steps (default: eval_every).")
    threads: int | None = Field(None, ge=1, description="torch threads (default: torch's own choice).")
    max_len: int = Field(2048, ge=64, description="Longest prompt in tokens; longer examples are an error.")


def fingerprint(values: dict[str, Any]) -> str:
    """Stable hash of a settings dump (what --resume compares)."""
    return hashlib.sha256(json.dumps(values, sort_keys=True, default=str).encode()).hexdigest()[:16]
