"""How much of a chat turn's prompt is a byte-identical prefix of the session's previous prompt (what a prefix
cache can serve), per turn, for the history window of main (sliding by one pair per turn) and the stable window.

    .venv/bin/python bench/chat_prompt_prefix.py                      # configured collection, 8 turns, window 6
    .venv/bin/python bench/chat_prompt_prefix.py --history-turns 2    # the window of chat_prefix.py --quick

No LLM runs: a scripted engine answers (template replies and reasons, rules-only extraction), and the real
``chat_reply`` and ``extract_preferences`` prompts of every turn are rendered as the engine would see them and
tokenized with the configured model's tokenizer. Deterministic, so one run is the figure (no timings).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import argparse
import importlib.util
import tempfile
from typing import Any

SCRIPT = ["a funny animated movie for the whole family", "not that one, something with more adventure",
          "more like the second one", "older films please", "no horror, and only comedies",
          "something from the 90s", "more like the last one", "anything but drama"]  # fmt: skip


def _main_window(turns: Any, max_turns: int) -> Any:
    """main's history selection: the last ``max_turns`` turns, starting on a user turn (slides every turn)."""
    from agent.chat.conversation import history_messages

    return history_messages(turns, max_turns)


def run(args: argparse.Namespace, window: str) -> list[dict[str, int]]:
    from transformers import AutoTokenizer

    import agent.chat.conversation as conversation
    from agent.chat.conversation import EXTRACT_TEMPLATE, Conversation
    from agent.llm.base import LLMRequest
    from agent.llm.models import resolve_model
    from agent.llm.prompting import encode_request
    from agent.pipeline import Recommender
    from agent.sessions import open_session_store
    from agent.settings import load_settings

    spec = importlib.util.spec_from_file_location("bench_chat_prefix", Path(__file__).with_name("chat_prefix.py"))
    assert spec is not None and spec.loader is not None
    cp = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cp)
    sys.path.append(str(Path(__file__).resolve().parents[1] / "tests"))
    from fakes import FakeEngine

    settings = load_settings(chat_history_turns=args.history_turns, explain_mode="template", chat_extract="rules",
                             chat_reply="llm", session_db_url=str(Path(tempfile.mkdtemp()) / "s.sqlite3"))  # fmt: skip
    tokenizer = AutoTokenizer.from_pretrained(str(resolve_model(settings)))
    store = open_session_store(settings)
    conv = Conversation(Recommender(settings, engine=FakeEngine()), store, settings)
    if window == "main":
        conv.history_vars = lambda state: [  # type: ignore[method-assign]
            {"role": "user" if m.type == "human" else "assistant", "content": str(m.content)}
            for m in _main_window(state.turns, settings.chat_history_turns)
        ]
    conversation.log.disabled = True
    captured: list[Any] = []
    render_reply = conv._reply_prompt

    def recorded(w: Any) -> Any:  # the scripted engine's reply fails the check: the template reply is stored
        prompt = render_reply(w)
        captured.append(prompt)
        return prompt

    conv._reply_prompt = recorded  # type: ignore[method-assign]
    sid = conv.start().session_id
    rows: list[dict[str, int]] = []
    last: dict[str, list[int]] = {}
    for n, message in enumerate(SCRIPT[: args.turns], start=1):
        state = conv.get(sid)
        extract = conv.recommender.registry.render(
            EXTRACT_TEMPLATE,
            {"conversation": conv.history_vars(state), "message": message, "fields": conv.index.field_names()},
        )
        before = len(captured)
        conv.send(sid, message)
        if len(captured) == before:
            raise SystemExit(f"turn {n} asked a clarifying question: no reply prompt to measure")
        reply = captured[-1]
        row: dict[str, int] = {"turn": n}
        for name, messages in (("reply", reply), ("extract", extract.chat_messages())):
            ids = encode_request(tokenizer, LLMRequest.of(messages))
            row[f"{name}_tokens"] = len(ids)
            row[f"{name}_shared"] = cp.shared_prefix(last.get(name, []), ids)
            last[name] = ids
        rows.append(row)
    store.close()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--turns", type=int, default=8, choices=range(2, len(SCRIPT) + 1))
    parser.add_argument("--history-turns", type=int, default=6, help="chat_history_turns")
    args = parser.parse_args()
    results = {window: run(args, window) for window in ("main", "stable")}
    print(f"\nshared prefix with the session's previous prompt (tokens), chat_history_turns={args.history_turns}")
    print(f"{'turn':>4} | {'reply: main':>14} {'stable':>14} | {'extract: main':>14} {'stable':>14}")
    for a, b in zip(results["main"], results["stable"], strict=True):
        cell = lambda r, k: f"{r[k + '_shared']}/{r[k + '_tokens']}"  # noqa: E731
        print(f"{a['turn']:>4} | {cell(a, 'reply'):>14} {cell(b, 'reply'):>14} | "
              f"{cell(a, 'extract'):>14} {cell(b, 'extract'):>14}")  # fmt: skip
    for window, rows in results.items():
        later = rows[1:]
        for kind in ("reply", "extract"):
            share = sum(r[f"{kind}_shared"] for r in later) / max(1, sum(r[f"{kind}_tokens"] for r in later))
            print(f"{window:>6} window, {kind} prompts of turns >= 2: {share:.0%} of the tokens are a cached prefix")


if __name__ == "__main__":
    main()
