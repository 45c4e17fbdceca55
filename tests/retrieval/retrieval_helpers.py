"""Helpers shared by the retrieval tests (a module with a unique name, imported by conftest and tests)."""

from __future__ import annotations

from testkit import HashEmbedder, free_port


class FakeEmbedder(HashEmbedder):
    """The hashing embedder under the retrieval tests' default id (``fake-hash-64``)."""

    def __init__(self, name: str = "fake-hash", dim: int = 64) -> None:
        super().__init__(name, dim)


__all__ = ["FakeEmbedder", "free_port"]
