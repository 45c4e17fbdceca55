"""Helpers shared by the retrieval tests (a module with a unique name, imported by conftest and tests)."""

from __future__ import annotations

import hashlib
import re
import socket
from collections.abc import Sequence

import numpy as np


class FakeEmbedder:
    """Deterministic bag-of-words hashing embedder (64-d, normalised) that counts its work."""

    def __init__(self, name: str = "fake-hash", dim: int = 64) -> None:
        self._id = f"{name}-{dim}"
        self._dim = dim
        self.calls = 0
        self.texts_embedded = 0

    @property
    def id(self) -> str:
        return self._id

    @property
    def dim(self) -> int:
        return self._dim

    def embed(self, texts: Sequence[str], *, progress: bool | None = None) -> np.ndarray:
        self.calls += 1
        self.texts_embedded += len(texts)
        out = np.zeros((len(texts), self._dim), np.float32)
        for row, text in enumerate(texts):
            for word in re.findall(r"\w+", text.lower()):
                digest = hashlib.md5(word.encode()).digest()
                out[row, digest[0] % self._dim] += 1.0 if digest[1] % 2 else -1.0
            out[row, -1] += 0.01  # never the zero vector
        return out / np.linalg.norm(out, axis=1, keepdims=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
