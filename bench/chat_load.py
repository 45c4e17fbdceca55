"""Load test of `recagent serve`: concurrent chat sessions over HTTP on loopback, bounded in time.

    .venv/bin/python bench/chat_load.py [--sessions 20] [--turns 5] [--collection movielens-demo] [--out FILE]
    .venv/bin/python bench/chat_load.py --quick          # 3 sessions x 2 turns: a smoke run

It starts `recagent serve` on 127.0.0.1 (a free port, the settings of the environment: RECAGENT_* variables and
recagent.toml, a fresh SQLite session database in a temp folder unless --session-db is given), waits for /healthz,
then runs --sessions sessions at once, each sending --turns messages one after the other (JSON turns). Afterwards it
reads every session back and checks that each acknowledged turn (HTTP 200) is stored: user message and assistant
turn under the acknowledged turn id. Reported as JSON: errors (by kind), lost turns, turn latency p50/p95/max,
throughput (turns/s over the wall time of the load phase) and the server's batching counters. Every request has a
timeout and the whole run a deadline; the server is stopped at the end. Exit code 1 when a turn failed or was lost.
--url targets an already running server instead (loopback addresses only).
"""

from __future__ import annotations

import sys
from pathlib import Path

# bench/retrieval.py would shadow the `retrieval` package: drop this folder from the import path
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import argparse
import asyncio
import contextlib
import ipaddress
import json
import os
import signal
import socket
import statistics
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlparse

import httpx

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = [
    "a funny animated movie for kids",
    "something older please",
    "not the first one",
    "more like the second one",
    "no horror, and nothing before 1990",
    "something lighter",
    "I liked Toy Story, anything similar?",
    "a thriller with a twist",
]


@dataclass
class SessionResult:
    session_id: str | None = None
    acknowledged: list[tuple[int, str]] = field(default_factory=list)  # (assistant turn id, message)
    latencies: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def is_loopback(url: str) -> bool:
    host = urlparse(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Server:
    """`recagent serve` in its own process group on 127.0.0.1."""

    def __init__(self, port: int, session_db: str, log: Path) -> None:
        self.port = port
        self.log = log
        env = dict(os.environ)
        env["RECAGENT_SESSION_DB_URL"] = session_db
        env.setdefault("HF_HUB_OFFLINE", "1")
        env.setdefault("ANONYMIZED_TELEMETRY", "False")
        cmd = [sys.executable, "-m", "recagent", "serve", "--host", "127.0.0.1", "--port", str(port)]
        cmd += ["--log-level", "warning"]
        with log.open("wb") as out:
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=ROOT,
                                         start_new_session=True)  # fmt: skip

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def wait_healthy(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"recagent serve exited with {self.proc.returncode}:\n{self.log.read_text()[-3000:]}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/healthz", timeout=5).status_code == 200:
                    return
            time.sleep(1)
        self.stop()
        raise SystemExit(f"recagent serve was not healthy within {timeout_s:.0f}s:\n{self.log.read_text()[-3000:]}")

    def stop(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)


async def run_session(http: httpx.AsyncClient, i: int, turns: int, out: SessionResult) -> None:
    try:
        resp = await http.post("/v1/sessions", json={})
    except httpx.HTTPError as exc:
        out.errors.append(f"create: {type(exc).__name__}")
        return
    if resp.status_code != 201:
        out.errors.append(f"create: HTTP {resp.status_code}")
        return
    out.session_id = resp.json()["session_id"]
    for t in range(turns):
        message = SCRIPT[(i + t) % len(SCRIPT)] if t else SCRIPT[i % len(SCRIPT)]
        started = time.perf_counter()
        try:
            resp = await http.post(f"/v1/sessions/{out.session_id}/messages", json={"message": message})
        except httpx.TimeoutException:
            out.errors.append("timeout")
            continue
        except httpx.HTTPError as exc:
            out.errors.append(f"transport: {type(exc).__name__}")
            continue
        if resp.status_code != 200:
            kind = resp.json().get("error", {}).get("type", "?") if resp.content else "?"
            out.errors.append(f"HTTP {resp.status_code} {kind}")
            continue
        out.latencies.append(time.perf_counter() - started)
        out.acknowledged.append((int(resp.json()["turn_id"]), message))


