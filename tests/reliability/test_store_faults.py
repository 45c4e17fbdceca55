"""Store faults: a real Chroma server stopped and restarted while queries run; the embedded store on a read-only
folder (a read-only bind mount: read-only for root too) or on a full disk (a small tmpfs); the session database on
a full disk. Errors are clear (a 503 envelope with a hint, or a StoreError), nothing half-written is reported as a
success, and work resumes once the store is back."""

from __future__ import annotations

import contextlib
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.settings import Settings, load_settings
from retrieval.errors import StoreError
from retrieval.ingest import ingest
from retrieval.store import SPACE_SLACK_BYTES, Store

from fakes import FakeEngine
from reliability_kit import (
    REL_COLLECTION,
    ChromaServer,
    MakeApp,
    assert_collection_matches,
    readonly_view,
    record,
    tmpfs,
    wait_for,
)
from server_helpers import assert_envelope
from testkit import HashEmbedder

QUERY = {"query": "a space adventure", "k": 3}


def _mount_or_skip(cm: Any) -> Any:
    try:
        return cm.__enter__(), cm
    except PermissionError as exc:
        pytest.skip(f"the kernel refuses the mount this fault needs: {exc}")


@contextlib.contextmanager
def mounted(cm: Any) -> Iterator[Path]:
    path, ctx = _mount_or_skip(cm)
    try:
        yield path
    finally:
        ctx.__exit__(None, None, None)


def ingest_sample(ml_sample: Path, settings: Settings, embedder: HashEmbedder, **kw: Any) -> Any:
    return ingest(ml_sample, store_config=settings.store_config(), embed_config=settings.embed_config(progress=False),
                  collection=REL_COLLECTION, embedder=embedder, **kw)  # type: ignore[arg-type]  # fmt: skip


def assert_matches_catalog(store: Store, ml_sample: Path) -> None:
    from retrieval.catalog import read_catalog

    assert_collection_matches(store, REL_COLLECTION, read_catalog(ml_sample).items)


