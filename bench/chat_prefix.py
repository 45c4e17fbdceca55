"""Prefix-cache benchmark for chat turns: vLLM automatic prefix caching ON vs OFF, same run, same scripts.

    .venv/bin/python bench/chat_prefix.py                 # the configured model and collection (make demo first)
    .venv/bin/python bench/chat_prefix.py --quick         # tiny random model, 200 MovieLens movies: checks it works

Each mode runs in its own process (a fresh in-process vLLM engine with ``llm_prefix_caching`` on or off) and plays
the same scripted multi-turn conversations (``--sessions`` sessions x ``--turns`` turns, sessions interleaved turn by
turn, as a server sees them) through the real :class:`agent.chat.conversation.Conversation`. Both chat prompts put the
stable parts first (instructions, then the session's earlier turns, then this turn's need, items and message), so with
caching on a later turn's prompt reuses the cached prefix of the earlier ones. Measured on turns >= 2:

1. reply TTFT: each turn runs through ``Conversation.stream`` (the streaming path of ``recagent chat`` and the SSE
   API), and the time from the reply prompt's submission to its first streamed delta (``engine.stream``) is recorded:
   the real ``chat_reply`` prompt with the session's history, as the user waits for it;
2. extraction TTFT: just before each turn, the turn's real ``extract_preferences`` prompt (instructions, earlier
   turns, the new message) is sent alone with ``max_tokens=1`` (prefill dominates);
3. turn latency: the prefix cache is reset, and the same conversations run again on fresh sessions without probes;
   the wall time of each ``Conversation.send`` (extraction, ranking, justifications, reply) is recorded.

Prints medians / p90 per mode and the OFF/ON ratios; ``--out FILE`` writes the raw figures as JSON.

``--interleaved``: one process, one engine (caching on), the arms interleaved prompt by prompt, so that a changing
machine load hits them alike. For every turn >= 2 the reply prompt in the layouts ``--arms`` names - ``reply_v1``
the issue's (``chat_reply`` v1.1, ``bench/legacy/chat_reply.j2``: instructions, earlier turns, then need, items
with reasons and message), ``reply_main`` main's append-only chat transcript before the few-shot layout (v2.0,
``bench/legacy/v2.0/chat_reply.j2``, flattened to text for a base model), ``reply`` what ``Conversation`` sends now
(v2.1: the few-shot transcript for a base model, warmed after each turn) - and the turn's extraction prompt are each
sent with
``max_tokens=1`` twice, in alternating order: as they are ("cache on": the session's earlier prompts are in the
cache) and with a fresh vLLM ``cache_salt`` ("cache off": no cached block can match, the whole prompt is
computed). Recorded per probe: the time to its one token and vLLM's ``num_cached_tokens``. The turn itself then
runs through ``Conversation.stream`` as usual (its reply streamed and cached, as a user's would be).
"""

from __future__ import annotations

import sys
from pathlib import Path

# bench/retrieval.py would shadow the `retrieval` package: drop this folder from the import path
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import argparse
import json
import os
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


def stage_overrides(args: argparse.Namespace, caching: bool) -> dict[str, Any]:
    """Settings of a bench run: prefix caching, and the stages that --explain/--rerank/--extract replace."""
    overrides: dict[str, Any] = {"llm_prefix_caching": caching}
    if getattr(args, "block_size", None):
        overrides["llm_block_size"] = args.block_size
    for option, key in (("explain", "explain_mode"), ("rerank", "rerank_strategy"), ("extract", "chat_extract")):
        if getattr(args, option, None):
            overrides[key] = getattr(args, option)
    return overrides


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] if ordered else float("nan")


def machine() -> dict[str, Any]:
    """CPU flags (bench/llm_engine.py's list), the dtype ``llm_dtype=auto`` picks here, and the load average."""
    import importlib.util
    import os

    from agent.llm.dtype import resolve_llm_dtype

    spec = importlib.util.spec_from_file_location("bench_llm_engine", Path(__file__).with_name("llm_engine.py"))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return {"cpu_flags": module.cpu_flags(), "auto_dtype": resolve_llm_dtype("auto"), "loadavg": os.getloadavg(),
            "cores": os.cpu_count()}  # fmt: skip


