"""Report files of an evaluation run.

- ``results.json``: provenance, per-arm aggregates with 95% bootstrap CIs, beyond-accuracy and LLM-failure
  metrics, cost, failure attribution, paired comparisons against the reference arm (latency kept apart under
  ``latency``: it is the only part a replay does not reproduce);
- ``cases.jsonl`` (written by the runner), ``run.trec`` / ``qrels.trec`` (TREC format, for ranx or trec_eval);
- ``report.md`` and ``report.html``.
"""

from __future__ import annotations

import html
import json
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from eval import metrics as M
from eval.compare import bootstrap_ci, winner_table
from eval.datasets import EvalDataset
from eval.plots import report_figures
from eval.protocol import Protocol, Split
from eval.published import published_section
from eval.text_report import render_text_section, sample_justifications, text_comparisons, text_latency, text_summary
from eval.variants import Variant

__all__ = ["render_markdown", "write_outputs"]

NO_JUDGE = (
    "no judge model configured: give `eval run --judge-url URL --judge-model NAME` (or "
    "RECAGENT_JUDGE_SERVER_URL and RECAGENT_JUDGE_MODEL) to score the justifications with a capable model"
)


def _mean_ci(values: Sequence[float], seed: int) -> dict[str, float | None]:
    if not values:
        return {"mean": None, "ci_low": None, "ci_high": None, "n": 0}
    lo, hi = bootstrap_ci(values, seed=seed)
    return {"mean": float(np.mean(values)), "ci_low": lo, "ci_high": hi, "n": len(values)}


def _popularity(split: Split) -> dict[str, float]:
    if split.train is None:
        return {}
    counts = split.train.popularity()
    return {item: float(c) for item, c in zip(split.train.item_ids, counts, strict=True)}


def aggregate_arm(
    records: list[dict[str, Any]],
    arm: Variant,
    dataset: EvalDataset,
    protocol: Protocol,
    popularity: dict[str, float],
    percentiles: dict[str, float],
    attributes: dict[str, list[str]],
) -> dict[str, Any]:
    k = protocol.k
    seed = protocol.seed
    metric_names = protocol.metric_names()
    out: dict[str, Any] = {"kind": arm.kind, "cases": len(records), "spec": arm.spec}
    out["metrics"] = {m: _mean_ci([r["metrics"][m] for r in records], seed) for m in metric_names}
    retrieved = [float(r["retrieved"]) for r in records if r.get("retrieved") is not None]
    out["retrieval_recall"] = _mean_ci(retrieved, seed) if retrieved else None
    rankings = [r["ranked"] for r in records]
    ild = [v for v in (M.intra_list_diversity(x, k, attributes=attributes) for x in rankings) if v is not None]
    beyond: dict[str, Any] = {
        f"coverage@{k}": M.catalog_coverage(rankings, len(dataset.items), k),
        f"diversity@{k}": float(np.mean(ild)) if ild and attributes else None,
    }
    if popularity:
        nov = [v for v in (M.novelty(x, popularity, k) for x in rankings) if v is not None]
        bias = [v for v in (M.popularity_bias(x, percentiles, k) for x in rankings) if v is not None]
        beyond[f"novelty@{k}"] = float(np.mean(nov)) if nov else None
        beyond[f"popularity_percentile@{k}"] = float(np.mean(bias)) if bias else None
    out["beyond_accuracy"] = beyond
    if arm.kind == "pipeline":
        out["llm"] = M.llm_failure_rates(records)
        cost = M.cost_summary(records)
        out["cost"] = {key: v for key, v in cost.items() if not key.startswith("latency")}
        out["models"] = sorted({str(r.get("model")) for r in records if r.get("model")})
        out["prompt_versions"] = sorted({v for r in records for v in r.get("prompt_versions") or []})
        out["text"] = text_summary(records, seed)
    out["attribution"] = dict(sorted(Counter(r["attribution"] for r in records).items()))
    return out