# ------------------------------------------------------------------------------------------------ Chroma server
@pytest.mark.slow
def test_chroma_server_down_and_restarting_during_queries(
    make_app: MakeApp, ml_sample: Path, rel_embedder: HashEmbedder, tmp_path: Path
) -> None:
    chroma = ChromaServer(tmp_path / "chroma").start()
    try:
        ingest_sample(ml_sample, load_settings(home=tmp_path / "h", chroma_url=chroma.url), rel_embedder)
        client = make_app(engine=FakeEngine(), chroma_url=chroma.url, chroma_timeout_s=2)
        sid = client.post("/v1/sessions").json()["session_id"]
        assert client.post("/v1/recommend", json=QUERY).status_code == 200

        statuses: dict[int, int] = {}
        bad: list[str] = []
        stop = threading.Event()

        def hammer() -> None:  # queries of every kind, without pause, while the store goes away and comes back
            n = 0
            while not stop.is_set():
                n += 1
                calls = [
                    ("POST", "/v1/recommend", QUERY),
                    ("POST", f"/v1/sessions/{sid}/messages", {"message": f"a space adventure number {n}"}),
                    ("GET", "/v1/items/1", None),
                ]
                for method, path, body in calls:
                    resp = client.request(method, path, json=body)
                    statuses[resp.status_code] = statuses.get(resp.status_code, 0) + 1
                    if resp.status_code not in (200, 503):  # a 404 would call a known item unknown
                        bad.append(f"{path}: {resp.status_code} {resp.text[:200]}")
                    elif resp.status_code == 503:
                        err = assert_envelope(resp, 503, "service_unavailable")
                        if not err["hint"] or ("Chroma" not in err["message"] and "store" not in err["message"]):
                            bad.append(f"{path}: unclear 503 {err}")

        worker = threading.Thread(target=hammer)
        worker.start()
        try:
            wait_for(lambda: statuses.get(200, 0) >= 6, 60, what="answers before the fault")
            chroma.stop()  # the server goes away mid-traffic
            wait_for(lambda: statuses.get(503, 0) >= 6, 60, what="503 answers while the store is down")
            health = client.get("/healthz")
            assert health.status_code == 503 and health.json()["store"]["status"] == "error"
            ok_before = statuses.get(200, 0)
            chroma.start()  # restarted in place: same port, same data
            wait_for(lambda: statuses.get(200, 0) >= ok_before + 6, 60, what="answers after the restart")
        finally:
            stop.set()
            worker.join(120)
        assert not bad, bad[:5]
        assert client.get("/healthz").json()["status"] == "ok"
        state = client.get(f"/v1/sessions/{sid}").json()
        roles = [t["role"] for t in state["turns"]]
        assert roles == ["user", "assistant"] * (len(roles) // 2)  # only whole turns were stored
    finally:
        chroma.stop()
    record("store_faults", faults_injected=2, faults_survived=2, requests=sum(statuses.values()),
           unavailable_503=statuses.get(503, 0), crashes=len(bad))  # fmt: skip


def test_chroma_server_unreachable_at_start_is_a_clear_error(make_app: MakeApp) -> None:
    client = make_app(engine=FakeEngine(), chroma_url="http://127.0.0.1:9", chroma_timeout_s=1)
    err = assert_envelope(client.post("/v1/recommend", json=QUERY), 503, "service_unavailable", contains="Chroma")
    assert "chroma run" in err["hint"]
    assert client.get("/healthz").status_code == 503
    record("store_faults", faults_injected=1, faults_survived=1)


# ------------------------------------------------------------------------------------------------ embedded store
def test_read_only_embedded_store_is_a_clear_error(
    ml_sample: Path, rel_embedder: HashEmbedder, tmp_path: Path, make_app: MakeApp
) -> None:
    home = tmp_path / "home"
    ingest_sample(ml_sample, load_settings(home=home), rel_embedder, limit=50)
    with mounted(readonly_view(home, tmp_path / "ro")) as ro:
        settings = load_settings(home=ro)
        with pytest.raises(StoreError, match="not writable") as info:
            ingest_sample(ml_sample, settings, rel_embedder)
        assert "RECAGENT_CHROMA_PATH" in info.value.hint
        client = make_app(engine=FakeEngine(), home=ro)
        err = assert_envelope(client.post("/v1/recommend", json=QUERY), 503, "service_unavailable",
                              contains="not writable")  # fmt: skip
        assert err["hint"]
    assert Store(load_settings(home=home).store_config()).collection(REL_COLLECTION).count() == 50  # untouched
    record("store_faults", faults_injected=2, faults_survived=2)


def test_full_disk_refuses_the_write_and_a_rerun_completes(
    ml_sample: Path, rel_embedder: HashEmbedder, tmp_path: Path
) -> None:
    with mounted(tmpfs(tmp_path / "disk", "64m")) as disk:
        settings = load_settings(home=disk)
        first = ingest_sample(ml_sample, settings, rel_embedder, limit=20)
        assert first.store is not None and first.store.added == 20
        filler = disk / "other-data"  # the disk fills up with something else
        with filler.open("wb") as fh:
            fh.truncate(0)
            left = shutil.disk_usage(disk).free - SPACE_SLACK_BYTES - 256 * 1024
            for _ in range(left // 2**20):
                fh.write(b"\1" * 2**20)
        with pytest.raises(StoreError, match="not enough free disk space") as info:
            ingest_sample(ml_sample, settings, rel_embedder)  # 280 more items do not fit in what is left
        assert "nothing was written" in info.value.message and "RECAGENT_CHROMA_PATH" in info.value.hint
        assert Store(settings.store_config()).collection(REL_COLLECTION).count() == 20  # still readable, as before
        filler.unlink()  # space freed
        again = ingest_sample(ml_sample, settings, rel_embedder)
        assert again.store is not None and (again.store.added, again.store.unchanged) == (280, 20)
        assert_matches_catalog(Store(settings.store_config()), ml_sample)
    record("store_faults", faults_injected=1, faults_survived=1)


def test_session_database_on_a_full_disk(make_app: MakeApp, tmp_path: Path) -> None:
    with mounted(tmpfs(tmp_path / "disk", "1m")) as disk:
        client = make_app(engine=FakeEngine(), session_db_url=str(disk / "sessions.sqlite3"))
        sid = client.post("/v1/sessions").json()["session_id"]
        ok = client.post(f"/v1/sessions/{sid}/messages", json={"message": "a space adventure"})
        assert ok.status_code == 200, ok.text
        filler = disk / "filler"
        with contextlib.suppress(OSError), filler.open("wb") as fh:
            while True:
                fh.write(b"\0" * 65536)
                fh.flush()
        refused = 0
        for n in range(3):
            resp = client.post(f"/v1/sessions/{sid}/messages", json={"message": f"a western number {n} " * 30})
            if resp.status_code != 200:
                assert_envelope(resp, 503, "service_unavailable", contains="session")
                refused += 1
        assert refused >= 1  # a turn that could not be stored is never acknowledged
        assert client.get("/healthz").status_code in (200, 503)
        filler.unlink()
        later = client.post(f"/v1/sessions/{sid}/messages", json={"message": "something older please"})
        assert later.status_code == 200, later.text
        turns = client.get(f"/v1/sessions/{sid}").json()["turns"]
        assert [t["turn_id"] for t in turns] == list(range(1, len(turns) + 1))
        assert [t["role"] for t in turns] == ["user", "assistant"] * (len(turns) // 2)
        assert later.json()["turn_id"] == turns[-1]["turn_id"]
    record("store_faults", faults_injected=refused, faults_survived=refused)