# ------------------------------------------------------------------------------------------------ worker
class TimedStreams:
    """Wraps the engine: every ``stream`` call records its time to the first delta and its prompt's token count."""

    def __init__(self, inner: Any) -> None:
        from agent.llm.base import LLMEngine

        outer = self

        class Timed(LLMEngine):
            backend = inner.backend
            model_id = inner.model_id

            def generate(self, requests: Any, **kw: Any) -> Any:
                return inner.generate(requests, **kw)

            def score_options(self, requests: Any, labels: Any) -> Any:
                return inner.score_options(requests, labels)

            def describe(self) -> dict[str, Any]:
                return dict(inner.describe())

            def stream(self, request: Any, **kw: Any) -> Any:
                from agent.llm.base import LLMRequest
                from agent.llm.prompting import encode_request

                ids = encode_request(inner.tokenizer, LLMRequest.of(request))
                started = time.perf_counter()
                first = True
                for delta in inner.stream(request, **kw):
                    if first:
                        outer.records.append((time.perf_counter() - started, len(ids)))
                        outer.prompts.append(ids)
                        first = False
                    yield delta

        self.engine = Timed()
        self.records: list[tuple[float, int]] = []
        self.prompts: list[list[int]] = []  # token ids of each timed prompt (same order as records)


LEGACY_REPLY = Path(__file__).with_name("legacy") / "chat_reply.j2"


class LegacyReply:
    """The reply prompt in the issue's layout (``chat_reply`` v1.1: instructions, the window's earlier turns as text,
    then the need, this turn's items with their reasons and the message), rendered from a turn's work as
    ``Conversation`` rendered it before the append-only transcript."""

    def __init__(self, conv: Any) -> None:
        from prompts.template import load_template

        self.conv = conv
        self.template = load_template(LEGACY_REPLY)

    def prompt(self, w: Any) -> list[dict[str, str]]:
        items = [
            {"title": it.title, "attributes": dict(list(it.metadata.items())[:4]),
             "justification": it.justification or ""}
            for it in w.recommendation.items
        ]  # fmt: skip
        variables = {"conversation": self.conv.history_vars(w.state), "message": w.message, "items": items,
                     "need": w.state.preferences.need or ""}  # fmt: skip
        return self.template.render(variables).chat_messages()  # type: ignore[no-any-return]


LEGACY_TRANSCRIPT = Path(__file__).with_name("legacy") / "v2.0" / "chat_reply.j2"


class LegacyTranscript:
    """The reply prompt as main sent it before the few-shot layout (``chat_reply`` v2.0, ``bench/legacy/
    v2.0/chat_reply.j2``): the append-only chat transcript (flattened to text for a base model), each item with its
    first four catalog fields in full, rendered from the same session turns."""

    def __init__(self, conv: Any) -> None:
        from prompts.template import load_template

        self.conv = conv
        self.template = load_template(LEGACY_TRANSCRIPT)

    def render(self, name: str, variables: dict[str, Any]) -> Any:  # the registry's render, for reply_messages
        return self.template.render(variables)

    @staticmethod
    def item(title: str, metadata: dict[str, Any]) -> dict[str, Any]:
        return {"title": title, "attributes": dict(list(metadata.items())[:4])}

    def prompt(self, w: Any) -> list[dict[str, str]]:
        import itertools

        from agent.chat.reply import Exchange, reply_messages

        window = self.conv.reply_window(w.state)
        ids = list(dict.fromkeys(i for t in window if t.role == "assistant" for i in t.item_ids))
        found = self.conv.recommender.collection.get_items(ids) if ids else {}
        earlier = [
            Exchange(u.content, [self.item(found[i].title, found[i].metadata) for i in a.item_ids if i in found],
                     a.content)
            for u, a in itertools.pairwise(window) if u.role == "user" and a.role == "assistant"
        ]  # fmt: skip
        items = [self.item(it.title, it.metadata) for it in w.recommendation.items]
        return reply_messages(self, earlier, w.message, items)  # type: ignore[arg-type]


