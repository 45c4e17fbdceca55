"""Issue 25's chat-page request replayed in headless Chromium with the real default model (Gemma 3 270M in vLLM, the
bundled MiniLM, the 300-movie MovieLens sample in an embedded Chroma store): "I loved Heat and The Usual Suspects.
Something like that, but not too violent?" Items appear, none of them tagged violence / violent in MovieLens'
tags.csv (the ground truth), and no "grounded" badge sits on a justification that says nothing about its item."""

from __future__ import annotations

import csv
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import test_browser
import uvicorn
from test_browser import browser, send  # noqa: F401 (the module's Chromium fixture, shared)

from agent.pipeline import Recommender
from agent.server import create_app
from agent.settings import Settings, load_settings
from retrieval.avoid import words

from testkit import SAMPLE_COLLECTION, free_port

pytestmark = [pytest.mark.slow, pytest.mark.gemma]

REQUEST = "I loved Heat and The Usual Suspects. Something like that, but not too violent?"
TURN_MS = 600_000  # a whole turn on 2 CPU cores with the default model (extraction, ranking, justifications, reply)


def violence_tagged(sample: Path) -> set[str]:
    """Ids of the movies MovieLens users tagged with "violence" or "violent" (any case, inside longer tags too)."""
    with (sample / "tags.csv").open(newline="", encoding="utf-8") as fh:
        return {row["movieId"] for row in csv.DictReader(fh) if re.search(r"violen(ce|t)", row["tag"], re.I)}


@pytest.fixture(scope="module")
def real_server(
    sample_home: Path, ml_sample: Path, vllm_gemma: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    settings: Settings = load_settings(
        home=sample_home,
        collection=SAMPLE_COLLECTION,
        interactions=ml_sample / "ratings.csv",
        session_db_url=str(tmp_path_factory.mktemp("avoid-sessions") / "sessions.sqlite3"),
    )
    rec = Recommender(settings, engine=vllm_gemma)
    server = uvicorn.Server(uvicorn.Config(create_app(settings, recommender=rec), host="127.0.0.1", port=free_port(),
                                           log_level="warning"))  # fmt: skip
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 120
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{server.config.port}"
    server.should_exit = True
    thread.join(30)


def about_its_item(text: str, title: str, metadata: dict[str, Any]) -> bool:
    """Whether a justification refers to its item: a content word of the title, or one of its field values."""
    said = set(words(text))
    title_words = {w for w in words(re.sub(r"\(\d{4}\)", "", title)) if len(w) >= 4}
    values = [str(v) for value in metadata.values() for v in (value if isinstance(value, list) else [value])]
    return bool(title_words & said) or any(v.casefold() in text.casefold() for v in values if len(v) >= 3)


def test_not_too_violent_on_the_chat_page(
    browser: Any,  # noqa: F811
    real_server: str,
    ml_sample: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(test_browser, "WAIT_MS", TURN_MS)  # send() waits this long for the turn
    page = browser.new_page()
    page.set_default_timeout(TURN_MS)
    page.goto(real_server)
    turn = send(page, REQUEST)
    assert "failed" not in (turn.get_attribute("class") or ""), turn.inner_text()
    cards = turn.locator("ol.items li.item")
    assert cards.count() >= 1, turn.inner_text()
    ids = [c.get_attribute("data-item-id") for c in cards.all()]
    assert not set(ids) & violence_tagged(ml_sample), ids

    sid = page.evaluate("localStorage.getItem('recagent.session')")
    state = httpx.get(f"{real_server}/v1/sessions/{sid}", timeout=30).json()
    assert [a["concept"] for a in state["preferences"]["avoid"]] == ["violent"]
    reply = turn.locator(".text").inner_text()
    assert '"violent"' in reply  # the reply says how the avoidance was applied
    print(f"reply: {reply}\nitems: {ids}")  # shown with -s

    metadata = {i: m for i, m in _sample_metadata(ml_sample).items() if i in ids}
    for card, item_id in zip(cards.all(), ids, strict=True):
        if card.locator(".badge.grounded").count():
            text = card.locator(".justification").inner_text()
            title = card.locator(".title").inner_text()
            assert about_its_item(text, title, metadata.get(str(item_id), {})), (title, text)
    page.close()


def _sample_metadata(sample: Path) -> dict[str, dict[str, Any]]:
    from retrieval.catalog import read_catalog

    return {it.id: dict(it.metadata) for it in read_catalog(sample).items}
