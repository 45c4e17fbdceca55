"""Prefix-cache benchmark for chat turns: vLLM automatic prefix caching ON vs OFF, same run, same scripts.

    .venv/bin/python bench/chat_prefix.py                 # the configured model and collection (make demo first)
    .venv/bin/python bench/chat_prefix.py --quick         # tiny random model, 200 MovieLens movies: checks it works

Each mode runs in its own process (a fresh in-process vLLM engine with ``llm_prefix_caching`` on or off) and plays
the same scripted multi-turn conversations (``--sessions`` sessions x ``--turns`` turns, sessions interleaved turn by
turn, as a server sees them) through the real :class:`agent.conversation.Conversation`:

1. time to first token (TTFT) of turns >= 2: just before each turn, the turn's preference-extraction prompt (system
   text, earlier turns, the new message: the stable part first) is sent alone with ``max_tokens=1``; prefill
   dominates, and with caching on the earlier turns' tokens come from the cache;
2. turn latency: the prefix cache is reset, and the same conversations run again on fresh sessions without probes;
   the wall time of each ``Conversation.send`` (extraction, ranking, justifications, reply) is recorded.

Prints medians / p90 per mode and the OFF/ON ratio; ``--out FILE`` writes the raw figures as JSON.
"""

from __future__ import annotations

import sys
from pathlib import Path

# bench/retrieval.py would shadow the `retrieval` package: drop this folder from the import path
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import argparse
import json
import statistics
import subprocess
import tempfile
import time
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
MOVIELENS = ROOT / "data" / "movielens-latest-small"
QUICK_COLLECTION = "chat-prefix-quick"
SCRIPTS = [
    ["a funny animated movie for the whole family", "not that one, something with more adventure",
     "more like the second one", "older films please", "no horror, and only comedies"],
    ["a dark crime thriller with a twist", "the first one looks good, more like that",
     "something from the 90s", "not the third one", "something lighter"],
    ["a romantic comedy for tonight", "none of these, something newer", "more like the last one",
     "no musicals please", "anything but drama"],
    ["a science fiction film about space travel", "something shorter and older", "more like the first one",
     "not that one", "something with aliens"],
]  # fmt: skip


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] if ordered else float("nan")


