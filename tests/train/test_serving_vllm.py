"""A trained adapter served by the real in-process vLLM engine (CPU build: LoRA through its punica CPU kernels).

One vLLM engine in this module (the adapter engine); base scores come from the transformers engine, which agrees
with vLLM on the tiny model (tests/llm)."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.llm.vllm_serve import serve_command
from prompts import PromptRegistry
from train.examples import render_messages

from testkit import free_port, tiny_settings
from toy import toy_examples

LABELS = list("ABCD")


def _requests() -> list[list[dict[str, str]]]:
    exs = [toy_examples(1, seed=s, prefix="p")[0] for s in range(4)]
    return [render_messages(PromptRegistry(), "rank_options", e, history_limit=10, include_text=True) for e in exs]


@pytest.fixture(scope="module")
def vllm_adapter(tiny_model_dir: Path, toy_adapter: Path) -> Iterator[object]:
    from agent.llm.vllm_local import get_engine

    engine = get_engine(tiny_settings(tiny_model_dir, llm_adapter=str(toy_adapter)), str(tiny_model_dir))
    yield engine
    engine.close()


@pytest.mark.slow
def test_vllm_serves_the_adapter(
    vllm_adapter: object, hf_tiny: object, tiny_model_dir: Path, toy_adapter: Path
) -> None:
    from agent.llm.hf_local import HFEngine

    reqs = _requests()
    tuned = vllm_adapter.score_options(reqs, LABELS)  # type: ignore[attr-defined]
    info = vllm_adapter.describe()  # type: ignore[attr-defined]
    assert info["lora"] is True and info["adapter"] == str(toy_adapter.resolve()) and info["adapter_sha256"]
    base = hf_tiny.score_options(reqs, LABELS)  # type: ignore[attr-defined]
    diff = max(abs(b.logprobs[x] - t.logprobs[x]) for b, t in zip(base, tuned, strict=True) for x in LABELS)
    assert diff > 0.05  # the adapter changes the option scores
    hf_tuned = HFEngine(tiny_settings(tiny_model_dir, llm_adapter=str(toy_adapter)), str(tiny_model_dir))
    for h, v in zip(hf_tuned.score_options(reqs, LABELS), tuned, strict=True):
        for x in LABELS:  # and vLLM applies it as transformers + peft do
            assert v.logprobs[x] == pytest.approx(h.logprobs[x], abs=2e-2)


@pytest.mark.slow
def test_serve_command_adds_the_adapter(tiny_model_dir: Path, toy_adapter: Path) -> None:
    cmd = serve_command(tiny_settings(tiny_model_dir, llm_adapter=str(toy_adapter)))
    assert "--enable-lora" in cmd and f"adapter={toy_adapter.resolve()}" in cmd
    assert cmd[cmd.index("--max-lora-rank") + 1] == "8"


def test_bad_adapter_folder_is_a_clear_error(tmp_path: Path) -> None:
    from agent.errors import ModelError
    from agent.llm.models import adapter_info

    with pytest.raises(ModelError, match="does not exist"):
        adapter_info(str(tmp_path / "nope"))
    with pytest.raises(ModelError, match=r"adapter_config\.json") as err:
        adapter_info(str(tmp_path))
    assert "recagent train ranker" in err.value.hint


@pytest.fixture(scope="module")
def adapter_server(tiny_model_dir: Path, toy_adapter: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real `vllm serve` (through `recagent llm serve`'s command) serving the tiny model and the toy adapter."""
    from agent.llm.vllm_serve import start_server, wait_healthy

    port = free_port()
    log = tmp_path_factory.mktemp("lora-server") / "vllm.log"
    proc = start_server(tiny_settings(tiny_model_dir, llm_adapter=str(toy_adapter)), port=port, log_file=log)
    url = f"http://127.0.0.1:{port}/v1"
    try:
        wait_healthy(url, proc, timeout_s=300)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.mark.slow
def test_server_client_finds_the_served_adapter(
    adapter_server: str, vllm_adapter: object, tiny_model_dir: Path, toy_adapter: Path, tmp_path: Path
) -> None:
    """With RECAGENT_LLM_ADAPTER set, the OpenAI-compatible client picks the LoRA module served from that folder (no
    served-model name to configure) and scores as the in-process engine with the adapter; without it, the base."""
    from agent.errors import ModelError
    from agent.llm.openai_server import OpenAIServerEngine
    from agent.rerank.calibration import engine_key

    tuned = OpenAIServerEngine(
        tiny_settings(tiny_model_dir, llm_server_url=adapter_server, llm_adapter=str(toy_adapter))
    )
    base = OpenAIServerEngine(tiny_settings(tiny_model_dir, llm_server_url=adapter_server))
    try:
        assert tuned.model_id == "adapter" and base.model_id != "adapter"
        info = tuned.describe()
        assert info["adapter"] == str(toy_adapter.resolve()) and info["adapter_sha256"]
        assert "adapter" not in base.describe() and engine_key(tuned) != engine_key(base)
        reqs = _requests()
        remote = tuned.score_options(reqs, LABELS)
        local = vllm_adapter.score_options(reqs, LABELS)  # type: ignore[attr-defined]
        for r, v in zip(remote, local, strict=True):
            for x in LABELS:
                assert r.logprobs[x] == pytest.approx(v.logprobs[x], abs=2e-2)
        plain = base.score_options(reqs, LABELS)
        assert (
            max(abs(p.logprobs[x] - r.logprobs[x]) for p, r in zip(plain, remote, strict=True) for x in LABELS) > 0.05
        )
        # the adapter read from another folder (as on another machine): the server's only LoRA module is used
        copy = tmp_path / "elsewhere"
        shutil.copytree(toy_adapter, copy)
        other = OpenAIServerEngine(tiny_settings(tiny_model_dir, llm_server_url=adapter_server, llm_adapter=str(copy)))
        assert other.model_id == "adapter"
        other.close()
    finally:
        tuned.close()
        base.close()

    # a server without any LoRA module: a clear error naming what it serves
    class NoLora(OpenAIServerEngine):
        def _call(self, fn):  # type: ignore[no-untyped-def,override]
            from types import SimpleNamespace

            return SimpleNamespace(data=[SimpleNamespace(id="tiny", parent=None, root=str(tiny_model_dir))])

    with pytest.raises(ModelError, match="does not serve the adapter") as err:
        NoLora(tiny_settings(tiny_model_dir, llm_server_url=adapter_server, llm_adapter=str(toy_adapter)))
    assert "RECAGENT_LLM_SERVED_MODEL_NAME" in err.value.hint


def test_label_prior_key_follows_the_adapter_weights() -> None:
    from types import SimpleNamespace

    from agent.rerank.calibration import engine_key

    def engine(sha: str | None) -> Any:
        adapter = {"path": "/runs/ranker", "sha256": sha} if sha else None
        return SimpleNamespace(
            backend="vllm", model_id="gemma", adapter=adapter, settings=SimpleNamespace(llm_adapter=None)
        )

    assert engine_key(engine("aaa")) != engine_key(engine("bbb"))  # retrained into the same folder: new priors
    assert engine_key(engine(None)) == "vllm:gemma"
