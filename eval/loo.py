"""The standard leave-one-out protocol (``--split loo``), as LlamaRec (and SASRec/BERT4Rec before it) cut it.

1. Every interaction counts (no rating threshold; a repeated (user, item) pair counts each time).
2. k-core filter repeated until stable: items with fewer than ``kcore`` interactions are removed, then users with
   fewer than ``kcore``, and again, until nothing changes.
3. Each user's sequence is sorted by (timestamp, item id) (item ids compared as numbers when they all are); a log
   without timestamps keeps its file order.
4. test = the last item, validation = the second to last, train = the rest.

Part ``test``: gold = the last item, history = train + validation item; the recommender's log is every user's
sequence without its test item. Part ``validation``: gold = the second-to-last item, history = train; the log is
every user's train sequence (neither the validation nor the test item of anyone). The ranked universe is the
filtered item set (:attr:`~eval.protocol.Split.items`), the history masked.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from agent.errors import InputError
from eval.datasets import EvalCase, EvalDataset
from retrieval.interactions import Interactions
from retrieval.types import HistoryEntry

if TYPE_CHECKING:
    from eval.protocol import Protocol, Split

__all__ = ["kcore_filter", "loo_split", "user_sequences"]


def kcore_filter(log: Interactions, k: int = 5) -> tuple[Interactions, dict[str, int]]:
    """``log`` restricted to its k-core: items with < ``k`` interactions removed, then users with < ``k``,
    repeated until stable. Returns the filtered log and counts (rounds, users/items/interactions before and after)."""
    keep = np.ones(len(log), bool)
    rounds = 0
    while True:
        rounds += 1
        items = np.bincount(log.items[keep], minlength=log.n_items)
        keep &= items[log.items] >= k
        users = np.bincount(log.users[keep], minlength=log.n_users)
        keep &= users[log.users] >= k
        items_after = np.bincount(log.items[keep], minlength=log.n_items)
        if not np.any((items_after > 0) & (items_after < k)):
            break
    kept = log.subset(keep)
    notes = {
        "kcore": k,
        "kcore_rounds": rounds,
        "users_before": int(np.count_nonzero(np.bincount(log.users, minlength=log.n_users))),
        "items_before": int(np.count_nonzero(np.bincount(log.items, minlength=log.n_items))),
        "interactions_before": len(log),
        "users": int(np.count_nonzero(np.bincount(kept.users, minlength=log.n_users))),
        "items": int(np.count_nonzero(np.bincount(kept.items, minlength=log.n_items))),
        "interactions": len(kept),
    }
    return kept, notes


def _item_keys(item_ids: Sequence[str]) -> np.ndarray:
    """A sort rank per item index: numeric order when every id is an integer, else string order."""
    if all(i.lstrip("-").isdigit() for i in item_ids):
        order = sorted(range(len(item_ids)), key=lambda j: int(item_ids[j]))
    else:
        order = sorted(range(len(item_ids)), key=lambda j: item_ids[j])
    ranks = np.empty(len(item_ids), np.int64)
    ranks[order] = np.arange(len(item_ids))
    return ranks


def user_sequences(log: Interactions) -> tuple[dict[int, np.ndarray], str]:
    """Row indices of each user's interactions in sequence order, and how the order was set."""
    timed = bool(np.any(log.timestamps != 0))
    keys = _item_keys(log.item_ids)
    out: dict[int, np.ndarray] = {}
    for user in range(log.n_users):
        start, stop = int(log.user_ptr[user]), int(log.user_ptr[user + 1])
        if stop == start:
            continue
        rows = np.arange(start, stop)
        if timed:  # the log is sorted by (user, time, file order): re-break time ties by item id
            rows = rows[np.lexsort((keys[log.items[rows]], log.timestamps[rows]))]
        out[user] = rows
    return out, "timestamp, then item id" if timed else "file order (the log has no timestamps)"


def loo_split(dataset: EvalDataset, protocol: Protocol) -> Split:
    """The leave-one-out split of ``dataset`` (test or validation part, see the module docstring)."""
    from eval.protocol import Split, select_users

    log = dataset.interactions
    if dataset.kind != "interactions" or log is None or len(log) == 0:
        raise InputError(
            f"--split loo needs an interaction log; {dataset.name} has none",
            hint="give a ratings file (conversation datasets are evaluated on their turns)",
        )
    core, counts = kcore_filter(log, protocol.kcore)
    if len(core) == 0:
        raise InputError(
            f"--split loo: nothing of {dataset.name} survives the {protocol.kcore}-core filter "
            f"({counts['users_before']} users, {counts['items_before']} items, {len(log)} interactions before)",
            hint="lower --kcore, or give a denser log",
        )
    sequences, order = user_sequences(core)
    drop = 2 if protocol.part == "validation" else 1  # validation: the last two items leave the log
    keep = np.ones(len(core), bool)
    golds: dict[str, str] = {}
    histories: dict[str, list[HistoryEntry]] = {}
    for user, rows in sequences.items():
        keep[rows[-drop:]] = False
        uid = core.user_ids[user]
        golds[uid] = core.item_ids[int(core.items[rows[-drop]])]
        histories[uid] = [_entry(core, int(r)) for r in rows[:-drop]]
    users, notes = select_users(list(golds), core, protocol, why=f"lost in the {protocol.kcore}-core filter")
    cases = [EvalCase(case_id=u, user_id=u, history=histories[u], gold={golds[u]: 1}) for u in users]
    items = frozenset(core.item_ids[int(i)] for i in np.unique(core.items))
    repeated = sum(golds[u] in {h.item_id for h in histories[u]} for u in users)
    notes = {**counts, **notes, "order": order, "part": protocol.part, "targets_in_history": repeated}
    if protocol.part == "validation":
        notes["test_targets_removed"] = len(sequences)
    return Split(cases=cases, train=core.subset(keep), notes=notes, items=items)


def _entry(log: Interactions, row: int) -> HistoryEntry:
    rating = float(log.ratings[row])
    stamp = int(log.timestamps[row])
    item_id = log.item_ids[int(log.items[row])]
    return HistoryEntry(item_id=item_id, rating=None if math.isnan(rating) else rating, timestamp=stamp or None)
