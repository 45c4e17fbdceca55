"""Evaluation protocols: how cases are cut from a dataset and which candidates the ranker sees.

Splits (interaction datasets): ``temporal`` = leave-last-positive-out (the user's last interaction rated
>= ``min_rating``, and everything after it, is held out), ``random`` = one random positive per user held out
(for logs without timestamps), ``loo`` = the standard leave-one-out protocol of the sequential-recommendation
literature (every interaction counts, 5-core filter, last item = test, second to last = validation; see
:mod:`eval.loo`, which also ranks only the filtered items). Users need ``min_history`` earlier interactions;
``users`` samples them with ``seed``; ``user_ids`` restricts them to a list. Candidates: ``full`` = the
recommender's own retrieval over the whole catalog; ``sampled`` = the held-out items plus ``n_negatives`` unseen
items (uniform or popularity-weighted, seeded), shuffled.

Parts: ``test`` (the default) evaluates the held-out targets. ``validation`` never touches them: the test targets
of every eligible user are removed first, then the same split is cut again from what is left (the target is the
user's last train positive, the history what came before it). Settings such as a blend weight are chosen there,
on users the model was not trained on (``user_ids`` = the training run's ``val_users.txt``), then confirmed once
on the test part.
"""

from __future__ import annotations

import dataclasses
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from agent.errors import InputError
from eval.datasets import EvalCase, EvalDataset
from retrieval.interactions import Interactions

__all__ = ["Protocol", "Split", "make_split", "sample_candidates", "select_users"]


class Protocol(BaseModel):
    model_config = ConfigDict(extra="forbid")

    split: Literal["temporal", "ratio", "random", "loo"] = "temporal"
    min_rating: float = Field(4.0, description="Ratings >= this are positives (held-out targets).")
    min_history: int = Field(5, ge=0, description="Earlier interactions a user needs to be evaluated.")
    test_ratio: float = Field(
        0.2, gt=0, lt=1, description="split=ratio: the latest share of each user's interactions held out."
    )
    users: int | None = Field(None, ge=1, description="Sample this many users/cases (None: all).")
    seed: int = 0
    candidates: Literal["full", "sampled"] = "full"
    n_negatives: int = Field(99, ge=1, description="Sampled protocol: negatives per case.")
    negatives: Literal["random", "popularity"] = "random"
    ks: tuple[int, ...] = (10, 20)
    n_candidates: int | None = Field(None, ge=1, le=500, description="Fused candidates (full protocol).")
    part: Literal["test", "validation"] = "test"
    user_ids: tuple[str, ...] | None = Field(None, description="Evaluate only these users (then --users samples).")
    kcore: int = Field(5, ge=1, description="split=loo: items, then users, with fewer interactions are removed.")

    @model_validator(mode="after")
    def _loo_cutoffs(self) -> Protocol:
        """The loo protocol reports at 5/10/20 unless cutoffs were given."""
        if self.split == "loo" and "ks" not in self.model_fields_set:
            self.ks = (5, 10, 20)
        return self

    @property
    def k(self) -> int:
        return max(self.ks)

    def metric_names(self) -> list[str]:
        names = ["ndcg", "hit_rate", "recall", "mrr", "precision", "map"]
        return [f"{m}@{k}" for k in self.ks for m in names]


@dataclass
class Split:
    """The cases to evaluate and the interactions the recommender may see (train; None for conversations)."""

    cases: list[EvalCase]
    train: Interactions | None
    candidates: dict[str, list[str]] | None = None  # sampled protocol: case id -> candidate ids
    notes: dict[str, int | float | str] | None = None
    items: frozenset[str] | None = None  # the ranked universe when narrower than the catalog (loo: the k-core)


def _validation_split(dataset: EvalDataset, protocol: Protocol) -> Split:
    """The validation part: every eligible user's test target removed, then the split cut again from the rest."""
    if dataset.kind != "interactions":
        raise InputError(
            f"--part validation needs an interaction log; {dataset.name} is a conversation dataset",
            hint="evaluate conversation datasets on their turns (drop --part), or hold turns out yourself",
        )
    outer = make_split(dataset, protocol.model_copy(update={"part": "test", "users": None, "user_ids": None,
                                                             "candidates": "full"}))  # fmt: skip
    inner = make_split(
        dataclasses.replace(dataset, interactions=outer.train), protocol.model_copy(update={"part": "test"})
    )
    inner.notes = {**(inner.notes or {}), "part": "validation", "test_targets_removed": len(outer.cases)}
    return inner


