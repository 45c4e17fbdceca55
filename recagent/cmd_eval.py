"""`recagent eval run|compare|merge-cache`: offline evaluation of variants. Thin wiring of :mod:`eval` only."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from recagent.mapping_opts import IdCol, LogMappingFile, MappingFile, TextCols, TitleCol

app = typer.Typer(
    help="Offline evaluation: run variants and baselines over a dataset, replay from the LLM cache, compare runs.",
    no_args_is_help=True,
)


def _ks(text: str) -> tuple[int, ...]:
    from agent.errors import InputError

    try:
        ks = tuple(sorted({int(k) for k in text.split(",") if k.strip()}))
    except ValueError:
        ks = ()
    if not ks or min(ks) < 1 or max(ks) > 100:
        raise InputError(f"--k {text!r}: give cutoffs between 1 and 100", hint="e.g. --k 10,20")
    return ks


def _read_ids(path: Path) -> tuple[str, ...]:
    from agent.errors import InputError

    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(
            f"cannot read --user-ids {path}: {exc}", hint="give a UTF-8 text file, one user id per line"
        ) from exc
    ids = tuple(dict.fromkeys(x.strip() for x in lines if x.strip() and not x.lstrip().startswith("#")))
    if not ids:
        raise InputError(f"--user-ids {path} holds no user id", hint="one user id per line (# starts a comment)")
    return ids


@app.command("run")
def run_cmd(
    ctx: typer.Context,
    dataset: Path = typer.Argument(..., help="MovieLens folder (movies + ratings), ReDial folder or turns .jsonl."),
    variant: list[str] = typer.Option(
        [], "--variant", "-v", help="NAME:strategy=options,weight=0.2,prompt=rank_options,model=... (repeatable)."
    ),
    baselines: bool = typer.Option(False, "--baselines", help="Add every baseline that fits the dataset."),
    baseline: list[str] = typer.Option(
        [], "--baseline", help="One baseline: random, popularity, itemknn, embedding, retrieval (repeatable)."
    ),
    users: int | None = typer.Option(None, "--users", min=1, help="Sample this many users / turns (default all)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the user sample, the split and the negatives."),
    out: Path = typer.Option(Path("eval-out"), "--out", help="Output folder (cases.jsonl, results.json, report.md)."),
    replay: bool = typer.Option(False, "--replay", help="Recompute everything from OUT's LLM cache, no engine."),
    resume: bool = typer.Option(False, "--resume", help="Continue an interrupted run in OUT (skips done cases)."),
    split: str = typer.Option(
        "temporal",
        "--split",
        help="temporal (leave last positive out), ratio (latest --test-ratio), random, or loo (the standard "
        "leave-one-out: every interaction, --kcore filter, last item = test, second to last = validation).",
    ),
    kcore: int = typer.Option(5, "--kcore", min=1, help="--split loo: k-core filter (items, then users, < N go)."),
    test_ratio: float = typer.Option(0.2, "--test-ratio", help="--split ratio: share of each user held out."),
    candidates: str = typer.Option("full", "--candidates", help="full (own retrieval) or sampled (target + N)."),
    negatives_n: int = typer.Option(99, "--negatives-n", min=1, help="Sampled protocol: negatives per case."),
    negatives: str = typer.Option("random", "--negatives", help="Sampled protocol: random or popularity."),
    min_rating: float = typer.Option(4.0, "--min-rating", help="Ratings >= this are positives."),
    min_history: int = typer.Option(5, "--min-history", min=0, help="Earlier interactions a user needs."),
    k: str | None = typer.Option(None, "--k", help="Metric cutoffs, comma separated (default 10,20; loo: 5,10,20)."),
    batch_size: int = typer.Option(8, "--batch-size", min=1, help="Cases per recommend_many call."),
    collection: str | None = typer.Option(
        None,
        "--collection",
        help="Use this ingested collection (default: ingest the dataset's catalog into eval-<hash>).",
    ),
    catalog: Path | None = typer.Option(None, "--catalog", help="Catalog file/folder when not next to the data."),
    mapping: MappingFile = None,
    id_col: IdCol = None,
    title_col: TitleCol = None,
    text_cols: TextCols = None,
    interactions: Path | None = typer.Option(
        None, "--interactions", help="Interaction log file when it is not the folder's ratings.csv/u.data/ratings.dat."
    ),
    interactions_mapping: LogMappingFile = None,
    prompts_dir: list[Path] = typer.Option([], "--prompts", help="Extra prompt template folder (repeatable)."),
    reference: str | None = typer.Option(None, "--reference", help="Arm the others are compared with."),
    published: Path | None = typer.Option(
        None, "--published", help="JSON of published figures shown beside the arms, labelled as published."
    ),
    part: str = typer.Option(
        "test", "--part", help="test (held-out targets) or validation (cut again from the train part; tune here)."
    ),
    sequential_model: Path | None = typer.Option(
        None,
        "--sequential-model",
        help="Folder of a sequential model (`recagent train sequential --out DIR`) for the `sequential` source; it "
        "must have been trained on this dataset's log (its leave-one-out train part fits --split loo).",
    ),
    user_ids: Path | None = typer.Option(
        None, "--user-ids", help="File of user ids, one per line (e.g. a training run's val_users.txt)."
    ),
    judge_url: str | None = typer.Option(
        None, "--judge-url", help="OpenAI-compatible server of a judge model that scores the LLM justifications."
    ),
    judge_model: str | None = typer.Option(None, "--judge-model", help="The judge's model name (with --judge-url)."),
    judge_max: int | None = typer.Option(
        None, "--judge-max", help="Judge at most this many justifications (a seeded sample; default all)."
    ),
) -> None:
    """Evaluate variants and baselines on identical cases; writes OUT/results.json, cases.jsonl, report.md/html,
    run.trec and the LLM cache (OUT/llm_cache.sqlite). With --replay the results go to OUT/replay/."""
    from eval.datasets import collection_items, load_dataset
    from eval.judge import judge_config
    from eval.protocol import Protocol
    from eval.published import load_published
    from eval.runner import applicable_baselines, run_eval
    from eval.variants import parse_variant
    from prompts import PromptRegistry
    from recagent.mapping_opts import catalog_mapping, log_mapping

    settings = ctx.find_root().obj.settings
    if sequential_model is not None:
        settings = settings.model_copy(update={"sequential_model": sequential_model})
    registry = PromptRegistry(prompts_dir) if prompts_dir else PromptRegistry()
    arms = [parse_variant(v, registry) for v in variant]  # checked before the data is even read
    figures = load_published(published).model_dump() if published is not None else None
    judge = judge_config(settings, judge_url, judge_model, judge_max)
    protocol = Protocol.model_validate(
        {
            "split": split,
            "test_ratio": test_ratio,
            "min_rating": min_rating,
            "min_history": min_history,
            "users": users,
            "seed": seed,
            "candidates": candidates,
            "n_negatives": negatives_n,
            "negatives": negatives,
            **({"ks": _ks(k)} if k is not None else {}),
            "kcore": kcore,
            "part": part,
            "user_ids": _read_ids(user_ids) if user_ids is not None else None,
        }
    )
    data = load_dataset(
        dataset,
        catalog=catalog,
        mapping=catalog_mapping(mapping, id_col=id_col, title_col=title_col, text_cols=text_cols),
        interactions=interactions,
        log_mapping=log_mapping(interactions_mapping),
        collection=(collection, lambda: collection_items(settings.store_config(), collection)) if collection else None,
    )
    names = list(dict.fromkeys((applicable_baselines(data) if baselines else []) + list(baseline)))
    result = run_eval(
        settings,
        data,
        protocol,
        out,
        variants=arms,
        baselines=names,
        registry=registry,
        collection=collection,
        replay=replay,
        resume=resume,
        batch_size=batch_size,
        reference=reference,
        published=figures,
        judge=judge,
    )
    typer.echo((result.out / "report.md").read_text(encoding="utf-8"))
    typer.echo(f"written: {result.out}/results.json, cases.jsonl, report.md, report.html, run.trec")


@app.command("compare")
def compare_cmd(
    run_a: Path = typer.Argument(..., help="Output folder of run A."),
    run_b: Path = typer.Argument(..., help="Output folder of run B."),
    arm_a: str | None = typer.Option(None, "--arm-a", help="Arm of run A (default: its first variant)."),
    arm_b: str | None = typer.Option(None, "--arm-b", help="Arm of run B (default: its first variant)."),
    as_json: bool = typer.Option(False, "--json", help="Print the comparison as JSON."),
) -> None:
    """Paired comparison of two runs on their common cases: difference, bootstrap 95% CI, permutation p-value."""
    from eval.compare import compare_runs

    result = compare_runs(run_a, run_b, arm_a=arm_a, arm_b=arm_b)
    if as_json:
        typer.echo(json.dumps(result, indent=1))
        return
    a, b = result["a"], result["b"]
    typer.echo(f"A = {a['run']} [{a['arm']}]   B = {b['run']} [{b['arm']}]   unpaired: {result['unpaired_cases']}")
    typer.echo(f"{'metric':<14} {'A':>8} {'B':>8} {'A-B':>8}  {'95% CI':<20} {'p':>6}  winner")
    for r in result["rows"]:
        ci = f"[{r['ci_low']:+.4f}, {r['ci_high']:+.4f}]"
        typer.echo(
            f"{r['metric']:<14} {r['mean_a']:>8.4f} {r['mean_b']:>8.4f} {r['diff']:>+8.4f}  {ci:<20} "
            f"{r['p_value']:>6.3f}  {r['winner']}"
        )


@app.command("text-report")
def text_report_cmd(
    runs: list[Path] = typer.Argument(..., help="Output folders of `eval run` (their results.json)."),
    out: Path = typer.Option(..., "--out", help="Markdown file to write (an .html file is written beside it)."),
    title: str = typer.Option("Justifications: what the LLM writes", "--title", help="Heading of the report."),
    preamble: str = typer.Option("", "--preamble", help="Markdown placed under the heading (e.g. the command)."),
) -> None:
    """One report of the justification metrics of several runs (grounding, user link, distinctness, latency,
    fallbacks, paired differences, judge, verbatim samples): OUT and OUT with .html."""
    from eval.text_doc import text_report

    written = text_report(runs, out, title=title, preamble=preamble)
    typer.echo(f"written: {written}, {written.with_suffix('.html')}")


@app.command("extraction")
def extraction_cmd(
    ctx: typer.Context,
    data: Path = typer.Argument(..., help="Raw ReDial dialogues.jsonl (or its folder, with movies.json beside it)."),
    messages: int = typer.Option(150, "--messages", min=1, help="Seeker utterances sampled (those naming movies)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the sample and the bootstrap."),
    variant: list[str] = typer.Option(
        [],
        "--variant",
        "-v",
        help="Arm: rules, llm-chat, llm-fewshot, llm-auto (repeatable or comma-separated; "
        "default: rules, llm-chat, llm-fewshot).",
    ),
    catalog: Path | None = typer.Option(None, "--catalog", help="Catalog of the dialogues (default: movies.json)."),
    batch: int = typer.Option(16, "--batch-size", min=1, help="Messages per engine call."),
    out: Path = typer.Option(Path("eval-out/extraction.md"), "--out", help="Markdown report (a .json beside it)."),
) -> None:
    """The chat's preference extraction (rules; rules + LLM in the chat or few-shot layout) against ReDial's
    questionnaire labels: liked / disliked title precision, recall, F1 with bootstrap CIs and paired differences."""
    import shlex
    import sys

    from eval.extraction import parse_arms, run_extraction_eval, write_report

    arms = parse_arms(variant)
    command = "recagent eval extraction " + " ".join(shlex.quote(a) for a in sys.argv[3:])

    def progress(arm: str, done: int, total: int) -> None:
        typer.echo(f"{arm}: {done}/{total}", err=True)

    results = run_extraction_eval(
        ctx.find_root().obj.settings,
        data,
        messages=messages,
        seed=seed,
        arms=arms,
        catalog=catalog,
        batch=batch,
        progress=progress,
    )
    written = write_report(results, out, command=command)
    typer.echo(written.read_text(encoding="utf-8").split("## Samples")[0].rstrip())
    typer.echo(f"written: {written}, {written.with_suffix('.json')}")


@app.command("merge-cache")
def merge_cache_cmd(
    sources: list[Path] = typer.Argument(..., help="Run folders (OUT of `eval run`) or llm_cache.sqlite files."),
    out: Path = typer.Option(..., "--out", help="Run folder (or .sqlite file) that receives the merged cache."),
) -> None:
    """Combine the LLM caches of several runs, so that one `eval run --replay --out OUT` recomputes the arms they
    recorded (e.g. strategies recorded in separate runs, compared on identical cases in one report, no engine)."""
    from eval.llm_cache import merge_caches

    report = merge_caches(sources, out)
    for row in report.sources:
        typer.echo(
            f"{row['path']}: {row['responses']} outputs ({row['added']} added, {row['already_held']} already held, "
            f"{row['conflicts']} conflicting), {row['errors']} recorded errors, arms: {', '.join(row['engines'])}"
        )
    typer.echo(f"{report.dest}: {report.responses} outputs ({report.added} added)")
    if report.conflicts:
        typer.echo(
            f"warning: {report.conflicts} requests were recorded with different outputs; the first recording was "
            "kept (a non-deterministic engine or sampling settings)",
            err=True,
        )


@app.command("folds")
def folds_cmd(
    ctx: typer.Context,
    dataset: Path = typer.Argument(..., help="Dialogue dataset that is its own training log (ReDial folder, turns)."),
    folds: int = typer.Option(5, "--folds", min=2, help="K: folds by dialogue (each fold scored once)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the fold assignment and the validation parts."),
    out: Path = typer.Option(Path("eval-out/folds"), "--out", help="Output folder (results.json, report.md/html)."),
    log: Path | None = typer.Option(
        None,
        "--log",
        help="Interaction log with its own item ids (ratings file or MovieLens folder), linked to the "
        "catalog by title; adds its ease + transition sources to the fused default (an extra arm).",
    ),
    log_titles: Path | None = typer.Option(
        None, "--log-titles", help="CSV of the log's item titles (default: movies.csv beside --log)."
    ),
    log_id_col: str = typer.Option("movieId", "--log-id-col", help="Item id column of --log-titles."),
    log_title_col: str = typer.Option("title", "--log-title-col", help="Title column of --log-titles."),
    log_year_col: str | None = typer.Option(None, "--log-year-col", help="Optional year column of --log-titles."),
    learned: bool = typer.Option(
        False,
        "--learned",
        help="Add the learned ranker (LightGBM lambdarank on conversation features), fitted per fold on the "
        "training dialogues only and reranking a pool of the fused default (pool size chosen on validation).",
    ),
    live_ranker: bool = typer.Option(
        False,
        "--live-ranker",
        help="Add the LIVE conversation ranker: per fold, what `recagent train dialogue-sources --ranker` fits, "
        "fitted on the training dialogues only (with the turns' text), and the held-out turns served by the chat's "
        "own code (the live fusion weights and sources of the settings).",
    ),
) -> None:
    """iEvaLM-CRS protocol (Recall@1/10/50 per gold movie, mentioned movies excluded) with K-fold cross-validation
    by dialogue: the dialogue sources (comention, recommended_popularity) are fitted on the other folds only and
    compared with content-only retrieval and the fused default. Retrieval only, no LLM."""
    import shlex
    import sys

    from agent.errors import InputError
    from eval.crs_report import LiveArmFactory, LogOption, RankerFactory, folds_report

    command = "recagent eval folds " + " ".join(shlex.quote(a) for a in sys.argv[3:])
    linked = None
    if log is not None:
        titles = log_titles or (log if log.is_dir() else log.parent) / "movies.csv"
        if not titles.is_file():
            raise InputError(f"--log {log}: no titles file {titles}",
                             hint="give the log's item titles with --log-titles FILE.csv")  # fmt: skip
        linked = LogOption(log, titles, log_id_col, log_title_col, log_year_col)
    ranker: RankerFactory | None = None
    if learned:
        from train.crs_ltr import ConversationRanker

        ranker = ConversationRanker
    live: LiveArmFactory | None = None
    if live_ranker:
        from train.dialogue import live_arm

        live = live_arm

    folds_report(ctx.obj.settings, dataset, out, folds=folds, seed=seed, command=command, log=linked, ranker=ranker,
                 live=live)  # fmt: skip
    typer.echo((out / "report.md").read_text(encoding="utf-8"))
    typer.echo(f"written: {out}/results.json, report.md, report.html")


@app.command("folds-llm")
def folds_llm_cmd(
    ctx: typer.Context,
    dataset: Path = typer.Argument(..., help="The dataset of the folds run."),
    out: Path = typer.Option(Path("eval-out/folds"), "--out", help="The folds run's output folder."),
    samples: int = typer.Option(200, "--samples", min=1, help="Gold samples drawn (seeded) from the held-out ones."),
    seed: int = typer.Option(0, "--seed", help="Seed of the sample."),
    base: str = typer.Option("fused default", "--base", help="The arm whose held-out ranking is reranked."),
    batch: int = typer.Option(16, "--batch-size", min=1, help="Turns per engine batch."),
) -> None:
    """The default LLM strategy (the settings' strategy, by default option-logit blended with the retrieval order)
    on a seeded sample of a `recagent eval folds` run's gold samples, paired against the ranking it reranks:
    writes llm_arm.json / .md / .html in --out."""
    import shlex
    import sys

    from eval.crs_llm import llm_arm

    command = "recagent eval folds-llm " + " ".join(shlex.quote(a) for a in sys.argv[3:])
    llm_arm(ctx.obj.settings, dataset, out, samples=samples, seed=seed, base=base, batch=batch, command=command)
    typer.echo((out / "llm_arm.md").read_text(encoding="utf-8"))
