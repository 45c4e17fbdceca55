"""The OpenAI-compatible backend against a real `vllm serve` process (tiny model) started by the fixture."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.errors import ConfigError, EngineError, EngineUnavailableError, SchemaError
from agent.llm import create_engine
from agent.llm.base import LLMEngine
from agent.llm.openai_server import OpenAIServerEngine
from agent.llm.vllm_serve import serve_command, start_server, wait_healthy

from testkit import free_port, tiny_settings

pytestmark = pytest.mark.slow

LABELS = [chr(ord("A") + i) for i in range(20)]


@pytest.fixture(scope="module")
def tiny_server(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = free_port()
    settings = tiny_settings(tiny_model_dir, llm_served_model_name="tiny")
    log = tmp_path_factory.mktemp("server") / "vllm.log"
    proc = start_server(settings, port=port, log_file=log)
    url = f"http://127.0.0.1:{port}/v1"
    try:
        wait_healthy(url, proc, timeout_s=300)
    except Exception:
        proc.kill()
        print(log.read_text()[-4000:])
        raise
    yield url
    if proc.poll() is not None:  # died during the tests: show why
        print(f"vLLM server exited with {proc.returncode}; log tail:\n{log.read_text()[-6000:]}")
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()


@pytest.fixture(scope="module")
def server_engine(tiny_server: str, tiny_model_dir: Path) -> Iterator[LLMEngine]:
    engine = create_engine(tiny_settings(tiny_model_dir, llm_server_url=tiny_server))
    assert isinstance(engine, OpenAIServerEngine)
    yield engine
    engine.close()


def test_server_generation_round_trip(server_engine: LLMEngine) -> None:
    assert server_engine.model_id == "tiny"
    gens = server_engine.generate(["the movie", "a book"], max_tokens=6)
    assert [g.completion_tokens for g in gens] == [6, 6]
    assert all(g.finish_reason == "length" and g.prompt_tokens > 0 for g in gens)


def test_server_structured_output_respects_enum(server_engine: LLMEngine) -> None:
    ids = [f"item-{i}" for i in range(6)]
    schema = {
        "type": "object",
        "properties": {"ranking": {"type": "array", "items": {"enum": ids}, "minItems": 3, "maxItems": 3}},
        "required": ["ranking"],
        "additionalProperties": False,
    }
    gens = server_engine.generate([f"rank {i}" for i in range(8)], json_schema=schema, max_tokens=80, temperature=1.0)
    for g in gens:
        assert set(g.parsed["ranking"]) <= set(ids) and len(g.parsed["ranking"]) == 3
    with pytest.raises(SchemaError):
        server_engine.generate(["x"], json_schema={"type": 5})


def test_server_scores_match_in_process_engine(server_engine: LLMEngine, hf_tiny: LLMEngine) -> None:
    prompts = ["movie film (A) (B) (C) answer (", "the ranking of book is ("]
    remote = server_engine.score_options(prompts, LABELS)
    local = hf_tiny.score_options(prompts, LABELS)
    for r, h in zip(remote, local, strict=True):
        assert all(r.exact.values())  # vLLM's /tokenize + logprob_token_ids: every label exact
        for lab in LABELS:
            assert r.logprobs[lab] == pytest.approx(h.logprobs[lab], abs=2e-3)


def test_chat_messages_fall_back_to_completion_for_base_models(server_engine: LLMEngine) -> None:
    msgs = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "a movie"}]
    gen = server_engine.generate([msgs], max_tokens=4)[0]
    assert gen.completion_tokens == 4
    scores = server_engine.score_options([msgs], ["A", "B"])[0]
    assert set(scores.logprobs) == {"A", "B"}


def test_unreachable_server_is_a_clear_error(tiny_model_dir: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}/v1"
    with pytest.raises(EngineUnavailableError, match="unreachable") as err:
        create_engine(tiny_settings(tiny_model_dir, llm_server_url=url, llm_timeout_s=3))
    assert "RECAGENT_LLM_SERVER_URL" in err.value.hint


def test_replicas_retry_on_a_live_server(tiny_server: str, tiny_model_dir: Path) -> None:
    wait_healthy(tiny_server, timeout_s=30)
    dead = f"http://127.0.0.1:{free_port()}/v1"
    engine = create_engine(tiny_settings(tiny_model_dir, llm_server_url=f"{dead},{tiny_server}", llm_timeout_s=5))
    gens = engine.generate(["a", "b", "c", "d"], max_tokens=2)
    assert len(gens) == 4 and all(g.completion_tokens == 2 for g in gens)


def test_serve_refuses_public_bind_without_key(tiny_model_dir: Path) -> None:
    from agent.llm.vllm_serve import check_llm_bind as check_bind

    with pytest.raises(ConfigError, match="API key"):
        check_bind("0.0.0.0", "EMPTY")
    cmd = serve_command(tiny_settings(tiny_model_dir), port=1234)
    assert cmd[1:3] == ["-m", "vllm.entrypoints.openai.api_server"] and "--enforce-eager" in cmd
    # on the CPU build the memory share is an explicit KV-cache size (vLLM's node-relative fraction can be < 0)
    import psutil

    size = int(cmd[cmd.index("--kv-cache-memory-bytes") + 1])
    assert "--gpu-memory-utilization" not in cmd and size == int(psutil.virtual_memory().total * 0.05)
    assert cmd[cmd.index("--block-size") + 1] == "32"  # the in-process engine's CPU block size (prefix-cache grain)


# ------------------------------------------------------------------------------------------------ streaming
def test_server_stream_equals_generate(server_engine: LLMEngine) -> None:
    """`stream=True` on the real server: the deltas add up to generate()'s text, chat messages fall back to
    completions (base model), stop strings end the stream."""
    msgs = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "a movie"}]
    for prompt in ("the movie of the year is a comedy and", msgs):
        whole = server_engine.generate([prompt], max_tokens=32)[0].text
        deltas = list(server_engine.stream(prompt, max_tokens=32))
        assert "".join(deltas) == whole and len(deltas) > 1, deltas
        stop = next((w for w in whole.split(" ") if len(w) > 3), None)
        if stop is not None:
            assert "".join(server_engine.stream(prompt, max_tokens=32, stop=[stop])) == whole[: whole.find(stop)]
    with pytest.raises(EngineError, match="rejected"):
        list(server_engine.stream("movie " * 3000, max_tokens=2))


def test_server_stream_moves_to_a_live_replica_before_the_first_token(tiny_server: str, tiny_model_dir: Path) -> None:
    dead = f"http://127.0.0.1:{free_port()}/v1"
    engine = create_engine(tiny_settings(tiny_model_dir, llm_server_url=f"{dead},{tiny_server}", llm_timeout_s=5))
    expected = engine.generate(["a book about"], max_tokens=12)[0].text
    for _ in range(3):  # round robin: some of these start on the dead replica
        assert "".join(engine.stream("a book about", max_tokens=12)) == expected
    engine.close()
    only_dead = OpenAIServerEngine(tiny_settings(tiny_model_dir, llm_served_model_name="tiny", llm_timeout_s=3), [dead])
    with pytest.raises(EngineUnavailableError, match="unreachable"):
        list(only_dead.stream("x", max_tokens=2))
