"""Token streaming (``LLMEngine.stream``): the default for engines that cannot stream (fast), stop strings and the
reply shaper (fast), and real streaming from the in-process vLLM engine and transformers on the tiny random model
(slow). The `vllm serve` side is in test_openai_server.py, next to its server fixture (one server per module)."""

from __future__ import annotations

import random
import threading
from typing import Any

import pytest

from agent.chat.reply import ReplyShaper, clean_reply
from agent.errors import EngineError
from agent.llm.base import LLMEngine, StopFilter, cut_at_stop

from fakes import FakeEngine

PROMPTS: list[Any] = [
    "the movie of the year is a comedy and",
    [{"role": "system", "content": "You recommend books."}, {"role": "user", "content": "a mystery please"}],
]


def _splits(text: str, rng: random.Random) -> list[str]:
    """``text`` cut at a few random places (every way a stream may deliver it)."""
    if len(text) < 2:
        return [text]
    cuts = sorted(rng.sample(range(1, len(text)), min(len(text) - 1, rng.randint(1, 12))))
    return [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)], strict=True)]


# ------------------------------------------------------------------------------------------------ fast
def test_default_stream_yields_the_generated_text_once() -> None:
    engine = FakeEngine(generate_fn=lambda req, schema: "Try The Silent Harbor. User: more")
    assert list(engine.stream("hi", max_tokens=7, temperature=0.5, seed=3)) == ["Try The Silent Harbor. User: more"]
    call = engine.calls[-1]
    assert (call.method, call.max_tokens, call.temperature, call.seed) == ("generate", 7, 0.5, 3)
    assert list(engine.stream("hi", stop=["User:", "<<<"])) == ["Try The Silent Harbor. "]
    assert list(FakeEngine(generate_fn=lambda req, schema: "").stream("hi")) == []  # nothing to yield
    failing = FakeEngine(error=EngineError("down"))
    deltas = failing.stream("hi")  # lazy: the error comes with the first delta
    with pytest.raises(EngineError, match="down"):
        next(deltas)


def test_cut_at_stop_takes_the_earliest_stop_string() -> None:
    assert cut_at_stop("abc User: x <<< y", ["<<<", "User:"]) == "abc "
    assert cut_at_stop("abc", ["zz", ""]) == "abc"
    assert cut_at_stop("abc", None) == "abc"


def test_stop_filter_emits_exactly_the_cut_text_however_the_deltas_fall() -> None:
    rng = random.Random(0)
    stops = ["User:", "<<<", "\n#"]
    texts = ["Here are two: A and B. User: next", "no stop at all here", "<<<ITEM", "x\n# h", "Use Usr: U", ""]
    for text in texts:
        for _ in range(40):
            f = StopFilter(stops)
            out = "".join(f.feed(d) for d in _splits(text, rng)) + f.flush()
            assert out == cut_at_stop(text, stops), (text, out)
            assert f.stopped == (out != text)


def test_reply_shaper_shows_the_cleaned_reply_as_it_grows() -> None:
    rng = random.Random(1)
    texts = [
        "  Here are three picks:  The Matrix,\n\nAlien and Heat.  One. Two! Three? Four. Five. Six. Seven.",
        "You could enjoy The Silent Harbor and The Crimson Harbor.",
        "word " * 300,  # over the character limit
        "Hello there # not a heading",
    ]
    for text in texts:
        for _ in range(40):
            shaper = ReplyShaper()
            shown = ""
            for delta in _splits(text, rng):
                shown += shaper.feed(delta)
                assert shaper.text.startswith(shown) or not shaper.consistent
            assert shaper.text == clean_reply(text)
            assert shown == shaper.text or (shaper.complete and shaper.text.startswith(shown))
    cut = ReplyShaper()
    cut.feed("One. Two. Three. Four. Five. Six")
    assert cut.complete and cut.text == "One. Two. Three. Four. Five."  # more text would be dropped: stop decoding


