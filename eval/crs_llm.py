"""The default LLM strategy on a seeded sample of a ``recagent eval folds`` run (``recagent eval folds-llm``).

The folds run writes every held-out ranking (``rankings.jsonl``). Here a seeded sample of its (turn, gold movie)
samples is drawn; each of their turns is ranked by the pipeline's default strategy (the settings' strategy, by
default ``options``: the option-logit score blended with the retrieval order at ``rerank_llm_weight``) over the
first ``fusion_n`` movies of the base arm's held-out ranking (the fused default, whose dialogue sources were fitted
without the turn's fold), exactly as the pipeline reranks its fused candidates; the rest of the base ranking follows
unchanged. Both orders are scored on the same samples (iEvaLM-CRS recall) with a paired bootstrap CI.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tqdm import tqdm

from agent.errors import InputError
from agent.llm.base import LLMEngine
from agent.settings import Settings
from eval.compare import paired_bootstrap_ci
from eval.crs import IEVALM_KS, per_gold_hits
from eval.crs_folds import FUSED_DEFAULT
from eval.datasets import EvalCase, file_sha256, load_dataset
from eval.provenance import git_commit, load_average
from eval.report import markdown_to_html

__all__ = ["draw_samples", "llm_arm", "read_rankings", "reranked"]


def read_rankings(out: Path, arm: str) -> dict[str, list[str]]:
    """The held-out ranking of every turn for ``arm``, from a folds run's ``rankings.jsonl``."""
    path = Path(out) / "rankings.jsonl"
    if not path.is_file():
        raise InputError(f"{path} does not exist", hint="run `recagent eval folds DATASET --out OUT` first")
    found: dict[str, list[str]] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        if row["arm"] == arm:
            found[row["case_id"]] = list(row["ranking"])
    if not found:
        raise InputError(f"{path} holds no ranking of the arm {arm!r}", hint="give --base with an arm of that run")
    return found


def draw_samples(cases: Sequence[EvalCase], n: int, seed: int) -> list[tuple[str, str]]:
    """``n`` (case id, gold id) samples drawn without replacement (seeded), in the cases' order."""
    every = [(c.case_id, g) for c in cases for g in dict.fromkeys(c.gold)]
    if n >= len(every):
        return every
    chosen = set(random.Random(seed).sample(range(len(every)), n))
    return [s for i, s in enumerate(every) if i in chosen]


def reranked(base: Sequence[str], top: Sequence[str], n: int) -> list[str]:
    """``top`` (the strategy's order of the base ranking's first ``n``) followed by the rest of ``base``."""
    head = list(dict.fromkeys([*top, *base[:n]]))  # a strategy that drops a candidate keeps it, after its order
    return head + [i for i in base[n:] if i not in set(head)]


def _hits(samples: Sequence[tuple[str, str]], rankings: dict[str, list[str]]) -> dict[int, list[int]]:
    out: dict[int, list[int]] = {k: [] for k in IEVALM_KS}
    for case_id, gold in samples:
        for k, found in per_gold_hits([gold], rankings.get(case_id, [])).items():
            out[k] += found
    return out


