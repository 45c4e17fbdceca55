"""Helpers of the server tests: the error-envelope check, a server-sent-events parser, `recagent serve` processes."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx

from testkit import ROOT, free_port


def parse_sse(text: str) -> list[tuple[str, Any]]:
    """(event, JSON data) pairs of an event stream (``event:``/``data:`` lines, a blank line between events)."""
    events: list[tuple[str, Any]] = []
    for block in text.replace("\r\n", "\n").split("\n\n"):
        name, data = "message", []
        for line in block.split("\n"):
            if line.startswith("event:"):
                name = line[len("event:") :].strip()
            elif line.startswith("data:"):
                data.append(line[len("data:") :].removeprefix(" "))
        if data:
            events.append((name, json.loads("\n".join(data))))
    return events


def assert_envelope(resp: Any, status: int, kind: str, *, contains: str = "") -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith("application/json")
    body = resp.json()
    assert set(body) == {"error"}
    err = body["error"]
    assert set(err) == {"message", "type", "code", "hint", "request_id"}
    assert err["code"] == status and err["type"] == kind
    assert err["request_id"] == resp.headers["x-request-id"]
    assert contains.lower() in err["message"].lower(), err["message"]
    assert "Traceback" not in resp.text and 'File "' not in resp.text
    return err


class ServeProcess:
    """``recagent serve`` as a real process (its own process group, so that the engine's workers stop with it)."""

    def __init__(self, env: dict[str, str], log: Path, *, port: int | None = None, args: Sequence[str] = ()) -> None:
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("RECAGENT_")}
        self.env.update({"HF_HUB_OFFLINE": "1", "ANONYMIZED_TELEMETRY": "False", **env})
        self.log = log
        self.port = port or free_port()
        self.args = list(args)
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log_tail(self, n: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-n:] if self.log.exists() else ""

    def start(self, timeout_s: float = 600) -> ServeProcess:
        cmd = [sys.executable, "-m", "recagent", "serve", "--port", str(self.port), *self.args]
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                cmd, stdout=out, stderr=subprocess.STDOUT, env=self.env, cwd=ROOT, start_new_session=True
            )
        deadline = time.monotonic() + timeout_s
        while True:
            if self.proc.poll() is not None:
                raise AssertionError(f"recagent serve exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=5).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                self.stop(kill=True)
                raise AssertionError(f"recagent serve was not healthy within {timeout_s:.0f}s:\n{self.log_tail()}")
            time.sleep(1)

    def stop(self, *, kill: bool = False) -> None:
        """SIGTERM (graceful) or SIGKILL (a crash) to the whole process group."""
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL if kill else signal.SIGTERM)
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)
        with contextlib.suppress(ProcessLookupError):  # workers left behind by a graceful stop
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc = None

    def __enter__(self) -> ServeProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def tiny_serve_env(home: Path, collection: str, model: Path, **extra: str) -> dict[str, str]:
    """Environment of a ``recagent serve`` on the tiny random model (in-process vLLM, small KV cache)."""
    return {
        "RECAGENT_HOME": str(home),
        "RECAGENT_COLLECTION": collection,
        "RECAGENT_LLM_MODEL": str(model),
        "RECAGENT_LLM_DTYPE": "float32",
        "RECAGENT_LLM_MAX_MODEL_LEN": "2048",
        "RECAGENT_LLM_MEMORY_FRACTION": "0.05",
        "VLLM_CPU_KVCACHE_SPACE": "1",  # GiB: a fixed KV cache, whatever the other processes on the machine use
        **extra,
    }


def start_chroma(folder: Path, timeout_s: float = 120) -> tuple[subprocess.Popen[bytes], str]:
    """A real ``chroma run`` server (the CLI installed with chromadb) on a free port; returns the process and URL."""
    chroma = Path(sys.executable).with_name("chroma")
    assert chroma.exists(), "the `chroma` CLI is not installed next to the Python interpreter (run `make setup`)"
    port = free_port()
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / "chroma.log").open("wb") as log:
        proc = subprocess.Popen(
            [str(chroma), "run", "--path", str(folder / "data"), "--port", str(port), "--host", "127.0.0.1"],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "ANONYMIZED_TELEMETRY": "False"},
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout_s
    while True:
        if proc.poll() is not None:
            raise AssertionError(f"chroma run exited: {(folder / 'chroma.log').read_text()[-2000:]}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{url}/api/v2/heartbeat", timeout=2).status_code == 200:
                return proc, url
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"chroma run did not answer within {timeout_s:.0f}s")
        time.sleep(0.3)


def stop_process(proc: subprocess.Popen[bytes], timeout_s: float = 30) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=timeout_s)
