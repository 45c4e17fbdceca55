"""Paired statistics on per-case metrics: bootstrap confidence intervals, permutation tests, winner tables.

Every function takes per-case values of two arms on the SAME cases, in the same order (``paired`` builds them
from ``{case_id: value}`` dicts). Resampling is seeded, so a report is reproducible.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from agent.errors import InputError
from eval.text_metrics import case_rates

__all__ = [
    "bootstrap_ci",
    "bootstrap_quantile_ci",
    "bootstrap_ratio_ci",
    "compare_arms",
    "compare_runs",
    "paired",
    "paired_bootstrap_ci",
    "paired_ratio_diff_ci",
    "permutation_test",
    "winner_table",
]


def bootstrap_ci(
    values: Sequence[float] | np.ndarray, *, n: int = 1000, alpha: float = 0.05, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap CI of the mean."""
    x = np.asarray(values, dtype=np.float64)
    if len(x) == 0:
        return (float("nan"), float("nan"))
    if len(x) == 1 or np.all(x == x[0]):
        return (float(x.mean()), float(x.mean()))
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, len(x), size=(n, len(x)))].mean(axis=1)
    return (float(np.quantile(means, alpha / 2)), float(np.quantile(means, 1 - alpha / 2)))


def bootstrap_ratio_ci(
    nums: Sequence[float], dens: Sequence[float], *, n: int = 1000, alpha: float = 0.05, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap CI of the pooled ratio sum(nums) / sum(dens), resampling cases (a case's numerator and
    denominator kept together: the cluster bootstrap of a share of items). Resamples with a zero denominator are
    dropped; NaN for no data."""
    num, den = np.asarray(nums, dtype=np.float64), np.asarray(dens, dtype=np.float64)
    if len(num) != len(den):
        raise InputError(f"ratio samples differ in length ({len(num)} vs {len(den)})", hint="one pair per case")
    if len(num) == 0 or den.sum() == 0:
        return (float("nan"), float("nan"))
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(num), size=(n, len(num)))
    tops, bottoms = num[idx].sum(axis=1), den[idx].sum(axis=1)
    ratios = tops[bottoms > 0] / bottoms[bottoms > 0]
    return (float(np.quantile(ratios, alpha / 2)), float(np.quantile(ratios, 1 - alpha / 2)))


def paired_ratio_diff_ci(
    nums_a: Sequence[float],
    dens_a: Sequence[float],
    nums_b: Sequence[float],
    dens_b: Sequence[float],
    *,
    n: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap CI of the difference of two pooled ratios sum(nums_a) / sum(dens_a) - sum(nums_b) /
    sum(dens_b) measured on the SAME cases: each resample draws cases once for both arms (e.g. the paired difference
    of a micro F1). A ratio whose resampled denominator is 0 counts as 0; NaN for no cases."""
    arrays = [np.asarray(x, dtype=np.float64) for x in (nums_a, dens_a, nums_b, dens_b)]
    if len({len(x) for x in arrays}) != 1:
        raise InputError("paired ratio samples differ in length", hint="one numerator and denominator per case and arm")
    if len(arrays[0]) == 0:
        return (float("nan"), float("nan"))
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(arrays[0]), size=(n, len(arrays[0])))
    sums = [x[idx].sum(axis=1) for x in arrays]
    ratio_a = np.divide(sums[0], sums[1], out=np.zeros(n), where=sums[1] > 0)
    ratio_b = np.divide(sums[2], sums[3], out=np.zeros(n), where=sums[3] > 0)
    diff = ratio_a - ratio_b
    return (float(np.quantile(diff, alpha / 2)), float(np.quantile(diff, 1 - alpha / 2)))


