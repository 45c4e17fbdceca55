"""llm_dtype = auto: bfloat16 only where it runs natively (GPU, CPU with AVX512-BF16/AMX), float32 elsewhere."""

from __future__ import annotations

import pytest

import agent.llm.dtype as dtype_mod
from agent.errors import ConfigError
from agent.llm.dtype import resolve_llm_dtype
from agent.settings import load_settings


def test_auto_is_the_default_setting() -> None:
    assert load_settings().llm_dtype == "auto"


@pytest.mark.parametrize(
    ("native_bf16", "accelerator", "expected"),
    [(False, False, "float32"), (True, False, "bfloat16"), (False, True, "bfloat16"), (True, True, "bfloat16")],
)
def test_auto_follows_the_hardware(
    monkeypatch: pytest.MonkeyPatch, native_bf16: bool, accelerator: bool, expected: str
) -> None:
    monkeypatch.setattr(dtype_mod, "cpu_has_native_bf16", lambda: native_bf16)
    assert resolve_llm_dtype("auto", accelerator=accelerator) == expected
    monkeypatch.setattr(dtype_mod, "accelerator_present", lambda: accelerator)
    assert resolve_llm_dtype("auto") == expected


@pytest.mark.parametrize("name", ["bfloat16", "float16", "float32"])
def test_an_explicit_dtype_is_kept(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    monkeypatch.setattr(dtype_mod, "cpu_has_native_bf16", lambda: False)
    assert resolve_llm_dtype(name, accelerator=False) == name


def test_an_unknown_dtype_is_refused() -> None:
    with pytest.raises((ConfigError, ValueError)):
        load_settings(llm_dtype="float8")


def test_training_auto_resolves_the_serving_auto_on_a_gpu() -> None:
    from train.model import resolve_dtype

    assert resolve_dtype("auto", "cpu", "auto") == "float32"
    assert resolve_dtype("auto", "cuda", "auto") == "bfloat16"
    assert resolve_dtype("auto", "cuda", "float16") == "float16"
