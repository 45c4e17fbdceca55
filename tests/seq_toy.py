"""A made-up log whose next item is known (shared by the sequential model's and source's tests)."""

from __future__ import annotations

from retrieval.interactions import Interactions
from retrieval.seqmodel import SeqModelConfig

TINY = SeqModelConfig(max_len=8, dim=32, blocks=1, heads=1, dropout=0.0)
"""A model small enough to train in seconds."""


def cyclic_log(users: int = 40, items: int = 20, length: int = 14) -> Interactions:
    """Each user walks the items in a cycle (i -> i + 1 mod ``items``) from its own start: the next item is known."""
    u: list[str] = []
    it: list[str] = []
    ts: list[int] = []
    for user in range(users):
        for step in range(length):
            u.append(f"u{user}")
            it.append(str(100 + (user * 7 + step) % items))
            ts.append(1_000 + step)
    return Interactions.from_records(u, it, [4.0] * len(u), ts)
