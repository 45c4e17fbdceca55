"""A trained adapter served by the real in-process vLLM engine (CPU build: LoRA through its punica CPU kernels).

One vLLM engine in this module (the adapter engine); base scores come from the transformers engine, which agrees
with vLLM on the tiny model (tests/llm)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.llm.server import serve_command
from prompts import PromptRegistry
from train.examples import render_messages

from testkit import tiny_settings
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
    from agent.llm.hf_local import adapter_info

    with pytest.raises(ModelError, match="does not exist"):
        adapter_info(str(tmp_path / "nope"))
    with pytest.raises(ModelError, match=r"adapter_config\.json") as err:
        adapter_info(str(tmp_path))
    assert "recagent train ranker" in err.value.hint
