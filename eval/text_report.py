"""Per-arm justification metrics with CIs, their paired comparisons, latency, samples, and the report section.

Inputs are the runner's records: ``text`` (the counts of :func:`eval.text_metrics.case_text`, present for arms
that ask the LLM for justifications), ``latency_ms`` and ``explain_ms``. Rates are pooled shares (``sum(num) /
sum(den)`` over the arm's cases) with a cluster bootstrap CI over cases; distinctness gives each sentence the weight
``1 / (copies of its normalised form in the arm)``, so that its pooled share is exactly distinct / sentences and its
CI resamples cases without counting a resampled case as a copy of itself. Paired comparisons (arm - first arm that
asked) use the per-case rates of :func:`eval.text_metrics.case_rates`, like ``eval compare``.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from eval.compare import bootstrap_quantile_ci, bootstrap_ratio_ci, compare_arms
from eval.datasets import EvalCase
from eval.metrics import percentile
from eval.text_metrics import RATE_METRICS, case_rates, distinct_n

__all__ = [
    "TEXT_SAMPLES",
    "render_text_section",
    "sample_justifications",
    "text_comparisons",
    "text_latency",
    "text_summary",
]

TEXT_SAMPLES = 20
MIN_PAIRED_CASES = 5
"""Fewer cases with a value in both arms (e.g. a link rate, defined only where an arm wrote text) -> no verdict."""
"""Justifications printed verbatim in a report (drawn with the protocol's seed among all that arms asked for)."""
LIKED_SHOWN = 3
REQUEST_CHARS = 240


def _ratio_cell(nums: Sequence[float], dens: Sequence[float], seed: int) -> dict[str, Any]:
    num, den = float(sum(nums)), float(sum(dens))
    if den == 0:
        return {"mean": None, "ci_low": None, "ci_high": None, "n": 0}
    lo, hi = bootstrap_ratio_ci(nums, dens, seed=seed)
    return {"mean": num / den, "ci_low": lo, "ci_high": hi, "n": int(den)}


def _texts(records: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    return [r["text"] for r in records if r.get("text")]


def text_summary(records: Sequence[Mapping[str, Any]], seed: int) -> dict[str, Any] | None:
    """The arm's justification metrics (None when it asked the LLM for none): counts, rates with CIs,
    distinctness, distinct-2, mean words, fallbacks by reason (counts)."""
    texts = _texts(records)
    if not texts:
        return None
    out: dict[str, Any] = {key: sum(t[key] for t in texts) for key in ("asked", "llm", "passing", "linked")}
    out["cases"] = len(texts)
    for name, (num, den) in RATE_METRICS.items():
        out[name] = _ratio_cell([t[num] for t in texts], [t[den] for t in texts], seed)
    copies = Counter(s for t in texts for s in t["norm"])
    weights = [sum(1.0 / copies[s] for s in t["norm"]) for t in texts]
    out["distinctness"] = _ratio_cell(weights, [len(t["norm"]) for t in texts], seed)
    out["distinct_2"] = distinct_n([s for t in texts for s in t["norm"]], 2)
    out["mean_words"] = _ratio_cell([sum(t["words"]) for t in texts], [len(t["words"]) for t in texts], seed)
    reasons: Counter[str] = Counter()
    for t in texts:
        reasons.update(t.get("reasons") or {})
    out["fallbacks"] = out["asked"] - out["llm"]
    out["fallbacks_by_reason"] = dict(reasons.most_common())
    return out


def text_latency(records: Sequence[Mapping[str, Any]], seed: int) -> dict[str, Any]:
    """p50 (with a bootstrap CI) and p95 of the justification step (``explain_ms``) and of the whole request
    (``latency_ms``) per case, over the cases of an arm that asked for justifications."""
    asked = [r for r in records if r.get("text")]
    out: dict[str, Any] = {}
    for key, field in (("justify_ms", "explain_ms"), ("request_ms", "latency_ms")):
        values = [float(r[field]) for r in asked if r.get(field) is not None]
        out[f"{key}_p50"] = percentile(values, 50)
        out[f"{key}_p95"] = percentile(values, 95)
        out[f"{key}_p50_ci"] = list(bootstrap_quantile_ci(values, 50, seed=seed)) if values else None
    return out


def text_comparisons(by_arm: Mapping[str, Sequence[Mapping[str, Any]]], seed: int) -> list[dict[str, Any]]:
    """Every other arm that asked vs the first that did, per rate metric, on the cases both have a value for (no
    verdict where fewer than :data:`MIN_PAIRED_CASES` cases have one: a rate of the LLM-written text is undefined
    for a case where an arm wrote none)."""
    rates = {a: [(r["case_id"], case_rates(r.get("text"))) for r in recs] for a, recs in by_arm.items()}
    arms = [a for a, rows in rates.items() if any(v for _, v in rows)]
    if len(arms) < 2:
        return []
    table = {
        a: {m: {c: v[m] for c, v in rates[a] if m in v} for m in (f"text.{n}" for n in RATE_METRICS)} for a in arms
    }
    rows = []
    ref = arms[0]
    for metric in table[ref]:
        for arm in arms[1:]:
            if not set(table[arm][metric]) & set(table[ref][metric]):
                continue
            stats = compare_arms(table[arm][metric], table[ref][metric], seed=seed)
            verdict = "tie" if not stats["significant"] else ("higher" if stats["diff"] > 0 else "lower")
            row = {"metric": metric, "arm": arm, "reference": ref, **stats, "verdict": verdict}
            rows.append({**row, "verdict": paired_verdict(row)})
    return rows


def paired_verdict(row: Mapping[str, Any]) -> str:
    """The row's verdict, or "not tested" where fewer than :data:`MIN_PAIRED_CASES` cases entered the comparison
    (also applied when a report renders results stored before this rule)."""
    cases = row.get("cases")
    if isinstance(cases, int) and cases < MIN_PAIRED_CASES:
        return f"not tested (defined in both arms for {cases} case{'' if cases == 1 else 's'} only)"
    return str(row["verdict"])


def sample_justifications(
    records: Sequence[Mapping[str, Any]],
    cases: Sequence[EvalCase],
    titles: Mapping[str, str],
    *,
    n: int = TEXT_SAMPLES,
    seed: int = 0,
    min_rating: float = 4.0,
) -> list[dict[str, Any]]:
    """``n`` justifications drawn with ``seed`` among all that arms asked for (LLM-written and fallbacks alike,
    never chosen by content), in arm, case and rank order, with the user's context as the metrics saw it (the last
    liked titles: history rated >= ``min_rating`` or unrated, then the items liked in the conversation)."""
    by_case = {c.case_id: c for c in cases}
    pool = [(r, i) for r in records if r.get("text") for i in range(len(r["ranked"]))]
    picked = random.Random(seed).sample(range(len(pool)), min(n, len(pool)))
    out = []
    for r, i in (pool[k] for k in sorted(picked)):
        case = by_case.get(r["case_id"])
        history = [h for h in case.history if h.rating is None or h.rating >= min_rating] if case else []
        liked = [titles[h.item_id] for h in history if h.item_id in titles]
        liked += [titles[x] for x in (case.liked if case else []) if x in titles]
        source = (r.get("justification_sources") or [None] * len(r["ranked"]))[i]
        out.append(
            {
                "arm": r["variant"],
                "case_id": r["case_id"],
                "rank": i + 1,
                "item": titles.get(r["ranked"][i], r["ranked"][i]),
                "text": r["justifications"][i],
                "source": source,
                "grounded": r["grounded"][i],
                "link": r["text"]["links"][i] if i < len(r["text"]["links"]) else None,
                "note": (r.get("grounding_notes") or [None] * len(r["ranked"]))[i] if source == "template" else None,
                "recent": liked[-LIKED_SHOWN:],
                "request": ((case.query or "")[-REQUEST_CHARS:] if case else ""),
            }
        )
    return out


# ------------------------------------------------------------------------------------------------ rendering
def _cell(cell: Mapping[str, Any] | None, digits: int = 3) -> str:
    if not cell or cell.get("mean") is None:
        return "-"
    return f"{cell['mean']:.{digits}f} [{cell['ci_low']:.{digits}f}, {cell['ci_high']:.{digits}f}]"


def _ms(latency: Mapping[str, Any], key: str) -> str:
    p50, p95, ci = latency.get(f"{key}_p50"), latency.get(f"{key}_p95"), latency.get(f"{key}_p50_ci")
    if p50 is None:
        return "-"
    ci_text = f" [{ci[0]:.0f}, {ci[1]:.0f}]" if ci else ""
    return f"{p50:.0f}{ci_text} / {p95:.0f}"


_MD_SPECIAL = str.maketrans({c: "\\" + c for c in "\\`*_[]#|"})  # < > & are escaped by the HTML page


def _verbatim(text: str | None) -> str:
    return "(none)" if text is None else " ".join(text.split()).translate(_MD_SPECIAL)


def _sample_lines(samples: Sequence[Mapping[str, Any]]) -> list[str]:
    lines = []
    for n, s in enumerate(samples, start=1):
        verdict = "LLM-written, passed" if s["source"] in ("llm", "listwise") else f"{s['source']} fallback"
        link = (
            f"; linked: {_verbatim(s['link'])}"
            if s.get("link")
            else ("; not linked" if s["link"] is None and s["source"] != "template" else "")
        )
        context = "; ".join(
            ([f"last liked: {_verbatim(' / '.join(s['recent']))}"] if s["recent"] else [])
            + ([f"request: {_verbatim(s['request'])}"] if s["request"] else [])
        )
        lines.append(
            f"{n}. `{s['arm']}` case {_verbatim(str(s['case_id']))}, #{s['rank']} "
            f"**{_verbatim(s['item'])}** ({verdict}{link})"
        )
        lines.append(f"    - “{_verbatim(s['text'])}”")
        if s.get("note"):
            lines.append(f"    - why the fallback: {_verbatim(s['note'])}")
        if context:
            lines.append(f"    - user: {context}")
    return [*lines, ""]


def render_text_section(results: Mapping[str, Any]) -> list[str]:
    """The "Justifications" section of a report (empty when no arm asked the LLM for justifications)."""
    arms = {n: a["text"] for n, a in results["arms"].items() if a.get("text")}
    if not arms:
        return []
    latency = results.get("latency", {})
    lines = ["## Justifications (LLM-written text)", ""]
    lines += [
        "Pooled shares with 95% cluster-bootstrap CIs over cases. grounding = LLM-written and passing / asked; "
        "user link = LLM-written naming a liked title of the user or a request word / LLM-written; distinct = "
        "distinct normalised sentences / LLM-written (own title masked); words = mean words per LLM-written "
        "sentence. Definitions: `eval/text_metrics.py`.",
        "",
        "| arm | asked | LLM-written | grounding rate | user-link rate | names a liked title | uses a request word "
        "| distinct | distinct-2 | words |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, t in arms.items():
        d2 = "-" if t["distinct_2"] is None else f"{t['distinct_2']:.3f}"
        lines.append(
            f"| {name} | {t['asked']} | {t['llm']} | {_cell(t['grounding_rate'])} | {_cell(t['user_link_rate'])} "
            f"| {_cell(t['title_link_rate'])} | {_cell(t['request_link_rate'])} | {_cell(t['distinctness'])} "
            f"| {d2} | {_cell(t['mean_words'], 1)} |"
        )
    lines += [
        "",
        "| arm | fallbacks | fallbacks by reason (count) | justification ms p50 [95% CI] / p95 "
        "| request ms p50 [95% CI] / p95 |",
        "|---|---|---|---|---|",
    ]
    for name, t in arms.items():
        reasons = ", ".join(f"{_verbatim(r)}: {c}" for r, c in t["fallbacks_by_reason"].items()) or "-"
        lat = latency.get(name, {})
        lines.append(f"| {name} | {t['fallbacks']} | {reasons} | {_ms(lat, 'justify_ms')} | {_ms(lat, 'request_ms')} |")
    lines += [
        "",
        "Latency per case: the case's share of its batch's explain calls, and its retrieval plus its share of "
        "the batch's ranking and explaining (`--batch-size` cases per batch; not reproduced by a replay).",
        "",
    ]
    comparisons = results.get("text_comparisons") or []
    if comparisons:
        lines += [
            f"Paired differences against `{comparisons[0]['reference']}` (per-case rates, paired bootstrap "
            "95% CI, permutation p):",
            "",
        ]
        lines += ["| metric | arm | cases | diff | 95% CI | p | verdict |", "|---|---|---|---|---|---|---|"]
        lines += [
            f"| {c['metric']} | {c['arm']} | {c.get('cases', '-')} | {c['diff']:+.3f} | "
            f"[{c['ci_low']:+.3f}, {c['ci_high']:+.3f}] | {c['p_value']:.3f} | {paired_verdict(c)} |"
            for c in comparisons
        ]
        lines.append("")
    judge = results.get("judge")
    if judge is not None:
        lines += _judge_lines(judge)
    samples = results.get("text_samples") or []
    if samples:
        lines += [
            f"### {len(samples)} sample justifications, verbatim",
            "",
            "Drawn with the protocol's seed among every justification the arms asked for (good and bad alike, "
            "never picked by content).",
            "",
        ]
        lines += _sample_lines(samples)
    return lines


def _judge_lines(judge: Mapping[str, Any]) -> list[str]:
    if judge.get("skipped"):
        return [f"Judge arm: skipped ({judge['skipped']}).", ""]
    lines = [
        f"Judge arm: `{judge['model']}` at {judge['url']} scored {judge['judged']} LLM-written justifications "
        f"({judge['failed']} unanswered); shares with 95% bootstrap CIs:",
        "",
        "| arm | judged | about the item | true to the fields | connects to the user |",
        "|---|---|---|---|---|",
    ]
    for name, arm in judge["arms"].items():
        lines.append(
            f"| {name} | {arm['judged']} | {_cell(arm['about_item'])} | {_cell(arm['true_to_fields'])} "
            f"| {_cell(arm['connects_user'])} |"
        )
    return [*lines, ""]
