"""A micro-batcher: calls that arrive close together go to the engine as ONE batched call.

Each HTTP request submits its input and awaits a future. A worker thread takes the first queued input, waits up to
``max_wait_s`` for more (up to ``max_batch``), runs the batch function once (``Recommender.recommend_many``,
``Conversation.send_many``) and resolves every caller's future. While a batch runs, new requests queue up and form
the next batch, so under load batches grow by themselves and the engine sees large batches.

Errors are isolated per request: the batch function may return an exception in a caller's slot; when it raises for
the whole batch, every input is retried on its own so that only the guilty request fails.

The batcher is thread-based (not tied to an event loop): ``submit`` returns a ``concurrent.futures.Future`` that async
code awaits with ``asyncio.wrap_future``.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from agent.errors import RecagentError

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")

BatchFn = Callable[[list[T]], Sequence["R | BaseException"]]


class ServerBusyError(RecagentError):
    """Too many requests are queued, or the server is shutting down."""


@dataclass
class _Job(Generic[T, R]):
    value: T
    future: Future[R] = field(default_factory=Future)


@dataclass
class BatchStats:
    batches: int = 0
    items: int = 0
    largest: int = 0
    isolated: int = 0  # batches that failed as a whole and were retried item by item


class MicroBatcher(Generic[T, R]):
    """Collects submitted inputs into batches for ``fn``; one batch runs at a time, in this batcher's thread."""

    def __init__(
        self,
        fn: BatchFn[T, R],
        *,
        max_batch: int = 16,
        max_wait_s: float = 0.005,
        max_pending: int = 512,
        name: str = "batcher",
    ) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be >= 1")
        self.fn = fn
        self.max_batch = max_batch
        self.max_wait_s = max(0.0, max_wait_s)
        self.max_pending = max_pending
        self.name = name
        self.stats = BatchStats()
        self._queue: queue.Queue[_Job[T, R] | None] = queue.Queue()
        self._closed = False
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name=f"recagent-{name}", daemon=True)
        self._thread.start()

    # -- callers ------------------------------------------------------------------------------------------------
    def submit(self, value: T) -> Future[R]:
        """Queue ``value``; the future resolves to its result (or raises its error)."""
        with self._lock:
            if self._closed:
                raise ServerBusyError(f"the {self.name} is shut down", hint="retry against a running server")
            if self._queue.qsize() >= self.max_pending:
                raise ServerBusyError(
                    f"too many queued requests ({self.max_pending})",
                    hint="retry later, or raise RECAGENT_SERVER_MAX_PENDING / add server processes",
                )
            job: _Job[T, R] = _Job(value)
            self._queue.put(job)
        return job.future

    def close(self, timeout_s: float = 30.0) -> None:
        """Stop taking work, finish the batch in flight, fail what is still queued."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._queue.put(None)
        self._thread.join(timeout_s)
        while True:
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                break
            if job is not None and job.future.set_running_or_notify_cancel():
                job.future.set_exception(ServerBusyError("the server shut down before this request ran"))

    @property
    def pending(self) -> int:
        return self._queue.qsize()

    # -- worker -------------------------------------------------------------------------------------------------
    def _collect(self, first: _Job[T, R]) -> tuple[list[_Job[T, R]], bool]:
        batch = [first]
        stop = False
        deadline = time.monotonic() + self.max_wait_s
        while len(batch) < self.max_batch:
            remaining = deadline - time.monotonic()
            try:
                job = self._queue.get(timeout=remaining) if remaining > 0 else self._queue.get_nowait()
            except queue.Empty:
                break
            if job is None:
                stop = True
                break
            batch.append(job)
        return batch, stop

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch, stop = self._collect(first)
            live = [job for job in batch if job.future.set_running_or_notify_cancel()]  # callers gone: skipped
            if live:
                self._run_batch(live)
            if stop:
                return

    def _run_batch(self, jobs: list[_Job[T, R]]) -> None:
        self.stats.batches += 1
        self.stats.items += len(jobs)
        self.stats.largest = max(self.stats.largest, len(jobs))
        try:
            results = list(self.fn([job.value for job in jobs]))
            if len(results) != len(jobs):
                raise RuntimeError(f"{self.name}: batch function returned {len(results)} results for {len(jobs)}")
        except BaseException as exc:
            if len(jobs) == 1:
                _resolve(jobs[0], exc)
                return
            log.info("%s: batch of %d failed (%s); retrying its requests one by one", self.name, len(jobs), exc)
            self.stats.isolated += 1
            for job in jobs:
                try:
                    single = list(self.fn([job.value]))
                    _resolve(job, single[0] if len(single) == 1 else RuntimeError("no result"))
                except BaseException as one:
                    _resolve(job, one)
            return
        for job, result in zip(jobs, results, strict=True):
            _resolve(job, result)


def _resolve(job: _Job[T, R], result: R | BaseException) -> None:
    if isinstance(result, BaseException):
        job.future.set_exception(result)
    else:
        job.future.set_result(result)
