"""Bad-input fuzzing (hypothesis, derandomized: the same inputs in every run): catalog rows and column mappings
through the catalog reader, API bodies and chat messages through the in-process app (scripted engine, real Chroma
store and SQLite session database). Only validation errors or reports come back: never an unexpected exception,
never an HTTP 500, never a traceback in a body."""

from __future__ import annotations

import csv
import io
import json
import tempfile
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from retrieval.catalog import read_catalog
from retrieval.errors import RecagentError
from retrieval.mapping import load_mapping
from retrieval.rowcheck import has_surrogate, is_non_finite

from fakes import FakeEngine
from reliability_kit import MakeApp, record

FUZZ = settings(
    max_examples=120,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)

# ------------------------------------------------------------------------------------------------ strategies
SURROGATE = st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF, categories=["Cs"])
"""A lone surrogate: `st.text()` never draws one (hypothesis leaves category Cs out), so they are asked for here."""
WITH_SURROGATE = st.builds(lambda a, c, b: a + c + b, st.text(max_size=10), SURROGATE, st.text(max_size=10))
NON_FINITE = st.sampled_from([float("nan"), float("inf"), float("-inf")])
"""NaN / Infinity / -Infinity: json.dumps writes them as the bare JSON extensions NaN, Infinity, -Infinity."""
WEIRD_TEXT = st.one_of(
    st.text(max_size=40),  # any code point but the surrogates
    WITH_SURROGATE,
    st.sampled_from(["", " ", "\x00", "\r\n", "\u202e", "\ufeff", "NaN", "-1", "1e309", "null", "[]", "{}", "|||"]),
    st.text(alphabet=st.characters(codec="utf-8"), min_size=200, max_size=2000),
)
SCALAR = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), NON_FINITE, WEIRD_TEXT)
JSON_VALUE = st.recursive(SCALAR, lambda kids: st.lists(kids, max_size=4) | st.dictionaries(WEIRD_TEXT, kids,
                          max_size=4), max_leaves=12)  # fmt: skip
COLUMNS = ["id", "title", "description", "year", "genres", "price", "in_print", "extra"]
FIELD_TYPES = st.sampled_from(["int", "float", "str", "list", "bool", "date", "", None])
MAPPING = st.fixed_dictionaries(
    {},
    optional={
        "id": st.sampled_from([*COLUMNS, "", "missing"]),
        "title": st.sampled_from([*COLUMNS, "", "rc_title"]),
        "text": st.lists(st.sampled_from([*COLUMNS, "rc_x", "#x", ""]), max_size=3) | SCALAR,
        "metadata": st.dictionaries(st.sampled_from([*COLUMNS, "$x", "document"]), FIELD_TYPES, max_size=4) | SCALAR,
        "list_sep": WEIRD_TEXT,
        "delimiter": st.sampled_from([",", ";", "\t", "|", "", ",,", None]),
        "encoding": st.sampled_from(["auto", "utf-8", "latin-1", "no-such-codec", "", None]),
        "year_from_title": SCALAR,
        "unknown_key": SCALAR,
    },
)
ROW = st.dictionaries(
    st.sampled_from(COLUMNS) | WEIRD_TEXT, JSON_VALUE, max_size=len(COLUMNS) + 2
) | st.fixed_dictionaries(
    {"id": SCALAR, "title": SCALAR}, optional={"description": JSON_VALUE, "genres": JSON_VALUE, "year": SCALAR}
)  # the second kind always fills the default id and title columns, so their odd values reach the cleaner


def _has_non_finite(value: Any) -> bool:
    if isinstance(value, list):
        return any(_has_non_finite(v) for v in value)
    if isinstance(value, dict):
        return any(_has_non_finite(v) for v in value.values())
    return is_non_finite(value)


