"""Helpers of the reliability suite: the figures log, a scriptable OpenAI-compatible LLM server, a hashing embedder,
process-tree and memory helpers, and a tmpfs mount for store faults.

The figures: every test calls :func:`record` with its counts (faults injected / survived, inputs tried / crashes,
turns sent / lost, injection strings / escapes); when ``RECAGENT_RELIABILITY_LOG`` names a file (read when this
module is imported, before the tests' environment is cleaned) each call appends one JSON line there, and
``bench/reliability.py`` adds them up into the table of docs/reliability.md.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import psutil
from fastapi.testclient import TestClient

from testkit import SAMPLE_COLLECTION, free_port

LOG_PATH = os.environ.get("RECAGENT_RELIABILITY_LOG")
REL_COLLECTION = "rel-test"  # the sample with the hashing embedder (conftest `rel_home`)
SERVED_COLLECTION = SAMPLE_COLLECTION  # the sample with the real embedder (tests/conftest.py `sample_home`)
_LOG_LOCK = threading.Lock()


MakeApp = Callable[..., TestClient]
"""``make_app(engine=..., **setting_overrides)`` (conftest fixture) -> a started in-process TestClient."""


def record(theme: str, **counts: float | int | str) -> None:
    """One JSON line ``{"theme", "test", **counts}`` in the figures log (no-op when no log is configured)."""
    if not LOG_PATH:
        return
    test = os.environ.get("PYTEST_CURRENT_TEST", "?").split(" ")[0]
    line = json.dumps({"theme": theme, "test": test, **counts}, sort_keys=True)
    with _LOG_LOCK, open(LOG_PATH, "a", encoding="utf-8") as fh:
        fh.write(line + "\n")


THEME_OF_MODULE = {
    "test_engine_faults": "engine_faults",
    "test_store_faults": "store_faults",
    "test_crash_safety": "crash_safety",
    "test_fuzz": "fuzz",
    "test_injection": "injection",
    "test_security": "security",
    "test_soak": "soak",
    "test_bad_inputs": "bad_input",
}
"""The figures theme of each test module: conftest records every test's outcome under it (``tests_passed`` /
``tests_failed``), so a theme's figures always come with how many of its tests failed."""

FAILED_TESTS: dict[str, int] = {}
"""Failed tests per module name so far in this session (filled by conftest's report hook)."""


class Checks:
    """Counted assertions of one test module. ``check(ok, what)`` counts a pass, or counts a failure and raises:
    the module's figure is ``checks`` passed and ``failures`` = failed checks + failed tests of the module (a test
    can fail outside a check, e.g. in a fixture or a helper's assert)."""

    def __init__(self, theme: str, module: str) -> None:
        self.theme, self.module = theme, module
        self.passed = 0
        self.failed = 0

    def __call__(self, ok: object, what: str) -> None:
        if not ok:
            self.failed += 1
            raise AssertionError(what)
        self.passed += 1

    def record(self) -> None:
        failures = max(self.failed, FAILED_TESTS.get(self.module, 0))
        record(self.theme, checks=self.passed, failures=failures)


def raises(call: Callable[[], object], kind: type[BaseException], match: str = "") -> BaseException | None:
    """The exception of type ``kind`` whose text holds ``match`` that ``call()`` raised, else None (a check can
    then test it: ``check(raises(...), ...)``); other exceptions propagate."""
    try:
        call()
    except kind as exc:
        return exc if match in str(exc) else None
    return None


# ------------------------------------------------------------------------------------------------ a fake LLM server
MODES = ("ok", "slow", "http500", "garbage", "bad_shape", "truncated_body", "drop", "cut_json", "no_logprobs")
"""What :class:`FakeLLMServer` does with the next completion requests:

- ``ok``: well-formed answers (JSON-schema requests get a minimal valid instance, log-prob requests a score for
  every label, plain prompts a short text);
- ``slow``: waits ``delay_s`` before answering (client timeouts);
- ``http500``: HTTP 500 with an error body;
- ``garbage``: HTTP 200 whose body is not JSON;
- ``bad_shape``: HTTP 200, JSON without ``choices``;
- ``truncated_body``: HTTP 200 announcing more bytes than it sends, then closes the connection;
- ``drop``: closes the connection without answering;
- ``cut_json``: the completion text is JSON cut in the middle (``finish_reason: length``);
- ``no_logprobs``: a completion without any log-probabilities.
"""


