"""Fit the learned ranker (LightGBM lambdarank) on the groups of :mod:`train.ltr_data` and write its folder.

Early stopping watches NDCG@10 on a held-out slice of the validation users (never fitted on); the folder holds
``model.txt`` (the booster at its best iteration) and ``manifest.json`` (settings, feature names and importances,
the served log's :func:`~retrieval.fitted.log_fingerprint`, data hashes, split, counts, timing), which
:class:`agent.rerank.learned.LearnedModel` reads back.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field
from tqdm import tqdm

from agent.errors import InputError
from agent.rerank.learned import LLM_FEATURE, MANIFEST_FILE, MODEL_FILE
from eval import metrics as M
from retrieval.fitted import log_fingerprint
from retrieval.ltr_features import feature_matrix, feature_names
from train.ltr_data import LtrData, LtrDataConfig, RankGroupRows

__all__ = ["LtrFitConfig", "LtrResult", "check_out", "fit_ranker", "group_ndcg"]


class LtrFitConfig(BaseModel):
    """LightGBM settings of the ranker (lambdarank objective, NDCG@10 watched for early stopping)."""

    model_config = ConfigDict(extra="forbid")

    rounds: int = Field(500, ge=1, description="Most boosting rounds.")
    patience: int = Field(30, ge=1, description="Stop after N rounds without a better early-stopping NDCG@10.")
    learning_rate: float = Field(0.05, gt=0, le=1)
    num_leaves: int = Field(15, ge=2)
    min_data_in_leaf: int = Field(20, ge=1)
    feature_fraction: float = Field(0.9, gt=0, le=1)
    lambda_l2: float = Field(1.0, ge=0)
    threads: int = Field(2, ge=1, description="LightGBM threads.")
    seed: int = 0

    def params(self) -> dict[str, Any]:
        return {
            "objective": "lambdarank",
            "metric": "ndcg",
            "ndcg_eval_at": [10],
            "learning_rate": self.learning_rate,
            "num_leaves": self.num_leaves,
            "min_data_in_leaf": self.min_data_in_leaf,
            "feature_fraction": self.feature_fraction,
            "lambda_l2": self.lambda_l2,
            "num_threads": self.threads,
            "seed": self.seed,
            "deterministic": True,
            "force_col_wise": True,
            "verbosity": -1,
        }


@dataclass
class LtrResult:
    out: Path
    manifest: dict[str, Any]


def _dataset(groups: Sequence[RankGroupRows], names: list[str]) -> tuple[np.ndarray, np.ndarray, list[int]]:
    rows = [r for g in groups for r in g.rows]
    labels = np.array([lab for g in groups for lab in g.labels], np.float64)
    return feature_matrix(rows, names), labels, [len(g.rows) for g in groups]


def group_ndcg(groups: Sequence[RankGroupRows], scores: Sequence[np.ndarray] | None, k: int = 10) -> float:
    """Mean NDCG@k of the groups ordered by ``scores`` (None: the fused order)."""
    values, name = [], f"ndcg@{k}"
    for i, g in enumerate(groups):
        n = len(g.labels)
        order = range(n) if scores is None else sorted(range(n), key=lambda j: (-scores[i][j], j))
        ranked = [g.candidate_ids[j] for j in order]
        values.append(M.per_case({"c": dict.fromkeys(g.target_ids, 1)}, {"c": ranked}, [name])["c"][name])
    return float(np.mean(values)) if values else 0.0


class _Progress:
    """A tqdm bar over boosting rounds (a LightGBM callback)."""

    def __init__(self, total: int, enabled: bool) -> None:
        self.bar = tqdm(total=total, desc="boosting", unit="round", disable=not enabled, dynamic_ncols=True)

    def __call__(self, env: Any) -> None:
        self.bar.update(1)
        if env.evaluation_result_list:
            self.bar.set_postfix(ndcg10=round(float(env.evaluation_result_list[0][2]), 4))


def check_out(out: Path, force: bool) -> None:
    """Refuse to overwrite a learned ranker unless ``force`` (called before the groups are built, and again before
    writing)."""
    if (Path(out) / MODEL_FILE).exists() and not force:
        raise InputError(f"{out} already holds a learned ranker", hint="pass --force to replace it, or pick --out")


def fit_ranker(
    data: LtrData,
    out: Path,
    *,
    data_cfg: LtrDataConfig,
    fit_cfg: LtrFitConfig,
    provenance: dict[str, Any],
    started: float,
    force: bool = False,
    progress: bool = True,
) -> LtrResult:
    """Fit, keep the best iteration, write ``model.txt`` + ``manifest.json`` into ``out``."""
    import lightgbm as lgb

    out = Path(out)
    check_out(out, force)
    names = feature_names([r for g in data.fit for r in g.rows])
    if data.llm_feature is not None and LLM_FEATURE not in names:
        names.append(LLM_FEATURE)  # every fit row missing it: still the model's column (served with the LLM on)
    x_fit, y_fit, g_fit = _dataset(data.fit, names)
    x_stop, y_stop, g_stop = _dataset(data.stop, names)
    fit_set = lgb.Dataset(x_fit, y_fit, group=g_fit, feature_name=names, free_raw_data=False)
    stop_set = lgb.Dataset(x_stop, y_stop, group=g_stop, reference=fit_set)
    bar = _Progress(fit_cfg.rounds, progress)
    t0 = time.perf_counter()
    try:
        booster = lgb.train(fit_cfg.params(), fit_set, num_boost_round=fit_cfg.rounds, valid_sets=[stop_set],
                            valid_names=["early_stop"], callbacks=[bar, lgb.early_stopping(fit_cfg.patience,
                                                                                           verbose=False)])  # fmt: skip
    finally:
        bar.bar.close()
    fit_s = time.perf_counter() - t0
    best = int(booster.best_iteration) or booster.current_iteration()
    stop_scores = [np.asarray(booster.predict(feature_matrix(g.rows, names), num_iteration=best)) for g in data.stop]
    out.mkdir(parents=True, exist_ok=True)
    booster.save_model(str(out / MODEL_FILE), num_iteration=best)
    gain = booster.feature_importance("gain", iteration=best)
    split = booster.feature_importance("split", iteration=best)
    ranked = sorted(zip(names, gain, split, strict=True), key=lambda t: -float(t[1]))
    importances = [{"feature": n, "gain": round(float(g), 4), "splits": int(s)} for n, g, s in ranked]
    manifest = {
        "kind": "ltr",
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "log_fingerprint": log_fingerprint(data.serve_log),
        "feature_names": names,
        "importances": importances,
        "data": data_cfg.model_dump(mode="json"),
        "fit": fit_cfg.model_dump(mode="json"),
        "lightgbm": {"version": lgb.__version__, "params": fit_cfg.params()},
        "best_iteration": best,
        "early_stop": {
            "groups": len(data.stop),
            "ndcg@10_fused_order": round(group_ndcg(data.stop, None), 4),
            "ndcg@10_model": round(group_ndcg(data.stop, stop_scores), 4),
        },
        "stats": data.stats,
        "llm_feature": data.llm_feature,
        "provenance": provenance,
        "timing": {"fit_seconds": round(fit_s, 2), "total_seconds": round(time.perf_counter() - started, 2)},
    }
    (out / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    return LtrResult(out, manifest)
