"""docs/deployment.md on one machine: two `vllm serve` replicas (tiny model), one `chroma run` server, one
PostgreSQL session database, two `recagent serve` processes. A session started on one process continues on the
other, and losing an LLM replica costs no answer."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest

from agent.llm.vllm_serve import start_server, wait_healthy
from agent.settings import load_settings
from retrieval.ingest import ingest

from pgserver import PgServer
from server_helpers import ServeProcess, start_chroma, stop_process
from testkit import free_port, tiny_settings

pytestmark = pytest.mark.slow

COLLECTION = "deploy-test"
TOKEN = "deployment-test-token"


@pytest.fixture(scope="module")
def llm_replicas(
    tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[list[tuple[str, subprocess.Popen[bytes]]]]:
    """Two OpenAI-compatible vLLM servers on the tiny model (small KV caches), started side by side."""
    folder = tmp_path_factory.mktemp("vllm")
    # a fixed 1 GiB KV cache each (VLLM_CPU_KVCACHE_SPACE) rather than a share of the RAM that other processes use
    settings = tiny_settings(tiny_model_dir, llm_served_model_name="tiny", llm_memory_fraction=None)
    settings = settings.model_copy(update={"llm_max_model_len": 2048})  # the chat prompts need more than 1024
    procs: list[subprocess.Popen[bytes]] = []
    urls = []
    try:
        with pytest.MonkeyPatch.context() as env:
            env.setenv("VLLM_CPU_KVCACHE_SPACE", "1")
            for i in range(2):
                port = free_port()
                procs.append(start_server(settings, port=port, log_file=folder / f"vllm-{i}.log"))
                urls.append(f"http://127.0.0.1:{port}/v1")
        for url, proc in zip(urls, procs, strict=True):
            wait_healthy(url, proc, timeout_s=600)
        yield list(zip(urls, procs, strict=True))
    finally:
        for proc in procs:
            if proc.poll() is None:
                stop_process(proc)


def test_two_api_processes_share_llm_replicas_chroma_and_postgres(
    llm_replicas: list[tuple[str, subprocess.Popen[bytes]]], ml_sample: Path, tmp_path: Path
) -> None:
    urls = [url for url, _ in llm_replicas]
    with ExitStack() as stack:
        chroma, chroma_url = start_chroma(tmp_path / "chroma")
        stack.callback(stop_process, chroma)
        pg = stack.enter_context(PgServer())
        ingest_settings = load_settings(home=tmp_path / "ingest-home", chroma_url=chroma_url)
        report = ingest(ml_sample, store_config=ingest_settings.store_config(),
                        embed_config=ingest_settings.embed_config(progress=False), collection=COLLECTION)  # fmt: skip
        assert report.accepted == 300

        def api_process(name: str) -> ServeProcess:
            env = {
                "RECAGENT_HOME": str(tmp_path / f"home-{name}"),  # nothing shared through local files
                "RECAGENT_LLM_SERVER_URL": ",".join(urls),
                "RECAGENT_LLM_SERVED_MODEL_NAME": "tiny",
                "RECAGENT_LLM_TIMEOUT_S": "120",
                "RECAGENT_CHROMA_URL": chroma_url,
                "RECAGENT_COLLECTION": COLLECTION,
                "RECAGENT_SESSION_DB_URL": pg.url,
                "RECAGENT_SERVER_TOKEN": TOKEN,
                "RECAGENT_INTERACTIONS": str(ml_sample / "ratings.csv"),
            }
            return stack.enter_context(ServeProcess(env, tmp_path / f"serve-{name}.log"))

        a, b = api_process("a"), api_process("b")
        auth = {"Authorization": f"Bearer {TOKEN}"}
        http_a = stack.enter_context(httpx.Client(base_url=a.url, headers=auth, timeout=300))
        http_b = stack.enter_context(httpx.Client(base_url=b.url, headers=auth, timeout=300))

        for http in (http_a, http_b):
            health = http.get("/healthz").json()
            assert health["status"] == "ok", health
            assert health["engine"]["backend"] == "openai" and health["engine"]["model"] == "tiny"
            assert set(health["engine"]["replicas"].values()) == {"ok"} and len(health["engine"]["replicas"]) == 2
            assert health["store"]["location"] == chroma_url and health["store"]["items"] == 300

        sid = http_a.post("/v1/sessions").json()["session_id"]
        first = http_a.post(f"/v1/sessions/{sid}/messages", json={"message": "a funny animated movie for kids"})
        assert first.status_code == 200, first.text
        assert http_b.get(f"/v1/sessions/{sid}").json() == http_a.get(f"/v1/sessions/{sid}").json()
        second = http_b.post(f"/v1/sessions/{sid}/messages", json={"message": "something older please"})
        assert second.status_code == 200, second.text
        assert second.json()["turn_id"] == 4
        state = http_a.get(f"/v1/sessions/{sid}").json()
        assert [t["turn_id"] for t in state["turns"]] == [1, 2, 3, 4]
        shown_first = set(state["turns"][1]["item_ids"])
        assert not shown_first & set(state["turns"][3]["item_ids"])  # B knew what A had shown
        assert http_b.get("/healthz").json()["sessions"]["sessions"] >= 1

        rec = http_b.post("/v1/recommend", json={"query": "space adventure", "k": 3})
        assert rec.status_code == 200 and rec.json()["model"] == "tiny"

        stop_process(llm_replicas[0][1])  # one LLM replica goes away: requests move to the other one
        health = http_a.get("/healthz").json()
        assert health["engine"]["replicas"][urls[0]].startswith("unreachable")
        assert health["engine"]["replicas"][urls[1]] == "ok" and health["status"] == "ok"
        for http in (http_a, http_b):
            again = http.post("/v1/recommend", json={"query": "a crime story", "k": 3})
            assert again.status_code == 200
            reason = again.json()["fallback_reason"] or ""
            assert "unreachable" not in reason  # the request was retried on the live replica
        third = http_a.post(f"/v1/sessions/{sid}/messages", json={"message": "no horror please"})
        assert third.status_code == 200 and third.json()["turn_id"] == 6
