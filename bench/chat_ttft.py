"""Single-user chat turn latency and time to first token, before (the issue's order and reply layout) vs after
(items first, the append-only reply transcript), same run.

    .venv/bin/python bench/chat_ttft.py                   # the configured model and collection (make demo first)
    .venv/bin/python bench/chat_ttft.py --sessions 2 --turns 3 --out ttft.json

One in-process engine (the configured model, prefix caching as configured); scripted conversations (bench/
chat_prefix.py's scripts) played one user at a time through ``Conversation.stream`` (the path of the chat page and
``recagent chat``), in two arms that alternate session by session on the same warm engine:

- ``before`` (``chat_justify_later=False``, the issue's order): recommend with the LLM justifications, then stream
  the reply: the user sees the items and the first reply token only after every justification is written; the
  reply prompt in the issue's layout (``chat_reply`` v1.1, ``bench/legacy/chat_reply.j2``; ``--before-layout
  v2.0`` keeps the transcript in this arm too);
- ``after`` (``chat_justify_later=True``): the items with template reasons at once, the reply streamed (the
  append-only transcript, ``chat_reply`` v2.0), then the LLM justifications filled in (``justification`` events).

The engine's prefix cache is reset before every session, so neither arm profits from the other's prompts. Per turn
it records the ChatReply ``timings``: ``items_s`` (items shown), ``ttft_s`` (first reply text shown), ``total_s``
(turn stored, justifications included), ``reply_ttft_s`` (from the reply's engine call to its first token).
Prints medians and p90 per arm (all turns, and turns >= 2) with the CPU flags and the load average; no timed assertions.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import argparse
import importlib.util
import json
import tempfile
import time
from typing import Any

ARMS = ("before", "after")
KEYS = ("items_s", "ttft_s", "total_s", "reply_ttft_s")


def _chat_prefix() -> Any:
    spec = importlib.util.spec_from_file_location("bench_chat_prefix", Path(__file__).with_name("chat_prefix.py"))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run(args: argparse.Namespace) -> dict[str, Any]:
    from agent.chat.conversation import Conversation
    from agent.llm.models import resolve_model
    from agent.llm.vllm_local import get_engine
    from agent.pipeline import Recommender
    from agent.sessions import open_session_store
    from agent.settings import load_settings

    cp = _chat_prefix()
    overrides: dict[str, Any] = {"explain_mode": args.explain} if args.explain else {}
    settings = load_settings(**overrides)
    t0 = time.perf_counter()
    engine = get_engine(settings, resolve_model(settings))
    start_s = time.perf_counter() - t0
    settings = settings.model_copy(update={"session_db_url": str(Path(tempfile.mkdtemp()) / "sessions.sqlite3")})
    store = open_session_store(settings)
    recommender = Recommender(settings, engine=engine)
    later = {"before": args.before_order == "later", "after": True}
    convs = {  # the before arm never warms the next prompt (its layout is not the one the warm-up renders)
        arm: Conversation(recommender, store, settings.model_copy(
            update={"chat_justify_later": later[arm], "chat_reply_warm": arm == "after" and settings.chat_reply_warm}))
        for arm in ARMS
    }  # fmt: skip
    if args.before_layout == "v1.1":
        legacy = cp.LegacyReply(convs["before"])
        convs["before"]._reply_prompt = legacy.prompt  # type: ignore[method-assign]
    elif args.before_layout == "v2.0-main":
        transcript = cp.LegacyTranscript(convs["before"])
        convs["before"]._reply_prompt = transcript.prompt  # type: ignore[method-assign]
    for conv in convs.values():
        _ = conv.index  # the catalog index, outside the timings
    engine.generate(["warm-up"], max_tokens=2)
    from agent.pipeline import RecommendRequest

    recommender.recommend(RecommendRequest(query="warm-up", k=1), explain="later")  # embedder, store, generator
    scripts = (cp.SCRIPTS * ((args.sessions + len(cp.SCRIPTS) - 1) // len(cp.SCRIPTS)))[: args.sessions]
    out: dict[str, list[dict[str, Any]]] = {arm: [] for arm in ARMS}
    deadline = time.monotonic() + args.budget_s if args.budget_s else None
    for n, script in enumerate(scripts):
        if deadline is not None and time.monotonic() > deadline:
            print(f"--budget-s spent: stopped before session {n + 1}", file=sys.stderr, flush=True)
            break
        order = ARMS if n % 2 == 0 else ARMS[::-1]  # alternate which arm goes first
        for arm in order:
            engine.llm.reset_prefix_cache()
            conv = convs[arm]
            sid = conv.start().session_id
            for turn in range(args.turns):
                events = list(conv.stream(sid, script[turn % len(script)]))
                done = events[-1]
                assert done.event == "done", [e.event for e in events]
                timings = dict(done.data["timings"])
                kinds = [e.event for e in events]
                replaced = [e.data.get("reason", "") for e in events if e.event == "replace"]
                out[arm].append({"session": n, "turn": turn + 1, **timings,
                                 "justification_events": kinds.count("justification"),
                                 "reply_replaced": replaced[0] if replaced else None})  # fmt: skip
                print(f"[{arm}] session {n + 1} turn {turn + 1}: " + ", ".join(
                    f"{k} {timings.get(k, float('nan')):.2f}" for k in KEYS), file=sys.stderr, flush=True)  # fmt: skip
    described = engine.describe()
    store.close()
    engine.close()
    return {"model": engine.model_id, "engine_start_s": start_s, "explain": settings.explain_mode,
            "before_layout": args.before_layout, "before_order": args.before_order, "engine": described,
            "reply_layout": convs["after"].reply_layout(), "turns": out}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sessions", type=int, default=2)
    parser.add_argument("--turns", type=int, default=3)
    parser.add_argument("--explain", choices=["llm", "template"], help="justifications (default: the settings')")
    parser.add_argument("--before-layout", choices=["v1.1", "v2.0", "v2.0-main"], default="v1.1",
                        help="the before arm's reply prompt: the issue's layout, the current one, or main's chat "
                        "transcript before the few-shot layout (bench/legacy/v2.0/chat_reply.j2)")  # fmt: skip
    parser.add_argument("--before-order", choices=["issue", "later"], default="issue",
                        help="the before arm's order: the issue's (justifications before the reply) or items "
                        "first like the after arm (then the arms differ in the reply prompt only)")  # fmt: skip
    parser.add_argument("--budget-s", type=float, help="start no new session (both arms) after this many seconds")
    parser.add_argument("--out", type=Path, help="write the raw figures here (JSON)")
    args = parser.parse_args()
    cp = _chat_prefix()
    before = cp.machine()
    print(f"machine: {before}", flush=True)
    result = run(args)
    after = cp.machine()
    print(f"engine: {result['engine']}; reply layout (after): {result['reply_layout']}")
    print(f"\nchat turn, one user at a time: {args.sessions} sessions x {args.turns} turns per arm, model "
          f"{result['model']}, justifications {result['explain']}; load average after: {after['loadavg']}")  # fmt: skip
    print(f"{'':>8} {'turns':>6} " + " ".join(f"{k + ' p50/p90':>18}" for k in KEYS))
    for arm in ARMS:
        for label, rows in (("all", result["turns"][arm]), (">=2", [r for r in result["turns"][arm] if r["turn"] > 1])):
            cells = []
            for key in KEYS:
                values = [float(r[key]) for r in rows if key in r]
                cells.append(f"{cp._median(values):.2f}/{cp._pct(values, 0.9):.2f} s" if values else "-")
            print(f"{arm:>8} {label:>6} " + " ".join(f"{c:>18}" for c in cells))
    for arm in ARMS:  # the LLM reply kept, or replaced by the template reply (and why)
        reasons = [r["reply_replaced"] for r in result["turns"][arm]]
        print(f"{arm}: LLM reply kept in {reasons.count(None)} of {len(reasons)} turns; replaced: "
              f"{[r for r in reasons if r is not None]}")  # fmt: skip
    if args.out:
        args.out.write_text(json.dumps({"machine": before, "load_after": after["loadavg"], **result}, indent=2))


if __name__ == "__main__":
    main()
