"""The chat page end to end in headless Chromium (Debian's `chromium`, driven by Playwright; never a downloaded
browser): type a request, see the reply and the recommended items with their justifications; the session survives
a reload; markup in messages is shown as text, never run; a server with a token asks for it."""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
import uvicorn
from pydantic import SecretStr

from agent.pipeline import Recommender
from agent.server import create_app
from agent.settings import Settings
from retrieval.interactions import Interactions

from fakes import FakeEngine, Taste, kind_of
from testkit import free_port

pytestmark = pytest.mark.slow

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
WAIT_MS = 60_000
TOKEN = "browser-test-token-1234"


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    path = shutil.which("chromium") or CHROMIUM
    if not shutil.which("chromium"):
        pytest.fail(
            "Debian's chromium is not installed: run scripts/system-deps.sh (`make test` does) or "
            "`apt-get install -y --no-install-recommends chromium`"
        )
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=path, args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()


LiveServer = Callable[..., str]


@pytest.fixture
def live_server(base_settings: Settings, hash_embedder: Any, interactions: Interactions) -> Iterator[LiveServer]:
    """``live_server(**setting_overrides)`` -> the base URL of the app served by uvicorn in a thread."""
    servers: list[tuple[uvicorn.Server, threading.Thread]] = []

    def start(engine: FakeEngine | None = None, **overrides: Any) -> str:
        settings = base_settings.model_copy(update=overrides)
        rec = Recommender(settings, engine=engine or FakeEngine(), embedder=hash_embedder, interactions=interactions)
        port = free_port()
        server = uvicorn.Server(uvicorn.Config(create_app(settings, recommender=rec), host="127.0.0.1", port=port,
                                               log_level="warning"))  # fmt: skip
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        deadline = time.monotonic() + 60
        while not server.started:
            assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.05)
        servers.append((server, thread))
        return f"http://127.0.0.1:{port}"

    yield start
    for server, thread in servers:
        server.should_exit = True
        thread.join(30)


def send(page: Any, text: str) -> Any:
    """Type a message, press Enter, wait for the finished assistant turn; return it."""
    before = page.locator(".turn.assistant").count()
    page.fill("#message", text)
    page.press("#message", "Enter")
    turn = page.locator(".turn.assistant").nth(before)
    turn.wait_for(timeout=WAIT_MS)
    page.wait_for_function(
        "n => { const t = document.querySelectorAll('.turn.assistant')[n];"
        " return t && !t.classList.contains('pending'); }",
        arg=before,
        timeout=WAIT_MS,
    )
    return turn


def test_chat_shows_reply_and_justified_items(browser: Any, live_server: LiveServer) -> None:
    url = live_server()
    page = browser.new_page()
    page.goto(url)
    turn = send(page, "a funny animated movie for kids")
    assert "failed" not in (turn.get_attribute("class") or "")
    reply = turn.locator(".text").inner_text()
    assert "suggestions" in reply.lower() or "?" in reply
    cards = turn.locator("ol.items li.item")
    assert cards.count() >= 3
    for i in range(cards.count()):
        card = cards.nth(i)
        assert card.locator(".title").inner_text().strip()
        assert card.locator(".justification").inner_text().strip()
        assert card.locator(".badge.grounded").count() == 1  # template justifications are grounded
    titles = [cards.nth(i).locator(".title").inner_text() for i in range(cards.count())]
    assert all(t in reply for t in titles)  # the reply names the cards' items

    sid = page.evaluate("localStorage.getItem('recagent.session')")
    state = httpx.get(f"{url}/v1/sessions/{sid}").json()
    assert [t["role"] for t in state["turns"]] == ["user", "assistant"]
    assert [c.get_attribute("data-item-id") for c in cards.all()] == state["turns"][1]["item_ids"]

    page.reload()  # the session comes back from localStorage, its turns from the server
    page.locator(".turn.assistant ol.items li.item").first.wait_for(timeout=WAIT_MS)
    assert page.locator(".turn").count() == 2
    restored = page.locator(".turn.assistant ol.items li.item .title").all_inner_texts()
    assert restored == titles

    page.uncheck("#stream")  # the JSON path too
    second = send(page, "something older please")
    assert second.locator("ol.items li.item").count() >= 1 or "?" in second.locator(".text").inner_text()
    assert len(httpx.get(f"{url}/v1/sessions/{sid}").json()["turns"]) == 4

    page.click("#new-session")
    assert page.locator(".turn").count() == 0
    assert page.evaluate("localStorage.getItem('recagent.session')") is None
    page.close()


