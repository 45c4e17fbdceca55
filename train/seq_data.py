"""Data of the sequential model: the leave-one-out split and the token sequences cut from it.

Leave-one-out (LlamaRec's preprocessing): every interaction counts (no rating threshold); a k-core filter is
repeated until stable (items with fewer than ``min_count`` interactions removed, then users with fewer than
``min_count``); each user's items sorted by (timestamp, item id); the last item is the test target, the second to
last the validation target, the rest the train sequence. A log without timestamps keeps its file order.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from agent.errors import InputError
from retrieval.interactions import Interactions
from retrieval.seqmodel import item_sort_key

__all__ = ["LooSplit", "loo_split", "training_windows"]


@dataclass
class LooSplit:
    """Per kept user (``users``): the train token sequence, the validation and test tokens.

    Tokens are ``1 + index`` into ``item_ids`` (the k-core's items in first-seen order); ``kept`` marks the rows of
    the source log that survived the k-core filter."""

    item_ids: list[str]
    users: list[str]
    train: list[list[int]]
    val: list[int]
    test: list[int]
    kept: np.ndarray
    counts: dict[str, int] = field(default_factory=dict)

    def train_log(self, log: Interactions, *, with_validation: bool = False) -> Interactions:
        """The rows of ``log`` in the train part (plus each user's validation row when ``with_validation``): the
        log a model trained on this split serves at validation (and, with the validation item, at test) time."""
        drop = 1 if with_validation else 2
        keep = self.kept.copy()
        for user in self.users:
            rows = np.nonzero(self.kept[log._rows(user)])[0] + log._rows(user).start
            ordered = sorted(rows, key=lambda r: _row_key(log, int(r)))
            keep[ordered[len(ordered) - drop :]] = False
        return log.subset(keep)


def _row_key(log: Interactions, row: int) -> tuple[int, tuple[int, int, str], int]:
    """Sequence order of a row: (timestamp, item id, file order); file order alone when the log has no times."""
    if not log.timestamps.any():
        return 0, (0, 0, ""), row
    return int(log.timestamps[row]), item_sort_key(log.item_ids[int(log.items[row])]), row


def _kcore(log: Interactions, min_count: int) -> np.ndarray:
    keep = np.ones(len(log), bool)
    while True:
        items = np.bincount(log.items[keep], minlength=log.n_items)
        keep &= items[log.items] >= min_count
        users = np.bincount(log.users[keep], minlength=log.n_users)
        keep &= users[log.users] >= min_count
        items = np.bincount(log.items[keep], minlength=log.n_items)
        if np.all(items[log.items[keep]] >= min_count):
            return keep


def loo_split(log: Interactions, *, min_count: int = 5) -> LooSplit:
    """The leave-one-out split of ``log`` (see the module docstring); InputError when no user is left."""
    if min_count < 3:
        raise InputError(f"min_count {min_count} < 3", hint="leave-one-out needs at least 3 items per user")
    kept = _kcore(log, min_count)
    item_index: dict[int, int] = {}
    users: list[str] = []
    train: list[list[int]] = []
    val: list[int] = []
    test: list[int] = []
    for user in range(log.n_users):
        start, stop = int(log.user_ptr[user]), int(log.user_ptr[user + 1])
        rows = [r for r in range(start, stop) if kept[r]]
        if not rows:
            continue
        rows.sort(key=lambda r: _row_key(log, r))
        tokens = [1 + item_index.setdefault(int(log.items[r]), len(item_index)) for r in rows]
        users.append(log.user_ids[user])
        train.append(tokens[:-2])
        val.append(tokens[-2])
        test.append(tokens[-1])
    if not users:
        raise InputError(
            f"leave-one-out: no user keeps {min_count} interactions after the {min_count}-core filter "
            f"({len(log)} interactions, {log.n_users} users)",
            hint="give a larger log, or lower the k-core threshold",
        )
    item_ids = [""] * len(item_index)
    for raw, index in item_index.items():
        item_ids[index] = log.item_ids[raw]
    counts = {"interactions_read": len(log), "interactions_kept": int(kept.sum()), "users": len(users),
              "items": len(item_ids), "train_interactions": sum(len(t) for t in train)}  # fmt: skip
    return LooSplit(item_ids=item_ids, users=users, train=train, val=val, test=test, kept=kept, counts=counts)


def training_windows(sequences: Sequence[Sequence[int]], max_len: int) -> list[list[int]]:
    """Windows of at most ``max_len + 1`` tokens (inputs + next-item labels) covering every train sequence,
    newest window first per user (its end is the sequence's end); sequences shorter than 2 tokens give none."""
    out: list[list[int]] = []
    for seq in sequences:
        end = len(seq)
        while end >= 2:
            out.append(list(seq[max(0, end - max_len - 1) : end]))
            end -= max_len
    return out
