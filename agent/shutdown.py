"""A clean end for long-running commands (`recagent serve`, `recagent eval run`, chat, ...).

The in-process vLLM engine runs its model in child processes (``VLLM::EngineCore``, ``VLLM::Worker``). SIGTERM's
default action kills the Python process on the spot, and those children, reparented to init, keep running (and
holding memory). Within :func:`graceful_shutdown` SIGTERM ends the command the way Ctrl-C does: ``SystemExit``
in the main thread, ``finally`` blocks and the server's shutdown run, the engines are closed, and any child process
still alive after a grace period is terminated, then killed.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

log = logging.getLogger(__name__)

__all__ = ["close_engines", "graceful_shutdown", "reap_children"]


def close_engines() -> None:
    """Close the in-process vLLM engines this process built (if it built any)."""
    vllm_local = sys.modules.get("agent.llm.vllm_local")
    if vllm_local is not None:
        vllm_local.close_all()


def reap_children(grace_s: float = 10.0) -> int:
    """Terminate the child processes (recursively) still alive, kill those that outlive ``grace_s``; returns how
    many there were."""
    import psutil

    try:
        children = psutil.Process().children(recursive=True)
    except psutil.Error:
        return 0
    for child in children:
        try:
            child.terminate()
        except psutil.Error:
            continue
    _, stuck = psutil.wait_procs(children, timeout=grace_s)
    for child in stuck:
        try:
            child.kill()
        except psutil.Error:
            continue
    if stuck:
        psutil.wait_procs(stuck, timeout=grace_s)
    if children:
        log.info("stopped %d child process(es) left at exit", len(children))
    return len(children)


def _exit_on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


@contextmanager
def graceful_shutdown(grace_s: float = 10.0) -> Iterator[None]:
    """Within: SIGTERM raises ``SystemExit(143)`` in the main thread. On the way out (normal end, error, SIGTERM
    or Ctrl-C): the in-process engines are closed and no child process is left behind."""
    main = threading.current_thread() is threading.main_thread()
    previous = signal.getsignal(signal.SIGTERM) if main else None
    if main:
        signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        yield
    finally:
        if main:
            signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)
        try:
            close_engines()
        finally:
            reap_children(grace_s)
