"""`recagent train ranker` (LoRA fine-tuning of the option-logit ranker), `recagent train ranker-ltr` (the learned
LightGBM ranker over the fused candidates), `recagent train embedder` (sentence-transformers fine-tuning of the
catalog embedder) and `recagent train sequential` (the next-item model of the `sequential` candidate source). Thin
wiring of :mod:`train` only."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from recagent.mapping_opts import IdCol, LogMappingFile, MappingFile, TextCols, TitleCol

if TYPE_CHECKING:
    from eval.datasets import EvalDataset
    from retrieval.interactions import Interactions

app = typer.Typer(help="Fine-tune models on a catalog's own interaction log.", no_args_is_help=True)


@app.command("ranker")
def ranker_cmd(
    ctx: typer.Context,
    catalog: Path = typer.Option(..., "--catalog", help="Catalog file or folder (e.g. a MovieLens folder)."),
    interactions: Path = typer.Option(..., "--interactions", help="Interaction log (ratings.csv, u.data, CSV)."),
    mapping: MappingFile = None,
    id_col: IdCol = None,
    title_col: TitleCol = None,
    text_cols: TextCols = None,
    interactions_mapping: LogMappingFile = None,
    out: Path = typer.Option(..., "--out", help="Run folder: the adapter, manifest.json, checkpoints."),
    split: str = typer.Option("temporal", "--split", help="The evaluator's split (use the evaluation's value)."),
    min_rating: float = typer.Option(4.0, "--min-rating", help="Ratings >= this are positives."),
    min_history: int = typer.Option(5, "--min-history", min=1, help="Earlier interactions a target needs."),
    users: int | None = typer.Option(None, "--users", min=1, help="The evaluator's --users (test users sampled)."),
    seed: int = typer.Option(0, "--seed", help="The evaluator's split seed."),
    val_users: int = typer.Option(50, "--val-users", min=1, help="Validation users (never trained on)."),
    val_examples_per_user: int = typer.Option(
        3, "--val-examples-per-user", min=1, help="Validation examples per validation user (targets: last positives)."
    ),
    max_train_users: int | None = typer.Option(None, "--max-train-users", min=1, help="Cap on training users."),
    examples_per_user: int = typer.Option(2, "--examples-per-user", min=1, help="Targets per training user."),
    history: int = typer.Option(10, "--history", min=1, help="History items shown in each prompt."),
    options: int = typer.Option(20, "--options", min=2, max=26, help="Options (labels A..) per prompt."),
    option_order: str = typer.Option(
        "random",
        "--option-order",
        help="random (negatives sampled, target at a random letter) or retrieval "
        "(inference windows: the first --options fused candidates, target at its fused rank, missed targets skipped).",
    ),
    tries: int = typer.Option(5, "--tries", min=1, help="--option-order retrieval: targets tried per example."),
    strategy: str = typer.Option(
        "options",
        "--strategy",
        help="Ranking strategy trained: options (one lettered prompt per window) or pointwise (one Yes/No prompt "
        "per option; serve with strategy=pointwise).",
    ),
    negatives: int = typer.Option(
        3, "--negatives", min=1, help="--strategy pointwise: No prompts (other options of the window) per target."
    ),
    lora_r: int = typer.Option(8, "--lora-r", min=1, help="LoRA rank."),
    lora_alpha: int = typer.Option(16, "--lora-alpha", help="LoRA alpha (scale = alpha / r)."),
    lora_dropout: float = typer.Option(0.05, "--lora-dropout", help="Dropout on the LoRA input."),
    target_modules: str = typer.Option("q_proj,k_proj,v_proj,o_proj", "--target-modules", help="Comma separated."),
    lora_layers: int | None = typer.Option(
        None, "--lora-layers", min=1, help="Adapt only the last N decoder layers (default: all; fewer = faster steps)."
    ),
    dtype: str = typer.Option(
        "auto",
        "--dtype",
        help="Training dtype: auto (float32 on a CPU, RECAGENT_LLM_DTYPE on a GPU), float32, bfloat16, float16.",
    ),
    device: str = typer.Option("auto", "--device", help="auto (cuda when torch sees a GPU), cpu or cuda."),
    lr: float = typer.Option(2e-4, "--lr", help="Peak learning rate (linear warm-up and decay)."),
    weight_decay: float = typer.Option(0.01, "--weight-decay", help="AdamW weight decay."),
    epochs: int = typer.Option(1, "--epochs", min=1, help="Passes over the training examples."),
    max_steps: int | None = typer.Option(None, "--max-steps", min=1, help="Optimizer steps (wins over --epochs)."),
    batch_size: int = typer.Option(4, "--batch-size", min=1, help="Examples per forward pass."),
    grad_accum: int = typer.Option(1, "--grad-accum", min=1, help="Forward passes per optimizer step."),
    train_seed: int = typer.Option(0, "--train-seed", help="Seed of examples, data order, LoRA init, dropout."),
    eval_every: int = typer.Option(50, "--eval-every", min=1, help="Validate and checkpoint every N steps."),
    patience: int = typer.Option(3, "--patience", min=1, help="Early stop after N validations without gain."),
    keep: str = typer.Option("best", "--keep", help="Adapter written to OUT: best (validation) or last."),
    threads: int | None = typer.Option(None, "--threads", min=1, help="torch threads."),
    collection: str | None = typer.Option(None, "--collection", help="Use this ingested collection."),
    resume: bool = typer.Option(False, "--resume", help="Continue the interrupted run in OUT."),
    merge: bool = typer.Option(False, "--merge", help="Also write OUT/merged: base + adapter as one model folder."),
) -> None:
    """Train a LoRA adapter for the option-logit (or pointwise Yes/No) ranker on the TRAIN part of the evaluator's
    split; the base model is RECAGENT_LLM_MODEL. Serve it with RECAGENT_LLM_ADAPTER=OUT, compare with `recagent eval
    run ... --variant tuned:strategy=options,adapter=OUT` (strategy=pointwise for a pointwise run)."""
    from agent.llm.models import resolve_model
    from recagent.mapping_opts import catalog_mapping, log_mapping
    from train.config import DataConfig, TrainConfig
    from train.data import build_data, load_data
    from train.trainer import train_ranker

    settings = ctx.find_root().obj.settings
    data_cfg = DataConfig.model_validate(dict(
        split=split, min_rating=min_rating, min_history=min_history, users=users, seed=seed, sample_seed=train_seed,
        val_users=val_users, val_examples_per_user=val_examples_per_user, max_train_users=max_train_users,
        examples_per_user=examples_per_user, history=history,
        options=options, option_order=option_order, tries=tries, strategy=strategy, negatives=negatives))  # fmt: skip
    modules = [m.strip() for m in target_modules.split(",") if m.strip()]
    train_cfg = TrainConfig.model_validate(dict(
        lora_r=lora_r, lora_alpha=lora_alpha, lora_dropout=lora_dropout, target_modules=modules,
        lora_layers=lora_layers, dtype=dtype, device=device, lr=lr,
        weight_decay=weight_decay, epochs=epochs, max_steps=max_steps, batch_size=batch_size, grad_accum=grad_accum,
        seed=train_seed, eval_every=eval_every, patience=patience, keep=keep, threads=threads,
        max_len=settings.llm_max_model_len))  # fmt: skip
    dataset = load_data(
        catalog,
        interactions,
        mapping=catalog_mapping(mapping, id_col=id_col, title_col=title_col, text_cols=text_cols),
        log_mapping=log_mapping(interactions_mapping),
    )
    model_path = resolve_model(settings)  # before the examples are built: a missing model fails fast
    data = build_data(settings, dataset, data_cfg, collection=collection)
    typer.echo(f"examples: {len(data.train)} train ({data.stats['train']['users']} users), {len(data.val)} validation")
    if data_cfg.strategy == "pointwise":
        typer.echo(f"pointwise: up to {1 + negatives} Yes/No prompts per training example (the target and "
                   f"{negatives} other options), every option of a validation example")  # fmt: skip
    provenance = {"catalog": str(catalog), "interactions": str(interactions), "collection": data.collection,
                  "files": {str(f): _sha(f) for f in dataset.files}, "stats": data.stats}  # fmt: skip
    result = train_ranker(settings, model_path, data.train, data.val, out, forbidden=data.forbidden,
                          data_cfg=data_cfg, train_cfg=train_cfg, provenance=provenance, resume=resume,
                          merge=merge)  # fmt: skip
    m = result.manifest
    cost, best = m.get("cost", {}), m.get("best", {})
    typer.echo(f"adapter: {result.out} (best step {best.get('step')}, validation NDCG@10 {best.get('val_ndcg@10')})")
    typer.echo(f"steps: {m.get('steps', {}).get('done')}, {cost.get('examples_per_second')} examples/s, "
               f"{cost.get('seconds_per_step')} s/step, wall {cost.get('wall_seconds')} s")  # fmt: skip


@app.command("ranker-ltr")
def ranker_ltr_cmd(
    ctx: typer.Context,
    catalog: Path = typer.Option(..., "--catalog", help="Catalog file or folder (e.g. a MovieLens folder)."),
    interactions: Path = typer.Option(..., "--interactions", help="Interaction log (ratings.csv, u.data, CSV)."),
    mapping: MappingFile = None,
    id_col: IdCol = None,
    title_col: TitleCol = None,
    text_cols: TextCols = None,
    interactions_mapping: LogMappingFile = None,
    out: Path | None = typer.Option(
        None, "--out", help="Model folder (default: the collection's artifacts/<collection>/ltr beside the store)."
    ),
    split: str = typer.Option("temporal", "--split", help="The evaluator's split (use the evaluation's value)."),
    min_rating: float = typer.Option(4.0, "--min-rating", help="Ratings >= this are positives (targets)."),
    min_history: int = typer.Option(5, "--min-history", min=1, help="Earlier interactions a target needs."),
    users: int | None = typer.Option(None, "--users", min=1, help="The evaluator's --users (test users sampled)."),
    seed: int = typer.Option(0, "--seed", help="The evaluator's split seed."),
    serve: str = typer.Option(
        "eval",
        "--serve",
        help="Log the model serves: eval (the evaluator's test-part train log, for `eval run --variant "
        "NAME:strategy=learned`) or full (the whole log, for recommend/serve).",
    ),
    candidates: int = typer.Option(100, "--candidates", min=2, max=500, help="Fused candidates per user (group)."),
    early_stop_share: float = typer.Option(0.2, "--early-stop-share", help="Validation users held out to stop early."),
    rounds: int = typer.Option(500, "--rounds", min=1, help="Most boosting rounds."),
    patience: int = typer.Option(30, "--patience", min=1, help="Early stop after N rounds without gain."),
    learning_rate: float = typer.Option(0.05, "--lr", help="Boosting learning rate."),
    num_leaves: int = typer.Option(15, "--num-leaves", min=2, help="Leaves per tree."),
    min_data_in_leaf: int = typer.Option(20, "--min-data-in-leaf", min=1, help="Rows a leaf needs."),
    threads: int = typer.Option(2, "--threads", min=1, help="LightGBM threads."),
    train_seed: int = typer.Option(0, "--train-seed", help="Seed of the early-stopping slice and of LightGBM."),
    collection: str | None = typer.Option(None, "--collection", help="Use this ingested collection."),
    force: bool = typer.Option(False, "--force", help="Replace a learned ranker already in the folder."),
    llm_strategy: str | None = typer.Option(
        None,
        "--llm-strategy",
        help="Add the LLM feature: this LLM strategy (listwise, options, pointwise) scores every training group's "
        "candidates and its score is the feature llm.score (serve with ltr_llm_strategy=NAME). Its answers are "
        "cached in --out/llm_cache.sqlite: a rerun resumes.",
    ),
    llm_batch: int = typer.Option(8, "--llm-batch", min=1, help="Training groups per LLM engine batch."),
) -> None:
    """Fit the learned ranker (LightGBM lambdarank over the fused candidates' features) on the VALIDATION targets of
    the evaluator's split (the test targets never reach it: leakage guard). Use it with `--strategy learned`
    (recommend) or `--variant NAME:strategy=learned,explain=none` (eval run, same --split/--users/--seed); with
    --llm-strategy NAME, serve it with ltr_llm_strategy=NAME (RECAGENT_LTR_LLM_STRATEGY, or the variant key)."""
    import time

    from pydantic import ValidationError

    from agent.errors import ConfigError
    from recagent.mapping_opts import catalog_mapping, log_mapping
    from retrieval.embed import make_embedder
    from retrieval.fitted import artifact_dir
    from train.data import load_data, open_collection
    from train.ltr import LtrFitConfig, check_out, fit_ranker
    from train.ltr_data import LtrDataConfig, build_ltr_data

    started = time.perf_counter()
    settings = ctx.find_root().obj.settings
    try:
        data_cfg = LtrDataConfig.model_validate(dict(
            split=split, min_rating=min_rating, min_history=min_history, users=users, seed=seed, serve=serve,
            candidates=candidates, early_stop_share=early_stop_share, sample_seed=train_seed))  # fmt: skip
        fit_cfg = LtrFitConfig.model_validate(dict(
            rounds=rounds, patience=patience, learning_rate=learning_rate, num_leaves=num_leaves,
            min_data_in_leaf=min_data_in_leaf, threads=threads, seed=train_seed))  # fmt: skip
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        hint = "see `recagent train ranker-ltr --help`"
        raise ConfigError(f"bad ranker-ltr settings: {problems}", hint=hint) from exc
    if llm_strategy is not None and llm_strategy not in ("listwise", "options", "pointwise"):
        raise ConfigError(
            f"bad ranker-ltr settings: --llm-strategy {llm_strategy!r} is not an LLM strategy",
            hint="use listwise, options or pointwise (see `recagent train ranker-ltr --help`)",
        )
    dataset = load_data(
        catalog,
        interactions,
        mapping=catalog_mapping(mapping, id_col=id_col, title_col=title_col, text_cols=text_cols),
        log_mapping=log_mapping(interactions_mapping),
    )
    embedder = make_embedder(settings.embed_config(progress=False))
    coll = open_collection(settings, dataset, embedder, collection=collection)
    target = out or artifact_dir(settings.store_config(), coll.name, "ltr")
    check_out(target, force)  # before the groups are built
    llm = _ltr_llm(settings, target, llm_strategy, llm_batch) if llm_strategy else None
    try:
        data = build_ltr_data(settings, dataset, data_cfg, coll, embedder, llm=llm)
    finally:
        if llm is not None and llm.engine is not None:
            llm.engine.close()
    s = data.stats
    typer.echo(f"groups: {s['groups_with_target']} of {s['validation_users']} validation users have their target "
               f"among the {candidates} fused candidates ({s['fit_groups']} fit, {s['early_stop_groups']} early "
               f"stop); {s['test_interactions_kept_out']} interactions outside the served log (test targets; loo: "
               "also the k-core's cut) kept out")  # fmt: skip
    provenance = {"catalog": str(catalog), "interactions": str(interactions), "collection": coll.name,
                  "files": {str(f): _sha(f) for f in dataset.files}}  # fmt: skip
    result = fit_ranker(data, target, data_cfg=data_cfg, fit_cfg=fit_cfg, provenance=provenance, started=started,
                        force=force)  # fmt: skip
    m = result.manifest
    stop = m["early_stop"]
    top = ", ".join(f"{d['feature']}" for d in m["importances"][:5])
    typer.echo(f"early-stop users ({stop['groups']}): NDCG@10 fused order {stop['ndcg@10_fused_order']}, model "
               f"{stop['ndcg@10_model']} (best round {m['best_iteration']})")  # fmt: skip
    typer.echo(f"top features (gain): {top}")
    feat = m.get("llm_feature")
    if feat:
        place = next((i for i, d in enumerate(m["importances"], 1) if d["feature"] == feat["feature"]), None)
        typer.echo(f"LLM feature ({feat['strategy']}, {feat['model']}): {feat['groups_scored']} groups scored, "
                   f"{feat['groups_missing']} missing {feat['missing_by_reason'] or ''}, "
                   f"{feat['llm_calls']} LLM calls "
                   f"({feat.get('cache', {}).get('hits', 0)} from the cache), {feat['seconds']} s; "
                   f"{feat['feature']} ranks #{place} of {len(m['importances'])} by gain")  # fmt: skip
    typer.echo(f"model: {result.out} (log {m['log_fingerprint']}); fit {m['timing']['fit_seconds']} s, "
               f"total {m['timing']['total_seconds']} s")  # fmt: skip


def _ltr_llm(settings: Any, out: Path, strategy: str, batch: int) -> Any:
    """The LLM feature's engine for `train ranker-ltr`: the settings' engine behind the evaluator's SQLite cache in
    ``out`` (a rerun answers the scored prompts from disk)."""
    from agent.llm import create_engine
    from eval.llm_cache import CachingEngine, LLMCache
    from prompts import PromptRegistry
    from train.ltr_llm import LtrLlm

    engine = CachingEngine(create_engine(settings), LLMCache(Path(out) / "llm_cache.sqlite"))
    return LtrLlm(engine=engine, registry=PromptRegistry(), strategy=strategy, chunk=batch)


@app.command("embedder")
def embedder_cmd(
    catalog: Path = typer.Option(..., "--catalog", help="Catalog file or folder (e.g. a MovieLens folder)."),
    interactions: Path = typer.Option(..., "--interactions", help="Interaction log (ratings.csv, u.data, CSV)."),
    mapping: MappingFile = None,
    id_col: IdCol = None,
    title_col: TitleCol = None,
    text_cols: TextCols = None,
    interactions_mapping: LogMappingFile = None,
    out: Path = typer.Option(..., "--out", help="Output folder: the tuned model (RECAGENT_EMBED_MODEL=OUT)."),
    split: str = typer.Option("temporal", "--split", help="The evaluator's split (use the evaluation's value)."),
    min_rating: float = typer.Option(4.0, "--min-rating", help="Ratings >= this are positives."),
    min_history: int = typer.Option(5, "--min-history", min=1, help="Earlier interactions a validation target needs."),
    users: int | None = typer.Option(None, "--users", min=1, help="The evaluator's --users (test users sampled)."),
    seed: int = typer.Option(0, "--seed", help="The evaluator's split seed."),
    val_users: int = typer.Option(100, "--val-users", min=1, help="Validation users (never paired)."),
    window: int = typer.Option(3, "--window", min=1, help="Pair each positive with the next N positives."),
    max_pairs: int | None = typer.Option(None, "--max-pairs", min=1, help="Cap on training pairs (seeded sample)."),
    val_query: str = typer.Option(
        "item2item",
        "--val-query",
        help="Validation query: item2item (as the pipeline's item-to-item source) or recent (mean of --history).",
    ),
    val_targets: int = typer.Option(
        5, "--val-targets", min=1, help="Validation queries per validation user (its last N liked items)."
    ),
    history: int = typer.Option(10, "--history", min=1, help="--val-query recent: items before the target."),
    epochs: int = typer.Option(1, "--epochs", min=1, help="Passes over the pairs."),
    batch_size: int = typer.Option(32, "--batch-size", min=2, help="Pairs per step (in-batch negatives)."),
    lr: float = typer.Option(2e-5, "--lr", help="Peak learning rate (linear warm-up and decay)."),
    warmup_ratio: float = typer.Option(0.1, "--warmup-ratio", help="Share of the steps spent warming up."),
    weight_decay: float = typer.Option(0.01, "--weight-decay", help="AdamW weight decay."),
    train_seed: int = typer.Option(0, "--train-seed", help="Seed of validation users, pair sample, data order."),
    eval_every: int = typer.Option(200, "--eval-every", min=1, help="Validate every N steps."),
    patience: int = typer.Option(3, "--patience", min=1, help="Early stop after N validations without gain."),
    max_steps: int | None = typer.Option(None, "--max-steps", min=1, help="Steps to run (wins over --epochs)."),
    threads: int | None = typer.Option(None, "--threads", min=1, help="torch threads."),
    base_model: str = typer.Option("default", "--base-model", help="'default' (bundled MiniLM), a folder or HF id."),
    force: bool = typer.Option(False, "--force", help="Replace an earlier embedder run in OUT."),
) -> None:
    """Fine-tune the catalog embedder on co-interaction pairs (items a user liked close together in time) from the
    TRAIN part of the evaluator's split; validated by retrieval recall@20/@50 of each validation user's next liked
    item. Use it with RECAGENT_EMBED_MODEL=OUT and a new collection (`recagent ingest ... --collection NAME`)."""
    from recagent.mapping_opts import catalog_mapping, log_mapping
    from train.data import load_data
    from train.embed_pairs import EmbedDataConfig, build_embed_data
    from train.embedder import EmbedTrainConfig, resolve_base, train_embedder

    data_cfg = EmbedDataConfig.model_validate(
        dict(
            split=split,
            min_rating=min_rating,
            min_history=min_history,
            users=users,
            seed=seed,
            sample_seed=train_seed,
            val_users=val_users,
            window=window,
            max_pairs=max_pairs,
            val_query=val_query,
            val_targets=val_targets,
            history=history,
        )
    )
    train_cfg = EmbedTrainConfig.model_validate(
        dict(
            epochs=epochs,
            max_steps=max_steps,
            batch_size=batch_size,
            lr=lr,
            warmup_ratio=warmup_ratio,
            weight_decay=weight_decay,
            seed=train_seed,
            eval_every=eval_every,
            patience=patience,
            threads=threads,
        )
    )
    dataset = load_data(
        catalog,
        interactions,
        mapping=catalog_mapping(mapping, id_col=id_col, title_col=title_col, text_cols=text_cols),
        log_mapping=log_mapping(interactions_mapping),
    )
    resolve_base(base_model)  # a missing model folder fails before the pairs are cut
    data = build_embed_data(dataset, data_cfg)
    s = data.stats
    typer.echo(
        f"pairs: {s['pairs']} from {s['pair_users']} users ({s['pairs_cut_by_max_pairs']} cut by --max-pairs, "
        f"{s['duplicate_pairs']} duplicates dropped, {s['users_under_two_positives']} users with under two "
        f"positives); validation: {s['val_users']} users, {s['val_queries']} queries; {s['test_interactions']} test "
        "interactions kept out"
    )
    provenance = {
        "catalog": str(catalog),
        "interactions": str(interactions),
        "files": {str(f): _sha(f) for f in dataset.files},
        "stats": data.stats,
    }
    result = train_embedder(
        base_model,
        data.pairs,
        data.val,
        dataset.items,
        out,
        forbidden=data.forbidden,
        data_cfg=data_cfg,
        train_cfg=train_cfg,
        provenance=provenance,
        force=force,
    )
    m = result.manifest
    base, best, cost = m["base"], m["best"], m["cost"]
    typer.echo(
        f"validation ({s['val_users']} users, {s['val_queries']} queries, --val-query {data_cfg.val_query}): "
        f"base recall@20 {base['recall@20']:.4f} recall@50 "
        f"{base['recall@50']:.4f} MRR {base['mrr']:.4f}; best (step {best['step']}) recall@20 "
        f"{best['recall@20']:.4f} recall@50 {best['recall@50']:.4f} MRR {best['mrr']:.4f}"
    )
    if best["step"] == 0:
        typer.echo("no validation beat the base model: OUT holds the base weights")
    typer.echo(
        f"model: {result.out} (embedder id {m['embedder_id']}); steps {m['steps']['done']} "
        f"({m['steps']['stopped']}); wall {cost['wall_seconds']} s, {cost['pairs_per_second']} pairs/s"
    )


def _sequential_log(
    dataset: EvalDataset, split: str | None, min_rating: float, min_history: int, users: int | None, seed: int
) -> tuple[Interactions, dict[str, object] | None]:
    """The log `train sequential` learns from: the whole log, or with ``--split`` the evaluator's test-part train
    log of that split (and its options, for the manifest)."""
    from pydantic import ValidationError

    from agent.errors import ConfigError
    from train.config import SplitOptions
    from train.eval_log import eval_train_log

    assert dataset.interactions is not None
    if split is None:
        return dataset.interactions, None
    if split == "loo":
        raise ConfigError(
            "--split loo is the sequential model's own split: the evaluator's leave-one-out logs are served as is",
            hint="drop --split (or give temporal, ratio or random)",
        )
    try:
        options = SplitOptions(split=split, min_rating=min_rating, min_history=min_history, users=users, seed=seed)
    except ValidationError as exc:
        raise ConfigError(f"bad --split settings: {exc.errors()[0]['msg']}", hint="see --help") from exc
    log = eval_train_log(dataset, options)
    typer.echo(f"--split {split}: learning from the evaluator's test-part train log ({len(log)} of "
               f"{len(dataset.interactions)} interactions)")  # fmt: skip
    return log, options.model_dump()


@app.command("sequential")
def sequential_cmd(
    ctx: typer.Context,
    catalog: Path = typer.Option(..., "--catalog", help="Catalog file or folder (e.g. a MovieLens folder)."),
    interactions: Path = typer.Option(..., "--interactions", help="Interaction log (ratings.csv, u.data, CSV)."),
    mapping: MappingFile = None,
    id_col: IdCol = None,
    title_col: TitleCol = None,
    text_cols: TextCols = None,
    interactions_mapping: LogMappingFile = None,
    out: Path | None = typer.Option(
        None, "--out", help="Model folder (default: the collection's artifact folder, where the pipeline looks)."
    ),
    collection: str | None = typer.Option(None, "--collection", help="Collection served (default: the setting)."),
    split: str | None = typer.Option(
        None,
        "--split",
        help="Learn from the evaluator's test-part train log of this split (temporal, ratio, random; with the same "
        "--min-rating/--min-history/--users/--seed), so that `eval run --split SPLIT` serves the model; default: the "
        "log as given (which also serves `eval run --split loo`).",
    ),
    min_rating: float = typer.Option(4.0, "--min-rating", help="--split: ratings >= this are positives."),
    min_history: int = typer.Option(5, "--min-history", min=1, help="--split: earlier interactions a target needs."),
    users: int | None = typer.Option(None, "--users", min=1, help="--split: the evaluator's --users."),
    seed: int = typer.Option(0, "--seed", help="--split: the evaluator's split seed."),
    max_len: int = typer.Option(50, "--max-len", help="Most recent items the model reads."),
    dim: int = typer.Option(64, "--dim", help="Embedding and hidden size."),
    blocks: int = typer.Option(2, "--blocks", help="Self-attention blocks."),
    heads: int = typer.Option(2, "--heads", help="Attention heads (must divide --dim)."),
    dropout: float = typer.Option(0.2, "--dropout", help="Dropout rate."),
    loss: str = typer.Option("ce", "--loss", help="ce (softmax over all items) or bce (one sampled negative)."),
    min_count: int = typer.Option(5, "--min-count", help="k-core threshold of the leave-one-out split."),
    epochs: int = typer.Option(200, "--epochs", help="Most passes over the training windows."),
    batch_size: int = typer.Option(64, "--batch-size", help="Windows per optimizer step."),
    lr: float = typer.Option(3e-3, "--lr", help="AdamW learning rate."),
    weight_decay: float = typer.Option(0.0, "--weight-decay", help="AdamW weight decay."),
    patience: int = typer.Option(4, "--patience", help="Early stop after N validations without gain."),
    eval_every: int = typer.Option(1, "--eval-every", help="Validate and checkpoint every N epochs."),
    train_seed: int = typer.Option(0, "--train-seed", help="Seed of weights, data order, dropout, negatives."),
    threads: int = typer.Option(2, "--threads", help="torch threads."),
    resume: bool = typer.Option(False, "--resume", help="Continue the interrupted run in OUT."),
    force: bool = typer.Option(False, "--force", help="Replace an earlier model in OUT."),
) -> None:
    """Train the sequential (SASRec-style) next-item model on the TRAIN part of the leave-one-out split (k-core,
    per user by time: last item = test, second to last = validation), early-stopped on validation NDCG@10. The
    pipeline uses it as the `sequential` candidate source when it sits in the collection's artifact folder (or
    RECAGENT_SEQUENTIAL_MODEL=OUT) and the served log is the one it learned from."""
    from agent.errors import ConfigError, InputError
    from recagent.mapping_opts import catalog_mapping, log_mapping
    from retrieval.sequential import default_model_dir
    from train.data import load_data
    from train.sequential import SeqTrainConfig, fit_sequential, heldout_metrics

    settings = ctx.find_root().obj.settings
    cfg = SeqTrainConfig.model_validate(
        dict(
            model=dict(max_len=max_len, dim=dim, blocks=blocks, heads=heads, dropout=dropout),
            loss=loss,
            min_count=min_count,
            epochs=epochs,
            batch_size=batch_size,
            lr=lr,
            weight_decay=weight_decay,
            patience=patience,
            eval_every=eval_every,
            seed=train_seed,
            threads=threads,
        )
    )
    if resume and force:
        raise ConfigError("--resume and --force exclude each other", hint="--resume continues OUT, --force replaces it")
    name = collection or settings.collection
    target = out or default_model_dir(settings.store_config(), name)
    dataset = load_data(
        catalog,
        interactions,
        mapping=catalog_mapping(mapping, id_col=id_col, title_col=title_col, text_cols=text_cols),
        log_mapping=log_mapping(interactions_mapping),
    )
    if dataset.interactions is None:
        raise InputError(f"{interactions} holds no interaction log", hint="give a ratings file (user, item, time)")
    log, served = _sequential_log(dataset, split, min_rating, min_history, users, seed)
    provenance = {
        "catalog": str(catalog),
        "interactions": str(interactions),
        "collection": name,
        "files": {str(f): _sha(f) for f in dataset.files},
        "served_split": served,
    }
    result, loo = fit_sequential(log, target, cfg, provenance=provenance, resume=resume, force=force)
    m = result.manifest
    c = m["split"]
    typer.echo(
        f"leave-one-out: {c['interactions_read']} interactions read, {c['interactions_kept']} kept by the "
        f"{cfg.min_count}-core ({c['users']} users, {c['items']} items); {c['train_interactions']} train"
    )
    if not m["complete"]:
        typer.echo(f"interrupted after epoch {m['epochs']['done']}: continue with --resume")
        return
    best, cost = m["best"], m["cost"]
    test = heldout_metrics(result.out, loo)
    typer.echo(
        f"best epoch {best['epoch']}: validation NDCG@10 {best['ndcg@10']:.4f} Recall@10 {best['recall@10']:.4f}; "
        f"test NDCG@10 {test['ndcg@10']:.4f} Recall@10 {test['recall@10']:.4f}"
    )
    typer.echo(
        f"{m['epochs']['stopped']}; {cost['train_seconds']} s ({cost['seconds_per_epoch']} s/epoch, "
        f"{cost['torch_threads']} threads); model: {result.out}"
    )


def _sha(path: Path) -> str:
    from eval.datasets import file_sha256

    return file_sha256(path)


@app.command("dialogue-sources")
def dialogue_sources_cmd(
    ctx: typer.Context,
    logs: list[Path] = typer.Argument(
        None,
        help="Dialogue logs: ReDial dialogues.jsonl, turns.jsonl, or generic "
        "{dialog_id, mentioned, recommended, rejected, context (optional)} JSONL (ids or titles); a turn's text "
        "(context) is its request text when the ranker trains.",
    ),
    sessions: bool = typer.Option(False, "--sessions", help="Also learn from recagent's own chat sessions."),
    collection: str | None = typer.Option(
        None, "--collection", help="Collection the sources serve (default: RECAGENT_COLLECTION)."
    ),
    pairs: str = typer.Option(
        "dialogue", "--pairs", help="turn (recommended after mentioned) or dialogue (any two items of a dialogue)."
    ),
    window: int = typer.Option(0, "--window", min=0, help="Last N mentions that count (0 = all)."),
    normalisation: str = typer.Option("none", "--normalisation", help="none, row or cosine."),
    prior: float = typer.Option(0.05, "--prior", min=0, help="Weight of the recommendation counts in comention."),
    ranker: bool = typer.Option(
        False,
        "--ranker",
        help="Also fit the conversation ranker (LightGBM on conversation features) on the whole log; chat turns are "
        "then reordered by it before the LLM ranking (RECAGENT_DIALOGUE_RANKER=0 turns that off).",
    ),
    ranker_pools: str = typer.Option(
        "100,200", "--ranker-pools", help="Pool sizes the ranker tries on its validation part, comma-separated."
    ),
) -> None:
    """Fit the conversation sources (comention, recommended_popularity) of a collection on dialogue logs and/or the
    chat sessions (with --ranker also the conversation ranker); the chat, the server and `recagent recommend` use
    them from their next start."""
    from retrieval.dialogue_sources import DialogueSourceConfig
    from train.crs_ltr import CrsLtrConfig
    from train.dialogue import fit_dialogue_sources

    settings = ctx.find_root().obj.settings
    config = DialogueSourceConfig.model_validate(
        {"pairs": pairs, "window": window, "normalisation": normalisation, "prior": prior}
    )
    ranker_config = CrsLtrConfig(pools=_pools(ranker_pools)) if ranker else None
    fit = fit_dialogue_sources(settings, logs or [], sessions=sessions, config=config, collection=collection,
                               ranker=ranker_config)  # fmt: skip
    for r in fit.reports:
        typer.echo(
            f"{r.source} ({r.format}): {r.dialogues} dialogues, {r.turns_read} turns read, {r.turns_kept} "
            f"kept; {r.names_total} items: {r.matched_id} by id, {r.matched_title} by title, {r.unmatched} "
            f"unmatched{' (e.g. ' + ', '.join(r.unmatched_examples[:3]) + ')' if r.unmatched else ''}; "
            f"{r.skipped} skipped; {r.text_line()}"
        )
    m = fit.model
    typer.echo(
        f"{'reused' if fit.reused else 'fitted'}: {m.turns} turns, {m.dialogues} dialogues, "
        f"{len(m.item_ids)} items, {m.comention.nnz} co-mention pairs, log {m.fingerprint} -> {fit.folder} "
        f"({fit.seconds:.2f} s, peak {fit.peak_mib:.1f} MiB traced)"
    )
    if fit.ranker is not None:
        info = fit.ranker.info
        typer.echo(
            f"conversation ranker: pool {fit.ranker.pool}, {info.get('train_groups')} training turns, best iteration "
            f"{fit.ranker.iteration}, {info.get('total_seconds')} s, request text in {info.get('turns_with_text')} "
            f"of {info.get('turns')} log turns -> {fit.ranker_folder}"
        )


def _pools(text: str) -> tuple[int, ...]:
    try:
        pools = tuple(int(p) for p in text.split(",") if p.strip())
    except ValueError:
        pools = ()
    if not pools or min(pools) < 2:
        raise typer.BadParameter(f"{text!r}: give pool sizes >= 2, comma-separated, e.g. 100,200",
                                 param_hint="--ranker-pools")  # fmt: skip
    return pools