def _write(folder: Path, fmt: str, rows: list[dict[str, Any]], junk: bytes) -> Path:
    if fmt == "jsonl":
        lines = [json.dumps(r).encode() for r in rows]
        path = folder / "catalog.jsonl"
        path.write_bytes(b"\n".join([*lines[:1], junk, *lines[1:]]) if junk else b"\n".join(lines))
    elif fmt == "json":
        path = folder / "catalog.json"
        path.write_bytes(json.dumps(rows).encode() + junk)
    else:
        buf = io.StringIO()
        names = list(dict.fromkeys(k for r in rows for k in r)) or ["id"]
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(names)
        for r in rows:
            writer.writerow(["" if r.get(k) is None else str(r.get(k)) for k in names])
        path = folder / "catalog.csv"
        path.write_bytes(buf.getvalue().encode("utf-8", "surrogatepass") + junk)
    return path


# ------------------------------------------------------------------------------------------------ catalogs
def test_catalog_rows_and_mappings() -> None:
    tried, crashes = 0, []
    sent = {"lone_surrogate": 0, "nan_or_infinity": 0}  # inputs that held one (NaN/Infinity: in JSON files)

    @FUZZ
    @given(
        fmt=st.sampled_from(["csv", "jsonl", "json"]),
        rows=st.lists(ROW, max_size=8),
        mapping=MAPPING,
        junk=st.sampled_from([b"", b"\xff\xfe\xfa", b"\x00\x00", b"{not json", b"\xc3\x28", b"\n\n\n"]),
        as_toml=st.booleans(),
    )
    def run(fmt: str, rows: list[dict[str, Any]], mapping: dict[str, Any], junk: bytes, as_toml: bool) -> None:
        nonlocal tried
        tried += 1
        sent["lone_surrogate"] += any(has_surrogate(r) for r in rows)
        sent["nan_or_infinity"] += fmt != "csv" and any(_has_non_finite(r) for r in rows)
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            try:
                path = _write(folder, fmt, rows, junk)
                spec = folder / "mapping.json"
                spec.write_text(json.dumps({"mapping": mapping}), encoding="utf-8")
                if as_toml:  # the same mapping as a (possibly invalid) TOML file
                    toml = "\n".join(f"{k} = {json.dumps(v)}" for k, v in mapping.items())
                    spec = folder / "mapping.toml"
                    spec.write_bytes(toml.encode("utf-8", "surrogatepass"))
                try:
                    parsed = load_mapping(spec)
                except RecagentError as exc:
                    assert exc.message and exc.hint
                    parsed = None
                catalog = read_catalog(path, format=fmt, mapping=parsed)
            except RecagentError as exc:
                assert exc.message and exc.hint, exc
                return
            except Exception as exc:
                crashes.append(repr(exc))
                raise
            report = catalog.report
            assert report.rows_read == report.accepted + report.rejected
            assert len(catalog.items) == report.accepted and len({i.id for i in catalog.items}) == report.accepted
            for item in catalog.items:  # storable: valid Unicode (a lone surrogate rejects its row)
                item.model_dump_json().encode("utf-8")

    try:
        run()
    finally:
        record("fuzz", target="catalog", inputs_tried=tried, crashes=len(crashes), **{f"sent_{k}": v
               for k, v in sent.items()})  # fmt: skip
    assert sent["lone_surrogate"] >= 10 and sent["nan_or_infinity"] >= 10, f"the strategies sent too few: {sent}"


# ------------------------------------------------------------------------------------------------ the HTTP API
def assert_clean(resp: Any, what: str) -> None:
    """2xx, or 4xx with the error envelope; never 5xx, never a traceback."""
    assert resp.status_code < 500, f"{what}: {resp.status_code} {resp.text[:300]}"
    assert "Traceback" not in resp.text and 'File "' not in resp.text, what
    if resp.status_code >= 400:
        body = resp.json()
        assert set(body) == {"error"} and body["error"]["code"] == resp.status_code, body
        assert body["error"]["message"] and body["error"]["request_id"] == resp.headers["x-request-id"]


