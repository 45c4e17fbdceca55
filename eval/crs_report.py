"""``recagent eval folds``: the K-fold iEvaLM-CRS report of the conversation sources on a dialogue dataset.

Loads the turns (:func:`eval.datasets.load_dataset`), puts the catalog in a collection (``eval-<catalog hash>``,
idempotent), ranks every turn with the content sources once (kept in ``content_lists.jsonl`` for reruns), runs
:func:`eval.crs_folds.run_folds`, and writes ``results.json``, ``report.md`` and ``report.html`` next to the
published rows (labelled as published, not re-run here).
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from agent.settings import Settings
from eval.compare import paired_bootstrap_ci
from eval.crs import IEVALM_KS, per_gold_hits
from eval.crs_folds import (
    CONTENT_SOURCES,
    FUSED_DEFAULT,
    LOG_ARM,
    LOG_WEIGHTS,
    PREVIOUS_DEFAULT,
    FoldArm,
    FoldResult,
    default_arms,
    run_folds,
)
from eval.datasets import EvalCase, EvalDataset, file_sha256, load_dataset
from eval.provenance import git_commit
from eval.report import markdown_to_html
from retrieval.attribute_source import AttributeIndex
from retrieval.candidates import CandidateGenerator, ItemToItemSource, Scored, SemanticSource
from retrieval.catalog import Catalog, read_catalog
from retrieval.ease import EaseSource
from retrieval.embed import make_embedder
from retrieval.interactions import Interactions
from retrieval.store import Store
from retrieval.transition import TransitionSource
from retrieval.types import Item

__all__ = ["PUBLISHED", "LiveArmFactory", "LogOption", "RankerFactory", "folds_report"]

PUBLISHED: dict[str, tuple[float | None, float | None, float | None]] = {
    "KBRD (published)": (0.028, 0.169, 0.366),
    "BARCOR (published)": (0.031, 0.170, 0.372),
    "UniCRS (published)": (0.050, 0.215, 0.413),
    "ChatGPT (published)": (0.037, 0.174, None),
}
"""iEvaLM-CRS standard-protocol rows on the ReDial test split (Wang et al. 2023), as published."""


def _collection(settings: Settings, dataset: EvalDataset, store: Store, embedder: Any) -> str:
    from retrieval.ingest import ingest

    name = f"eval-{file_sha256(dataset.catalog_path)[:12]}"
    ingest(
        dataset.catalog_path,
        store_config=settings.store_config(),
        embed_config=settings.embed_config(progress=True),
        format=dataset.catalog_format,
        mapping=dataset.mapping,
        collection=name,
        embedder=embedder,
        store=store,
        progress=True,
    )
    return name


def _content_fn(settings: Settings, dataset: EvalDataset, out: Path) -> Any:
    embedder = make_embedder(settings.embed_config(progress=False))
    store = Store(settings.store_config())
    name = _collection(settings, dataset, store, embedder)
    collection = store.open_for(embedder, name)
    generator = CandidateGenerator(collection, [SemanticSource(collection, embedder), ItemToItemSource(collection)])
    weights = {s: 1.0 for s in CONTENT_SOURCES}
    cache_path = out / "content_lists.jsonl"
    cache: dict[str, dict[str, Scored]] = {}
    if cache_path.is_file():
        for line in cache_path.read_text(encoding="utf-8").splitlines():
            row = json.loads(line)
            if row.get("collection") == name:
                cache[row["case_id"]] = {k: [(i, float(s)) for i, s in v] for k, v in row["lists"].items()}

    def content(case: EvalCase) -> dict[str, Scored]:
        if case.case_id not in cache:
            query = _query_for(case)
            cache[case.case_id] = generator.run_sources(query, weights=weights)
            with cache_path.open("a", encoding="utf-8") as fh:  # one line per case: an interrupted run keeps its work
                fh.write(json.dumps({"collection": name, "case_id": case.case_id, "lists": cache[case.case_id]}) + "\n")
        return cache[case.case_id]

    return content, generator.allowed_ids(None), name


def _query_for(case: EvalCase) -> Any:
    from eval.crs_folds import _query

    return _query(case, 100)


@dataclass(frozen=True)
class LogOption:
    """An interaction log keyed by its own ids (``ratings``), linked to the catalog by the titles in ``titles``."""

    ratings: Path
    titles: Path
    id_col: str = "movieId"
    title_col: str = "title"
    year_col: str | None = None


class RankerFactory(Protocol):
    """Makes the learned-ranker arm (a fold-level arm) over the fused order of ``weights``, for the catalog
    ``items`` and the title-linked interaction ``log`` (None without ``--log``). The implementation lives in
    ``train`` (``train.crs_ltr.ConversationRanker``), which ``eval`` does not import."""

    def __call__(self, weights: dict[str, float], items: dict[str, Item], log: Interactions | None) -> FoldArm: ...


class LiveArmFactory(Protocol):
    """Makes the live-ranker arm (a fold-level arm): the live training path (``recagent train dialogue-sources
    --ranker``) fitted per fold on the training dialogues, the held-out turns served by the chat's code, over the
    collection ``collection`` with ``settings`` (and the title-linked ``log`` as the live pipeline's interaction
    log, None without ``--log``). The implementation lives in ``train`` (``train.dialogue.LiveRankerArm``)."""

    def __call__(self, settings: Settings, collection: str, log: Interactions | None) -> FoldArm: ...


def _with_log(content: Any, log: LogOption, catalog: Catalog) -> tuple[Any, str, Interactions]:
    """``content`` plus the ``ease`` and ``transition`` lists of the title-linked log (not learned from the
    dialogues, so computed once per turn like the content lists), the link summary and the linked log."""
    from agent.log_link import linked_log
    from eval.crs_folds import _request

    interactions, report = linked_log(log.ratings, log.titles, {i.id: i.title for i in catalog.items},
                                      id_col=log.id_col, title_col=log.title_col, year_col=log.year_col)  # fmt: skip
    sources = [EaseSource(interactions), TransitionSource(interactions)]

    def both(case: EvalCase) -> dict[str, Scored]:
        request = _request(case, 100, None)
        return {**content(case), **{s.name: s.retrieve(request) for s in sources}}

    return both, report.summary(), interactions


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def paired_vs(cases: list[EvalCase], folds: list[FoldResult], base: str, arm: str) -> dict[str, dict[str, float]]:
    """Per k, ``arm`` minus ``base`` in iEvaLM Recall@k with a paired bootstrap 95% CI over the (turn, gold)
    samples (1,000 resamples, seed 0)."""
    hits: dict[str, dict[int, list[int]]] = {base: {k: [] for k in IEVALM_KS}, arm: {k: [] for k in IEVALM_KS}}
    for case in cases:
        for name in (base, arm):
            ranking = next((f.rankings[name][case.case_id] for f in folds if case.case_id in f.rankings[name]), [])
            for k, found in per_gold_hits(case.gold, ranking).items():
                hits[name][k] += found
    out = {}
    for k in IEVALM_KS:
        a, b = hits[arm][k], hits[base][k]
        lo, hi = paired_bootstrap_ci(a, b)
        out[f"recall@{k}"] = {"diff": (sum(a) - sum(b)) / max(1, len(a)), "ci_low": lo, "ci_high": hi}
    return out


def render(results: dict[str, dict[str, float]], folds: list[FoldResult], meta: dict[str, Any],
           paired: dict[str, dict[str, float]] | None = None,
           paired_log: dict[str, dict[str, float]] | None = None,
           paired_ltr: tuple[str, str, dict[str, dict[str, float]]] | None = None,
           paired_live: Sequence[tuple[str, str, dict[str, dict[str, float]]]] = ()) -> str:  # fmt: skip
    lines = [
        f"# iEvaLM-CRS protocol, {meta['folds']} folds by dialogue: {meta['dataset']}",
        "",
        f"- command: `{meta['command']}`",
        f"- git commit: {meta['commit']}; seed {meta['seed']}; collection `{meta['collection']}`; "
        f"{meta['seconds']:.0f} s",
        f"- turns: {meta['turns']} in {meta['dialogues']} dialogues; samples (turn, gold movie): "
        f"{int(next(iter(results.values()))['samples'])}",
        "- protocol: iEvaLM-CRS standard (every gold movie of a turn is one sample); **movies mentioned earlier in "
        "the dialogue are excluded from the ranking**; Recall pooled over the held-out folds' samples.",
        "- each fold's dialogue sources are fitted on the other folds' turns only (leaked dialogues per fold: "
        + ", ".join(str(f.leaked_dialogues) for f in folds)
        + "); their settings chosen on a validation part of those training folds by comention Recall@10.",
        "- published rows are the papers' numbers on the ReDial **test** split with the full ReDial training set "
        "(~10k dialogues); here every model learns from ~800 dialogues of a 1,000-dialogue train sample.",
        "",
        "| arm | Recall@1 | Recall@10 | Recall@50 |",
        "|---|---|---|---|",
    ]
    for name, row in results.items():
        lines.append(f"| {name} | {_fmt(row['recall@1'])} | {_fmt(row['recall@10'])} | {_fmt(row['recall@50'])} |")
    for name, (r1, r10, r50) in PUBLISHED.items():
        lines.append(f"| {name} | {_fmt(r1)} | {_fmt(r10)} | {_fmt(r50)} |")
    if paired:
        lines += ["", f"Fused default minus {PREVIOUS_DEFAULT}, paired bootstrap 95% CI over the samples:", ""]
        lines += [f"- {k}: {v['diff']:+.3f} [{v['ci_low']:+.3f}, {v['ci_high']:+.3f}]" for k, v in paired.items()]
    if paired_log:
        lines += ["", f"{LOG_ARM} minus {FUSED_DEFAULT}, paired bootstrap 95% CI over the samples:", ""]
        lines += [f"- {k}: {v['diff']:+.3f} [{v['ci_low']:+.3f}, {v['ci_high']:+.3f}]" for k, v in paired_log.items()]
    if paired_ltr:
        arm, base, diffs = paired_ltr
        lines += ["", f"{arm} minus {base}, paired bootstrap 95% CI over the samples:", ""]
        lines += [f"- {k}: {v['diff']:+.3f} [{v['ci_low']:+.3f}, {v['ci_high']:+.3f}]" for k, v in diffs.items()]
    for arm, base, diffs in paired_live:
        lines += ["", f"{arm} minus {base}, paired bootstrap 95% CI over the samples:", ""]
        lines += [f"- {k}: {v['diff']:+.3f} [{v['ci_low']:+.3f}, {v['ci_high']:+.3f}]" for k, v in diffs.items()]
    if meta.get("log"):
        lines += ["", "Interaction log linked to the catalog by title:", "", "```", meta["log"], "```"]
    lines += [
        "",
        "## Per fold",
        "",
        "| fold | test dialogues | test turns | training turns | chosen settings |",
        "|---|---|---|---|---|",
    ]
    for f in folds:
        c = f.config
        lines.append(
            f"| {f.fold} | {f.test_dialogues} | {f.test_turns} | {f.train_turns} | pairs={c.pairs}, "
            f"window={c.window}, normalisation={c.normalisation}, prior={c.prior} |"
        )
    ltr = [(f.fold, f.extra["ltr"]) for f in folds if "ltr" in f.extra]
    if ltr:
        lines += [
            "",
            "### Learned ranker per fold (fitted on the fold's training dialogues; pool chosen on its validation part)",
            "",
            "| fold | training groups | pool | best iteration | validation R@10 / R@50 (fused pool order) "
            "| fit s | total s | top features (gain) |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for number, info in ltr:
            chosen = next(t for t in info["tried"] if t["pool"] == info["pool"])
            v, fp = chosen["validation"], chosen["validation_fused_pool"]
            tops = ", ".join(f"{n}" for n, _ in info["top_features"][:4])
            lines.append(
                f"| {number} | {info['train_groups']} | {info['pool']} | {chosen['best_iteration']} | "
                f"{v['recall@10']:.3f} / {v['recall@50']:.3f} ({fp['recall@10']:.3f} / {fp['recall@50']:.3f}) | "
                f"{info['fit_seconds']:.1f} | {info['total_seconds']:.1f} | {tops} |"
            )
    live = [(f.fold, f.extra["live"]) for f in folds if "live" in f.extra]
    if live:
        lines += [
            "",
            "### Live ranker per fold (`fit_dialogue_ranker` on the fold's training dialogues only; held-out turns "
            "served by `rank_turn`, the chat's code)",
            "",
            "| fold | fit turns (with text) | training groups | pool | best iteration | sources | total s "
            "| top features (gain) |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for number, info in live:
            tops = ", ".join(f"{n}" for n, _ in info["top_features"][:4])
            lines.append(
                f"| {number} | {info['turns']} ({info['turns_with_text']}) | {info['train_groups']} | {info['pool']} "
                f"| {info['best_iteration']} | {', '.join(info['sources'])} | {info['total_seconds']:.1f} | {tops} |"
            )
    lines += ["", "## Arms (fusion weights)", ""]
    lines += [f"- {name}: {json.dumps(w)}" for name, w in meta["arms"].items()]
    return "\n".join(lines) + "\n"


def folds_report(
    settings: Settings,
    dataset_path: Path,
    out: Path,
    *,
    folds: int,
    seed: int,
    command: str,
    progress: bool = True,
    log: LogOption | None = None,
    ranker: RankerFactory | None = None,
    live: LiveArmFactory | None = None,
) -> dict[str, Any]:
    """``ranker``: adds the learned ranker's arm (over the pool of the fused default, with the log's sources when
    ``log`` is given), paired against that fused order. ``live``: adds the live ranker's arm (the live training and
    serving path, :class:`LiveArmFactory`), paired against the same fused order and against the learned arm."""
    started = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    dataset = load_dataset(dataset_path)
    content, allowed, collection = _content_fn(settings, dataset, out)
    arms = default_arms(with_log=log is not None)
    catalog = read_catalog(dataset.catalog_path, format=dataset.catalog_format, mapping=dataset.mapping)
    attributes = AttributeIndex(catalog.items)
    log_summary, interactions = None, None
    if log is not None:
        content, log_summary, interactions = _with_log(content, log, catalog)
    base_arm = LOG_ARM if log is not None else FUSED_DEFAULT
    fold_arms = []
    if ranker is not None:
        weights = {**arms[FUSED_DEFAULT], **(LOG_WEIGHTS if log is not None else {})}
        fold_arms.append(ranker(weights, {i.id: i for i in catalog.items}, interactions))
    if live is not None:
        fold_arms.append(live(settings, collection, interactions))
    results, fold_results = run_folds(
        dataset.cases, content, folds=folds, seed=seed, arms=arms, allowed=allowed, progress=progress,
        attributes=attributes, fold_arms=fold_arms,
    )  # fmt: skip
    extra_arms = [name for name in results if name not in arms]  # the fold arms' names, in fold_arms' order
    learned_arm = extra_arms[0] if ranker is not None and extra_arms else None
    live_arm = extra_arms[-1] if live is not None and extra_arms else None
    paired_ltr = (learned_arm, base_arm, paired_vs(dataset.cases, fold_results, base_arm, learned_arm)) \
        if learned_arm else None  # fmt: skip
    paired_live = [(live_arm, base, paired_vs(dataset.cases, fold_results, base, live_arm))
                   for base in (base_arm, learned_arm) if live_arm and base]  # fmt: skip
    with (out / "rankings.jsonl").open("w", encoding="utf-8") as fh:  # the held-out rankings, for later arms
        for f in fold_results:
            for name, ranked in f.rankings.items():
                for case_id, ids in ranked.items():
                    fh.write(json.dumps({"fold": f.fold, "arm": name, "case_id": case_id, "ranking": ids}) + "\n")
    paired = paired_vs(dataset.cases, fold_results, PREVIOUS_DEFAULT, FUSED_DEFAULT)
    paired_log = paired_vs(dataset.cases, fold_results, FUSED_DEFAULT, LOG_ARM) if log is not None else None
    meta = {
        "dataset": dataset.name,
        "folds": folds,
        "seed": seed,
        "command": command,
        "commit": git_commit(),
        "collection": collection,
        "turns": len(dataset.cases),
        "arms": arms,
        "dialogues": len({c.meta.get("dialog_id") for c in dataset.cases}),
        "seconds": time.perf_counter() - started,
        "log": log_summary,
    }
    doc = {
        "meta": meta,
        "results": results,
        "published": PUBLISHED,
        "paired": paired,
        "paired_log": paired_log,
        "paired_ltr": {"arm": paired_ltr[0], "base": paired_ltr[1], "diff": paired_ltr[2]} if paired_ltr else None,
        "paired_live": [{"arm": a, "base": b, "diff": d} for a, b, d in paired_live],
        "folds": [
            {
                "fold": f.fold,
                "config": f.config.model_dump(),
                "test_turns": f.test_turns,
                "train_turns": f.train_turns,
                "leaked_dialogues": f.leaked_dialogues,
                "validation": f.validation,
                **f.extra,
            }
            for f in fold_results
        ],
    }
    (out / "results.json").write_text(json.dumps(doc, indent=2), encoding="utf-8")
    markdown = render(results, fold_results, meta, paired, paired_log, paired_ltr, paired_live)
    (out / "report.md").write_text(markdown, encoding="utf-8")
    (out / "report.html").write_text(markdown_to_html(markdown, title="recagent eval folds"), encoding="utf-8")
    return doc
