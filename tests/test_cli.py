"""The console command: help, settings, and errors as messages (not tracebacks)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

RECAGENT = [sys.executable, "-m", "recagent"]


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("RECAGENT_")}
    return subprocess.run([*RECAGENT, *args], capture_output=True, text=True, env={**base, **(env or {})}, timeout=120)


def test_help_lists_commands() -> None:
    out = run("--help")
    assert out.returncode == 0
    for cmd in ("models", "llm", "config", "demo"):
        assert cmd in out.stdout


def test_config_shows_env_override() -> None:
    out = run("config", env={"RECAGENT_LLM_MAX_MODEL_LEN": "777", "COLUMNS": "200"})
    assert out.returncode == 0 and "777" in out.stdout


def test_config_shows_the_dtype_auto_resolves_to() -> None:
    from agent.llm.dtype import resolve_llm_dtype

    out = run("config", env={"COLUMNS": "250"})
    assert out.returncode == 0 and f"auto ({resolve_llm_dtype('auto')} on this machine)" in out.stdout
    out = run("config", env={"COLUMNS": "250", "RECAGENT_LLM_DTYPE": "float8"})
    assert out.returncode == 2 and "llm_dtype" in out.stderr and "Traceback" not in out.stderr


def test_bad_model_is_a_message_not_a_traceback(tmp_path: Path) -> None:
    out = run("llm", "generate", "hi", env={"RECAGENT_LLM_MODEL": str(tmp_path / "nope"), "RECAGENT_LLM_BACKEND": "hf"})
    assert out.returncode == 2
    assert "does not exist" in out.stderr and "how to fix" in out.stderr
    assert "Traceback" not in out.stderr


def test_debug_shows_traceback(tmp_path: Path) -> None:
    env = {"RECAGENT_LLM_MODEL": str(tmp_path / "nope"), "RECAGENT_LLM_BACKEND": "hf", "RECAGENT_DEBUG": "1"}
    out = run("llm", "generate", "hi", env=env)
    assert out.returncode != 0 and "Traceback" in out.stderr


def test_invalid_setting_value() -> None:
    out = run("config", env={"RECAGENT_LLM_BACKEND": "nonsense"})
    assert out.returncode == 2 and "llm_backend" in out.stderr and "Traceback" not in out.stderr


def test_unreachable_server(tmp_path: Path) -> None:
    out = run(
        "llm", "generate", "hi", env={"RECAGENT_LLM_SERVER_URL": "http://127.0.0.1:9/v1", "RECAGENT_LLM_TIMEOUT_S": "2"}
    )
    assert out.returncode == 1 and "unreachable" in out.stderr and "Traceback" not in out.stderr


def test_models_list_on_empty_home(tmp_path: Path) -> None:
    out = run("models", "list", env={"RECAGENT_HOME": str(tmp_path)})
    assert out.returncode == 0 and "recagent models prepare" in out.stdout


def test_chat_console_counts_the_justifications_written_after_the_reply() -> None:
    """`recagent chat` shows "writing reasons: n/k" while the later justifications arrive, then the reply."""
    import io

    from rich.console import Console

    from agent.chat.conversation import ChatEvent, ChatReply
    from agent.sessions import Preferences
    from recagent.chat_console import show_turn

    done = ChatReply(session_id="s", turn_id=2, reply="Here you go.", clarifying=False, preferences=Preferences(),
                     request_id="r", timings={"ttft_s": 0.1})  # fmt: skip
    events = [
        ChatEvent(event="items", data={"items": [{"item_id": "a"}, {"item_id": "b"}]}),
        ChatEvent(event="delta", data={"text": "Here you go."}),
        ChatEvent(event="justification", data={"rank": 1, "item_id": "a"}),
        ChatEvent(event="justification", data={"rank": 2, "item_id": "b"}),
        ChatEvent(event="done", data=done.model_dump(mode="json")),
    ]
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=100)
    assert show_turn(iter(events), console) == done
    text = out.getvalue()
    assert "writing reasons: 1/2" in text and "writing reasons: 2/2" in text and "Here you go." in text