def bootstrap_quantile_ci(
    values: Sequence[float], q: float, *, n: int = 1000, alpha: float = 0.05, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap CI of the ``q``-th percentile (e.g. 50 for the median); NaN for no values."""
    x = np.asarray(values, dtype=np.float64)
    if len(x) == 0:
        return (float("nan"), float("nan"))
    rng = np.random.default_rng(seed)
    stats = np.percentile(x[rng.integers(0, len(x), size=(n, len(x)))], q, axis=1)
    return (float(np.quantile(stats, alpha / 2)), float(np.quantile(stats, 1 - alpha / 2)))


def paired_bootstrap_ci(
    a: Sequence[float], b: Sequence[float], *, n: int = 1000, alpha: float = 0.05, seed: int = 0
) -> tuple[float, float]:
    """CI of mean(a - b) resampling cases (pairs kept together)."""
    if len(a) != len(b):
        raise InputError(f"paired samples differ in length ({len(a)} vs {len(b)})", hint="compare the same cases")
    return bootstrap_ci(np.asarray(a, np.float64) - np.asarray(b, np.float64), n=n, alpha=alpha, seed=seed)


def permutation_test(a: Sequence[float], b: Sequence[float], *, n: int = 1000, seed: int = 0) -> float:
    """Two-sided paired permutation (sign-flip) test of mean(a - b) = 0; p-value with the +1 correction."""
    if len(a) != len(b):
        raise InputError(f"paired samples differ in length ({len(a)} vs {len(b)})", hint="compare the same cases")
    d = np.asarray(a, np.float64) - np.asarray(b, np.float64)
    if len(d) == 0 or np.all(d == 0):
        return 1.0
    observed = abs(d.mean())
    rng = np.random.default_rng(seed)
    signs = rng.choice(np.array([-1.0, 1.0]), size=(n, len(d)))
    null = np.abs((signs * d).mean(axis=1))
    return float((1 + np.sum(null >= observed - 1e-12)) / (n + 1))


def paired(a: Mapping[str, float], b: Mapping[str, float]) -> tuple[list[str], list[float], list[float]]:
    """Cases both arms scored (sorted ids) and the two value lists."""
    common = sorted(set(a) & set(b))
    return common, [a[c] for c in common], [b[c] for c in common]


def compare_arms(
    a: Mapping[str, float], b: Mapping[str, float], *, n: int = 1000, seed: int = 0, alpha: float = 0.05
) -> dict[str, Any]:
    """Mean of each arm, the difference a - b with its paired bootstrap CI, and the permutation p-value."""
    cases, xa, xb = paired(a, b)
    if not cases:
        raise InputError("the two arms share no case", hint="compare runs over the same dataset and protocol")
    lo, hi = paired_bootstrap_ci(xa, xb, n=n, alpha=alpha, seed=seed)
    p = permutation_test(xa, xb, n=n, seed=seed)
    return {
        "cases": len(cases),
        "mean_a": float(np.mean(xa)),
        "mean_b": float(np.mean(xb)),
        "diff": float(np.mean(xa) - np.mean(xb)),
        "ci_low": lo,
        "ci_high": hi,
        "p_value": p,
        "significant": bool(p < alpha and not (lo <= 0.0 <= hi)),
    }


def winner_table(
    per_arm: Mapping[str, Mapping[str, Mapping[str, float]]],
    metrics: Sequence[str],
    reference: str,
    *,
    n: int = 1000,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """For each metric and each arm other than ``reference``: the paired comparison arm vs reference, and a
    verdict (``better`` / ``worse`` / ``tie`` at the 5% level). ``per_arm[arm][metric][case] = value``."""
    rows = []
    for metric in metrics:
        for arm in per_arm:
            if arm == reference:
                continue
            stats = compare_arms(per_arm[arm][metric], per_arm[reference][metric], n=n, seed=seed)
            verdict = "tie" if not stats["significant"] else ("better" if stats["diff"] > 0 else "worse")
            rows.append({"metric": metric, "arm": arm, "reference": reference, **stats, "verdict": verdict})
    return rows


def _load_cases(run: Path) -> list[dict[str, Any]]:
    path = run / "cases.jsonl" if run.is_dir() else run
    if not path.is_file():
        raise InputError(f"{path} does not exist", hint="give an evaluation output folder (with cases.jsonl)")
    out = []
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                try:
                    out.append(json.loads(line))
                except json.JSONDecodeError:
                    continue  # a partial last line of an interrupted run
    return out


def _arm_metrics(records: list[dict[str, Any]], arm: str | None, run: Path) -> tuple[str, dict[str, dict[str, float]]]:
    arms = list(dict.fromkeys(r["variant"] for r in records))
    if not arms:
        raise InputError(f"{run} has no evaluated case", hint="run `recagent eval run` first")
    if arm is None:
        pipeline = [a for a in arms if any(r["variant"] == a and r.get("kind") == "pipeline" for r in records)]
        arm = (pipeline or arms)[0]
    if arm not in arms:
        raise InputError(f"{run} has no arm {arm!r}", hint=f"its arms: {', '.join(arms)}")
    table: dict[str, dict[str, float]] = {}
    for r in records:
        if r["variant"] == arm:
            for metric, value in r["metrics"].items():
                table.setdefault(metric, {})[r["case_id"]] = float(value)
            if r.get("retrieved") is not None:  # recall of the fused candidates (pipeline arms, full protocol)
                table.setdefault("retrieval_recall", {})[r["case_id"]] = float(r["retrieved"])
            for metric, value in case_rates(r.get("text")).items():  # justification rates (explain=llm arms)
                table.setdefault(metric, {})[r["case_id"]] = value
    return arm, table


def compare_runs(
    run_a: Path, run_b: Path, *, arm_a: str | None = None, arm_b: str | None = None, n: int = 1000, seed: int = 0
) -> dict[str, Any]:
    """Compare one arm of run A with one arm of run B on their common cases (default: each run's first
    pipeline variant), metric by metric."""
    name_a, table_a = _arm_metrics(_load_cases(run_a), arm_a, run_a)
    name_b, table_b = _arm_metrics(_load_cases(run_b), arm_b, run_b)
    metrics = [m for m in table_a if m in table_b]
    if not metrics:
        raise InputError("the two runs share no metric", hint="compare runs made with the same protocol")
    rows = []
    for metric in metrics:
        stats = compare_arms(table_a[metric], table_b[metric], n=n, seed=seed)
        verdict = "tie" if not stats["significant"] else ("A" if stats["diff"] > 0 else "B")
        rows.append({"metric": metric, **stats, "winner": verdict})
    only_a = len(set(table_a[metrics[0]]) - set(table_b[metrics[0]]))
    only_b = len(set(table_b[metrics[0]]) - set(table_a[metrics[0]]))
    return {"a": {"run": str(run_a), "arm": name_a}, "b": {"run": str(run_b), "arm": name_b},
            "unpaired_cases": {"only_a": only_a, "only_b": only_b}, "rows": rows}  # fmt: skip
