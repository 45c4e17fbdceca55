"""Soak: `bench/chat_load.py --soak-seconds` against a real `recagent serve` on loopback (real embedder, Chroma
store and SQLite sessions; the LLM is the scripted OpenAI-compatible server, so the run measures the server, not a
model) for about a minute: no error, no lost turn, and the server's memory stays flat after warm-up (a resource
bound, not a timing assertion)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from reliability_kit import FakeLLMServer, record, served_env
from testkit import ROOT

SOAK_S = 60
MAX_GROWTH_MB = 50


@pytest.mark.slow
def test_soak_keeps_memory_flat(served_home: Path, tmp_path: Path) -> None:
    out = tmp_path / "soak.json"
    with FakeLLMServer(delay_s=0.02) as llm:
        env = {k: v for k, v in os.environ.items() if not k.startswith("RECAGENT_")}
        env.update(served_env(served_home, llm.url), HF_HUB_OFFLINE="1", ANONYMIZED_TELEMETRY="False")
        cmd = [sys.executable, "bench/chat_load.py", "--soak-seconds", str(SOAK_S), "--sessions", "4", "--turns", "6",
               "--warmup-s", "25", "--request-timeout-s", "60", "--max-growth-mb", str(MAX_GROWTH_MB),
               "--out", str(out)]  # fmt: skip
        run = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, timeout=SOAK_S + 600)
    assert out.exists(), run.stdout[-3000:] + run.stderr[-3000:]
    report = json.loads(out.read_text())
    memory = report["memory"]
    record("soak", seconds=SOAK_S, sessions=report["sessions"], turns_sent=report["turns_sent"],
           turns_ok=report["turns_ok"], turns_lost=report["lost_turns"], errors=report["errors"],
           rss_start_mb=memory["rss_mb"]["start"], rss_end_mb=memory["rss_mb"]["end"],
           rss_max_mb=memory["rss_mb"]["max"], growth_mb=memory["growth_mb"],
           slope_mb_per_min=memory["slope_mb_per_min"])  # fmt: skip
    assert report["errors"] == 0 and report["lost_turns"] == 0, report
    assert report["turns_ok"] >= 20 and memory["samples"] >= SOAK_S // 2, report
    assert memory["growth_mb"] < MAX_GROWTH_MB, memory
    assert run.returncode == 0, run.stderr[-3000:]