async def check_stored(http: httpx.AsyncClient, result: SessionResult) -> int:
    """Acknowledged turns missing from the stored session."""
    if result.session_id is None:
        return 0
    resp = await http.get(f"/v1/sessions/{result.session_id}")
    if resp.status_code != 200:
        return len(result.acknowledged)
    turns = {t["turn_id"]: t for t in resp.json()["turns"]}
    lost = 0
    for turn_id, message in result.acknowledged:
        user, assistant = turns.get(turn_id - 1), turns.get(turn_id)
        ok = (user is not None and user["role"] == "user" and user["content"] == message.strip()
              and assistant is not None and assistant["role"] == "assistant")  # fmt: skip
        lost += 0 if ok else 1
    return lost


async def load(url: str, sessions: int, turns: int, request_timeout_s: float, deadline_s: float) -> dict[str, Any]:
    results = [SessionResult() for _ in range(sessions)]
    limits = httpx.Limits(max_connections=sessions + 4, max_keepalive_connections=sessions + 4)
    headers = {}
    if os.environ.get("RECAGENT_SERVER_TOKEN"):
        headers["Authorization"] = f"Bearer {os.environ['RECAGENT_SERVER_TOKEN']}"
    async with httpx.AsyncClient(base_url=url, timeout=request_timeout_s, limits=limits, headers=headers) as http:
        started = time.perf_counter()
        tasks = [asyncio.create_task(run_session(http, i, turns, results[i])) for i in range(sessions)]
        _, pending = await asyncio.wait(tasks, timeout=deadline_s)
        for task in pending:
            task.cancel()
        wall = time.perf_counter() - started
        lost = sum([await check_stored(http, r) for r in results])
        health = (await http.get("/healthz")).json()
    latencies = [x for r in results for x in r.latencies]
    errors = [e for r in results for e in r.errors]
    kinds: dict[str, int] = {}
    for e in errors:
        kinds[e] = kinds.get(e, 0) + 1
    ok = len(latencies)
    return {
        "sessions": sessions,
        "turns_per_session": turns,
        "turns_sent": sessions * turns,
        "turns_ok": ok,
        "errors": len(errors),
        "error_kinds": kinds,
        "unfinished_sessions": len(pending),
        "lost_turns": lost,
        "latency_s": {
            "p50": _round(pct(latencies, 0.5)),
            "p95": _round(pct(latencies, 0.95)),
            "max": _round(max(latencies) if latencies else None),
            "mean": _round(statistics.fmean(latencies) if latencies else None),
        },
        "wall_s": round(wall, 2),
        "throughput_turns_per_s": round(ok / wall, 3) if wall > 0 else None,
        "server": {
            "engine": health.get("engine"),
            "batchers": health.get("batchers"),
            "sessions_stored": health.get("sessions", {}).get("sessions"),
        },
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sessions", type=int, default=20)
    parser.add_argument("--turns", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="3 sessions x 2 turns (a smoke run)")
    parser.add_argument("--collection", help="catalog to serve (default: RECAGENT_COLLECTION / settings)")
    parser.add_argument("--url", help="an already running server on loopback (default: start one)")
    parser.add_argument("--session-db", help="session database of the started server (default: a temp SQLite file)")
    parser.add_argument("--request-timeout-s", type=float, default=600)
    parser.add_argument("--deadline-s", type=float, default=3600, help="limit of the whole load phase")
    parser.add_argument("--start-timeout-s", type=float, default=900)
    parser.add_argument("--out", type=Path, help="also write the JSON report here")
    args = parser.parse_args()
    if args.quick:
        args.sessions, args.turns = 3, 2
    if args.collection:
        os.environ["RECAGENT_COLLECTION"] = args.collection
    server: Server | None = None
    tmp = tempfile.TemporaryDirectory(prefix="chat-load-")
    try:
        if args.url:
            if not is_loopback(args.url):
                raise SystemExit("--url must be a loopback address (this load test never targets other machines)")
            url = args.url.rstrip("/")
        else:
            db = args.session_db or str(Path(tmp.name) / "sessions.sqlite3")
            server = Server(free_port(), db, Path(tmp.name) / "serve.log")
            t0 = time.perf_counter()
            server.wait_healthy(args.start_timeout_s)
            print(f"server healthy after {time.perf_counter() - t0:.0f}s at {server.url}", file=sys.stderr)
            url = server.url
        report = asyncio.run(load(url, args.sessions, args.turns, args.request_timeout_s, args.deadline_s))
    finally:
        if server is not None:
            server.stop()
        tmp.cleanup()
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0 if report["errors"] == 0 and report["lost_turns"] == 0 and report["unfinished_sessions"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