def llm_arm(
    settings: Settings,
    dataset_path: Path,
    out: Path,
    *,
    samples: int = 200,
    seed: int = 0,
    base: str = FUSED_DEFAULT,
    batch: int = 16,
    progress: bool = True,
    command: str = "",
    engine: LLMEngine | None = None,
) -> dict[str, Any]:
    """Rank the sampled turns with the default strategy, write ``llm_arm.json`` / ``llm_arm.md`` in ``out``.
    Justifications are not written (``explain_mode`` none: they do not change the order); ``engine``: an engine
    to use (not closed here), else the settings' engine is started (and closed)."""
    from agent.llm import create_engine
    from agent.pipeline import Recommender, RecommendRequest

    settings = settings.model_copy(update={"explain_mode": "none"})

    started = time.perf_counter()
    dataset = load_dataset(dataset_path)
    rankings = read_rankings(out, base)
    cases = [c for c in dataset.cases if c.case_id in rankings]
    drawn = draw_samples(cases, samples, seed)
    turns = [c for c in cases if c.case_id in {cid for cid, _ in drawn}]
    n = settings.fusion_n
    collection = f"eval-{file_sha256(dataset.catalog_path)[:12]}"
    own = engine is None
    engine = create_engine(settings) if engine is None else engine
    rec = Recommender(settings, engine=engine, collection=collection, dialogue_sources=False)
    ranked: dict[str, list[str]] = {}
    fallbacks: dict[str, int] = {}
    batch_s: list[float] = []
    strategy = settings.rerank_strategy
    try:
        for at in tqdm(range(0, len(turns), batch), desc="LLM strategy", disable=not progress):
            chunk = turns[at : at + batch]
            requests = [_request(RecommendRequest, c, rankings[c.case_id][:n]) for c in chunk]
            t0 = time.perf_counter()
            results = rec.recommend_many(requests)
            batch_s.append(time.perf_counter() - t0)
            for case, result in zip(chunk, results, strict=True):
                ranked[case.case_id] = reranked(rankings[case.case_id], [it.item_id for it in result.items], n)
                if result.fallback_reason:
                    reason = result.fallback_reason.split(":")[0]
                    fallbacks[reason] = fallbacks.get(reason, 0) + 1
    finally:
        if own:
            rec.close()
    arm = f"{base} reranked by the default LLM strategy ({strategy}, LLM weight {settings.rerank_llm_weight})"
    base_hits, arm_hits = _hits(drawn, rankings), _hits(drawn, ranked)
    rows = {name: {f"recall@{k}": sum(h[k]) / max(1, len(h[k])) for k in IEVALM_KS}
            for name, h in ((base, base_hits), (arm, arm_hits))}  # fmt: skip
    paired = {}
    for k in IEVALM_KS:
        lo, hi = paired_bootstrap_ci(arm_hits[k], base_hits[k])
        paired[f"recall@{k}"] = {"diff": rows[arm][f"recall@{k}"] - rows[base][f"recall@{k}"], "ci_low": lo,
                                 "ci_high": hi}  # fmt: skip
    per_turn = sorted(s / len(c) for s, c in zip(batch_s, _chunks(turns, batch), strict=True))
    meta = {
        "command": command,
        "commit": git_commit(),
        "dataset": dataset.name,
        "base": base,
        "samples": len(drawn),
        "turns": len(turns),
        "seed": seed,
        "model": engine.model_id,
        "strategy": strategy,
        "llm_weight": settings.rerank_llm_weight,
        "candidates_reranked": n,
        "batch": batch,
        "fallbacks": fallbacks,
        "seconds": round(time.perf_counter() - started, 1),
        "seconds_per_turn_p50": round(per_turn[len(per_turn) // 2], 3) if per_turn else None,
        "loadavg_end": load_average(),
    }
    doc = {"meta": meta, "results": rows, "paired": paired}
    (out / "llm_arm.json").write_text(json.dumps(doc, indent=2), encoding="utf-8")
    markdown = render_llm(doc)
    (out / "llm_arm.md").write_text(markdown, encoding="utf-8")
    (out / "llm_arm.html").write_text(markdown_to_html(markdown, title="recagent eval folds-llm"), encoding="utf-8")
    return doc


def _request(kind: Any, case: EvalCase, candidates: list[str]) -> Any:
    n = len(candidates)
    return kind(query=case.query, liked=list(case.liked), exclude=list(case.exclude), k=max(1, n),
                n_candidates=max(1, n), candidates=candidates)  # fmt: skip


def _chunks(items: Sequence[Any], size: int) -> list[Sequence[Any]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def render_llm(doc: dict[str, Any]) -> str:
    meta, rows = doc["meta"], doc["results"]
    lines = [
        f"## The default LLM strategy on {meta['samples']} sampled gold samples ({meta['turns']} turns)",
        "",
        f"- command: `{meta['command']}`",
        f"- git commit: {meta['commit']}; seed {meta['seed']}; model {meta['model']}; strategy {meta['strategy']} "
        f"(LLM weight {meta['llm_weight']}) over the first {meta['candidates_reranked']} movies of `{meta['base']}`"
        f"'s held-out ranking, the rest of it unchanged; {meta['seconds']:.0f} s, p50 {meta['seconds_per_turn_p50']}"
        f" s per turn in batches of {meta['batch']} (load average at the end {meta['loadavg_end']})",
        f"- fallbacks: {json.dumps(meta['fallbacks'])}",
        "",
        "| arm | Recall@1 | Recall@10 | Recall@50 |",
        "|---|---|---|---|",
    ]
    for name, row in rows.items():
        lines.append(f"| {name} | {row['recall@1']:.3f} | {row['recall@10']:.3f} | {row['recall@50']:.3f} |")
    lines += ["", "LLM arm minus the base, paired bootstrap 95% CI over the same samples:", ""]
    lines += [f"- {k}: {v['diff']:+.3f} [{v['ci_low']:+.3f}, {v['ci_high']:+.3f}]" for k, v in doc["paired"].items()]
    return "\n".join(lines) + "\n"