RECOMMEND_BODY = st.fixed_dictionaries(
    {},
    optional={
        "query": WEIRD_TEXT | JSON_VALUE,
        "user_id": WEIRD_TEXT | SCALAR,
        "liked": st.lists(WEIRD_TEXT | st.sampled_from(["1", "2", "356"]), max_size=3) | JSON_VALUE,
        "disliked": st.lists(WEIRD_TEXT, max_size=3),
        "k": st.integers(-5, 200) | SCALAR,
        "strategy": st.sampled_from(["retrieval", "listwise", "options", "pointwise", "magic"]) | SCALAR,
        "n_candidates": st.integers(-1, 600) | SCALAR,
        "candidates": st.lists(st.sampled_from(["1", "2", "50", "x"]) | WEIRD_TEXT, max_size=5) | SCALAR,
        "constraints": st.dictionaries(
            st.sampled_from(["year_min", "year_max", "include_genres", "exclude_genres", "equals", "ranges", "x"]),
            JSON_VALUE,
            max_size=3,
        ),
        "history": st.lists(st.fixed_dictionaries({"item_id": WEIRD_TEXT}, optional={"rating": SCALAR}), max_size=3)
        | JSON_VALUE,
        "unknown": JSON_VALUE,
    },
)
RAW_BODY = st.one_of(
    st.binary(max_size=300),  # invalid UTF-8 and friends
    st.sampled_from([b"", b"{", b"[]", b"null", b'{"query": "\xff\xfe"}', b'{"query": "\\ud800"}', b"\x00" * 64]),
    st.integers(1, 20_000).map(lambda n: b"[" * n + b"]" * n),  # deeply nested JSON
    st.integers(1, 20_000).map(lambda n: b'{"query": ' + b'{"a": ' * n + b"1" + b"}" * n + b"}"),
)


def test_api_bodies(make_app: MakeApp) -> None:
    client = make_app(engine=FakeEngine(), server_max_body_bytes=65_536)
    sid = client.post("/v1/sessions").json()["session_id"]
    tried, crashes = 0, []

    @FUZZ
    @given(
        target=st.sampled_from(["recommend", "sessions", "messages", "item"]),
        body=RECOMMEND_BODY | JSON_VALUE,
        raw=st.none() | RAW_BODY,
        ctype=st.sampled_from(["application/json", "text/plain", "application/x-www-form-urlencoded", ""]),
        rid=st.none() | WEIRD_TEXT.filter(lambda s: s.isascii() and "\n" not in s and "\r" not in s),
    )
    def run(target: str, body: Any, raw: bytes | None, ctype: str, rid: str | None) -> None:
        nonlocal tried
        tried += 1
        path = {"recommend": "/v1/recommend", "sessions": "/v1/sessions", "messages": f"/v1/sessions/{sid}/messages",
                "item": "/v1/items/1"}[target]  # fmt: skip
        content = raw if raw is not None else json.dumps(body).encode("utf-8", "surrogatepass")
        headers = {"content-type": ctype} if ctype else {}
        if rid is not None:
            headers["x-request-id"] = rid
        try:
            resp = client.request("GET" if target == "item" else "POST", path, content=content, headers=headers)
            assert_clean(resp, f"{target} {content[:200]!r}")
        except Exception as exc:
            crashes.append(repr(exc)[:300])
            raise

    try:
        run()
    finally:
        record("fuzz", target="api", inputs_tried=tried, crashes=len(crashes))
    assert client.get("/healthz").status_code == 200


CHAT_MESSAGE = st.one_of(
    WEIRD_TEXT,
    st.sampled_from(["", " ", "\n\t", "\x00", "\x1b[31mred\x1b[0m", "a\x00b", "\ud800", "\udfff x", "🎬" * 500]),
    st.integers(3_990, 4_010).map(lambda n: "x" * n),  # around the message limit
    st.integers(1, 200).map(lambda n: "no horror " * n),
    st.text(alphabet=st.characters(categories=["Cc", "Cf", "Zl", "Zp"]), max_size=50),  # control characters
)


