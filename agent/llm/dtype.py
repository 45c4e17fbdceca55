"""Which dtype the local LLM engines load the weights in.

``llm_dtype = "auto"`` (the default) picks bfloat16 on a GPU and on a CPU that computes bf16 natively
(AVX512-BF16 or AMX on x86, the bf16 feature on Arm), and float32 everywhere else: on an AVX2-only CPU vLLM's CPU
build falls back to slow matmuls for bf16 ("Failed to create oneDNN linear, fallback to torch linear"); measured
there on Gemma 3 270M, prefill ran 4.8x faster and decode 1.9x faster in float32 (docs/benchmarks.md). An explicit
dtype is used as given.
"""

from __future__ import annotations

from retrieval.embed import cpu_has_native_bf16

__all__ = ["accelerator_present", "resolve_llm_dtype"]


def accelerator_present() -> bool:
    """Whether torch sees a CUDA GPU (the in-process vLLM engine asks vLLM's own platform instead)."""
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def resolve_llm_dtype(name: str, *, accelerator: bool | None = None) -> str:
    """The concrete dtype for ``name``: ``auto`` -> bfloat16 on an accelerator or a CPU with native bf16, else
    float32; any other name is returned as it is. ``accelerator`` None asks :func:`accelerator_present`."""
    if name != "auto":
        return name
    on_accelerator = accelerator_present() if accelerator is None else accelerator
    return "bfloat16" if on_accelerator or cpu_has_native_bf16() else "float32"