def _only(
    users: list[str], wanted: Sequence[str], log: Interactions, why: str
) -> tuple[list[str], dict[str, int | float | str]]:
    """``users`` restricted to ``wanted``, with counts of the ids that are unknown or not eligible."""
    want = set(wanted)
    kept = [u for u in users if u in want]
    known = set(log.user_ids)
    notes: dict[str, int | float | str] = {
        "user_ids_given": len(want),
        "user_ids_evaluated": len(kept),
        "user_ids_unknown": len(want - known),
        "user_ids_not_eligible": len(want & known) - len(kept),
    }
    if not kept:
        raise InputError(
            f"none of the {len(want)} user ids given is evaluable: {notes['user_ids_unknown']} are not in the "
            f"interaction log, {notes['user_ids_not_eligible']} are not eligible ({why})",
            hint="check that the ids file belongs to this dataset (one user id per line)",
        )
    return kept, notes


def select_users(
    users: list[str], log: Interactions, protocol: Protocol, *, why: str
) -> tuple[list[str], dict[str, int | float | str]]:
    """The eligible ``users`` restricted to ``protocol.user_ids`` (``why`` names what makes a known user not
    eligible, for the error), then sampled down to ``protocol.users`` with ``protocol.seed``; in log order."""
    notes: dict[str, int | float | str] = {}
    if protocol.user_ids is not None:
        users, notes = _only(users, protocol.user_ids, log, why)
    if protocol.users is not None and protocol.users < len(users):
        users = sorted(random.Random(protocol.seed).sample(users, protocol.users), key=log.user_index.__getitem__)
    return users, notes


def _eligible_users(log: Interactions, protocol: Protocol) -> list[str]:
    out = []
    for user in log.user_ids:
        rows = log._rows(user)
        ratings = log.ratings[rows]
        positives = np.nonzero(ratings >= protocol.min_rating)[0]
        if protocol.split == "temporal":
            ok = len(positives) > 0 and positives[-1] >= max(protocol.min_history, 1)
        elif protocol.split == "ratio":
            cut = _ratio_cut(len(ratings), protocol.test_ratio)
            ok = cut >= max(protocol.min_history, 1) and bool(np.any(positives >= cut))
        else:
            ok = len(positives) > 0 and len(ratings) - 1 >= max(protocol.min_history, 1)
        if ok:
            out.append(user)
    return out


def _ratio_cut(n: int, ratio: float) -> int:
    """Index of the first held-out interaction of a user with ``n`` (time-ordered) interactions."""
    return n - max(1, math.ceil(ratio * n))


def _ratio_holdout(
    log: Interactions, users: Sequence[str], protocol: Protocol
) -> tuple[Interactions, dict[str, list[str]]]:
    """Per-user ratio split: the latest ``test_ratio`` of each user's interactions leave the train log; the
    positives among them are that user's gold items."""
    keep = np.ones(len(log), bool)
    held: dict[str, list[str]] = {}
    for user in users:
        rows = log._rows(user)
        cut = _ratio_cut(rows.stop - rows.start, protocol.test_ratio)
        keep[rows.start + cut : rows.stop] = False
        test = range(rows.start + cut, rows.stop)
        held[user] = [log.item_ids[int(log.items[i])] for i in test if log.ratings[i] >= protocol.min_rating]
    return log.subset(keep), held


def _random_holdout(log: Interactions, users: Sequence[str], protocol: Protocol) -> tuple[Interactions, dict[str, str]]:
    rng = random.Random(protocol.seed)
    keep = np.ones(len(log), bool)
    held: dict[str, str] = {}
    for user in users:
        rows = log._rows(user)
        positives = np.nonzero(log.ratings[rows] >= protocol.min_rating)[0]
        pick = rows.start + int(positives[rng.randrange(len(positives))])
        keep[pick] = False
        held[user] = log.item_ids[int(log.items[pick])]
    return log.subset(keep), held


