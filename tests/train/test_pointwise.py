"""Pointwise (Yes/No) training: the prompts are the pointwise ranker's, the judged options, the window metrics, and
a run on the tiny random model that learns the toy task and is served by the pointwise ranker."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from agent.llm.base import LLMRequest
from agent.rerank import rank
from agent.schemas import RerankConfig
from prompts import PromptRegistry
from train.config import DataConfig, TrainConfig
from train.examples import pointwise_options, render_pointwise

from fakes import FakeEngine
from testkit import tiny_settings
from toy import toy_examples


def test_pointwise_prompt_is_the_rankers_prompt() -> None:
    """Each training prompt is token for token what the pointwise ranker sends for the same user and option."""
    registry = PromptRegistry()
    ex = toy_examples(1, options=5)[0]
    engine = FakeEngine()
    config = RerankConfig(strategy="pointwise", explain="none")
    rank(engine, registry, ex.user, ex.options, config=config, k=3)
    sent = [r for c in engine.calls if c.method == "score_options" for r in c.requests]
    assert len(sent) == 5
    for i, request in enumerate(sent):
        ours = render_pointwise(registry, "rank_pointwise", ex, i, history_limit=config.history_limit,
                                include_text=config.include_text)  # fmt: skip
        assert LLMRequest.of(ours) == request


def test_pointwise_options_target_first_then_seeded_negatives() -> None:
    ex = toy_examples(1, options=8)[0]
    picked = pointwise_options(ex, 3, seed=0)
    assert picked[0] == ex.label and len(picked) == 4 and len(set(picked)) == 4
    assert pointwise_options(ex, 3, seed=0) == picked  # a rerun (or a resume) judges the same options
    assert len({tuple(pointwise_options(ex, 3, seed=s)) for s in range(10)}) > 1  # the seed matters
    assert sorted(pointwise_options(ex, 25, seed=0)) == list(range(8))  # capped at the window


def test_config_names_the_pointwise_template() -> None:
    assert DataConfig(strategy="pointwise").prompt_template == "rank_pointwise"
    assert DataConfig().prompt_template == "rank_options"
    with pytest.raises(ValueError, match="strategy"):
        DataConfig(strategy="listwise")  # type: ignore[arg-type]


@pytest.mark.slow
def test_pointwise_encoding_and_window_metrics(tiny_model_dir: Path) -> None:
    """Training encodes the target + `negatives` options per window (Yes = label 0), validation every option;
    the validation metrics rank each window's options by logit Yes - logit No."""
    from train.model import encode_examples, load_base, validate, yes_no_token_ids

    model, tokenizer = load_base(str(tiny_model_dir), "float32")
    exs = toy_examples(3, options=5)
    cfg = DataConfig(strategy="pointwise", negatives=2)
    train = encode_examples(tokenizer, PromptRegistry(), exs, cfg, 2048)
    assert len(train) == 9 and sum(e.target == 0 for e in train) == 3
    yes, no = yes_no_token_ids(tokenizer)
    assert train[0].label_ids == [yes, no] and len(yes) >= 1
    assert (train[0].window, train[0].option, train[0].target) == (0, exs[0].label, 0)
    assert [e.target for e in train[:3]] == [0, 1, 1]  # the target (Yes), then its negatives (No)
    val = encode_examples(tokenizer, PromptRegistry(), exs, cfg, 2048, every_option=True)
    assert len(val) == 15 and {(e.window, e.option) for e in val} == {(w, o) for w in range(3) for o in range(5)}
    metrics = validate(model, val, 0, 4)
    assert 0 < metrics["ndcg@10"] <= 1 and 0.2 <= metrics["mrr"] <= 1 and math.isfinite(metrics["loss"])
    expected_order = sum(1 / math.log2(e.label + 2) for e in exs) / 3
    assert metrics["order_ndcg@10"] == pytest.approx(expected_order)


@pytest.mark.slow
def test_pointwise_run_learns_and_serves(tiny_model_dir: Path, tmp_path: Path, hf_tiny: object) -> None:
    """A pointwise run on the toy task (the target's title says 'yes'): the Yes/No loss falls, the window NDCG@10
    rises, the manifest names the strategy, and the pointwise ranker with the adapter puts targets higher."""
    from agent.llm.hf_local import HFEngine
    from train.trainer import train_ranker

    train, val = toy_examples(32), toy_examples(8, seed=1, prefix="v")
    cfg = TrainConfig(lr=1e-3, max_steps=150, eval_every=50, batch_size=8, patience=10, lora_dropout=0.0, keep="last")
    data_cfg = DataConfig(strategy="pointwise", negatives=1)
    result = train_ranker(tiny_settings(tiny_model_dir), str(tiny_model_dir), train, val, tmp_path / "pw",
                          forbidden={}, data_cfg=data_cfg, train_cfg=cfg, progress=False)  # fmt: skip
    m = result.manifest
    assert m["strategy"] == "pointwise" and m["template"]["name"] == "rank_pointwise"
    assert m["examples"] == {"train": 32, "val": 8, "train_prompts": 64, "val_prompts": 32}
    curve = m["val_curve"]
    assert [v["step"] for v in curve] == [0, 50, 100, 150]
    # learned, not just calibrated: below the Yes/No loss of a constant answer (ln 2) and the windows ranked right
    assert curve[-1]["loss"] < 0.3 and curve[-1]["ndcg@10"] > 0.95 > curve[0]["ndcg@10"]

    config = RerankConfig(strategy="pointwise", explain="none", llm_weight=1.0)
    tuned = HFEngine(tiny_settings(tiny_model_dir, llm_adapter=str(tmp_path / "pw")), str(tiny_model_dir))

    def target_ranks(engine: object) -> list[int]:
        out = []
        for ex in val:
            res = rank(engine, PromptRegistry(), ex.user, ex.options, config=config, k=4)  # type: ignore[arg-type]
            assert res.fallback_reason is None
            out.append([it.item_id for it in res.items].index(ex.target_id) + 1)
        return out

    base_ranks, tuned_ranks = target_ranks(hf_tiny), target_ranks(tuned)
    assert sum(tuned_ranks) < sum(base_ranks) and sum(r == 1 for r in tuned_ranks) >= 6
