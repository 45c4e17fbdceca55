"""Crash safety: `kill -9` of a real `recagent ingest` (while it embeds, and while it writes) then a re-run: the
collection matches the file exactly (ids and content hashes); `kill -9` of a real `recagent serve` while chat turns
are in flight, then a restart: every acknowledged turn (HTTP 200) is stored, whole, and the SQLite database passes
``PRAGMA integrity_check``; SIGTERM to `recagent serve` and `recagent eval run` leaves no vLLM process behind."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import psutil
import pytest

from agent.settings import load_settings
from retrieval.catalog import read_catalog
from retrieval.mapping import ColumnMapping
from retrieval.store import Store

from reliability_kit import (
    SERVED_COLLECTION,
    FakeLLMServer,
    alive,
    assert_collection_matches,
    descendants,
    kill_tree,
    record,
    served_env,
    vllm_processes,
    wait_for,
)
from server_helpers import ServeProcess, tiny_serve_env
from testkit import ROOT, free_port

CRASH_COLLECTION = "crash-test"
HOOKED = Path(__file__).with_name("hooked_recagent.py")  # recagent with markers at the start/end of each write
N_INGEST = 300
MAPPING = ColumnMapping(id="id", title="title", text=["description"], metadata={"genres": "list", "year": "int"})


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RECAGENT_")}
    return {**env, "HF_HUB_OFFLINE": "1", "ANONYMIZED_TELEMETRY": "False", **extra}


# ------------------------------------------------------------------------------------------------ ingest
def write_catalog(ml_small: Path, path: Path, n: int) -> Path:
    """``n`` MovieLens movies as JSONL with a made-up description (texts long enough to take a while to embed)."""
    import csv

    with (ml_small / "movies.csv").open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))[:n]
    with path.open("w", encoding="utf-8") as out:
        for r in rows:
            genres = r["genres"].split("|")
            year = r["title"][-5:-1] if r["title"].endswith(")") and r["title"][-5:-1].isdigit() else None
            desc = f"{r['title']} is a {' and '.join(genres).lower()} film. " * 3
            out.write(json.dumps({"id": r["movieId"], "title": r["title"], "description": desc,
                                  "genres": genres, "year": int(year) if year else None}) + "\n")  # fmt: skip
    return path


def kill_during(proc: subprocess.Popen[bytes], markers: Path, phase: str, timeout_s: float = 300) -> str:
    """SIGKILL ``proc`` in ``phase`` and say where the kill landed, from the markers of hooked_recagent.py:
    ``embedding`` kills 1 s after the embedding began (``embedding`` when no write had started by then);
    ``writing`` kills the moment the first Chroma upsert starts (``writing`` when that upsert had not returned).
    ``finished`` when the process ended first, ``missed`` when the kill landed outside the phase."""
    start = markers / ("embed-start" if phase == "embedding" else "write-start-1")
    deadline = time.monotonic() + timeout_s
    while proc.poll() is None and not start.exists() and time.monotonic() < deadline:
        time.sleep(0.001)
    if phase == "embedding":
        time.sleep(1.0)
    if proc.poll() is not None:
        return "finished"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    if phase == "embedding":
        return "embedding" if start.exists() and not (markers / "write-start-1").exists() else "missed"
    return "writing" if start.exists() and not (markers / "write-end-1").exists() else "missed"


@pytest.mark.slow
def test_kill9_during_ingest_then_rerun_matches_the_file(ml_small: Path, tmp_path: Path) -> None:
    catalog = write_catalog(ml_small, tmp_path / "catalog.jsonl", N_INGEST)
    home = tmp_path / "home"
    args = ["ingest", str(catalog), "--format", "jsonl", "--id-col", "id", "--title-col", "title",
            "--text-cols", "description", "--meta", "genres:list", "--meta", "year:int",
            "--collection", CRASH_COLLECTION, "--no-progress", "--json"]  # fmt: skip
    env = clean_env(RECAGENT_HOME=str(home), PYTHONPATH=str(ROOT))
    landed: list[str] = []
    for phase in ("embedding", "writing", "writing", "writing"):  # a write that beat the kill is tried again
        if phase == "writing" and "writing" in landed:
            break
        markers = tmp_path / f"markers-{len(landed)}"
        markers.mkdir()
        cmd = [sys.executable, str(HOOKED), str(markers), *args]
        with (tmp_path / f"ingest-{len(landed)}.log").open("ab") as log:
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT,
                                    start_new_session=True)  # fmt: skip
        landed.append(kill_during(proc, markers, phase))
        if landed[-1] == "missed":  # the write returned first: start again from an empty store
            shutil.rmtree(home / "chroma", ignore_errors=True)
    assert landed[0] == "embedding" and "writing" in landed, f"where the kills landed: {landed}"
    final = subprocess.run([sys.executable, "-m", "recagent", *args], capture_output=True, text=True, env=env,
                           cwd=ROOT, timeout=900)  # fmt: skip
    assert final.returncode == 0, final.stdout[-2000:] + final.stderr[-2000:]
    report = json.loads(final.stdout[final.stdout.index("{") :])
    stats = report["store"]
    assert report["accepted"] == N_INGEST and stats["items"] == N_INGEST and stats["updated"] == 0
    assert stats["added"] + stats["unchanged"] == N_INGEST  # what a killed run had written is kept, not redone
    items = read_catalog(catalog, format="jsonl", mapping=MAPPING).items
    assert_collection_matches(Store(load_settings(home=home).store_config()), CRASH_COLLECTION, items)
    kills = sum(1 for where in landed if where in ("embedding", "writing", "missed"))
    record("crash_safety", target="ingest", ingest_kills=kills, ingest_runs=len(landed) + 1, items=len(items),
           kills_in_embedding=landed.count("embedding"), kills_in_write=landed.count("writing"),
           kills_missed=landed.count("missed"), kept_from_killed_runs=stats["unchanged"], mismatches=0)  # fmt: skip


# ------------------------------------------------------------------------------------------------ chat turns
@pytest.mark.slow
def test_kill9_during_chat_turns_loses_no_acknowledged_turn(served_home: Path, tmp_path: Path) -> None:
    db = tmp_path / "sessions.sqlite3"
    with FakeLLMServer(delay_s=0.15) as llm:  # slow enough that turns are in flight when the server dies
        env = served_env(served_home, llm.url, RECAGENT_SESSION_DB_URL=str(db))
        server = ServeProcess(env, tmp_path / "serve-1.log").start()
        acked: dict[str, list[tuple[int, str]]] = {}
        sent = [0]
        lock = threading.Lock()
        dead = threading.Event()

        def worker(i: int) -> None:
            with httpx.Client(base_url=server.url, timeout=120) as http:
                try:
                    sid = http.post("/v1/sessions").json()["session_id"]
                except httpx.HTTPError:
                    return
                with lock:
                    acked[sid] = []
                n = 0
                while not dead.is_set():
                    n += 1
                    message = f"a space adventure, turn {n} of worker {i}"
                    with lock:
                        sent[0] += 1
                    try:
                        resp = http.post(f"/v1/sessions/{sid}/messages", json={"message": message})
                    except httpx.HTTPError:
                        return  # the server died with this turn in flight
                    if resp.status_code == 200:
                        with lock:
                            acked[sid].append((resp.json()["turn_id"], message))

        workers = [threading.Thread(target=worker, args=(i,)) for i in range(6)]
        for w in workers:
            w.start()
        try:
            wait_for(lambda: sum(len(v) for v in acked.values()) >= 12, 180, what="acknowledged turns")
        finally:
            server.stop(kill=True)  # kill -9 with turns in flight
            dead.set()
            for w in workers:
                w.join(60)
        assert (tmp_path / "serve-1.log").exists()
        with ServeProcess(env, tmp_path / "serve-2.log") as again, httpx.Client(base_url=again.url, timeout=60) as http:
            lost = 0
            for sid, turns in acked.items():
                state = http.get(f"/v1/sessions/{sid}").json()
                stored = {t["turn_id"]: t for t in state["turns"]}
                ids = sorted(stored)
                assert ids == list(range(1, len(ids) + 1)), ids  # no gap
                assert [stored[i]["role"] for i in ids] == ["user", "assistant"] * (len(ids) // 2)  # whole turns
                for turn_id, message in turns:
                    user, assistant = stored.get(turn_id - 1), stored.get(turn_id)
                    lost += int(not (user and user["content"] == message and assistant))
            after = http.post(f"/v1/sessions/{next(iter(acked))}/messages", json={"message": "something older"})
            assert after.status_code == 200, after.text  # the sessions go on
        with sqlite3.connect(db) as conn:
            assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    n_acked = sum(len(v) for v in acked.values())
    record("crash_safety", target="chat", serve_kills=1, turns_sent=sent[0], turns_acknowledged=n_acked,
           turns_lost=lost, in_flight=sent[0] - n_acked)  # fmt: skip
    assert lost == 0


# ------------------------------------------------------------------------------------------------ SIGTERM
def assert_no_survivors(before: list[psutil.Process], timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while alive(before) and time.monotonic() < deadline:
        time.sleep(0.5)
    left = alive(before)
    for p in left:  # clean up before failing
        with contextlib.suppress(psutil.NoSuchProcess):
            p.kill()
    assert not left, f"processes left behind: {[(p.pid, ' '.join(p.cmdline())[:80]) for p in left]}"


def sigterm_once_the_engine_runs(cmd: list[str], env: dict[str, str], log: Path) -> int:
    """Start ``cmd``, wait until its in-process engine's VLLM:: processes exist, SIGTERM the main process only (as
    a service manager does), and check that none of its descendants survives. Returns the exit code."""
    with log.open("ab") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=ROOT, start_new_session=True)
    try:

        def engine_up() -> bool:
            kids = descendants(proc.pid)
            return bool(vllm_processes({p.pid for p in kids})) or proc.poll() is not None

        wait_for(engine_up, 300, step_s=0.2, what="the engine's processes")
        assert proc.poll() is None, log.read_text()[-2000:]
        time.sleep(3)  # the engine is starting (loading the model, workers up)
        before = descendants(proc.pid)
        os.kill(proc.pid, signal.SIGTERM)
        code = proc.wait(timeout=120)
        assert_no_survivors(before)
        return code
    finally:
        kill_tree(proc.pid)


@pytest.mark.slow
def test_sigterm_to_serve_leaves_no_engine_process(served_home: Path, tiny_model_dir: Path, tmp_path: Path) -> None:
    """Defect: SIGTERM to `recagent serve` while its engine starts left VLLM::EngineCore processes behind
    (reparented to init). (A SIGTERM once it serves goes through uvicorn's shutdown, which closes the engine.)"""
    env = clean_env(**tiny_serve_env(served_home, SERVED_COLLECTION, tiny_model_dir,
                                     RECAGENT_SESSION_DB_URL=str(tmp_path / "s.sqlite3")))  # fmt: skip
    cmd = [sys.executable, "-m", "recagent", "serve", "--port", str(free_port())]
    code = sigterm_once_the_engine_runs(cmd, env, tmp_path / "serve.log")
    assert code in (143, -15), code
    record("crash_safety", target="sigterm serve", signals=1, orphans=0)


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_the_shutdown_guard_leaves_no_child_behind(signum: int, tmp_path: Path) -> None:
    """What every `recagent` command runs under (recagent/cli.py main): a signal ends the command, and the child
    processes it started (here a stand-in for vLLM's engine processes) do not outlive it."""
    script = (
        "import subprocess, sys, time\n"
        "from agent.shutdown import graceful_shutdown\n"
        "with graceful_shutdown(grace_s=5):\n"
        "    child = subprocess.Popen(['sleep', '600'])\n"
        "    print(child.pid, flush=True)\n"
        "    time.sleep(600)\n"
    )
    # SIGINT as a terminal's Ctrl-C delivers it: a test run started in the background (`make test &`) inherits
    # SIGINT ignored, and Python keeps an inherited "ignore" (as a background job should)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, cwd=ROOT,
                            start_new_session=True, preexec_fn=_default_sigint)  # fmt: skip
    try:
        assert proc.stdout is not None
        child = psutil.Process(int(proc.stdout.readline()))
        os.kill(proc.pid, signum)
        code = proc.wait(timeout=60)
        assert code in (143, 130, -2), code  # SIGINT: KeyboardInterrupt, then Python exits by the signal
        assert_no_survivors([child], timeout_s=10)
    finally:
        kill_tree(proc.pid)
    record("crash_safety", target="shutdown guard", signals=1, orphans=0)
