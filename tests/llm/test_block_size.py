"""The KV-cache block size asked of vLLM: the prefix cache reuses whole blocks only, so the CPU default is 32."""

from __future__ import annotations

import pytest

from agent.errors import ConfigError
from agent.llm.vllm_local import CPU_DEFAULT_BLOCK_SIZE, resolve_block_size
from agent.settings import load_settings


def test_the_default_is_32_on_the_cpu_and_vllms_own_on_a_gpu() -> None:
    assert load_settings().llm_block_size is None
    assert resolve_block_size(None, on_cpu=True) == CPU_DEFAULT_BLOCK_SIZE == 32
    assert resolve_block_size(None, on_cpu=False) is None  # vLLM picks (16 on CUDA)


@pytest.mark.parametrize("size", [32, 64, 128])
def test_a_multiple_of_32_is_kept_on_the_cpu(size: int) -> None:
    assert resolve_block_size(size, on_cpu=True) == size


def test_the_cpu_refuses_other_sizes_with_a_hint_and_a_gpu_takes_them() -> None:
    with pytest.raises(ConfigError, match="multiple of 32") as err:
        resolve_block_size(16, on_cpu=True)
    assert "RECAGENT_LLM_BLOCK_SIZE" in (err.value.hint or "")
    assert resolve_block_size(16, on_cpu=False) == 16
    with pytest.raises((ConfigError, ValueError)):
        load_settings(llm_block_size=0)