def write_outputs(
    out: Path,
    records: list[dict[str, Any]],
    arms: list[Variant],
    split: Split,
    dataset: EvalDataset,
    protocol: Protocol,
    provenance: dict[str, Any],
    *,
    reference: str | None = None,
    published: dict[str, Any] | None = None,
    judge: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Aggregate ``records`` (ordered by arm, then case) and write results.json, run.trec, qrels.trec,
    report.md and report.html (``published``: figures shown beside the arms, see :mod:`eval.published`).
    Returns the results dict."""
    popularity = _popularity(split)
    percentiles = M.popularity_percentiles(popularity) if popularity else {}
    attributes = dataset.attributes()
    by_arm = {a.name: [r for r in records if r["variant"] == a.name] for a in arms}
    results: dict[str, Any] = {"provenance": provenance, "cases": len(split.cases), "arms": {}, "latency": {}}
    for arm in arms:
        results["arms"][arm.name] = aggregate_arm(by_arm[arm.name], arm, dataset, protocol, popularity,
                                                  percentiles, attributes)  # fmt: skip
        if arm.kind == "pipeline":
            cost = M.cost_summary(by_arm[arm.name])
            results["latency"][arm.name] = {key: v for key, v in cost.items() if key.startswith("latency")}
            if results["arms"][arm.name].get("text"):
                results["latency"][arm.name].update(text_latency(by_arm[arm.name], protocol.seed))
    names = [a.name for a in arms]
    ref = reference or ("retrieval" if "retrieval" in names else names[0])
    complete = [a for a in names if len(by_arm[a]) == len(split.cases)]
    comparisons: list[dict[str, Any]] = []
    if ref in complete and len(complete) > 1:
        per_arm = {
            a: {m: {r["case_id"]: r["metrics"][m] for r in by_arm[a]} for m in protocol.metric_names()}
            for a in complete
        }
        comparisons = winner_table(per_arm, protocol.metric_names(), ref, seed=protocol.seed)
    results["reference"] = ref
    results["comparisons"] = comparisons
    _add_text(results, by_arm, split, dataset, protocol, judge)
    if published:
        results["published"] = published
    (out / "results.json").write_text(json.dumps(results, indent=1, ensure_ascii=False, default=str))
    _write_trec(out, records, split)
    markdown = render_markdown(results, protocol)
    (out / "report.md").write_text(markdown, encoding="utf-8")
    shown = [m for m in protocol.metric_names() if m.split("@")[0] in ("ndcg", "recall", "mrr")]
    figures = report_figures(results, records, shown, [a.name for a in arms if a.kind == "pipeline"])
    page = markdown_to_html(markdown, title=f"recagent eval: {dataset.name}", figures=figures)
    (out / "report.html").write_text(page, encoding="utf-8")
    return results


def _add_text(
    results: dict[str, Any],
    by_arm: dict[str, list[dict[str, Any]]],
    split: Split,
    dataset: EvalDataset,
    protocol: Protocol,
    judge: dict[str, Any] | None,
) -> None:
    """Justification comparisons, verbatim samples and the judge's summary, when some arm asked the LLM for
    justifications (see :mod:`eval.text_report`)."""
    if not any(a.get("text") for a in results["arms"].values()):
        return
    complete = {a: recs for a, recs in by_arm.items() if len(recs) == len(split.cases)}
    results["text_comparisons"] = text_comparisons(complete, protocol.seed)
    titles = {i: item.title for i, item in dataset.items.items()}
    asked = [r for recs in by_arm.values() for r in recs if r.get("text")]
    results["text_samples"] = sample_justifications(
        asked, split.cases, titles, seed=protocol.seed, min_rating=protocol.min_rating
    )
    results["judge"] = judge if judge is not None else {"skipped": NO_JUDGE}


def _write_trec(out: Path, records: list[dict[str, Any]], split: Split) -> None:
    with (out / "run.trec").open("w", encoding="utf-8") as fh:
        for r in records:
            for rank, (item, score) in enumerate(zip(r["ranked"], r["scores"], strict=True), start=1):
                fh.write(f"{r['case_id']} Q0 {item} {rank} {score:.6f} {r['variant']}\n")
    with (out / "qrels.trec").open("w", encoding="utf-8") as fh:
        for case in split.cases:
            for item, rel in case.gold.items():
                fh.write(f"{case.case_id} 0 {item} {rel}\n")


# ------------------------------------------------------------------------------------------------ rendering
def _fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _ci(cell: dict[str, Any] | None) -> str:
    if not cell or cell.get("mean") is None:
        return "-"
    return f"{cell['mean']:.4f} [{cell['ci_low']:.3f}, {cell['ci_high']:.3f}]"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return [*lines, ""]


def _part_note(protocol: Protocol, notes: dict[str, Any]) -> str:
    out = ""
    if protocol.part != "test":
        out += f", part={protocol.part} (test targets of {notes.get('test_targets_removed', '?')} users removed first)"
    if protocol.user_ids is not None:
        out += (
            f", user ids: {notes.get('user_ids_given', len(protocol.user_ids))} given, "
            f"{notes.get('user_ids_evaluated', '?')} eligible ({notes.get('user_ids_unknown', '?')} unknown, "
            f"{notes.get('user_ids_not_eligible', '?')} without an eligible target)"
        )
    return out


def _loo_note(protocol: Protocol, notes: dict[str, Any]) -> list[str]:
    """The leave-one-out split's own facts (min_rating and min_history do not apply to it)."""
    if protocol.split != "loo" or "users" not in notes:
        return []
    rounds = f"{notes['kcore_rounds']} round{'' if notes['kcore_rounds'] == 1 else 's'}"
    before = f"{notes['users_before']:,} users / {notes['items_before']:,} items / {notes['interactions_before']:,}"
    after = f"{notes['users']:,} / {notes['items']:,} / {notes['interactions']:,}"
    return [
        f"- split loo: every interaction counts (no rating threshold), {notes['kcore']}-core filter ({rounds}): "
        f"{before} interactions -> {after}; sequence order: {notes['order']}; the whole filtered catalog "
        f"({notes['items']:,} items) is ranked with the history masked"
        + _repeat_note(int(notes.get("targets_in_history", 0)))
    ]


def _repeat_note(repeated: int) -> str:
    if not repeated:
        return ""
    return (f"; **{repeated:,} cases' target is already in their history** (a repeated (user, item) pair), so no "
            'arm can hit it: set repeats = "first" in the interactions mapping to count each pair once')  # fmt: skip


def render_markdown(results: dict[str, Any], protocol: Protocol) -> str:
    prov = results["provenance"]
    arms = results["arms"]
    lines = [f"# Evaluation: {prov['dataset']['name']}", ""]
    lines += [
        f"- cases: {results['cases']}; protocol: split={protocol.split}, candidates={protocol.candidates}, "
        + ("" if protocol.split == "loo" else f"min_rating={protocol.min_rating}, min_history={protocol.min_history}, ")
        + f"users={protocol.users}, seed={protocol.seed}"
        + _part_note(protocol, prov.get("split_notes") or {}),
        *_loo_note(protocol, prov.get("split_notes") or {}),
        f"- git commit: {prov.get('git_commit') or 'unknown'}; replay: {prov.get('replay')}",
        f"- LLM cache: {prov['llm_cache']['hits']} hits, {prov['llm_cache']['misses']} misses",
        "",
    ]
    match = prov["dataset"].get("match")
    if match:
        examples = match["unmatched_examples"][:5]
        lines += [
            "## Gold matching",
            "",
            f"{match['gold_total']} gold names: {match['matched_exact']} exact, {match['matched_normalised']} by "
            f"normalised title, **{match['unmatched']} unmatched**"
            f"{' (e.g. ' + ', '.join(examples) + ')' if examples else ''}; "
            f"{match['turns_without_gold']} turns without any matched gold were not scored.",
            "",
        ]
        if match.get("dialogues") is not None:
            lines += [
                f"Turns cut from {match['dialogues']} raw dialogues ({match['turns']} turns read); "
                f"{match['dialogues_skipped']} malformed dialogues skipped.",
                "",
            ]
    metric_names = protocol.metric_names()
    lines += ["## Accuracy (mean [95% CI])", ""]
    lines += _table(["arm", *metric_names, "retrieval recall"],
                    [[n, *[_ci(a["metrics"][m]) for m in metric_names], _ci(a.get("retrieval_recall"))]
                     for n, a in arms.items()])  # fmt: skip
    lines += published_section(results.get("published"), metric_names)
    beyond_keys = list(dict.fromkeys(k for a in arms.values() for k in a["beyond_accuracy"]))
    lines += ["## Beyond accuracy", ""]
    lines += _table(["arm", *beyond_keys], [[n, *[_fmt(a["beyond_accuracy"].get(k)) for k in beyond_keys]]
                                             for n, a in arms.items()])  # fmt: skip
    pipeline = {n: a for n, a in arms.items() if a["kind"] == "pipeline"}
    if pipeline:
        llm_keys = ["parse_failure_rate", "off_candidate_rate", "duplicate_rate", "fallback_rate", "grounding_rate",
                    "position_sensitivity"]  # fmt: skip
        if any(a["llm"].get("llm_feature_missing_rate") is not None for a in pipeline.values()):
            llm_keys.append("llm_feature_missing_rate")  # the learned ranker's LLM feature
        lines += ["## LLM behaviour", ""]
        lines += _table(["arm", *llm_keys, "fallback by reason"],
                        [[n, *[_fmt(a["llm"].get(k)) for k in llm_keys],
                          ", ".join(f"{r}: {v:.3f}" for r, v in a["llm"]["fallback_by_reason"].items()) or "-"]
                         for n, a in pipeline.items()])  # fmt: skip
        lines += ["## Cost", ""]
        lines += _table(["arm", "prompt tokens / case", "completion tokens / case", "latency p50 ms", "latency p95 ms"],
                        [[n, _fmt(a["cost"]["prompt_tokens_mean"], 1), _fmt(a["cost"]["completion_tokens_mean"], 1),
                          _fmt(results["latency"].get(n, {}).get("latency_ms_p50"), 1),
                          _fmt(results["latency"].get(n, {}).get("latency_ms_p95"), 1)]
                         for n, a in pipeline.items()])  # fmt: skip
    lines += render_text_section(results)
    kinds = ["hit", "not_retrieved", "demoted_by_ranker", "lost_to_fallback", "missed"]
    lines += [f"## Failure attribution (top {protocol.k})", ""]
    lines += _table(["arm", *kinds], [[n, *[str(a["attribution"].get(k, 0)) for k in kinds]] for n, a in arms.items()])
    if results["comparisons"]:
        lines += [f"## Paired comparison against `{results['reference']}`", ""]
        lines += ["Difference arm - reference with a paired bootstrap 95% CI and a paired permutation test.", ""]
        lines += _table(["metric", "arm", "diff", "95% CI", "p", "verdict"],
                        [[c["metric"], c["arm"], f"{c['diff']:+.4f}", f"[{c['ci_low']:+.4f}, {c['ci_high']:+.4f}]",
                          f"{c['p_value']:.3f}", c["verdict"]] for c in results["comparisons"]])  # fmt: skip
    return "\n".join(lines) + "\n"


def markdown_to_html(markdown: str, *, title: str, figures: Sequence[tuple[str, str]] = ()) -> str:
    """The report's markdown as a standalone HTML page (Python-Markdown with tables), plots appended as inline SVG."""
    import markdown as md

    body = md.markdown(html.escape(markdown, quote=False), extensions=["tables"], output_format="html")
    plots = "".join(f"<h2>{html.escape(heading)}</h2><figure>{svg}</figure>" for heading, svg in figures)
    style = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto}table{border-collapse:collapse;margin:1em 0}"
             "td,th{border:1px solid #ccc;padding:4px 8px;font-size:13px}th{background:#f4f4f4}"
             "figure{margin:1em 0}svg{max-width:100%;height:auto}")  # fmt: skip
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{style}</style></head><body>{body}{plots}</body></html>\n")  # fmt: skip