def test_markup_in_messages_is_shown_as_text(browser: Any, live_server: LiveServer) -> None:
    page = browser.new_page()
    page.goto(live_server())
    evil = '<img src=x onerror="window.pwned=1"><b>bold</b><script>window.pwned=2</script> comedy'
    turn = send(page, evil)
    user = page.locator(".turn.user .text").first
    assert user.inner_text() == evil
    assert page.locator("#log img, #log b, #log script").count() == 0
    assert "failed" not in (turn.get_attribute("class") or "") and turn.locator(".text").inner_text()
    assert page.evaluate("window.pwned === undefined")
    page.close()


def test_a_server_with_a_token_asks_for_it(browser: Any, live_server: LiveServer) -> None:
    page = browser.new_page()
    page.goto(live_server(server_token=SecretStr(TOKEN)))
    assert page.locator("#token-box").is_hidden()
    failed = send(page, "a thriller")
    assert "failed" in (failed.get_attribute("class") or "")
    assert "bearer token" in failed.locator(".text").inner_text().lower()
    assert page.locator("#token-box").is_visible()
    page.fill("#token", TOKEN)
    page.dispatch_event("#token", "change")
    ok = send(page, "a thriller")
    assert "failed" not in (ok.get_attribute("class") or "")
    assert ok.locator("ol.items li.item").count() >= 1
    page.close()


class SlowExplain(FakeEngine):
    """Writes grounded justifications, slowly (``EXPLAIN_DELAY_S`` per call): the page shows the items first."""

    def generate(self, requests: Any, **kw: Any) -> Any:
        from agent.llm.base import LLMRequest

        if any(kind_of(LLMRequest.of(r)) == "explain" for r in requests):
            time.sleep(EXPLAIN_DELAY_S)
        return super().generate(requests, **kw)


EXPLAIN_DELAY_S = 2.0


def test_items_come_first_and_their_reasons_fill_in(browser: Any, live_server: LiveServer) -> None:
    """A streamed turn: the cards appear with template reasons marked as being written, the reply streams, then
    each card's LLM justification replaces its template reason; the timing line shows the first token's time."""
    url = live_server(engine=SlowExplain(Taste({}).generate), explain_mode="llm")
    page = browser.new_page()
    page.goto(url)
    page.fill("#message", "a scary movie from the 80s")
    page.press("#message", "Enter")
    waiting = page.locator(".turn.assistant li.item.reason-pending")
    waiting.first.wait_for(timeout=WAIT_MS)  # items shown while the justifications are being written
    assert page.locator(".turn.assistant .badge.pending").count() == waiting.count() >= 3
    template_reasons = waiting.locator(".justification").all_inner_texts()
    assert all(template_reasons)
    page.wait_for_function(
        "() => { const t = document.querySelector('.turn.assistant'); return t && !t.classList.contains('pending'); }",
        timeout=WAIT_MS,
    )
    turn = page.locator(".turn.assistant").first
    cards = turn.locator("ol.items li.item")
    assert cards.count() == len(template_reasons) and turn.locator(".reason-pending, .badge.pending").count() == 0
    filled = cards.locator(".justification").all_inner_texts()
    assert all(filled) and filled != template_reasons  # the LLM's sentences replaced the template reasons
    assert cards.locator(".badge.grounded").count() == cards.count()
    timing = turn.locator(".timing").inner_text()
    assert "first token" in timing and "reasons" in timing
