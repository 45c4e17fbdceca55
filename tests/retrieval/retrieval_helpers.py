"""Helpers shared by the retrieval tests (a module with a unique name, imported by conftest and tests)."""

from __future__ import annotations

import itertools

from testkit import HashEmbedder, free_port


class FakeEmbedder(HashEmbedder):
    """The hashing embedder under the retrieval tests' default id (``fake-hash-64``)."""

    def __init__(self, name: str = "fake-hash", dim: int = 64) -> None:
        super().__init__(name, dim)


def assert_ann_top_k(got: list[tuple[str, float]], sims: dict[str, float], k: int, tol: float = 1e-3) -> None:
    """``got`` (id, similarity) from an approximate (HNSW) index is a valid top-``k`` of the exact ``sims``:

    - ``k`` distinct ids, each returned similarity equal to its exact one, in non-increasing order;
    - every returned id is within ``tol`` of the exact k-th similarity (near-ties may swap places or trade the
      last slot);
    - every id clearly above the k-th (by more than ``tol``) is returned (nothing the index must find is missed).
    """
    ids = [i for i, _ in got]
    assert len(ids) == k and len(set(ids)) == k, ids
    for item_id, score in got:
        assert abs(score - sims[item_id]) < 1e-4, (item_id, score, sims[item_id])
    scores = [s for _, s in got]
    assert all(a >= b - 1e-6 for a, b in itertools.pairwise(scores)), scores
    kth = sorted(sims.values(), reverse=True)[k - 1]
    assert all(sims[i] >= kth - tol for i in ids), [(i, sims[i], kth) for i in ids]
    sure = {i for i, s in sims.items() if s > kth + tol}
    assert sure <= set(ids), f"missed {sorted(sure - set(ids))} (above the k-th similarity {kth:.5f} by > {tol})"


__all__ = ["FakeEmbedder", "assert_ann_top_k", "free_port"]
