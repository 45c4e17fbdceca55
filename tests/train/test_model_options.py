"""Training options that change the model side: LoRA on the last N layers, the training dtype and device."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.errors import ConfigError
from train.config import TrainConfig
from train.model import load_base, num_layers, resolve_device, resolve_dtype, wrap_lora


def _trainable_layers(model: object) -> set[int]:
    names = [n for n, p in model.named_parameters() if p.requires_grad]  # type: ignore[attr-defined]
    assert names and all("lora_" in n for n in names)
    return {int(n.split(".layers.")[1].split(".")[0]) for n in names}


def test_lora_layers_adapt_only_the_last_layers(tiny_model_dir: Path) -> None:
    base, _ = load_base(str(tiny_model_dir), "float32")
    total = num_layers(base)
    assert total == 2  # tests/tiny_model.py
    assert _trainable_layers(wrap_lora(base, TrainConfig())) == {0, 1}  # default: every layer
    base, _ = load_base(str(tiny_model_dir), "float32")
    assert _trainable_layers(wrap_lora(base, TrainConfig(lora_layers=1))) == {1}
    base, _ = load_base(str(tiny_model_dir), "float32")
    with pytest.raises(ConfigError, match="has 2 decoder layers") as err:
        wrap_lora(base, TrainConfig(lora_layers=3))
    assert "1..2" in err.value.hint


def test_dtype_and_device_resolution() -> None:
    import torch

    assert resolve_dtype("auto", "cpu", "bfloat16") == "float32"  # CPU autograd: float32
    assert resolve_dtype("auto", "cuda", "bfloat16") == "bfloat16"  # GPU: the serving dtype
    assert resolve_dtype("bfloat16", "cpu", "float32") == "bfloat16"  # an explicit choice wins
    assert resolve_device("cpu") == "cpu"
    if torch.cuda.is_available():
        assert resolve_device("auto") == "cuda"
    else:
        assert resolve_device("auto") == "cpu"
        with pytest.raises(ConfigError, match="no GPU") as err:
            resolve_device("cuda")
        assert "--device cpu" in err.value.hint
    with pytest.raises(ValueError, match="dtype"):
        TrainConfig(dtype="float8")  # type: ignore[arg-type]
