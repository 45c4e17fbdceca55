"""Data of the sequential model: the leave-one-out split and the token sequences cut from it.

Leave-one-out is the evaluator's (:mod:`eval.loo`, LlamaRec's preprocessing): every interaction counts; a k-core
filter repeated until stable; each user's items sorted by (timestamp, item id); the last item is the test target,
the second to last the validation target, the rest the train sequence. A log without timestamps keeps its file
order.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from agent.errors import InputError
from eval.loo import kcore_filter, user_sequences
from retrieval.interactions import Interactions

__all__ = ["LooSplit", "loo_split", "training_windows"]


@dataclass
class LooSplit:
    """Per kept user (``users``): the train token sequence, the validation and test tokens.

    Tokens are ``1 + index`` into ``item_ids`` (the k-core's items in first-seen order); ``core`` is the k-core of
    the source log and ``rows`` each kept user's rows of it in sequence order (:func:`eval.loo.user_sequences`)."""

    item_ids: list[str]
    users: list[str]
    train: list[list[int]]
    val: list[int]
    test: list[int]
    core: Interactions
    rows: list[np.ndarray]
    counts: dict[str, int] = field(default_factory=dict)

    def train_log(self, *, with_validation: bool = False) -> Interactions:
        """The train part of the k-core (plus each user's validation row when ``with_validation``): the log the
        evaluator's leave-one-out validation (test) part serves."""
        drop = 1 if with_validation else 2
        keep = np.ones(len(self.core), bool)
        for rows in self.rows:
            keep[rows[-drop:]] = False
        return self.core.subset(keep)


def loo_split(log: Interactions, *, min_count: int = 5) -> LooSplit:
    """The evaluator's leave-one-out split of ``log`` (:mod:`eval.loo`) as token sequences; InputError when no user
    is left."""
    if min_count < 3:
        raise InputError(f"min_count {min_count} < 3", hint="leave-one-out needs at least 3 items per user")
    core, _ = kcore_filter(log, min_count)
    sequences, _ = user_sequences(core)
    item_index: dict[int, int] = {}
    users: list[str] = []
    train: list[list[int]] = []
    val: list[int] = []
    test: list[int] = []
    rows_of: list[np.ndarray] = []
    for user, rows in sequences.items():
        tokens = [1 + item_index.setdefault(int(core.items[r]), len(item_index)) for r in rows]
        users.append(core.user_ids[user])
        rows_of.append(rows)
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
        item_ids[index] = core.item_ids[raw]
    counts = {"interactions_read": len(log), "interactions_kept": len(core), "users": len(users),
              "items": len(item_ids), "train_interactions": sum(len(t) for t in train)}  # fmt: skip
    return LooSplit(item_ids=item_ids, users=users, train=train, val=val, test=test, core=core, rows=rows_of,
                    counts=counts)  # fmt: skip


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