def make_split(dataset: EvalDataset, protocol: Protocol) -> Split:
    """Cases (and the train log) of ``dataset`` under ``protocol``; InputError when nothing is left."""
    if protocol.split == "loo":
        from eval.loo import loo_split

        split = loo_split(dataset, protocol)
    elif protocol.part == "validation":
        return _validation_split(dataset, protocol)
    elif dataset.kind == "conversations":
        cases = list(dataset.cases)
        if protocol.users is not None and protocol.users < len(cases):
            cases = random.Random(protocol.seed).sample(cases, protocol.users)
            cases.sort(key=lambda c: c.case_id)
        split = Split(cases=cases, train=None)
    else:
        log = dataset.interactions
        if log is None or len(log) == 0:
            raise InputError(f"dataset {dataset.name} has no interactions", hint="give a ratings file")
        if bool(np.isnan(log.ratings).all()):
            raise InputError(
                f"--split {protocol.split} needs ratings to pick positives (>= --min-rating), and the interaction "
                f"log of {dataset.name} has none (no rating column)",
                hint="use --split loo (every interaction counts), or map the log's rating column "
                "(rating = ... in --interactions-mapping)",
            )
        users = _eligible_users(log, protocol)
        if not users:
            raise InputError(
                f"empty split: no user of {dataset.name} has a positive (rating >= {protocol.min_rating}) after at "
                f"least {protocol.min_history} earlier interactions",
                hint="lower --min-history or --min-rating, or check the rating scale of the log",
            )
        why = f"no positive (rating >= {protocol.min_rating}) after {protocol.min_history} earlier interactions"
        users, notes = select_users(users, log, protocol, why=why)
        golds: dict[str, list[str]]
        if protocol.split == "temporal":
            train, last = log.holdout_last_positive(protocol.min_rating, users=users)
            golds = {user: [item] for user, item in last.items()}
        elif protocol.split == "ratio":
            train, golds = _ratio_holdout(log, users, protocol)
        else:
            train, one = _random_holdout(log, users, protocol)
            golds = {user: [item] for user, item in one.items()}
        cases = [
            EvalCase(case_id=user, user_id=user, history=train.history(user), gold=dict.fromkeys(items, 1))
            for user, items in golds.items()
        ]
        split = Split(cases=cases, train=train, notes=notes or None)
    if not split.cases:
        raise InputError(f"empty split for {dataset.name}", hint="check the protocol options (users, min history)")
    if protocol.candidates == "sampled":
        split.candidates = sample_candidates(split, dataset, protocol)
    return split


def sample_candidates(split: Split, dataset: EvalDataset, protocol: Protocol) -> dict[str, list[str]]:
    """Per case: its gold items plus ``n_negatives`` items it has not seen, uniform or by train popularity
    (seeded per case id, so a case gets the same set whatever the other cases), shuffled."""
    catalog = sorted(split.items if split.items is not None else dataset.items)
    index = {item: i for i, item in enumerate(catalog)}
    weights = np.ones(len(catalog))
    if protocol.negatives == "popularity":
        if split.train is None:
            raise InputError("popularity-weighted negatives need an interaction log", hint="use --negatives random")
        counts = split.train.popularity()
        for item_id, count in zip(split.train.item_ids, counts, strict=True):
            if item_id in index:
                weights[index[item_id]] += float(count)
    out: dict[str, list[str]] = {}
    for case in split.cases:
        blocked = set(case.gold) | {h.item_id for h in case.history} | set(case.liked) | set(case.exclude)
        free = np.array([i for i, item in enumerate(catalog) if item not in blocked])
        n = min(protocol.n_negatives, len(free))
        if n < protocol.n_negatives:
            raise InputError(
                f"case {case.case_id}: only {len(free)} unseen items for {protocol.n_negatives} negatives",
                hint="lower --negatives-n",
            )
        rng = np.random.default_rng([protocol.seed, _stable(case.case_id)])
        p = weights[free] / weights[free].sum()
        picked = rng.choice(free, size=n, replace=False, p=p)
        ids = list(case.gold) + [catalog[int(i)] for i in picked]
        rng.shuffle(ids)  # type: ignore[arg-type]
        out[case.case_id] = ids
    return out


def _stable(text: str) -> int:
    import hashlib

    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")
