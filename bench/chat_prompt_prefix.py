"""How much of a chat turn's prompt is a byte-identical prefix of the session's previous prompt (what a prefix
cache can serve), per turn: the reply prompt in the issue's layout (``chat_reply`` v1.1, kept in
``bench/legacy/``: instructions, the earlier turns' texts, then the need, this turn's items and the message) and in
the append-only transcript (v2.0, the real ``Conversation``), and the extraction prompt.

    .venv/bin/python bench/chat_prompt_prefix.py                      # configured collection, 8 turns, window 6
    .venv/bin/python bench/chat_prompt_prefix.py --history-turns 2    # the window of chat_prefix.py --quick

No LLM runs: a scripted engine answers (template replies and reasons, rules-only extraction), and the real
``chat_reply`` and ``extract_preferences`` prompts of every turn are rendered as the engine would see them and
tokenized with the configured model's tokenizer. Deterministic, so one run is the figure (no timings). The column
``prefix`` says whether the previous reply prompt (as text, chat template or flattened) followed by the reply sent
is a prefix of this one: ``yes``, or ``reset`` where the history window moved.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import argparse
import importlib.util
import json
import tempfile
from typing import Any

SCRIPT = ["a funny animated movie for the whole family", "not that one, something with more adventure",
          "more like the second one", "older films please", "no horror, and only comedies",
          "something from the 90s", "more like the last one", "anything but drama"]  # fmt: skip
ARMS = ("reply_v1", "reply_v2", "extract")


def _bench_module() -> Any:
    spec = importlib.util.spec_from_file_location("bench_chat_prefix", Path(__file__).with_name("chat_prefix.py"))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    from transformers import AutoTokenizer

    import agent.chat.conversation as conversation
    from agent.chat.conversation import EXTRACT_TEMPLATE, Conversation
    from agent.llm.base import LLMRequest
    from agent.llm.models import resolve_model
    from agent.llm.prompting import encode_request, render_text
    from agent.pipeline import Recommender
    from agent.sessions import open_session_store
    from agent.settings import load_settings

    cp = _bench_module()
    sys.path.append(str(Path(__file__).resolve().parents[1] / "tests"))
    from fakes import FakeEngine

    settings = load_settings(chat_history_turns=args.history_turns, explain_mode="template", chat_extract="rules",
                             prompt_format=args.prompt_format,
                             chat_reply="llm", session_db_url=str(Path(tempfile.mkdtemp()) / "s.sqlite3"))  # fmt: skip
    tokenizer = AutoTokenizer.from_pretrained(str(resolve_model(settings)))
    store = open_session_store(settings)
    conv = Conversation(Recommender(settings, engine=FakeEngine()), store, settings)
    conversation.log.disabled = True
    legacy = cp.LegacyReply(conv)
    captured: list[dict[str, Any]] = []
    render_reply = conv._reply_prompt

    def recorded(w: Any) -> Any:  # the scripted engine's reply fails the check: the template reply is stored
        prompt = render_reply(w)
        captured.append({"reply_v2": prompt, "reply_v1": legacy.prompt(w)})
        return prompt

    conv._reply_prompt = recorded  # type: ignore[method-assign]
    sid = conv.start().session_id
    rows: list[dict[str, Any]] = []
    last: dict[str, list[int]] = {}
    last_text, last_reply = "", ""
    warm_ids: list[int] = []
    for n, message in enumerate(SCRIPT[: args.turns], start=1):
        state = conv.get(sid)
        extract = conv.recommender.registry.render(
            EXTRACT_TEMPLATE,
            {"conversation": conv.history_vars(state), "message": message, "fields": conv.index.field_names()},
        )
        before = len(captured)
        reply = conv.send(sid, message)
        if len(captured) == before:
            raise SystemExit(f"turn {n} asked a clarifying question: no reply prompt to measure")
        row: dict[str, Any] = {"turn": n}
        for name, messages in (*captured[-1].items(), ("extract", extract.chat_messages())):
            request = LLMRequest.of(messages)
            ids = encode_request(tokenizer, request)
            row[f"{name}_tokens"] = len(ids)
            row[f"{name}_shared"] = cp.shared_prefix(last.get(name, []), ids)
            last[name] = ids
            if name == "reply_v2":
                text = render_text(tokenizer, request)[0]
                follows = text.startswith(last_text) and text[len(last_text) :].lstrip().startswith(last_reply)
                row["prefix"] = "-" if n == 1 else "yes" if follows else "reset"
                last_text = text
        last_reply = reply.reply
        if "reply_v2" in last:  # what Conversation.stream's warm-up (chat_reply_warm) leaves in the cache
            row["reply_v2_warm_shared"] = cp.shared_prefix(warm_ids, last["reply_v2"]) if n > 1 else 0
            warm_ids = encode_request(tokenizer, LLMRequest.of(conv.next_reply_prefix(conv.get(sid))))
        rows.append(row)
    store.close()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--turns", type=int, default=8, choices=range(2, len(SCRIPT) + 1))
    parser.add_argument("--history-turns", type=int, default=6, help="chat_history_turns")
    parser.add_argument("--block-sizes", type=int, nargs="+", default=[128, 32],
                        help="KV-cache block sizes to count whole blocks for (vLLM's CPU default: 128)")  # fmt: skip
    parser.add_argument("--prompt-format", choices=["auto", "chat", "fewshot"], default="auto",
                        help="the reply prompt's layout (the scripted engine cannot tell: auto is chat)")  # fmt: skip
    parser.add_argument("--out", type=Path, help="write the rows here (JSON)")
    args = parser.parse_args()
    rows = run(args)
    print(f"\nshared prefix with the session's previous prompt (tokens), chat_history_turns={args.history_turns}")
    print(f"{'turn':>4} | {'reply v1.1':>12} | {'reply v2.0':>12} {'prefix':>6} | {'extraction':>12}")
    cell = lambda r, k: f"{r[k + '_shared']}/{r[k + '_tokens']}"  # noqa: E731
    for r in rows:
        print(f"{r['turn']:>4} | {cell(r, 'reply_v1'):>12} | {cell(r, 'reply_v2'):>12} {r['prefix']:>6} | "
              f"{cell(r, 'extract'):>12}")  # fmt: skip
    later = rows[1:]
    summary: dict[str, Any] = {}
    for kind in ARMS:
        shared, total = sum(r[f"{kind}_shared"] for r in later), sum(r[f"{kind}_tokens"] for r in later)
        print(f"{kind}: {shared / max(1, total):.0%} of the tokens of turns >= 2 are a cached prefix; "
              f"{total - shared} tokens to compute over turns 2-{rows[-1]['turn']}")  # fmt: skip
        for size in args.block_sizes:  # vLLM's prefix cache serves whole blocks only
            new = [r[f"{kind}_tokens"] - r[f"{kind}_shared"] // size * size for r in later]
            summary[f"{kind}_new_b{size}"] = new
            print(
                f"  block size {size:>3}: tokens new to the cache per turn >= 2: {new} "
                f"(mean {sum(new) / max(1, len(new)):.0f}; prompt mean {total / max(1, len(later)):.0f})"
            )
            if kind == "reply_v2":
                new = [r[f"{kind}_tokens"] - max(r[f"{kind}_shared"], r["reply_v2_warm_shared"]) // size * size
                       for r in later]  # fmt: skip
                summary[f"{kind}_warm_new_b{size}"] = new
                print(f"  block size {size:>3}, after the warm-up: {new} (mean {sum(new) / max(1, len(new)):.0f})")
    if args.out:
        args.out.write_text(json.dumps({"history_turns": args.history_turns, "rows": rows, "summary": summary},
                                       indent=2))  # fmt: skip


if __name__ == "__main__":
    main()
