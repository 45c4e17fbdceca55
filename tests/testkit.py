"""Helpers shared by test modules (importable as ``testkit``; conftest modules are not importable by name)."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import typer

from agent.settings import Settings, load_settings

ROOT = Path(__file__).resolve().parents[1]
SAMPLE_COLLECTION = "eval-test"  # the 300-movie sample of the `sample_home` fixture


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def tiny_settings(model: Path, **kw: object) -> Settings:
    """Settings for the tiny random test model (float32 so that engines agree to 1e-3; a small KV cache so that
    several engines fit beside each other)."""
    kw.setdefault("llm_memory_fraction", 0.05)
    return load_settings(llm_model=str(model), llm_dtype="float32", llm_max_model_len=1024, **kw)


def cli_app(settings: Settings, name: str, sub_app: Any) -> Any:
    """A bare typer root whose context carries ``settings``, with one of recagent's sub-apps mounted as ``name``."""
    from recagent.context import AppState

    app = typer.Typer()

    @app.callback()
    def root(ctx: typer.Context) -> None:
        state = AppState(None)
        state.__dict__["settings"] = settings  # cached_property slot
        ctx.obj = state

    app.add_typer(sub_app, name=name)
    return app