# ------------------------------------------------------------------------------------------------ worker
def worker(args: argparse.Namespace) -> dict[str, Any]:
    from agent.conversation import EXTRACT_TEMPLATE, Conversation, history_messages
    from agent.errors import EngineError
    from agent.llm.vllm_local import get_engine
    from agent.pipeline import Recommender
    from agent.sessions import open_session_store
    from agent.settings import load_settings

    overrides: dict[str, Any] = {"llm_prefix_caching": args.caching == "on"}
    if args.quick:
        overrides.update(home=args.home, collection=QUICK_COLLECTION, llm_model=args.model, llm_dtype="float32",
                         llm_max_model_len=2048, llm_memory_fraction=0.05, fusion_n=8, chat_k=4,
                         chat_history_turns=2, chat_reply_max_tokens=48, chat_extract_max_tokens=96)  # fmt: skip
    settings = load_settings(**overrides)
    from agent.llm.models import resolve_model

    t0 = time.perf_counter()
    engine = get_engine(settings, resolve_model(settings))
    start_s = time.perf_counter() - t0
    db = Path(tempfile.mkdtemp()) / "sessions.sqlite3"
    settings = settings.model_copy(update={"session_db_url": str(db)})
    store = open_session_store(settings)
    conv = Conversation(Recommender(settings, engine=engine), store, settings)
    scripts = (SCRIPTS * ((args.sessions + len(SCRIPTS) - 1) // len(SCRIPTS)))[: args.sessions]
    _ = conv.index  # build the catalog index outside the timings
    engine.generate(["warm-up"], max_tokens=2)

    def play(probe: bool) -> tuple[list[float], list[float], list[int]]:
        sids = [conv.start().session_id for _ in scripts]
        ttft, latency, prompt_tokens = [], [], []
        for turn in range(args.turns):
            for sid, script in zip(sids, scripts, strict=True):
                message = script[turn % len(script)]
                if probe and turn >= 1:
                    state = conv.get(sid)
                    history = history_messages(state.turns, settings.chat_history_turns)
                    conversation = [{"role": "user" if m.type == "human" else "assistant", "content": str(m.content)}
                                    for m in history]  # fmt: skip
                    rendered = conv.recommender.registry.render(
                        EXTRACT_TEMPLATE,
                        {"conversation": conversation, "message": message, "fields": conv.index.field_names()},
                    )
                    started = time.perf_counter()
                    try:
                        gen = engine.generate([rendered.chat_messages()], max_tokens=1)
                    except EngineError as exc:  # e.g. longer than the context: the turn itself goes on
                        print(f"probe skipped: {exc.message}", file=sys.stderr)
                    else:
                        ttft.append(time.perf_counter() - started)
                        prompt_tokens.append(gen[0].prompt_tokens)
                started = time.perf_counter()
                conv.send(sid, message)
                if not probe and turn >= 1:
                    latency.append(time.perf_counter() - started)
        return ttft, latency, prompt_tokens

    ttft, _, tokens = play(probe=True)
    engine.llm.reset_prefix_cache()
    _, latency, _ = play(probe=False)
    store.close()
    engine.close()
    return {"caching": args.caching, "engine_start_s": start_s, "ttft_s": ttft, "turn_s": latency,
            "prompt_tokens": tokens, "model": engine.model_id}  # fmt: skip


# ------------------------------------------------------------------------------------------------ parent
def prepare_quick(home: Path) -> Path:
    """A tiny random model and 200 MovieLens movies ingested with the bundled embedder."""
    sys.path.append(str(ROOT / "tests"))
    from agent.settings import load_settings
    from retrieval.ingest import ingest

    from tiny_model import build_tiny_model

    model = build_tiny_model(home / "tiny-model")
    settings = load_settings(home=home, collection=QUICK_COLLECTION)
    ingest(MOVIELENS, store_config=settings.store_config(), embed_config=settings.embed_config(progress=False),
           collection=QUICK_COLLECTION, limit=200)  # fmt: skip
    return model


def run_mode(mode: str, args: argparse.Namespace, home: Path | None, model: Path | None) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--worker", "--caching", mode, "--sessions", str(args.sessions),
           "--turns", str(args.turns)]  # fmt: skip
    if args.quick:
        cmd += ["--quick", "--home", str(home), "--model", str(model)]
    out = Path(tempfile.mkdtemp()) / "result.json"
    cmd += ["--result", str(out)]
    proc = subprocess.run(cmd, cwd=ROOT, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"the {mode} worker failed (exit {proc.returncode})")
    return json.loads(out.read_text())  # type: ignore[no-any-return]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny random model and 200 movies (a smoke run)")
    parser.add_argument("--sessions", type=int, default=4)
    parser.add_argument("--turns", type=int, default=5)
    parser.add_argument("--out", type=Path, help="write the raw figures here (JSON)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--caching", choices=["on", "off"], help=argparse.SUPPRESS)
    parser.add_argument("--home", help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.turns < 2:
        parser.error("--turns must be at least 2 (turn >= 2 is what is measured)")
    if args.worker:
        args.result.write_text(json.dumps(worker(args)))
        return
    home = model = None
    if args.quick:
        home = Path(tempfile.mkdtemp(prefix="chat-prefix-"))
        model = prepare_quick(home)
    results = {mode: run_mode(mode, args, home, model) for mode in ("off", "on")}
    print(f"\nchat prefix caching: {args.sessions} sessions x {args.turns} turns, model {results['on']['model']}")
    print(f"{'':>10} {'TTFT p50':>10} {'TTFT p90':>10} {'turn p50':>10} {'turn p90':>10} {'prompt tok':>11}")
    for mode, r in results.items():
        print(f"{'caching ' + mode:>10} {statistics.median(r['ttft_s']) * 1000:>8.1f}ms "
              f"{_pct(r['ttft_s'], 0.9) * 1000:>8.1f}ms {statistics.median(r['turn_s']):>9.2f}s "
              f"{_pct(r['turn_s'], 0.9):>9.2f}s {statistics.median(r['prompt_tokens']):>11.0f}")  # fmt: skip
    speed_ttft = statistics.median(results["off"]["ttft_s"]) / statistics.median(results["on"]["ttft_s"])
    speed_turn = statistics.median(results["off"]["turn_s"]) / statistics.median(results["on"]["turn_s"])
    print(f"TTFT of turns >= 2: {speed_ttft:.2f}x faster with caching; turn latency: {speed_turn:.2f}x")
    if args.out:
        args.out.write_text(json.dumps({"results": results, "ttft_speedup": speed_ttft, "turn_speedup": speed_turn},
                                       indent=2))  # fmt: skip


if __name__ == "__main__":
    main()
