"""Training groups of the learned ranker: the evaluator's split -> its VALIDATION targets -> fused candidates -> rows.

``serve="eval"``: the model serves the evaluator's test-part train log (what `recagent eval run` hands the
pipeline) and learns the targets of the evaluator's own ``--part validation`` split (``temporal``: each user's last
positive before the test one; ``loo``: the second-to-last item), whose train log is what the candidate sources and
the features see, exactly as the serving pipeline sees its log. ``serve="full"``: the model serves the whole log
and learns the targets of its test-part split. Test targets never enter: they are not in the validation part's log
or histories, they are excluded from every candidate list, and :func:`train.leakage.assert_no_group_leakage`
checks every group before fitting.

With the LLM feature (``llm=``, :mod:`train.ltr_llm`), the groups kept for fitting and early stopping (those with
their target among the candidates) get the LLM strategy's score after that check: its prompts hold the group's
own history and candidates only.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from pydantic import Field
from tqdm import tqdm

from agent.errors import InputError
from agent.settings import Settings
from eval.datasets import EvalCase, EvalDataset
from eval.protocol import Split, make_split
from retrieval.candidates import CandidateGenerator
from retrieval.embed import Embedder
from retrieval.fitted import log_fingerprint
from retrieval.interactions import Interactions
from retrieval.ltr_features import FeatureBuilder, Row
from retrieval.store import ItemCollection
from retrieval.types import UserQuery
from train.config import SplitOptions
from train.eval_log import eval_train_log
from train.leakage import assert_no_group_leakage, held_out_pairs
from train.ltr_llm import LtrLlm, add_llm_scores

__all__ = ["LtrData", "LtrDataConfig", "RankGroupRows", "build_ltr_data", "group_rows"]


class LtrDataConfig(SplitOptions):
    """The evaluator's protocol options (shared with the evaluation) and how the groups are cut."""

    serve: Literal["eval", "full"] = Field(
        "eval",
        description="Log the model serves: eval = the evaluator's test-part train log (what `recagent eval run` "
        "hands the pipeline with these protocol options); full = the whole log (production).",
    )
    candidates: int = Field(100, ge=2, le=500, description="Fused candidates per user (rows per group).")
    early_stop_share: float = Field(0.2, gt=0, lt=1, description="Share of validation users held out to stop early.")
    sample_seed: int = Field(0, description="Seed of the early-stopping slice.")


@dataclass
class RankGroupRows:
    """One user's fused candidates with their feature rows and labels (1 = the validation target)."""

    user_id: str
    history_ids: list[str]
    candidate_ids: list[str]
    target_ids: list[str]
    rows: list[Row]
    labels: list[int]


@dataclass
class LtrData:
    """The fit and early-stopping groups and where they came from."""

    fit: list[RankGroupRows]
    stop: list[RankGroupRows]
    serve_log: Interactions
    forbidden: dict[str, set[str]]
    stats: dict[str, Any] = field(default_factory=dict)
    llm_feature: dict[str, Any] | None = None
    """The LLM feature's record (strategy, groups scored / missing, calls, time); None without it."""


def group_rows(
    case: EvalCase,
    generator: CandidateGenerator,
    features: FeatureBuilder,
    *,
    n: int,
    exclude: set[str],
) -> RankGroupRows:
    """The fused candidates of one inner-split case (``exclude``: the user's test items) and their rows."""
    query = UserQuery(user_id=case.user_id, history=case.history, n=n, exclude=sorted(exclude))
    candidates = generator.generate(query)
    rows = features.rows(case.history, candidates)
    ids = [c.item_id for c in candidates]
    return RankGroupRows(
        user_id=case.user_id or case.case_id,
        history_ids=[h.item_id for h in case.history],
        candidate_ids=ids,
        target_ids=sorted(case.gold),
        rows=rows,
        labels=[int(i in case.gold) for i in ids],
    )


def _logs(dataset: EvalDataset, cfg: LtrDataConfig) -> tuple[Interactions, Split]:
    """The served log and the split whose targets the model learns: with ``serve="eval"`` the evaluator's
    test-part train log and its ``--part validation`` split (all users); with ``serve="full"`` the whole log and its
    test-part split (the targets are then the last ones of the full log)."""
    assert dataset.interactions is not None
    protocol = cfg.protocol().model_copy(update={"users": None})
    if cfg.serve == "full":
        return dataset.interactions, make_split(dataset, protocol)
    return eval_train_log(dataset, cfg), make_split(dataset, protocol.model_copy(update={"part": "validation"}))


def build_ltr_data(
    settings: Settings,
    dataset: EvalDataset,
    cfg: LtrDataConfig,
    collection: ItemCollection,
    embedder: Embedder,
    *,
    progress: bool = True,
    llm: LtrLlm | None = None,
) -> LtrData:
    """Split, fuse every validation user's candidates, label them, run the leakage guard, (``llm``: score the kept
    groups' candidates with the LLM strategy), slice for early stopping."""
    if dataset.kind != "interactions" or dataset.interactions is None:
        raise InputError(f"{dataset.name} has no interaction log", hint="give --interactions (a ratings file)")
    serve_log, inner = _logs(dataset, cfg)
    forbidden = held_out_pairs(dataset.interactions, serve_log)
    assert inner.train is not None
    fusion = settings.fusion_config()
    generator = CandidateGenerator.default(collection, embedder, inner.train, fusion)
    features = FeatureBuilder(inner.train, collection)
    groups = []
    for case in tqdm(inner.cases, desc="ranker groups", unit="user", disable=not progress, dynamic_ncols=True):
        user = case.user_id or case.case_id
        groups.append(group_rows(case, generator, features, n=cfg.candidates, exclude=forbidden.get(user, set())))
    assert_no_group_leakage(groups, forbidden)
    usable = [g for g in groups if any(g.labels)]
    if len(usable) < 4:
        raise InputError(
            f"only {len(usable)} of {len(groups)} validation users have their target among the {cfg.candidates} "
            "fused candidates: too few to learn a ranking",
            hint="raise --candidates, or give a larger interaction log",
        )
    llm_feature = None
    if llm is not None:
        by_user = {c.user_id or c.case_id: c for c in inner.cases}
        llm_feature = add_llm_scores(settings, usable, by_user, collection, llm, progress=progress)
    order = sorted(usable, key=lambda g: g.user_id)
    random.Random(f"{cfg.sample_seed}:ltr").shuffle(order)
    n_stop = max(1, round(cfg.early_stop_share * len(order)))
    stats = {
        "validation_users": len(groups),
        "groups_with_target": len(usable),
        "groups_without_target": len(groups) - len(usable),
        "candidate_recall": round(len(usable) / len(groups), 4),
        "rows": int(sum(len(g.labels) for g in usable)),
        "fit_groups": len(order) - n_stop,
        "early_stop_groups": n_stop,
        "test_interactions_kept_out": sum(len(v) for v in forbidden.values()),
        "serve_log_rows": len(serve_log),
        "inner_train_rows": len(inner.train),
        "inner_log_fingerprint": log_fingerprint(inner.train),
        "mean_candidates": float(np.mean([len(g.labels) for g in groups])) if groups else 0.0,
    }
    return LtrData(order[n_stop:], order[:n_stop], serve_log, forbidden, stats, llm_feature)
