"""Plots of an evaluation run (matplotlib, inline SVG for report.html).

- metrics with their 95% CIs per arm;
- position bias: where, in the candidate list the ranker was shown, the item it put first came from;
- latency histogram per pipeline arm;
- failure attribution per arm (hit / not retrieved / demoted by the ranker / lost to a fallback).
"""

from __future__ import annotations

import io
from collections import Counter
from collections.abc import Sequence
from typing import Any

__all__ = ["report_figures"]

ATTRIBUTION = ("hit", "not_retrieved", "demoted_by_ranker", "lost_to_fallback")


def _svg(fig: Any) -> str:
    import matplotlib.pyplot as plt

    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight", metadata={"Date": None})
    plt.close(fig)
    text = buf.getvalue()
    return text[text.index("<svg") :]  # drop the XML prolog and doctype: the SVG is inlined into HTML


def _metrics_figure(results: dict[str, Any], metrics: Sequence[str]) -> str:
    import matplotlib.pyplot as plt

    arms = list(results["arms"])
    fig, axes = plt.subplots(1, len(metrics), figsize=(3.2 * len(metrics), 0.35 * len(arms) + 1.4), squeeze=False)
    for ax, metric in zip(axes[0], metrics, strict=True):
        cells = [results["arms"][a]["metrics"].get(metric) or {} for a in arms]
        means = [float(c.get("mean") or 0.0) for c in cells]
        lows = [float(c["ci_low"]) if c.get("ci_low") is not None else m for m, c in zip(means, cells, strict=True)]
        highs = [float(c["ci_high"]) if c.get("ci_high") is not None else m for m, c in zip(means, cells, strict=True)]
        low = [max(0.0, m - lo) for m, lo in zip(means, lows, strict=True)]
        high = [max(0.0, hi - m) for m, hi in zip(means, highs, strict=True)]
        ax.barh(range(len(arms)), means, xerr=[low, high], color="#4c78a8", capsize=3)
        ax.set_yticks(range(len(arms)), arms if ax is axes[0][0] else [""] * len(arms))
        ax.invert_yaxis()
        ax.set_title(metric, fontsize=10)
        ax.tick_params(labelsize=8)
    fig.suptitle("Accuracy per arm (mean, 95% bootstrap CI)", fontsize=10)
    return _svg(fig)


def _position_figure(records: Sequence[dict[str, Any]], arms: Sequence[str]) -> str | None:
    import matplotlib.pyplot as plt

    series: dict[str, Counter[int]] = {}
    for r in records:
        cands, ranked = r.get("candidate_ids") or [], r.get("ranked") or []
        if r["variant"] in arms and ranked and ranked[0] in cands and len(cands) > 1:
            series.setdefault(r["variant"], Counter())[cands.index(ranked[0]) + 1] += 1
    if not series:
        return None
    width = max(max(c) for c in series.values())
    fig, ax = plt.subplots(figsize=(7, 2.8))
    for name, counts in series.items():
        total = sum(counts.values())
        xs = list(range(1, width + 1))
        ax.plot(xs, [counts.get(x, 0) / total for x in xs], marker="o", markersize=3, label=name)
    ax.set_xlabel("position in the candidate list given to the ranker (retrieval order)", fontsize=8)
    ax.set_ylabel("share of first places", fontsize=8)
    ax.set_title("Position bias: where the top-ranked item came from", fontsize=10)
    ax.legend(fontsize=7)
    ax.tick_params(labelsize=8)
    return _svg(fig)


def _latency_figure(records: Sequence[dict[str, Any]], arms: Sequence[str]) -> str | None:
    import matplotlib.pyplot as plt

    series = {a: [r["latency_ms"] / 1000 for r in records if r["variant"] == a and r.get("latency_ms")] for a in arms}
    series = {a: v for a, v in series.items() if v}
    if not series:
        return None
    fig, ax = plt.subplots(figsize=(7, 2.8))
    ax.hist(list(series.values()), bins=30, label=list(series), histtype="step", linewidth=1.4)
    ax.set_xlabel("seconds per case (batched: the batch time shared by its cases)", fontsize=8)
    ax.set_ylabel("cases", fontsize=8)
    ax.set_title("Latency per case", fontsize=10)
    ax.legend(fontsize=7)
    ax.tick_params(labelsize=8)
    return _svg(fig)


def _attribution_figure(results: dict[str, Any]) -> str | None:
    import matplotlib.pyplot as plt

    arms = [a for a, v in results["arms"].items() if v.get("attribution")]
    if not arms:
        return None
    fig, ax = plt.subplots(figsize=(7, 0.35 * len(arms) + 1.2))
    left = [0.0] * len(arms)
    for kind in ATTRIBUTION:
        shares = []
        for a in arms:
            counts = results["arms"][a]["attribution"]
            shares.append(counts.get(kind, 0) / max(1, sum(counts.values())))
        ax.barh(range(len(arms)), shares, left=left, label=kind.replace("_", " "))
        left = [x + s for x, s in zip(left, shares, strict=True)]
    ax.set_yticks(range(len(arms)), arms)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_title("Failure attribution at the first cutoff (share of cases)", fontsize=10)
    ax.legend(fontsize=7, ncol=4, loc="upper center", bbox_to_anchor=(0.5, -0.15))
    ax.tick_params(labelsize=8)
    return _svg(fig)


def report_figures(
    results: dict[str, Any], records: Sequence[dict[str, Any]], metrics: Sequence[str], pipeline_arms: Sequence[str]
) -> list[tuple[str, str]]:
    """``(heading, inline svg)`` for each plot that has data."""
    import matplotlib

    matplotlib.use("Agg")  # no display here or on servers
    matplotlib.rcParams["svg.hashsalt"] = "recagent"  # stable element ids: same data, same file
    out = [("Metrics with confidence intervals", _metrics_figure(results, metrics))]
    for heading, svg in (
        ("Position bias", _position_figure(records, pipeline_arms)),
        ("Latency", _latency_figure(records, pipeline_arms)),
        ("Failure attribution", _attribution_figure(results)),
    ):
        if svg is not None:
            out.append((heading, svg))
    return out
