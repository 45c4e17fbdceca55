"""Real engines on the tiny random model: vLLM in-process, transformers, and the scoring cross-check."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from agent.errors import EngineError, PartialOutputError, SchemaError, StructuredOutputError
from agent.llm.base import LLMEngine
from agent.llm.batching import CallFailure, call_batch

pytestmark = pytest.mark.slow

LABELS = [chr(ord("A") + i) for i in range(20)]
IDS = [f"item-{i}" for i in range(20)]


def enum_schema(ids: list[str], k: int) -> dict[str, object]:
    return {
        "type": "object",
        "properties": {"ranking": {"type": "array", "items": {"enum": ids}, "minItems": k, "maxItems": k}},
        "required": ["ranking"],
        "additionalProperties": False,
    }


PROMPTS = [
    "movie film (A) (B) (C) answer (",
    "the ranking of book is (",
    "user likes comedy and drama; candidates (A) (B) (C) (D); best is (",
]


@pytest.mark.parametrize("engine_name", ["vllm_tiny", "hf_tiny"])
def test_structured_output_respects_enum_under_sampling(engine_name: str, request: pytest.FixtureRequest) -> None:
    """A random model samples at temperature 1: only the grammar keeps ids inside the enum."""
    engine: LLMEngine = request.getfixturevalue(engine_name)
    schema = enum_schema(IDS[:7], 5)
    n = 24 if engine_name == "vllm_tiny" else 4
    gens = engine.generate(
        [f"rank these {i}" for i in range(n)], json_schema=schema, max_tokens=120, temperature=1.0, seed=3
    )
    assert len(gens) == n
    for g in gens:
        assert g.finish_reason == "stop"
        assert len(g.parsed["ranking"]) == 5
        assert set(g.parsed["ranking"]) <= set(IDS[:7])
        assert g.prompt_tokens > 0 and g.completion_tokens > 0


@pytest.mark.parametrize("engine_name", ["vllm_tiny", "hf_tiny"])
def test_an_output_cut_off_fails_alone_in_one_engine_call(engine_name: str, request: pytest.FixtureRequest) -> None:
    """A JSON output cut at max_tokens fails alone: the batch's other outputs come back from the same call."""
    engine: LLMEngine = request.getfixturevalue(engine_name)
    schema = enum_schema(IDS[:7], 5)  # five quoted ids need far more than 3 tokens
    with pytest.raises(PartialOutputError) as err:
        engine.generate(["the movie", "rank these", "a book about"], json_schema=[None, schema, None], max_tokens=3)
    free, cut, free2 = err.value.outcomes
    assert isinstance(cut, StructuredOutputError) and not isinstance(free, BaseException)
    assert free.completion_tokens == 3 and free2.completion_tokens == 3 and free.parsed is None
    outcome = call_batch(
        engine,
        3,
        lambda idx: engine.generate(
            [["the movie", "rank these", "a book about"][i] for i in idx],
            json_schema=[[None, schema, None][i] for i in idx],
            max_tokens=3,
        ),
    )
    assert outcome.engine_calls == 1  # before: the batch was bisected down to single requests (5 calls)
    reasons = [r.reason if isinstance(r, CallFailure) else "ok" for r in outcome.results]
    assert reasons == ["ok", "invalid_output", "ok"]


def test_unconstrained_generation_reports_tokens_and_length(vllm_tiny: LLMEngine) -> None:
    gens = vllm_tiny.generate(["the movie", "a book about"], max_tokens=7, temperature=0.0)
    assert [g.completion_tokens for g in gens] == [7, 7]
    assert all(g.finish_reason == "length" for g in gens)


def test_generation_is_batched_and_deterministic(vllm_tiny: LLMEngine) -> None:
    a = vllm_tiny.generate(["the movie"] * 3, max_tokens=10, temperature=0.8, seed=11)
    b = vllm_tiny.generate(["the movie"], max_tokens=10, temperature=0.8, seed=11)
    assert a[0].text == b[0].text


