"""KV-cache block size A/B on the same prompts: two in-process vLLM engines (``llm_block_size`` 128, vLLM's CPU
default, and 32, this project's CPU default) in one process, probed alternately, so a changing machine load hits
both alike.

    RECAGENT_COLLECTION=movielens-demo .venv/bin/python bench/block_size.py --out block_size.json

The prompts are a scripted chat session's real reply prompts (``bench/chat_prompt_prefix.py``'s script, rendered by
the real ``Conversation`` with a scripted engine: template replies, rules-only extraction), in the layout
``--prompt-format`` names (default ``fewshot``, what the bundled base model gets). Per engine the session is replayed
as the chat sends it: turn 1's prompt, then per turn the warm-up (``Conversation.next_reply_prefix``, what
``chat_reply_warm`` sends after a turn) and for turns >= 2 the reply prompt with ``max_tokens=1`` twice - as it is
("on": the session's earlier prompts are cached) and with a fresh ``cache_salt`` ("off": nothing cached) - in an
order that alternates turn by turn; the two engines take turns, prompt by prompt. Recorded: time to the one token
and vLLM's ``num_cached_tokens``. No timed assertions; medians and p90 printed with the CPU flags and load average.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import argparse
import importlib.util
import json
import os
import tempfile
import time
import uuid
from typing import Any


def _module(name: str) -> Any:
    spec = importlib.util.spec_from_file_location(f"bench_{name}", Path(__file__).with_name(f"{name}.py"))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def session_prompts(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Per turn of the scripted session: the reply prompt and the warm-up prefix sent after it."""
    import agent.chat.conversation as conversation
    from agent.chat.conversation import Conversation
    from agent.pipeline import Recommender
    from agent.sessions import open_session_store
    from agent.settings import load_settings

    sys.path.append(str(Path(__file__).resolve().parents[1] / "tests"))
    from fakes import FakeEngine

    script = _module("chat_prompt_prefix").SCRIPT
    settings = load_settings(chat_history_turns=6, explain_mode="template", chat_extract="rules", chat_reply="llm",
                             prompt_format=args.prompt_format,
                             session_db_url=str(Path(tempfile.mkdtemp()) / "s.sqlite3"))  # fmt: skip
    store = open_session_store(settings)
    conv = Conversation(Recommender(settings, engine=FakeEngine()), store, settings)
    conversation.log.disabled = True
    captured: list[Any] = []
    render = conv._reply_prompt
    conv._reply_prompt = lambda w: (captured.append(render(w)), captured[-1])[1]  # type: ignore[method-assign]
    sid = conv.start().session_id
    turns = []
    for message in script[: args.turns]:
        before = len(captured)
        conv.send(sid, message)
        if len(captured) == before:
            raise SystemExit(f"{message!r} asked a clarifying question: no reply prompt")
        turns.append({"prompt": captured[-1], "warm": conv.next_reply_prefix(conv.get(sid))})
    store.close()
    return turns


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[128, 32], help="the block sizes (one engine each)")
    parser.add_argument("--turns", type=int, default=8)
    parser.add_argument("--prompt-format", choices=["chat", "fewshot"], default="fewshot")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    from vllm import SamplingParams
    from vllm.inputs import TokensPrompt

    from agent.llm.base import LLMRequest
    from agent.llm.models import resolve_model
    from agent.llm.prompting import encode_request
    from agent.llm.vllm_local import VLLMEngine
    from agent.settings import load_settings

    cp = _module("chat_prefix")
    machine = cp.machine()
    print(f"machine: {machine}", flush=True)
    turns = session_prompts(args)
    settings = load_settings()
    model = str(resolve_model(settings))
    engines = {}
    for size in args.sizes:
        started = time.perf_counter()
        engines[size] = VLLMEngine(settings.model_copy(update={"llm_block_size": size}), model)
        print(f"engine {size} ready in {time.perf_counter() - started:.0f}s: {engines[size].describe()}", flush=True)
    tokenizer = engines[args.sizes[0]].tokenizer
    ids = [{k: encode_request(tokenizer, LLMRequest.of(t[k])) for k in ("prompt", "warm")} for t in turns]
    params = SamplingParams(max_tokens=1, temperature=0.0)

    def probe(size: int, tokens: list[int], cold: bool) -> tuple[float, int]:
        prompt = TokensPrompt(prompt_token_ids=tokens)
        if cold:
            prompt["cache_salt"] = uuid.uuid4().hex
        engine = engines[size]
        with engine._lock:
            started = time.perf_counter()
            out = engine.llm.generate([prompt], params, use_tqdm=False)
            return time.perf_counter() - started, int(out[0].num_cached_tokens or 0)

    for size in args.sizes:
        probe(size, ids[0]["prompt"], False)  # turn 1 as the chat sends it, then its warm-up
        probe(size, ids[0]["warm"], False)
    rows = []
    for n in range(1, len(ids)):
        row: dict[str, Any] = {"turn": n + 1, "tokens": len(ids[n]["prompt"])}
        order = [(s, c) for s in args.sizes for c in (False, True)]
        for size, cold in order if n % 2 else order[::-1]:
            took, cached = probe(size, ids[n]["prompt"], cold)
            arm = f"b{size}_{'off' if cold else 'on'}"
            row[f"{arm}_s"], row[f"{arm}_cached"] = took, cached
        for size in args.sizes:
            probe(size, ids[n]["warm"], False)
        row["loadavg"] = os.getloadavg()[0]
        rows.append(row)
        print(json.dumps(row), flush=True)
    after = cp.machine()
    print(f"\nload average after: {after['loadavg']}; {len(rows)} turns >= 2, prompt layout {args.prompt_format}")
    print(f"{'block':>6} {'cached (on) p50':>16} {'TTFT off p50/p90':>20} {'TTFT on p50/p90':>20} {'off/on':>7}")
    summary = {}
    for size in args.sizes:
        off = [r[f"b{size}_off_s"] for r in rows]
        on = [r[f"b{size}_on_s"] for r in rows]
        summary[size] = {
            "off_p50": cp._median(off),
            "on_p50": cp._median(on),
            "ratio": cp._median(off) / cp._median(on),
        }
        print(f"{size:>6} {cp._median([r[f'b{size}_on_cached'] for r in rows]):>16.0f} "
              f"{cp._median(off) * 1000:>9.1f}/{cp._pct(off, 0.9) * 1000:.1f} ms "
              f"{cp._median(on) * 1000:>9.1f}/{cp._pct(on, 0.9) * 1000:.1f} ms "
              f"{summary[size]['ratio']:>6.2f}x")  # fmt: skip
    for engine in engines.values():
        engine.close()
    if args.out:
        report = {"machine": machine, "load_after": after["loadavg"], "rows": rows, "summary": summary,
                  "prompt_format": args.prompt_format}  # fmt: skip
        args.out.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
