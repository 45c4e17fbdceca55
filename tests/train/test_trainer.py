"""The training loop on the tiny random model: learning, resuming, the run folder, and hf_local serving."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from agent.errors import InputError
from train.config import DataConfig, TrainConfig
from train.trainer import train_ranker

from testkit import tiny_settings
from toy import toy_examples

pytestmark = pytest.mark.slow

TRAIN, VAL = toy_examples(32), toy_examples(8, seed=1, prefix="v")


def _run(model: Path, out: Path, cfg: TrainConfig, **kw: object) -> object:
    return train_ranker(tiny_settings(model), str(model), TRAIN, VAL, out, forbidden={}, data_cfg=DataConfig(),
                        train_cfg=cfg, progress=False, **kw)  # type: ignore[arg-type]  # fmt: skip


def _weights(folder: Path) -> dict[str, object]:
    from safetensors.torch import load_file

    return dict(load_file(str(folder / "adapter_model.safetensors")))


def test_loss_decreases_on_toy_task(tiny_model_dir: Path, tmp_path: Path) -> None:
    cfg = TrainConfig(lr=2e-3, max_steps=8, eval_every=4, batch_size=8, patience=10)
    result = _run(tiny_model_dir, tmp_path / "run", cfg)
    m = result.manifest  # type: ignore[attr-defined]
    curve = m["val_curve"]
    assert [v["step"] for v in curve] == [0, 4, 8]
    expected_order = sum(1 / math.log2(e.label + 2) for e in VAL if e.label < 10) / len(VAL)
    assert all(v["order_ndcg@10"] == pytest.approx(expected_order) for v in curve)  # the options' own order
    assert curve[-1]["loss"] < 0.7 * curve[0]["loss"]  # validation loss, same examples at every point
    losses = [v for _, v in m["loss_curve"]]
    assert len(losses) == 8 and sum(losses[-3:]) < sum(losses[:3])
    # the run folder: a peft adapter at the top, a manifest with what reproduces the run
    out = tmp_path / "run"
    assert (out / "adapter_config.json").is_file() and (out / "adapter_model.safetensors").is_file()
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["base_model"]["path"] == str(tiny_model_dir)
    assert manifest["hyper_parameters"]["lr"] == 2e-3 and manifest["split"]["split"] == "temporal"
    assert manifest["cost"]["examples_per_second"] > 0 and manifest["steps"]["done"] == 8
    assert manifest["cost"]["device"] == "cpu" and manifest["cost"]["dtype"] == "float32"  # auto on a CPU
    assert manifest["best"]["step"] in (0, 4, 8) and manifest["template"]["name"] == "rank_options"
    listed = [x for x in (out / "val_users.txt").read_text().splitlines() if not x.startswith("#")]
    assert listed == sorted({e.user_id for e in VAL}) and not set(listed) & {e.user_id for e in TRAIN}


def test_resumed_run_continues_its_checkpoint(tiny_model_dir: Path, tmp_path: Path) -> None:
    cfg = TrainConfig(lr=3e-3, max_steps=6, eval_every=2, batch_size=2, grad_accum=2, lora_dropout=0.2, keep="last")
    whole = _run(tiny_model_dir, tmp_path / "whole", cfg)
    cut = _run(tiny_model_dir, tmp_path / "cut", cfg, stop_after=3)
    assert cut.interrupted  # type: ignore[attr-defined]
    state = json.loads((tmp_path / "cut" / "checkpoint" / "state.json").read_text())
    assert state["step"] == 3 and len(state["loss_curve"]) == 3 and not state["finished"]
    assert not (tmp_path / "cut" / "manifest.json").exists()
    with pytest.raises(InputError, match="--resume"):
        _run(tiny_model_dir, tmp_path / "cut", cfg)  # a run is there: refuse to overwrite it
    with pytest.raises(InputError, match="lr"):
        _run(tiny_model_dir, tmp_path / "cut", cfg.model_copy(update={"lr": 1e-3}), resume=True)
    resumed = _run(tiny_model_dir, tmp_path / "cut", cfg, resume=True)
    a, b = whole.manifest, resumed.manifest  # type: ignore[attr-defined]
    assert [s for s, _ in b["loss_curve"]] == [1, 2, 3, 4, 5, 6] and b["steps"]["done"] == 6
    assert [v for _, v in b["loss_curve"]] == pytest.approx([v for _, v in a["loss_curve"]], abs=1e-4)
    assert [v["step"] for v in b["val_curve"]] == [0, 2, 4, 6]
    wa, wb = _weights(tmp_path / "whole"), _weights(tmp_path / "cut")
    assert wa.keys() == wb.keys()
    for key in wa:
        assert (wa[key] - wb[key]).abs().max() < 1e-5, key  # type: ignore[operator]
    again = _run(tiny_model_dir, tmp_path / "cut", cfg, resume=True)  # finished: nothing left to do
    assert again.manifest["steps"]["done"] == 6  # type: ignore[attr-defined]


def test_missing_checkpoint_and_foreign_folder(tiny_model_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no checkpoint"):
        _run(tiny_model_dir, tmp_path / "empty", TrainConfig(max_steps=1), resume=True)
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    with pytest.raises(InputError, match="other files"):
        _run(tiny_model_dir, tmp_path / "busy", TrainConfig(max_steps=1))


def test_hf_engine_serves_the_adapter(tiny_model_dir: Path, toy_adapter: Path, hf_tiny: object) -> None:
    from agent.llm.hf_local import HFEngine

    prompts = [toy_examples(1, seed=s, prefix="p")[0] for s in range(3)]
    from prompts import PromptRegistry
    from train.examples import render_messages

    reqs = [
        render_messages(PromptRegistry(), "rank_options", ex, history_limit=10, include_text=True) for ex in prompts
    ]
    labels = list("ABCD")
    base = hf_tiny.score_options(reqs, labels)  # type: ignore[attr-defined]
    tuned_engine = HFEngine(tiny_settings(tiny_model_dir, llm_adapter=str(toy_adapter)), str(tiny_model_dir))
    tuned = tuned_engine.score_options(reqs, labels)
    diff = max(abs(b.logprobs[x] - t.logprobs[x]) for b, t in zip(base, tuned, strict=True) for x in labels)
    assert diff > 0.05
    assert tuned_engine.describe()["adapter"] == str(toy_adapter.resolve())
    # the merged folder (--merge) scores like base + adapter
    merged = HFEngine(tiny_settings(toy_adapter / "merged"), str(toy_adapter / "merged")).score_options(reqs, labels)
    for t, mm in zip(tuned, merged, strict=True):
        for x in labels:
            assert mm.logprobs[x] == pytest.approx(t.logprobs[x], abs=1e-3)
