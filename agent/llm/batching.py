"""Batched engine calls that never raise: timeouts, per-request isolation, one caller at a time per engine.

The ranking and justification stages send the requests of many users in ONE engine call. Outputs that do not
parse come back per request (:class:`~agent.errors.PartialOutputError`: the valid outputs are kept, nothing is
generated twice). Any other problem with one request (a prompt that does not fit the context) makes the engine
raise for the whole batch; :func:`call_batch` then bisects the batch so that only the guilty requests fail.
Every failure becomes a :class:`CallFailure` with a short reason that ends up in ``RerankResult.fallback_reason``.
"""

from __future__ import annotations

import json
import threading
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from agent.errors import (
    EngineError,
    EngineUnavailableError,
    InputError,
    PartialOutputError,
    RecagentError,
    StructuredOutputError,
)
from agent.llm.base import Generation

__all__ = [
    "CallFailure",
    "Outcome",
    "call_batch",
    "failure_reason",
    "generate_batch",
    "is_label_error",
    "json_value",
    "loads_lenient",
]

T = TypeVar("T")
REASON_MAX = 300


@dataclass(frozen=True)
class CallFailure:
    """A request that produced no usable output; ``reason`` is ``invalid_output``, ``timeout`` or
    ``engine_error: ...``."""

    reason: str
    error: BaseException | None = None


@dataclass
class Outcome(Generic[T]):
    """Per-request results of one batched stage (a value or a :class:`CallFailure`) and how many engine calls
    it took (1, or more when requests were isolated)."""

    results: list[T | CallFailure]
    engine_calls: int


def failure_reason(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timeout"
    if isinstance(exc, StructuredOutputError):
        return "invalid_output"
    detail = exc.message if isinstance(exc, RecagentError) else f"{type(exc).__name__}: {exc}"
    return f"engine_error: {detail}"[:REASON_MAX]


def is_label_error(exc: BaseException) -> bool:
    """True when the engine refused option labels that are not single tokens for its tokenizer."""
    text = str(exc).lower()
    if isinstance(exc, InputError):
        return "label" in text
    return isinstance(exc, EngineError) and "label" in text and "token" in text


def _isolatable(exc: BaseException) -> bool:
    """Failures that may come from a single request (worth re-sending the others one by one)."""
    if isinstance(exc, EngineUnavailableError) or is_label_error(exc):
        return False
    return isinstance(exc, EngineError)


_LOCKS: weakref.WeakKeyDictionary[Any, threading.Lock] = weakref.WeakKeyDictionary()
_LOCKS_GUARD = threading.Lock()


IN_PROCESS_BACKENDS = frozenset({"vllm", "hf"})


class _NoLock:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def _lock_for(engine: Any) -> threading.Lock | _NoLock:
    """One lock per in-process engine: a timed-out call still runs in its thread, and the next call waits for it
    (an in-process vLLM engine must not be entered by two threads at once). Server engines need no lock."""
    if getattr(engine, "backend", None) not in IN_PROCESS_BACKENDS:
        return _NoLock()
    with _LOCKS_GUARD:
        lock = _LOCKS.get(engine)
        if lock is None:
            lock = threading.Lock()
            _LOCKS[engine] = lock
        return lock


def _run(engine: Any, fn: Callable[[], T], timeout: float | None) -> T:
    lock = _lock_for(engine)
    if timeout is None:
        with lock:
            return fn()
    box: dict[str, Any] = {}
    done = threading.Event()

    def work() -> None:
        try:
            with lock:
                box["value"] = fn()
        except BaseException as exc:  # handed to the caller's thread
            box["error"] = exc
        finally:
            done.set()

    threading.Thread(target=work, name="recagent-engine-call", daemon=True).start()
    if not done.wait(timeout):
        raise TimeoutError(f"the engine call took longer than {timeout:g} s")
    if "error" in box:
        raise box["error"]
    return box["value"]  # type: ignore[no-any-return]


def call_batch(
    engine: Any,
    n: int,
    call: Callable[[list[int]], Sequence[T]],
    *,
    timeout: float | None = None,
) -> Outcome[T]:
    """Run ``call(indices)`` for requests ``0..n-1`` in one engine call. Outputs that do not parse fail alone
    (:class:`PartialOutputError` keeps the others); on another failure that may be one request's fault (an
    engine error other than "unavailable"), split the batch in halves and retry each half, down to single
    requests. Never raises (except KeyboardInterrupt and friends)."""
    if n == 0:
        return Outcome([], 0)
    results: list[T | CallFailure | None] = [None] * n
    calls = 0

    def solve(indices: list[int]) -> None:
        nonlocal calls
        calls += 1
        try:
            out = list(_run(engine, lambda: call(indices), timeout))
            if len(out) != len(indices):
                raise EngineError(f"the engine returned {len(out)} results for {len(indices)} requests")
        except PartialOutputError as exc:
            if len(exc.outcomes) == len(indices):  # per-request outcomes: keep the valid outputs, no second call
                for i, item in zip(indices, exc.outcomes, strict=True):
                    results[i] = CallFailure(failure_reason(item), item) if isinstance(item, BaseException) else item
            else:
                wrong = EngineError(f"the engine returned {len(exc.outcomes)} outcomes for {len(indices)} requests")
                for i in indices:
                    results[i] = CallFailure(failure_reason(wrong), wrong)
            return
        except Exception as exc:
            if len(indices) == 1 or not _isolatable(exc):
                failure = CallFailure(failure_reason(exc), exc)
                for i in indices:
                    results[i] = failure
                return
            half = len(indices) // 2  # bisect: the guilty requests are found in O(f log n) batched calls
            solve(indices[:half])
            solve(indices[half:])
            return
        for i, value in zip(indices, out, strict=True):
            results[i] = value

    solve(list(range(n)))
    return Outcome([r if r is not None else CallFailure("engine_error: no result") for r in results], calls)


def generate_batch(
    engine: Any,
    messages: Sequence[list[dict[str, str]]],
    *,
    max_tokens: int,
    seed: int,
    timeout: float | None,
    json_schema: dict[str, Any] | None = None,
) -> Outcome[Any]:
    """Greedy generation (temperature 0) for each chat in ``messages``, in one engine call isolated by
    :func:`call_batch`; with ``json_schema`` the outputs are constrained to it."""
    return call_batch(
        engine,
        len(messages),
        lambda idx: engine.generate(
            [messages[j] for j in idx], json_schema=json_schema, max_tokens=max_tokens, temperature=0.0, seed=seed
        ),
        timeout=timeout,
    )


def loads_lenient(text: str) -> Any:
    """``json.loads`` that accepts raw control characters inside strings (a constrained decoder lets a model
    emit them; Python's strict parser refuses them). Raises ValueError when the text is not JSON."""
    return json.loads(text, strict=False)


def json_value(output: Generation | str) -> Any:
    """The JSON value of an output: the engine's parsed value, else the lenient parse of its text (or of a raw
    string the engine's strict parser refused); None when it is not JSON."""
    value = output.parsed if isinstance(output, Generation) else None
    if value is None:
        try:
            value = loads_lenient(output.text if isinstance(output, Generation) else output)
        except ValueError:
            return None
    return value
