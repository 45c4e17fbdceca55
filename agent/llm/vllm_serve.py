"""Start and wait for a ``vllm serve`` (OpenAI-compatible) process on the configured model."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx

from agent.errors import EngineUnavailableError
from agent.llm.dtype import resolve_llm_dtype
from agent.llm.models import adapter_info, resolve_model
from agent.network import BindGuard, check_bind
from agent.settings import Settings


def serve_command(settings: Settings, *, host: str | None = None, port: int | None = None) -> list[str]:
    """The command line of the server. ``python -m vllm.entrypoints.openai.api_server`` takes the same flags as
    ``vllm serve`` and also works with the CPU build, whose ``vllm`` console script is broken."""
    host = host or settings.llm_server_host
    port = port or settings.llm_server_port
    model = resolve_model(settings)
    name = settings.llm_served_model_name or Path(model).name
    cmd = [
        sys.executable,
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        model,
        "--host",
        host,
        "--port",
        str(port),
        "--served-model-name",
        name,
        "--max-model-len",
        str(settings.llm_max_model_len),
        "--dtype",
        resolve_llm_dtype(settings.llm_dtype),
        "--max-logprobs",
        str(max(settings.llm_max_logprobs, 20)),
        "--seed",
        str(settings.seed),
        "--structured-outputs-config",
        '{"backend": "xgrammar", "disable_any_whitespace": true}',
    ]
    if settings.llm_enforce_eager:
        cmd.append("--enforce-eager")
    from agent.llm.vllm_local import _on_cpu, resolve_block_size

    block_size = resolve_block_size(settings.llm_block_size, on_cpu=_on_cpu())
    if block_size is not None:  # the same KV-cache block size as the in-process engine (prefix-cache granularity)
        cmd += ["--block-size", str(block_size)]
    if settings.llm_memory_fraction:
        from agent.llm.vllm_local import _on_cpu, cpu_kv_cache_bytes

        if _on_cpu():  # the same explicit KV-cache size as the in-process engine (see cpu_kv_cache_bytes)
            cmd += ["--kv-cache-memory-bytes", str(cpu_kv_cache_bytes(settings.llm_memory_fraction))]
        else:
            cmd += ["--gpu-memory-utilization", str(settings.llm_memory_fraction)]
    if settings.llm_api_key and settings.llm_api_key != "EMPTY":
        cmd += ["--api-key", settings.llm_api_key]
    adapter = adapter_info(settings.llm_adapter)
    if adapter is not None:
        # the tuned model is served as `adapter`: clients select it with RECAGENT_LLM_SERVED_MODEL_NAME=adapter
        # (the base model stays available under its own name, for side-by-side comparisons)
        rank = next((r for r in (8, 16, 32, 64, 128, 256, 320, 512) if r >= (adapter["rank"] or 64)), 512)
        cmd += ["--enable-lora", "--max-lora-rank", str(rank), "--lora-modules", f"adapter={adapter['path']}"]
    return cmd


LLM_BIND = BindGuard(service="the LLM", credential="an API key", setting="set RECAGENT_LLM_API_KEY", name="the API key")


def check_llm_bind(host: str, api_key: str) -> None:
    """The model server beyond loopback needs an API key (see :func:`agent.network.check_bind`)."""
    check_bind(host, api_key, LLM_BIND)


def server_env(settings: Settings) -> dict[str, str]:
    env = dict(os.environ)
    if not settings.llm_memory_fraction:
        # GiB of KV cache on the CPU build; its default memory fraction is refused on NUMA machines
        env.setdefault("VLLM_CPU_KVCACHE_SPACE", "4")
    env.setdefault("HF_HUB_OFFLINE", "1")
    return env


def start_server(
    settings: Settings, *, host: str | None = None, port: int | None = None, log_file: Path | None = None
) -> subprocess.Popen[bytes]:
    cmd = serve_command(settings, host=host, port=port)
    check_llm_bind(host or settings.llm_server_host, settings.llm_api_key)
    out = log_file.open("wb") if log_file else subprocess.DEVNULL
    return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=server_env(settings))


def wait_healthy(url: str, proc: subprocess.Popen[bytes] | None = None, timeout_s: float = 300) -> float:
    """Poll ``GET {root}/health`` until it answers 200; returns the seconds waited."""
    root = url[: -len("/v1")] if url.endswith("/v1") else url
    started = time.perf_counter()
    while time.perf_counter() - started < timeout_s:
        if proc is not None and proc.poll() is not None:
            raise EngineUnavailableError(
                f"the LLM server exited with code {proc.returncode} before it became healthy",
                hint="read its log; common causes: port in use, model folder incomplete, not enough memory",
            )
        try:
            if httpx.get(f"{root}/health", timeout=2).status_code == 200:
                return time.perf_counter() - started
        except httpx.HTTPError:
            pass
        time.sleep(1)
    raise EngineUnavailableError(
        f"the LLM server at {root} was not healthy after {timeout_s:.0f}s", hint="check its log, or wait longer"
    )
