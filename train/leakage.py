"""The leakage guard: no interaction of the evaluator's test split may reach a training example.

The test interactions are the (user, item) pairs of the full log that the split removed from its train log
(the held-out positive and, for the temporal split, everything after it). :func:`assert_no_leakage` checks every
example's history, every option (each one carries a label) and the target; the trainer calls it before the first
step and refuses to train on a leaking example set.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Protocol

from agent.errors import RecagentError
from retrieval.interactions import Interactions
from train.examples import RankExample

__all__ = [
    "LeakageError",
    "assert_no_group_leakage",
    "assert_no_leakage",
    "assert_no_pair_leakage",
    "find_group_leaks",
    "find_leaks",
    "find_pair_leaks",
    "held_out_pairs",
]


class LeakageError(RecagentError):
    """A training example holds a test-split interaction."""


class UserPair(Protocol):
    """A co-interaction pair of one user (what the embedder trains on)."""

    @property
    def user_id(self) -> str: ...

    @property
    def anchor(self) -> str: ...

    @property
    def positive(self) -> str: ...


def held_out_pairs(full: Interactions, train: Interactions) -> dict[str, set[str]]:
    """{user: items} of the pairs in ``full`` that are not in ``train`` (the split's test interactions)."""
    kept = {
        (train.user_ids[u], train.item_ids[i]) for u, i in zip(train.users.tolist(), train.items.tolist(), strict=True)
    }
    out: dict[str, set[str]] = {}
    for u, i in zip(full.users.tolist(), full.items.tolist(), strict=True):
        pair = (full.user_ids[u], full.item_ids[i])
        if pair not in kept:
            out.setdefault(pair[0], set()).add(pair[1])
    return out


def find_leaks(examples: Iterable[RankExample], forbidden: Mapping[str, set[str]]) -> list[tuple[str, str, str]]:
    """(user, item, role) of every test pair found in ``examples``; role is history, option or target."""
    leaks: list[tuple[str, str, str]] = []
    for ex in examples:
        blocked = forbidden.get(ex.user_id)
        if not blocked:
            continue
        for role, ids in (("history", ex.history_ids()), ("option", ex.option_ids()), ("target", [ex.target_id])):
            leaks.extend((ex.user_id, item, role) for item in ids if item in blocked)
    return leaks


def assert_no_leakage(examples: Iterable[RankExample], forbidden: Mapping[str, set[str]]) -> int:
    """Raise :class:`LeakageError` when an example holds a test pair; returns the number of examples checked."""
    checked = list(examples)
    _refuse(
        find_leaks(checked, forbidden),
        "the training examples",
        "build examples from the split's train log only, and drop the user's test items from the options",
    )
    return len(checked)


def find_pair_leaks(pairs: Iterable[UserPair], forbidden: Mapping[str, set[str]]) -> list[tuple[str, str, str]]:
    """(user, item, role) of every test pair found in co-interaction ``pairs``; role is anchor or positive."""
    leaks: list[tuple[str, str, str]] = []
    for pair in pairs:
        blocked = forbidden.get(pair.user_id)
        if blocked:
            leaks.extend(
                (pair.user_id, item, role)
                for role, item in (("anchor", pair.anchor), ("positive", pair.positive))
                if item in blocked
            )
    return leaks


def assert_no_pair_leakage(pairs: Iterable[UserPair], forbidden: Mapping[str, set[str]]) -> int:
    """Raise :class:`LeakageError` when a co-interaction pair holds a test interaction of its user; returns the
    number of pairs checked."""
    checked = list(pairs)
    _refuse(
        find_pair_leaks(checked, forbidden),
        "the embedder's training pairs",
        "cut pairs from the split's train log only (train.embed_pairs.build_pairs does), with the "
        "evaluator's --split/--min-rating/--min-history/--users/--seed",
    )
    return len(checked)


class RankGroup(Protocol):
    """One user's candidate list of the learned ranker (what ``recagent train ranker-ltr`` fits on)."""

    @property
    def user_id(self) -> str: ...

    @property
    def history_ids(self) -> list[str]: ...

    @property
    def candidate_ids(self) -> list[str]: ...

    @property
    def target_ids(self) -> list[str]: ...


def find_group_leaks(groups: Iterable[RankGroup], forbidden: Mapping[str, set[str]]) -> list[tuple[str, str, str]]:
    """(user, item, role) of every test pair found in learned-ranker groups; role is history, candidate or target
    (every candidate carries a label, so a test item among them leaks as much as a target)."""
    leaks: list[tuple[str, str, str]] = []
    for group in groups:
        blocked = forbidden.get(group.user_id)
        if not blocked:
            continue
        for role, ids in (("history", group.history_ids), ("candidate", group.candidate_ids),
                          ("target", group.target_ids)):  # fmt: skip
            leaks.extend((group.user_id, item, role) for item in ids if item in blocked)
    return leaks


def assert_no_group_leakage(groups: Iterable[RankGroup], forbidden: Mapping[str, set[str]]) -> int:
    """Raise :class:`LeakageError` when a learned-ranker group holds a test interaction of its user; returns the
    number of groups checked."""
    checked = list(groups)
    _refuse(
        find_group_leaks(checked, forbidden),
        "the learned ranker's training groups",
        "build the groups from the validation part only (train.ltr_data does), with the evaluator's "
        "--split/--min-rating/--min-history/--users/--seed",
    )
    return len(checked)


def _refuse(leaks: list[tuple[str, str, str]], where: str, hint: str) -> None:
    """Raise :class:`LeakageError` naming the first leaks (user, item, role) when there are any."""
    if leaks:
        shown = ", ".join(f"user {u} item {i} ({role})" for u, i, role in leaks[:5])
        raise LeakageError(f"{len(leaks)} test-split interactions reach {where}: {shown}", hint=hint)