def test_a_seeded_batch_larger_than_one_step_leaves_the_engine_alive(vllm_tiny: Any) -> None:
    """On the CPU build a seeded request split over several scheduler steps killed the engine core ("CPU Generator
    does not use offset"): such a batch now samples with the engine's seed, and the engine keeps serving."""
    sched = vllm_tiny.llm.llm_engine.vllm_config.scheduler_config
    n = sched.max_num_batched_tokens // 800 + 2  # prompts of ~800 tokens: more than one step's budget in all
    prompts = [f"{i} " + "movie " * 790 for i in range(n)]
    assert vllm_tiny._splittable(vllm_tiny._prompts(prompts))
    gens = vllm_tiny.generate(prompts, max_tokens=4, temperature=0.9, seed=5)
    assert [g.completion_tokens > 0 for g in gens] == [True] * n
    assert not vllm_tiny.is_dead()
    again = vllm_tiny.generate(["the movie"], max_tokens=6, temperature=0.8, seed=3)
    assert again[0].text == vllm_tiny.generate(["the movie"], max_tokens=6, temperature=0.8, seed=3)[0].text


def test_score_options_vllm_matches_transformers(vllm_tiny: LLMEngine, hf_tiny: LLMEngine) -> None:
    """The correctness test of the scoring path: same prompts, same tokens, same log-probs (float32)."""
    v = vllm_tiny.score_options(PROMPTS, LABELS)
    h = hf_tiny.score_options(PROMPTS, LABELS)
    for a, b in zip(v, h, strict=True):
        assert list(a.logprobs) == LABELS  # every label present, none dropped
        assert all(a.exact.values())
        assert a.prompt_tokens == b.prompt_tokens
        for lab in LABELS:
            assert a.logprobs[lab] == pytest.approx(b.logprobs[lab], abs=1e-3)
        assert a.ranked() == b.ranked()


def test_labels_far_outside_the_top_k_are_exact(vllm_tiny: LLMEngine, hf_tiny: LLMEngine) -> None:
    """With 60 labels some are far from the top-20: each still comes back with its true log-prob."""
    labels = [*LABELS, *[chr(ord("a") + i) for i in range(26)], *list("0123456789")]
    v = vllm_tiny.score_options(PROMPTS[:1], labels)[0]
    h = hf_tiny.score_options(PROMPTS[:1], labels)[0]
    worst = sorted(labels, key=lambda lab: h.logprobs[lab])[:5]
    for lab in worst:
        assert v.logprobs[lab] == pytest.approx(h.logprobs[lab], abs=1e-3)


def test_chat_requests_use_the_chat_template(tiny_chat_model_dir: Path) -> None:
    from agent.llm.hf_local import HFEngine

    from testkit import tiny_settings
    from tiny_model import CHAT_TEMPLATE  # noqa: F401  (documents which template is in use)

    engine = HFEngine(tiny_settings(tiny_chat_model_dir), str(tiny_chat_model_dir))
    msgs = [{"role": "user", "content": "pick one"}]
    chat_tokens = engine.generate([msgs], max_tokens=2)[0].prompt_tokens
    flat_tokens = engine.generate(["User: pick one\n\nAssistant:"], max_tokens=2)[0].prompt_tokens
    assert chat_tokens != flat_tokens  # rendered through the template, not flattened


def test_bad_inputs_give_clear_errors(vllm_tiny: LLMEngine) -> None:
    with pytest.raises(SchemaError):
        vllm_tiny.generate(["x"], json_schema={"type": 12})
    with pytest.raises(EngineError, match="RECAGENT_LLM_MAX_MODEL_LEN"):
        vllm_tiny.generate(["movie " * 3000], max_tokens=2)
    assert vllm_tiny.generate([], max_tokens=2) == []


def test_engines_report_the_dtype_they_loaded(vllm_tiny: LLMEngine, hf_tiny: LLMEngine) -> None:
    # the tiny fixtures ask for float32 explicitly; describe() says what the engine really runs
    assert vllm_tiny.describe()["dtype"] == "float32"
    # the KV-cache block size (the prefix cache's grain): 32 on the CPU build, not vLLM's own 128
    assert vllm_tiny.describe()["block_size"] == 32 and vllm_tiny.describe()["prefix_caching"] is True
    assert hf_tiny.describe()["dtype"] == "float32"