def schema_instance(schema: dict[str, Any]) -> Any:
    """A minimal value valid for the simple JSON schemas recagent sends (objects, arrays, enums, scalars)."""
    if "enum" in schema:
        return schema["enum"][0]
    if "const" in schema:
        return schema["const"]
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "object" or "properties" in schema:
        props = schema.get("properties", {})
        return {k: schema_instance(props.get(k, {})) for k in schema.get("required", [])}
    if kind == "array":
        n = int(schema.get("minItems", 0))
        items = schema.get("items", {})
        if "enum" in items:
            return list(items["enum"][:n])
        return [schema_instance(items) for _ in range(n)]
    if kind == "string":
        return "x" * int(schema.get("minLength", 1))
    if kind in ("integer", "number"):
        return schema.get("minimum", 0)
    if kind == "boolean":
        return False
    for key in ("anyOf", "oneOf"):
        if key in schema:
            return schema_instance(schema[key][0])
    return None


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:  # a client that gave up (timeouts): fine
        return


class FakeLLMServer:
    """An OpenAI-compatible HTTP server (``/v1/models``, ``/v1/completions``, ``/tokenize``, ``/health``) in a
    thread of the test process, whose behaviour is switched with :attr:`mode` (see :data:`MODES`)."""

    def __init__(self, *, model: str = "fake-llm", delay_s: float = 0.0, port: int | None = None) -> None:
        self.model = model
        self.mode = "ok"
        self.delay_s = delay_s
        self.slow_s = 5.0
        self.requests: dict[str, int] = {}
        self.port = port or free_port()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def count(self, kind: str) -> None:
        self.requests[kind] = self.requests.get(kind, 0) + 1

    def start(self) -> FakeLLMServer:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # quiet
                return

            def _send(self, status: int, body: bytes, ctype: str = "application/json") -> None:
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _json(self, status: int, value: Any) -> None:
                self._send(status, json.dumps(value).encode())

            def do_GET(self) -> None:
                if self.path.rstrip("/") in ("/v1/models", "/models"):
                    owner.count("models")
                    if owner.mode == "http500":
                        self._json(500, {"error": {"message": "injected failure", "type": "server_error"}})
                        return
                    if owner.mode == "garbage":
                        self._send(200, b"<html>proxy error</html> not json")
                        return
                    if owner.mode == "bad_shape":
                        self._json(200, {"object": "list"})
                        return
                    self._json(200, {"object": "list", "data": [{"id": owner.model, "object": "model",
                                                                 "created": 0, "owned_by": "test"}]})  # fmt: skip
                elif self.path == "/health":
                    self._send(200, b"", "text/plain")
                else:
                    self._json(404, {"error": {"message": "no route"}})

            def do_POST(self) -> None:
                size = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(size) or b"{}")
                if self.path == "/tokenize":
                    prompt = str(body.get("prompt", ""))
                    self._json(200, {"tokens": [ord(c) for c in prompt], "count": len(prompt)})
                    return
                if self.path == "/v1/chat/completions":  # like vLLM serving a base model
                    message = "you must provide a chat template if the tokenizer does not define one"
                    self._json(400, {"error": {"message": message, "type": "BadRequestError", "code": 400}})
                    return
                if self.path != "/v1/completions":
                    self._json(404, {"error": {"message": f"no route {self.path}"}})
                    return
                mode = owner.mode
                owner.count(mode)
                if owner.delay_s:
                    time.sleep(owner.delay_s)
                if mode == "slow":
                    time.sleep(owner.slow_s)
                if mode == "http500":
                    self._json(500, {"error": {"message": "injected failure", "type": "server_error"}})
                elif mode == "garbage":
                    self._send(200, b"<html>proxy error</html> not json")
                elif mode == "bad_shape":
                    self._json(200, {"id": "x", "object": "text_completion", "model": owner.model})
                elif mode == "truncated_body":
                    payload = json.dumps(owner.completion(body)).encode()
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload[: len(payload) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    with contextlib.suppress(OSError):
                        self.connection.shutdown(socket.SHUT_RDWR)
                elif mode == "drop":
                    self.close_connection = True
                    with contextlib.suppress(OSError):
                        self.connection.shutdown(socket.SHUT_RDWR)
                else:
                    self._json(200, owner.completion(body, mode))

        self._server = _QuietServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="fake-llm", daemon=True)
        self._thread.start()
        return self

    def completion(self, body: dict[str, Any], mode: str = "ok") -> dict[str, Any]:
        """A /v1/completions answer for ``body``."""
        text, finish = "Here are a few ideas you may enjoy.", "stop"
        fmt = (body.get("response_format") or {}).get("json_schema") or {}
        if fmt.get("schema") is not None:
            text = json.dumps(schema_instance(fmt["schema"]))
        logprobs = None
        if body.get("logprobs"):
            ids = body.get("logprob_token_ids") or [ord(c) for c in "ABCDEFGHIJKLMNOPQRST"]
            top = {chr(i): -1.0 - 0.1 * n for n, i in enumerate(ids)}
            text = next(iter(top))
            logprobs = {"tokens": [text], "token_logprobs": [-1.0], "top_logprobs": [top], "text_offset": [0]}
        if mode == "cut_json":
            text, finish = text[: max(1, len(text) // 2)], "length"
        if mode == "no_logprobs":
            logprobs = None
        prompt = body.get("prompt") or ""
        n_prompt = max(1, len(str(prompt)) // 4)
        return {
            "id": "cmpl-fake",
            "object": "text_completion",
            "created": 0,
            "model": self.model,
            "choices": [{"index": 0, "text": text, "finish_reason": finish, "logprobs": logprobs}],
            "usage": {"prompt_tokens": n_prompt, "completion_tokens": 3, "total_tokens": n_prompt + 3},
        }

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> FakeLLMServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# ------------------------------------------------------------------------------------------------ processes
def descendants(pid: int) -> list[psutil.Process]:
    """Every living descendant of ``pid`` (empty when it is gone)."""
    try:
        return list(psutil.Process(pid).children(recursive=True))
    except psutil.NoSuchProcess:
        return []


def vllm_processes(pids: set[int] | None = None) -> list[psutil.Process]:
    """Processes whose command line or name has ``VLLM::`` (vLLM's engine core and workers), optionally only among
    ``pids``."""
    out = []
    for proc in psutil.process_iter(["pid", "name", "cmdline"]):
        if pids is not None and proc.info["pid"] not in pids:
            continue
        text = " ".join(proc.info["cmdline"] or []) + " " + (proc.info["name"] or "")
        if "VLLM::" in text:
            out.append(proc)
    return out


def alive(procs: Sequence[psutil.Process]) -> list[psutil.Process]:
    out = []
    for p in procs:
        try:
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                out.append(p)
        except psutil.NoSuchProcess:
            continue
    return out


def kill_tree(pid: int) -> None:
    """SIGKILL ``pid`` and every descendant (test clean-up)."""
    procs = [*descendants(pid)]
    with contextlib.suppress(psutil.NoSuchProcess):
        procs.append(psutil.Process(pid))
    for p in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.send_signal(signal.SIGKILL)
    psutil.wait_procs(procs, timeout=30)


def rss_mb(pid: int) -> float:
    """Resident memory of ``pid`` and its descendants, MiB."""
    total = 0
    for p in [psutil.Process(pid), *descendants(pid)]:
        with contextlib.suppress(psutil.NoSuchProcess):
            total += p.memory_info().rss
    return total / 2**20


def unread_bytes(port: int) -> int:
    """Bytes received but not yet read by the sockets listening on or accepted at local ``port`` (the Recv-Q of
    /proc/net/tcp*): > 0 while a request sits inside a frozen server."""
    total = 0
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(name, encoding="ascii") as fh:
            for line in fh.readlines()[1:]:
                parts = line.split()
                local, queues = parts[1], parts[4]
                if int(local.rsplit(":", 1)[1], 16) == port:
                    total += int(queues.split(":")[1], 16)
    return total


def wait_for(predicate: Any, timeout_s: float, step_s: float = 0.1, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f}s waiting for {what}")
        time.sleep(step_s)


# ------------------------------------------------------------------------------------------------ tmpfs
@contextlib.contextmanager
def tmpfs(folder: Path, size: str = "4m") -> Iterator[Path]:
    """A small tmpfs mounted on ``folder`` (root only); unmounted (lazily if busy) afterwards.
    Raises ``PermissionError`` when the kernel refuses the mount."""
    folder.mkdir(parents=True, exist_ok=True)
    out = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(folder)],
                         capture_output=True, text=True, check=False)  # fmt: skip
    if out.returncode != 0:
        raise PermissionError(f"cannot mount a tmpfs on {folder}: {out.stderr.strip()}")
    try:
        yield folder
    finally:
        if subprocess.run(["umount", str(folder)], capture_output=True, check=False).returncode != 0:
            subprocess.run(["umount", "-l", str(folder)], capture_output=True, check=False)


def remount(folder: Path, options: str) -> None:
    """Change the options of a tmpfs mounted by :func:`tmpfs` (e.g. ``size=64m``)."""
    subprocess.run(["mount", "-o", f"remount,{options}", str(folder)], check=True, capture_output=True)


@contextlib.contextmanager
def readonly_view(source: Path, folder: Path) -> Iterator[Path]:
    """``source`` seen read-only at ``folder`` (a read-only bind mount: read-only for root too).
    Raises ``PermissionError`` when the kernel refuses the mount."""
    folder.mkdir(parents=True, exist_ok=True)
    for args in (["--bind", str(source), str(folder)], ["-o", "remount,bind,ro", str(folder)]):
        out = subprocess.run(["mount", *args], capture_output=True, text=True, check=False)
        if out.returncode != 0:
            subprocess.run(["umount", str(folder)], capture_output=True, check=False)
            raise PermissionError(f"cannot make a read-only bind mount at {folder}: {out.stderr.strip()}")
    try:
        yield folder
    finally:
        if subprocess.run(["umount", str(folder)], capture_output=True, check=False).returncode != 0:
            subprocess.run(["umount", "-l", str(folder)], capture_output=True, check=False)


def served_env(home: Path, llm_url: str, **extra: str) -> dict[str, str]:
    """Environment of a `recagent serve` process over ``home`` (a copy of the real-embedder sample home) whose LLM
    is the OpenAI-compatible server at ``llm_url``."""
    return {
        "RECAGENT_HOME": str(home),
        "RECAGENT_COLLECTION": SERVED_COLLECTION,
        "RECAGENT_LLM_SERVER_URL": llm_url,
        "RECAGENT_LLM_TIMEOUT_S": "30",
        "RECAGENT_LLM_RETRY_AFTER_S": "1",
        "RECAGENT_RERANK_STRATEGY": "options",
        "RECAGENT_EXPLAIN_MODE": "template",
        "RECAGENT_CHAT_EXTRACT": "rules",
        "RECAGENT_CHAT_REPLY": "llm",
        **extra,
    }


class ChromaServer:
    """A real ``chroma run`` server on a fixed port (so that it can be stopped and started again in place)."""

    def __init__(self, folder: Path, port: int | None = None) -> None:
        import sys

        self.chroma = Path(sys.executable).with_name("chroma")
        assert self.chroma.exists(), "the `chroma` CLI is not installed next to the Python interpreter (make setup)"
        self.folder = folder
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 120) -> ChromaServer:
        import httpx

        self.folder.mkdir(parents=True, exist_ok=True)
        with (self.folder / "chroma.log").open("ab") as log:
            cmd = [str(self.chroma), "run", "--path", str(self.folder / "data"), "--port", str(self.port),
                   "--host", "127.0.0.1"]  # fmt: skip
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                         env={**os.environ, "ANONYMIZED_TELEMETRY": "False"})  # fmt: skip
        deadline = time.monotonic() + timeout_s
        while True:
            if self.proc.poll() is not None:
                raise AssertionError(f"chroma run exited: {(self.folder / 'chroma.log').read_text()[-2000:]}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/api/v2/heartbeat", timeout=2).status_code == 200:
                    return self
            if time.monotonic() > deadline:
                self.proc.kill()
                raise AssertionError(f"chroma run did not answer within {timeout_s:.0f}s")
            time.sleep(0.2)

    def stop(self, *, kill: bool = False) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        if kill:
            self.proc.kill()
        else:
            self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=30)


def assert_collection_matches(store: Any, collection: str, items: Sequence[Any]) -> None:
    """The collection holds exactly ``items`` (ids), each with the content hash of its current text and fields."""
    from retrieval.store import HASH_KEY, item_record

    coll = store.collection(collection)
    assert coll.embedder_id, "the collection records its embedder"
    ids = [i.id for i in items]
    stored = coll.ids()
    assert len(stored) == len(set(stored)) and sorted(stored) == sorted(ids), (
        f"{len(stored)} stored vs {len(ids)} in the file; missing {sorted(set(ids) - set(stored))[:5]}, "
        f"extra {sorted(set(stored) - set(ids))[:5]}"
    )
    hashes = coll.hashes(ids)
    bad = [i.id for i in items if hashes[i.id] != item_record(i, coll.embedder_id)[1][HASH_KEY]]
    assert not bad, f"{len(bad)} stored items differ from the file: {bad[:5]}"