def test_chat_messages(make_app: MakeApp) -> None:
    client = make_app(engine=FakeEngine())
    tried, crashes = 0, []
    sessions = [client.post("/v1/sessions").json()["session_id"] for _ in range(2)]
    acknowledged: dict[str, int] = dict.fromkeys(sessions, 0)

    @FUZZ
    @given(message=CHAT_MESSAGE, which=st.sampled_from([0, 1]), stream=st.booleans())
    def run(message: str, which: int, stream: bool) -> None:
        nonlocal tried
        tried += 1
        sid = sessions[which]
        content = json.dumps({"message": message}).encode("utf-8", "surrogatepass")
        url = f"/v1/sessions/{sid}/messages" + ("?stream=true" if stream else "")
        try:
            resp = client.post(url, content=content, headers={"content-type": "application/json"})
            assert_clean(resp, f"message {message[:80]!r}")
            if resp.status_code == 200:
                if stream:
                    assert "event: done" in resp.text or "event: error" in resp.text
                acknowledged[sid] += 1 if not stream or "event: done" in resp.text else 0
        except Exception as exc:
            crashes.append(repr(exc)[:300])
            raise

    try:
        run()
    finally:
        record("fuzz", target="chat", inputs_tried=tried, crashes=len(crashes))
    for sid in sessions:  # every turn answered 200 is stored, whole
        turns = client.get(f"/v1/sessions/{sid}").json()["turns"]
        assert [t["role"] for t in turns] == ["user", "assistant"] * (len(turns) // 2)
        assert len(turns) // 2 == acknowledged[sid]


def test_the_fuzzed_app_still_answers(make_app: MakeApp) -> None:
    client: TestClient = make_app(engine=FakeEngine())
    assert client.post("/v1/recommend", json={"query": "space adventure", "k": 3}).status_code == 200


DEEP = 30_000
EDGE_CASES = {
    "deeply nested array": b"[" * DEEP + b"]" * DEEP,
    "deeply nested query": b'{"query": ' + b'{"a": ' * DEEP + b"1" + b"}" * DEEP + b"}",
    "invalid UTF-8": b'{"query": "caf\xe9 \xff\xfe"}',
    "unpaired surrogate query": b'{"query": "a \\ud800 b", "k": 3}',
    "unpaired surrogate list": b'{"query": "ok", "liked": ["\\udfff"]}',
    "NUL bytes": b'{"query": "a\\u0000b", "k": 3}',
    "huge number": b'{"query": "x", "k": 1' + b"0" * 5000 + b"}",
    "truncated": b'{"query": "x", "k": ',
}


def test_edge_case_bodies(make_app: MakeApp) -> None:
    client = make_app(engine=FakeEngine())
    sid = client.post("/v1/sessions").json()["session_id"]
    for name, content in EDGE_CASES.items():
        for path in ("/v1/recommend", "/v1/sessions", f"/v1/sessions/{sid}/messages"):
            resp = client.post(path, content=content, headers={"content-type": "application/json"})
            assert_clean(resp, f"{name} -> {path}")
            if "surrogate" in name and path == "/v1/recommend":  # refused by the schema (422) or by the API (400)
                assert resp.status_code in (400, 422) and "unicode" in resp.json()["error"]["message"].lower()
    for message in ("\ud800", "x \udc80 y"):
        raw = json.dumps({"message": message}).encode()
        resp = client.post(f"/v1/sessions/{sid}/messages", content=raw, headers={"content-type": "application/json"})
        assert resp.status_code == 400 and "surrogate" in resp.json()["error"]["message"], resp.text
    raw = json.dumps({"user_id": "\ud83d"}).encode()
    assert client.post("/v1/sessions", content=raw, headers={"content-type": "application/json"}).status_code == 422
    assert client.get(f"/v1/sessions/{sid}").json()["turns"] == []  # nothing half-stored
    record("fuzz", target="edge cases", inputs_tried=len(EDGE_CASES) * 3 + 3, crashes=0)
