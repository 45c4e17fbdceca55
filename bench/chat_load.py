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

Soak mode (a bounded endurance run that checks memory stays flat):

    .venv/bin/python bench/chat_load.py --soak-seconds 600 --sessions 4 --turns 6

keeps --sessions workers busy for --soak-seconds: each starts a session, sends --turns messages, then starts a new
session, until the time is up. Every --sample-s seconds it samples the resident memory (RSS) of the server process
and its children (the server it started, or --server-pid with --url). The report adds "memory": RSS at the end of
the warm-up (--warmup-s, default a quarter of the run, at most 60 s), at the end, the minimum and maximum after
warm-up, the growth (end - start) and the slope of a least-squares line through the samples after warm-up (MiB per
minute). --max-growth-mb makes the exit code 1 when the growth exceeds it.
"""

from __future__ import annotations

import sys
from pathlib import Path

# bench/retrieval.py would shadow the `retrieval` package: drop this folder from the import path
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import argparse
import asyncio
import contextlib
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

from agent.network import is_loopback as is_loopback_host

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
    return is_loopback_host(urlparse(url).hostname or "")


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


async def run_session(
    http: httpx.AsyncClient, i: int, turns: int, out: SessionResult, deadline: float | None = None
) -> None:
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
        if deadline is not None and time.monotonic() >= deadline:
            return
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


async def soak_worker(http: httpx.AsyncClient, i: int, turns: int, deadline: float, out: list[SessionResult]) -> None:
    """Sessions one after the other (``turns`` messages each) until ``deadline`` (monotonic seconds)."""
    n = 0
    while time.monotonic() < deadline:
        result = SessionResult()
        out.append(result)
        await run_session(http, i + n, turns, result, deadline=deadline)
        n += 1
        if result.session_id is None:
            await asyncio.sleep(0.5)  # could not even start a session: do not spin


def rss_mb(pid: int) -> float | None:
    """Resident memory of ``pid`` and its children in MiB (None when the process is gone)."""
    import psutil

    try:
        proc = psutil.Process(pid)
        procs = [proc, *proc.children(recursive=True)]
    except psutil.NoSuchProcess:
        return None
    total = 0
    for p in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            total += p.memory_info().rss
    return total / 2**20


async def sample_memory(pid: int, every_s: float, samples: list[tuple[float, float]], stop: asyncio.Event) -> None:
    started = time.monotonic()
    while not stop.is_set():
        value = rss_mb(pid)
        if value is not None:
            samples.append((time.monotonic() - started, value))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), every_s)


def memory_report(samples: list[tuple[float, float]], warmup_s: float) -> dict[str, Any]:
    """RSS after warm-up: start, end, min, max, growth and least-squares slope (MiB per minute)."""
    after = [(t, v) for t, v in samples if t >= warmup_s] or samples[-1:]
    if not after:
        return {"samples": 0}
    ts, vs = [t for t, _ in after], [v for _, v in after]
    slope = 0.0
    if len(after) >= 2 and max(ts) > min(ts):
        mt, mv = statistics.fmean(ts), statistics.fmean(vs)
        slope = sum((t - mt) * (v - mv) for t, v in after) / sum((t - mt) ** 2 for t in ts) * 60
    return {
        "samples": len(samples),
        "warmup_s": warmup_s,
        "rss_mb": {
            "first": round(samples[0][1], 1),
            "start": round(vs[0], 1),
            "end": round(vs[-1], 1),
            "min": round(min(vs), 1),
            "max": round(max(vs), 1),
        },
        "growth_mb": round(vs[-1] - vs[0], 1),
        "slope_mb_per_min": round(slope, 2),
        "curve_mb": [[round(t), round(v, 1)] for t, v in samples[:: max(1, len(samples) // 12)]],
    }


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


async def load(
    url: str,
    sessions: int,
    turns: int,
    request_timeout_s: float,
    deadline_s: float,
    *,
    soak_s: float | None = None,
    server_pid: int | None = None,
    sample_s: float = 1.0,
    warmup_s: float | None = None,
) -> dict[str, Any]:
    results: list[SessionResult] = [] if soak_s else [SessionResult() for _ in range(sessions)]
    limits = httpx.Limits(max_connections=sessions + 4, max_keepalive_connections=sessions + 4)
    headers = {}
    if os.environ.get("RECAGENT_SERVER_TOKEN"):
        headers["Authorization"] = f"Bearer {os.environ['RECAGENT_SERVER_TOKEN']}"
    async with httpx.AsyncClient(base_url=url, timeout=request_timeout_s, limits=limits, headers=headers) as http:
        samples: list[tuple[float, float]] = []
        stop = asyncio.Event()
        sampler = (
            asyncio.create_task(sample_memory(server_pid, sample_s, samples, stop)) if server_pid is not None else None
        )
        started = time.perf_counter()
        if soak_s:
            end = time.monotonic() + soak_s
            tasks = [asyncio.create_task(soak_worker(http, i * 7, turns, end, results)) for i in range(sessions)]
            deadline_s = soak_s + request_timeout_s + 30
        else:
            tasks = [asyncio.create_task(run_session(http, i, turns, results[i])) for i in range(sessions)]
        _, pending = await asyncio.wait(tasks, timeout=deadline_s)
        for task in pending:
            task.cancel()
        wall = time.perf_counter() - started
        stop.set()
        if sampler is not None:
            await sampler
        lost = sum([await check_stored(http, r) for r in results])
        health = (await http.get("/healthz")).json()
    latencies = [x for r in results for x in r.latencies]
    errors = [e for r in results for e in r.errors]
    kinds: dict[str, int] = {}
    for e in errors:
        kinds[e] = kinds.get(e, 0) + 1
    ok = len(latencies)
    sent = sum(len(r.acknowledged) + sum(1 for e in r.errors if not e.startswith("create")) for r in results)
    report: dict[str, Any] = {
        "sessions": sessions if not soak_s else len(results),
        "turns_per_session": turns,
        "turns_sent": sessions * turns if not soak_s else sent,
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
    if soak_s:
        report["soak_s"] = soak_s
        report["workers"] = sessions
    if server_pid is not None:
        warm = warmup_s if warmup_s is not None else min(60.0, (soak_s or wall) / 4)
        report["memory"] = memory_report(samples, warm)
    return report


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
    parser.add_argument("--soak-seconds", type=float, help="soak mode: keep sessions going for this long")
    parser.add_argument("--server-pid", type=int, help="with --url: the server process whose memory is sampled")
    parser.add_argument("--sample-s", type=float, default=1.0, help="memory sampling interval (seconds)")
    parser.add_argument("--warmup-s", type=float, help="memory baseline after this warm-up (default: run/4, <= 60)")
    parser.add_argument("--max-growth-mb", type=float, help="exit code 1 when RSS grows more than this after warm-up")
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
        pid = server.proc.pid if server is not None else args.server_pid
        report = asyncio.run(
            load(
                url,
                args.sessions,
                args.turns,
                args.request_timeout_s,
                args.deadline_s,
                soak_s=args.soak_seconds,
                server_pid=pid,
                sample_s=args.sample_s,
                warmup_s=args.warmup_s,
            )
        )
    finally:
        if server is not None:
            server.stop()
        tmp.cleanup()
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    grew = report.get("memory", {}).get("growth_mb")
    too_much = args.max_growth_mb is not None and grew is not None and grew > args.max_growth_mb
    ok = report["errors"] == 0 and report["lost_turns"] == 0 and report["unfinished_sessions"] == 0 and not too_much
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
