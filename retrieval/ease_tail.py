"""EASE above ``max_items``: the items outside the dense model get sparse EASE columns (neighbourhood ridge).

EASE's column ``j`` is the ridge regression of item ``j``'s users on every other item:
``B[-j, j] = (G[-j, -j] + l2 I)^-1 G[-j, j]`` with ``G = X^T X`` (the zero-diagonal closed form, by the block
inverse). For an item outside the dense model (the "tail") the same regression is solved on its ``k`` most
co-occurring items only: a ``k x k`` system per tail item, ``k`` weights kept. With ``k`` >= the number of other
interacted items, every one of them is a predictor and the column equals EASE's exactly
(tests/retrieval/test_ease_tail.py); memory is ``k`` weights per tail item instead of ``n`` per item, time
``k^3 / 3`` per tail item instead of ``n^3`` in all.

A user's tail scores are ``x_u W`` (``W``: items x tail items, sparse), on the same scale as the dense columns
(both are ridge-regression weights predicting an item from the user's other items). Measured in docs/benchmarks.md
(bench/ease_tail.py).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from tqdm import tqdm

__all__ = ["fit_tail", "tail_matrix"]


def fit_tail(
    matrix: sp.csc_matrix, active: np.ndarray, tail: np.ndarray, l2: float, k: int, *, progress: bool = False
) -> dict[str, np.ndarray]:
    """Sparse EASE columns of the ``tail`` item indices of the binary users x items ``matrix`` (``active``: every
    interacted item index): ``{"tail_items", "tail_indptr", "tail_indices", "tail_weights"}`` (CSC of items x tail
    items)."""
    gram = (matrix.T @ matrix).tocsr()  # symmetric: row j = column j
    gram.sort_indices()
    position = np.full(gram.shape[0], -1, dtype=np.int64)
    every = len(active) - 1 <= k  # room for every other item: the exact EASE column
    indptr = [0]
    indices: list[np.ndarray] = []
    weights: list[np.ndarray] = []
    for j in tqdm(tail, desc="EASE tail", unit="item", disable=not progress, dynamic_ncols=True):
        start, stop = gram.indptr[j], gram.indptr[j + 1]
        rows, counts = gram.indices[start:stop], gram.data[start:stop]
        if every:
            rows, counts = active, np.asarray(gram[j, active].toarray()).ravel()
        others = rows != j
        rows, counts = rows[others], counts[others]
        if len(rows) > k:  # the k most co-occurring items, ties by index
            keep = np.sort(np.lexsort((rows, -counts))[:k])
            rows, counts = rows[keep], counts[keep]
        if len(rows):
            system = _block(gram, rows, position)
            system[np.diag_indices_from(system)] += l2
            solved = np.linalg.solve(system, counts.astype(np.float64))
        else:
            solved = np.zeros(0)
        indices.append(rows.astype(np.int64))
        weights.append(solved.astype(np.float32))
        indptr.append(indptr[-1] + len(rows))
    return {
        "tail_items": np.asarray(tail, dtype=np.int64),
        "tail_indptr": np.asarray(indptr, dtype=np.int64),
        "tail_indices": np.concatenate(indices) if indices else np.zeros(0, np.int64),
        "tail_weights": np.concatenate(weights) if weights else np.zeros(0, np.float32),
    }


def _block(gram: sp.csr_matrix, rows: np.ndarray, position: np.ndarray) -> np.ndarray:
    """``gram[rows][:, rows]`` as a dense float64 array, read straight from the CSR arrays (``position``: a
    scratch array of -1, left as it was found)."""
    position[rows] = np.arange(len(rows))
    starts, lengths = gram.indptr[rows], np.diff(gram.indptr)[rows]
    offsets = np.repeat(starts - np.concatenate([[0], np.cumsum(lengths)[:-1]]), lengths)
    entries = offsets + np.arange(int(lengths.sum()))
    owner = np.repeat(np.arange(len(rows)), lengths)
    cols = position[gram.indices[entries]]
    inside = cols >= 0
    out = np.zeros((len(rows), len(rows)))
    out[owner[inside], cols[inside]] = gram.data[entries[inside]]
    position[rows] = -1
    return out


def tail_matrix(arrays: dict[str, np.ndarray], n_items: int) -> sp.csr_matrix | None:
    """The fitted tail columns as a CSR matrix (items x tail items) for ``x_u W``; None without a tail."""
    if "tail_items" not in arrays or len(arrays["tail_items"]) == 0:
        return None
    shape = (n_items, len(arrays["tail_items"]))
    return sp.csc_matrix((arrays["tail_weights"], arrays["tail_indices"], arrays["tail_indptr"]), shape=shape).tocsr()