def shared_prefix(a: list[int], b: list[int]) -> int:
    """Leading tokens ``a`` and ``b`` have in common: what a prefix cache can serve of ``b`` after ``a``."""
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def worker(args: argparse.Namespace) -> dict[str, Any]:
    from agent.chat.conversation import EXTRACT_TEMPLATE, Conversation
    from agent.errors import EngineError
    from agent.llm.vllm_local import get_engine
    from agent.pipeline import Recommender
    from agent.sessions import open_session_store
    from agent.settings import load_settings

    overrides = stage_overrides(args, args.caching == "on")
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
    timed = TimedStreams(engine)
    conv = Conversation(Recommender(settings, engine=timed.engine), store, settings)
    scripts = (SCRIPTS * ((args.sessions + len(SCRIPTS) - 1) // len(SCRIPTS)))[: args.sessions]
    _ = conv.index  # build the catalog index outside the timings
    engine.generate(["warm-up"], max_tokens=2)

    def probe_extraction(sid: str, message: str) -> tuple[float, int] | None:
        """TTFT of the turn's real extraction prompt, sent alone with max_tokens=1."""
        state = conv.get(sid)
        rendered = conv.recommender.registry.render(
            EXTRACT_TEMPLATE,
            {"conversation": conv.history_vars(state), "message": message, "fields": conv.index.field_names()},
        )
        started = time.perf_counter()
        try:
            gen = engine.generate([rendered.chat_messages()], max_tokens=1)
        except EngineError as exc:  # e.g. longer than the context: the turn itself goes on
            print(f"probe skipped: {exc.message}", file=sys.stderr)
            return None
        return time.perf_counter() - started, gen[0].prompt_tokens

    def play_streamed() -> dict[str, list[Any]]:
        sids = [conv.start().session_id for _ in scripts]
        out: dict[str, list[Any]] = {"reply_ttft_s": [], "reply_tokens": [], "extract_ttft_s": [], "extract_tokens": [],
                                     "reply_shared_tokens": []}  # fmt: skip
        last: dict[str, list[int]] = {}
        for turn in range(args.turns):
            for sid, script in zip(sids, scripts, strict=True):
                message = script[turn % len(script)]
                probe = probe_extraction(sid, message) if turn >= 1 else None
                if probe is not None:
                    out["extract_ttft_s"].append(probe[0])
                    out["extract_tokens"].append(probe[1])
                before = len(timed.records)
                started = time.perf_counter()
                events = [e.event for e in conv.stream(sid, message)]
                assert events[-1] == "done", events
                print(f"[{args.caching}] streamed turn {turn + 1} of session {sid[:8]}: "
                      f"{time.perf_counter() - started:.2f}s", file=sys.stderr, flush=True)  # fmt: skip
                if len(timed.records) > before:  # a turn without items streams no LLM reply
                    ttft, tokens = timed.records[-1]
                    ids = timed.prompts[-1]
                    if turn >= 1:
                        out["reply_ttft_s"].append(ttft)
                        out["reply_tokens"].append(tokens)
                        out["reply_shared_tokens"].append(shared_prefix(last.get(sid, []), ids))
                    last[sid] = ids
        return out

    def play_sent() -> list[float]:
        sids = [conv.start().session_id for _ in scripts]
        latency = []
        for turn in range(args.turns):
            for sid, script in zip(sids, scripts, strict=True):
                started = time.perf_counter()
                conv.send(sid, script[turn % len(script)])
                if turn >= 1:
                    latency.append(time.perf_counter() - started)
        return latency

    streamed = play_streamed()
    engine.llm.reset_prefix_cache()
    latency = [] if args.skip_send else play_sent()
    store.close()
    engine.close()
    return {"caching": args.caching, "engine_start_s": start_s, **streamed, "turn_s": latency,
            "model": engine.model_id}  # fmt: skip


def interleaved_worker(args: argparse.Namespace) -> dict[str, Any]:
    """One engine with caching on; per turn >= 2 each prompt probed as is and with a fresh cache salt."""
    import uuid

    from vllm import SamplingParams
    from vllm.inputs import TokensPrompt

    from agent.chat.conversation import EXTRACT_TEMPLATE, Conversation
    from agent.llm.base import LLMRequest
    from agent.llm.prompting import encode_request
    from agent.llm.vllm_local import get_engine
    from agent.pipeline import Recommender
    from agent.sessions import open_session_store
    from agent.settings import load_settings

    overrides = stage_overrides(args, True)
    settings = load_settings(**overrides)
    from agent.llm.models import resolve_model

    t0 = time.perf_counter()
    engine = get_engine(settings, resolve_model(settings))
    start_s = time.perf_counter() - t0
    settings = settings.model_copy(update={"session_db_url": str(Path(tempfile.mkdtemp()) / "sessions.sqlite3")})
    store = open_session_store(settings)
    conv = Conversation(Recommender(settings, engine=engine), store, settings)
    legacy = LegacyReply(conv)
    main_v20 = LegacyTranscript(conv)
    arms = args.arms.split(",")
    others = {"reply_v1": legacy.prompt, "reply_main": main_v20.prompt}
    scripts = (SCRIPTS * ((args.sessions + len(SCRIPTS) - 1) // len(SCRIPTS)))[: args.sessions]
    _ = conv.index
    engine.generate(["warm-up"], max_tokens=2)
    params = SamplingParams(max_tokens=1, temperature=0.0)
    rows: list[dict[str, Any]] = []
    flip = [False]

    def probe(ids: list[int], cold: bool) -> tuple[float, int]:
        prompt = TokensPrompt(prompt_token_ids=ids)
        if cold:
            prompt["cache_salt"] = uuid.uuid4().hex  # no cached block can match: the whole prompt is computed
        with engine._lock:
            started = time.perf_counter()
            out = engine.llm.generate([prompt], params, use_tqdm=False)
            return time.perf_counter() - started, int(out[0].num_cached_tokens or 0)

    def probe_all(row: dict[str, Any], prompts: dict[str, Any]) -> None:
        """Every (prompt, on/off) pair once, in an order that alternates from call to call."""
        pairs = [(name, cold) for name in prompts for cold in (False, True)]
        flip[0] = not flip[0]
        for name, cold in reversed(pairs) if flip[0] else pairs:
            ids = encode_request(engine.tokenizer, LLMRequest.of(prompts[name]))
            took, cached = probe(ids, cold)
            arm = f"{name}_{'off' if cold else 'on'}"
            row[f"{arm}_s"], row[f"{arm}_cached"], row[f"{name}_tokens"] = took, cached, len(ids)

    current: dict[str, Any] = {}
    render_reply = conv._reply_prompt

    def reply_prompt(w: Any) -> Any:
        prompt = render_reply(w)
        shown = {name: others[name](w) for name in arms if name in others}
        if current.get("turn", 0) >= 2:
            probe_all(current, {**shown, **({"reply_v2": prompt} if "reply" in arms else {})})
        else:  # turn 1: put the other layouts' prompts in the cache, as their chat had them there
            for other in shown.values():
                probe(encode_request(engine.tokenizer, LLMRequest.of(other)), False)
        return prompt

    conv._reply_prompt = reply_prompt  # type: ignore[method-assign]
    sids = [conv.start().session_id for _ in scripts]
    deadline = time.monotonic() + args.budget_s if args.budget_s else None
    stopped = False
    for turn in range(1, args.turns + 1):
        if deadline is not None and time.monotonic() > deadline:
            stopped = True
            print(f"[interleaved] --budget-s spent: stopped before turn {turn}", file=sys.stderr, flush=True)
            break
        for sid, script in zip(sids, scripts, strict=True):
            message = script[(turn - 1) % len(script)]
            current.clear()
            current.update(turn=turn, session=sid[:8])
            state = conv.get(sid)
            extract = conv.recommender.registry.render(EXTRACT_TEMPLATE, {
                "conversation": conv.history_vars(state), "message": message,
                "fields": conv.index.field_names()}).chat_messages()  # fmt: skip
            if turn >= 2 and "extract" in arms:
                probe_all(current, {"extract": extract})
            else:  # turn 1: in the cache as the turn's own extraction call would leave it (also with --extract rules)
                probe(encode_request(engine.tokenizer, LLMRequest.of(extract)), False)
            started = time.perf_counter()
            events = [e.event for e in conv.stream(sid, message)]
            assert events[-1] == "done", events
            print(f"[interleaved] turn {turn} of session {sid[:8]}: {time.perf_counter() - started:.2f}s "
                  f"load {os.getloadavg()[0]:.1f}", file=sys.stderr, flush=True)  # fmt: skip
            if turn >= 2:
                current["loadavg"] = os.getloadavg()[0]
                rows.append(dict(current))
                partial = {"interleaved": True, "engine_start_s": start_s, "rows": rows, "model": engine.model_id,
                           "stopped_early": True, "settings": overrides}  # fmt: skip
                args.result.write_text(json.dumps(partial))  # what a killed run leaves
    described = engine.describe()
    layout = conv.reply_layout()
    store.close()
    engine.close()
    return {"interleaved": True, "engine_start_s": start_s, "rows": rows, "model": engine.model_id,
            "stopped_early": stopped, "settings": overrides, "engine": described, "reply_layout": layout}  # fmt: skip


def report_interleaved(result: dict[str, Any]) -> dict[str, float]:
    """Print the interleaved run's table; return the OFF/ON ratios of the medians."""
    rows = result["rows"]
    print(
        f"\nprefix cache, arms interleaved (one engine, cache_salt for OFF): {len(rows)} turns >= 2, "
        f"model {result['model']}" + (" (stopped early: --budget-s)" if result.get("stopped_early") else "")
    )
    print(f"{'prompt':>22} {'tokens':>7} {'cached (on)':>12} {'TTFT off p50/p90':>20} {'TTFT on p50/p90':>20} "
          f"{'off/on':>7}")  # fmt: skip
    ratios: dict[str, float] = {}
    names = {"extract": "extraction", "reply_v1": "reply, issue's layout", "reply_main": "reply, main's v2.0",
             "reply_v2": f"reply, now ({result.get('reply_layout', 'chat')})"}  # fmt: skip
    print(f"engine: {result.get('engine')}")
    for name, label in names.items():
        got = [r for r in rows if f"{name}_on_s" in r]
        if not got:
            continue
        off, on = [r[f"{name}_off_s"] for r in got], [r[f"{name}_on_s"] for r in got]
        ratios[name] = _median(off) / _median(on)
        print(f"{label:>22} {_median([r[name + '_tokens'] for r in got]):>7.0f} "
              f"{_median([r[name + '_on_cached'] for r in got]):>12.0f} "
              f"{_median(off) * 1000:>9.1f}/{_pct(off, 0.9) * 1000:.1f} ms "
              f"{_median(on) * 1000:>9.1f}/{_pct(on, 0.9) * 1000:.1f} ms {ratios[name]:>6.2f}x")  # fmt: skip
    return ratios


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
           "--turns", str(args.turns)] + (["--explain", args.explain] if args.explain else [])  # fmt: skip
    cmd += ["--skip-send"] if args.skip_send else []
    cmd += ["--rerank", args.rerank] if args.rerank else []
    cmd += ["--extract", args.extract] if args.extract else []
    cmd += ["--interleaved"] if args.interleaved else []
    cmd += ["--budget-s", str(args.budget_s)] if args.budget_s else []
    cmd += ["--block-size", str(args.block_size)] if args.block_size else []
    cmd += ["--arms", args.arms]
    if args.quick:
        cmd += ["--quick", "--home", str(home), "--model", str(model)]
    out = Path(tempfile.mkdtemp()) / "result.json"
    cmd += ["--result", str(out)]
    proc = subprocess.run(cmd, cwd=ROOT, check=False)
    if proc.returncode != 0:
        if args.interleaved and out.exists():  # the rows written before it failed or was killed
            print(f"the worker failed (exit {proc.returncode}): the turns it finished follow", file=sys.stderr)
            return json.loads(out.read_text())  # type: ignore[no-any-return]
        raise SystemExit(f"the {mode} worker failed (exit {proc.returncode})")
    return json.loads(out.read_text())  # type: ignore[no-any-return]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny random model and 200 movies (a smoke run)")
    parser.add_argument("--sessions", type=int, default=4)
    parser.add_argument("--turns", type=int, default=5)
    parser.add_argument("--out", type=Path, help="write the raw figures here (JSON)")
    parser.add_argument("--explain", choices=["llm", "template"], help="justifications (default: the settings')")
    parser.add_argument("--skip-send", action="store_true", help="skip phase 3 (turn latency): TTFTs only")
    parser.add_argument("--rerank", help="rerank strategy (default: the settings')")
    parser.add_argument("--extract", choices=["llm", "rules"], help="chat_extract (default: the settings')")
    parser.add_argument("--interleaved", action="store_true",
                        help="one engine, arms interleaved: reply v1.1 vs v2.0 and extraction, cache on vs off "
                        "(cache_salt), max_tokens=1 probes")  # fmt: skip
    parser.add_argument("--budget-s", type=float, help="--interleaved: start no new round of turns after this "
                        "many seconds of the worker (the run stays inside a time slot)")  # fmt: skip
    parser.add_argument("--block-size", type=int, help="llm_block_size (default: the settings': 32 on the CPU)")
    parser.add_argument("--arms", default="extract,reply_main,reply",
                        help="--interleaved: prompts probed, of extract, reply_v1 (the issue's layout), reply_main "
                        "(main's chat_reply v2.0 transcript), reply (what Conversation sends now)")  # fmt: skip
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--caching", choices=["on", "off"], help=argparse.SUPPRESS)
    parser.add_argument("--home", help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.turns < 2:
        parser.error("--turns must be at least 2 (turn >= 2 is what is measured)")
    if args.worker:
        args.result.write_text(json.dumps(interleaved_worker(args) if args.interleaved else worker(args)))
        return
    if args.interleaved and args.quick:
        parser.error("--interleaved runs the configured model (not --quick)")
    home = model = None
    if args.quick:
        home = Path(tempfile.mkdtemp(prefix="chat-prefix-"))
        model = prepare_quick(home)
    before = machine()
    print(f"machine: {before}", flush=True)
    if args.interleaved:
        result = run_mode("on", args, home, model)
        after = machine()
        print(f"load average after the run: {after['loadavg']}")
        ratios = report_interleaved(result)
        if args.out:
            args.out.write_text(json.dumps({"machine": before, "load_after": after["loadavg"], "result": result,
                                            "speedups": ratios}, indent=2))  # fmt: skip
        return
    results = {mode: run_mode(mode, args, home, model) for mode in ("off", "on")}
    after = machine()
    print(f"load average after the run: {after['loadavg']}")
    print(f"\nchat prefix caching: {args.sessions} sessions x {args.turns} turns, model {results['on']['model']}")
    print("turns >= 2; TTFT = time to the first token of the prompt; tok = its prompt tokens (median)")
    print(
        f"{'':>10} {'reply TTFT p50/p90':>20} {'tok':>5} {'extract TTFT p50/p90':>22} {'tok':>5} {'turn p50/p90':>15}"
    )

    def ms(values: list[float]) -> str:
        return f"{_median(values) * 1000:.1f}/{_pct(values, 0.9) * 1000:.1f} ms" if values else "-"

    for mode, r in results.items():
        print(f"{'caching ' + mode:>10} {ms(r['reply_ttft_s']):>20} {_median(r['reply_tokens']):>5.0f} "
              f"{ms(r['extract_ttft_s']):>22} {_median(r['extract_tokens']):>5.0f} "
              + (f"{_median(r['turn_s']):>6.2f}/{_pct(r['turn_s'], 0.9):.2f} s" if r["turn_s"] else "-"))  # fmt: skip
    speedups = {
        key: _median(results["off"][key]) / _median(results["on"][key])
        for key in ("reply_ttft_s", "extract_ttft_s", "turn_s")
        if results["off"][key] and results["on"][key]
    }
    for mode, r in results.items():
        shares = [s / t for s, t in zip(r["reply_shared_tokens"], r["reply_tokens"], strict=True) if t]
        print(f"caching {mode}: reply prompt tokens shared with the session's previous reply prompt (turns >= 2): "
              f"median {_median(r['reply_shared_tokens']):.0f} of {_median(r['reply_tokens']):.0f} "
              f"({_median(shares):.0%})")  # fmt: skip
    print("OFF/ON (x faster with caching): " + ", ".join(f"{k[:-2]} {v:.2f}x" for k, v in speedups.items()))
    if args.out:
        args.out.write_text(json.dumps({"machine": before, "load_after": after["loadavg"], "results": results,
                                        "speedups": speedups}, indent=2))  # fmt: skip


if __name__ == "__main__":
    main()
