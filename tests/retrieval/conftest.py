"""Fixtures for the retrieval tests: a counting fake embedder, a small MovieLens sample, stores on both backends.

The real embedder (bundled MiniLM) and the real ``chroma run`` server are session-scoped and only used by tests
marked ``slow``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from retrieval.config import EmbedConfig, StoreConfig

from retrieval_helpers import FakeEmbedder, free_port

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def fake_embedder() -> FakeEmbedder:
    return FakeEmbedder()


@pytest.fixture
def embedded_config(tmp_path: Path) -> StoreConfig:
    return StoreConfig(path=tmp_path / "chroma", collection="items")


def _chroma_cli() -> str:
    found = shutil.which("chroma") or str(Path(sys.executable).with_name("chroma"))
    if not Path(found).exists():
        pytest.fail("the `chroma` CLI is not installed next to the Python interpreter (run `make setup`)")
    return found


@pytest.fixture(scope="session")
def chroma_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real ``chroma run`` server on a free port for the whole session; yields its URL."""
    port = free_port()
    folder = tmp_path_factory.mktemp("chroma-server")
    log = (folder / "server.log").open("wb")
    env = {**os.environ, "ANONYMIZED_TELEMETRY": "False"}
    proc = subprocess.Popen(
        [_chroma_cli(), "run", "--path", str(folder / "data"), "--port", str(port), "--host", "127.0.0.1"],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                pytest.fail(f"chroma run exited with {proc.returncode}: {(folder / 'server.log').read_text()[-2000:]}")
            try:
                if httpx.get(f"{url}/api/v2/heartbeat", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail("chroma run did not answer its heartbeat within 60 s")
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


@pytest.fixture(params=["embedded", pytest.param("server", marks=pytest.mark.slow)])
def store_config(request: pytest.FixtureRequest, tmp_path: Path) -> StoreConfig:
    """A store config on each backend, with a collection name unique to the test."""
    collection = f"t-{uuid.uuid4().hex[:12]}"
    if request.param == "server":
        url = request.getfixturevalue("chroma_server")
        return StoreConfig(path=tmp_path / "unused", url=url, collection=collection)
    return StoreConfig(path=tmp_path / "chroma", collection=collection)


@pytest.fixture(scope="session")
def real_embedder() -> object:
    """The bundled all-MiniLM-L6-v2, loaded once per session."""
    from retrieval.embed import make_embedder

    embedder = make_embedder(EmbedConfig(progress=False, batch_size=64))
    assert embedder.dim == 384
    return embedder
