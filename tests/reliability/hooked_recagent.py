"""`python hooked_recagent.py MARKERS ARGS...`: run `recagent ARGS...` with phase markers for the kill-9 tests.

Before each embedding of items to store, ``MARKERS/embed-start`` is created; before each Chroma upsert call
``MARKERS/write-start-N`` is created, and ``MARKERS/write-end-N`` once that call returned. A test that kills the
process as soon as ``write-start-1`` appears, and then finds no ``write-end-1``, knows the kill landed inside the
write (not before it, not after it)."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any


def _mark(folder: Path, name: str) -> None:
    fd = os.open(folder / name, os.O_CREAT | os.O_WRONLY, 0o644)
    os.fsync(fd)
    os.close(fd)


def install(folder: Path) -> None:
    from chromadb.api.models.Collection import Collection

    from retrieval.store import ItemCollection

    real_upsert = Collection.upsert
    real_write = ItemCollection._write
    calls = [0]

    def upsert(self: Any, *args: Any, **kwargs: Any) -> Any:
        calls[0] += 1
        n = calls[0]
        _mark(folder, f"write-start-{n}")
        out = real_upsert(self, *args, **kwargs)
        _mark(folder, f"write-end-{n}")
        return out

    def write(self: Any, *args: Any, **kwargs: Any) -> Any:
        _mark(folder, "embed-start")
        return real_write(self, *args, **kwargs)

    Collection.upsert = upsert  # type: ignore[method-assign]
    ItemCollection._write = write  # type: ignore[method-assign]


if __name__ == "__main__":
    install(Path(sys.argv[1]))
    sys.argv = ["recagent", *sys.argv[2:]]
    from recagent.cli import main

    main()
