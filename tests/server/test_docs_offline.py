"""The API docs work without internet: /docs references only this server's own URLs (Swagger UI comes from the
swagger-ui-bundle-v2 package, not a CDN), those URLs answer, and headless Chromium renders the page with every
request to another host blocked."""

from __future__ import annotations

import contextlib
import re
import shutil
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import uvicorn
from fastapi.testclient import TestClient
from pydantic import SecretStr

from agent.pipeline import Recommender
from agent.server import create_app
from agent.settings import Settings

from fakes import FakeEngine
from server_helpers import assert_envelope
from testkit import free_port

_URL_ATTR = re.compile(r"""(?:src|href)\s*=\s*["']([^"']+)["']""")
_QUOTED_URL = re.compile(r"""["']((?:[a-z][a-z0-9+.-]*:)?//[^"']*)["']""", re.IGNORECASE)
_LOCAL_PATH = re.compile(r"""(?:url|openapi_url)\s*:\s*["']([^"']+)["']""")


def _references(html: str) -> list[str]:
    """Every URL the page loads: src/href attributes and the OpenAPI URL given to Swagger UI."""
    return _URL_ATTR.findall(html) + _LOCAL_PATH.findall(html)


def test_docs_page_references_only_local_urls_that_answer(client: TestClient) -> None:
    page = client.get("/docs")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    html = page.text
    assert "SwaggerUIBundle" in html
    assert _QUOTED_URL.findall(html) == []  # no absolute or protocol-relative URL: nothing from elsewhere
    refs = _references(html)
    assert {"/docs/assets/swagger-ui-bundle.js", "/docs/assets/swagger-ui.css", "/openapi.json"} <= set(refs), refs
    for ref in refs:
        assert ref.startswith("/") and not ref.startswith("//"), ref
        resp = client.get(ref)
        assert resp.status_code == 200, ref
    assert "javascript" in client.get("/docs/assets/swagger-ui-bundle.js").headers["content-type"]
    assert client.get("/docs/assets/swagger-ui.css").headers["content-type"].startswith("text/css")
    assert client.get("/openapi.json").json()["info"]["title"] == "recagent"
    # only the files the page needs are served; FastAPI's CDN-based ReDoc page is off
    assert_envelope(client.get("/docs/assets/index.html"), 404, "not_found_error")
    assert_envelope(client.get("/docs/assets/..%2F__init__.py"), 404, "not_found_error")
    assert client.get("/redoc").status_code == 404


def test_docs_stay_open_when_the_api_needs_a_token(make_client: Any) -> None:
    client = make_client(server_token=SecretStr("docs-test-token-1234"))
    assert client.get("/v1/sessions/x").status_code == 401
    for path in ("/docs", "/docs/assets/swagger-ui-bundle.js", "/openapi.json"):
        assert client.get(path).status_code == 200, path


@contextlib.contextmanager
def _live(app: Any) -> Iterator[str]:
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(30)


@pytest.mark.slow
def test_docs_render_in_a_browser_without_network(base_settings: Settings, hash_embedder: Any) -> None:
    from playwright.sync_api import sync_playwright

    path = shutil.which("chromium")
    if path is None:
        pytest.fail(
            "Debian's chromium is not installed: run scripts/system-deps.sh (`make test` does) or "
            "`apt-get install -y --no-install-recommends chromium`"
        )
    rec = Recommender(base_settings, engine=FakeEngine(), embedder=hash_embedder)
    blocked: list[str] = []
    failed: list[str] = []
    errors: list[str] = []
    with _live(create_app(base_settings, recommender=rec)) as url, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=path, headless=True, args=["--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page()

            def offline(route: Any) -> None:  # the machine is offline: anything not from this server fails
                if route.request.url.startswith(url):
                    route.continue_()
                else:
                    blocked.append(route.request.url)
                    route.abort("internetdisconnected")

            page.route("**/*", offline)
            page.on("requestfailed", lambda r: failed.append(r.url))
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.goto(f"{url}/docs")
            page.locator(".swagger-ui .info .title").wait_for(timeout=60_000)
            assert "recagent" in page.locator(".swagger-ui .info .title").inner_text()
            page.locator(".opblock").first.wait_for(timeout=60_000)
            paths = page.locator(".opblock-summary-path").all_inner_texts()
            assert any("/v1/sessions/{session_id}/messages" in p.replace("\u200b", "") for p in paths), paths
        finally:
            browser.close()
    assert blocked == [] and failed == [] and errors == [], (blocked, failed, errors)