# ------------------------------------------------------------------------------------------------ real engines
def _check_stream_matches_generate(engine: LLMEngine, max_tokens: int, *, per_word: bool = False) -> None:
    """Greedy stream == generate for every prompt, in more than one delta (``per_word``: the engine hands text
    over at word boundaries, so a text without an inner space comes as one delta)."""
    pieces = []
    for prompt in PROMPTS:
        whole = engine.generate([prompt], max_tokens=max_tokens, temperature=0.0, seed=0)[0]
        deltas = list(engine.stream(prompt, max_tokens=max_tokens, temperature=0.0, seed=0))
        assert "".join(deltas) == whole.text
        if not per_word or " " in whole.text.strip():
            assert len(deltas) > 1, deltas  # really streamed, not one piece at the end
        pieces.append(len(deltas))
        # stop strings: the stream ends before the first occurrence, as generate's text cut there
        words = [w for w in whole.text.split(" ") if len(w) > 3]
        if words:
            stop = words[len(words) // 2]
            cut = "".join(engine.stream(prompt, max_tokens=max_tokens, temperature=0.0, seed=0, stop=[stop]))
            assert cut == cut_at_stop(whole.text, [stop])
    assert max(pieces) > 1


@pytest.mark.slow
def test_vllm_stream_equals_generate(vllm_tiny: LLMEngine) -> None:
    _check_stream_matches_generate(vllm_tiny, 40)
    sampled = vllm_tiny.generate([PROMPTS[0]], max_tokens=24, temperature=1.0, seed=11)[0].text
    streamed = "".join(vllm_tiny.stream(PROMPTS[0], max_tokens=24, temperature=1.0, seed=11))
    assert streamed == sampled  # a short request is prefilled in one step: its seed holds on the CPU build too
    with pytest.raises(EngineError, match="RECAGENT_LLM_MAX_MODEL_LEN"):
        list(vllm_tiny.stream("movie " * 3000, max_tokens=2))


@pytest.mark.slow
def test_vllm_stream_shares_the_engine_with_concurrent_calls(vllm_tiny: Any) -> None:
    """generate / score_options from other threads while a stream is read (the server's batcher does this): each
    call gets its own, correct results; a stream left early leaves no request behind in the engine."""
    prompt = PROMPTS[0]
    expected = vllm_tiny.generate([prompt], max_tokens=48)[0].text
    others = ["a book about", "the film was", "user likes"]
    expected_others = [g.text for g in vllm_tiny.generate(others, max_tokens=16)]
    expected_scores = vllm_tiny.score_options(others, ["A", "B"])

    got: dict[str, Any] = {}

    def batch_calls() -> None:
        got["generate"] = [g.text for g in vllm_tiny.generate(others, max_tokens=16)]
        got["scores"] = vllm_tiny.score_options(others, ["A", "B"])

    deltas = vllm_tiny.stream(prompt, max_tokens=48)
    text = next(deltas)
    worker = threading.Thread(target=batch_calls)
    worker.start()  # waits for the engine while the stream decodes
    text += "".join(deltas)
    worker.join(120)
    assert not worker.is_alive()
    assert text == expected
    assert got["generate"] == expected_others
    for a, b in zip(got["scores"], expected_scores, strict=True):
        assert a.logprobs == pytest.approx(b.logprobs, abs=1e-4)

    early = vllm_tiny.stream(prompt, max_tokens=200)
    next(early)
    early.close()  # the reader leaves: the request is aborted
    assert vllm_tiny.generate([prompt], max_tokens=48)[0].text == expected
    assert not vllm_tiny.llm.llm_engine.has_unfinished_requests()


@pytest.mark.slow
def test_hf_stream_equals_generate(hf_tiny: LLMEngine) -> None:
    _check_stream_matches_generate(hf_tiny, 24, per_word=True)  # TextIteratorStreamer: word by word


def test_streaming_engines_override_the_default() -> None:
    from agent.llm.hf_local import HFEngine
    from agent.llm.openai_server import OpenAIServerEngine
    from agent.llm.vllm_local import VLLMEngine

    for cls in (VLLMEngine, OpenAIServerEngine, HFEngine):
        assert cls.stream is not LLMEngine.stream, cls
    assert FakeEngine.stream is LLMEngine.stream
