"""The evaluation runner: the SAME Recommender over a dataset, for several variants and baselines, on identical cases.

    dataset + protocol -> split (cases, train log) -> per arm, in chunks: Recommender.recommend_many
    -> one record per case appended to cases.jsonl (resumable) -> metrics, CIs, paired comparisons -> report files

Every LLM request goes through :class:`~eval.llm_cache.CachingEngine` (SQLite); ``replay=True`` re-runs everything
from that cache with no engine at all, and a miss is an error.
"""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from agent.errors import ConfigError, EngineUnavailableError, InputError, RecagentError
from agent.llm.base import LLMEngine
from agent.network import redact_url
from agent.pipeline import Recommendation, Recommender, RecommendRequest
from agent.profiles import llm_sources_on
from agent.schemas import LLM_STRATEGIES
from agent.settings import Settings
from eval import metrics as M
from eval.baselines import BaselineRanker
from eval.datasets import EvalCase, EvalDataset, file_sha256
from eval.judge import JUDGE_ENGINE_NAME, JudgeConfig, run_judge
from eval.llm_cache import CacheMissError, CachingEngine, LLMCache
from eval.protocol import Protocol, Split, make_split
from eval.provenance import DeterministicStore, git_commit
from eval.standins import FixedCandidates, SharedRetrieval
from eval.text_metrics import ShownJustification, case_text
from eval.universe import restricted_collection
from eval.variants import BASELINES, LOG_BASELINES, EvalSettings, Variant, variant_settings
from prompts import PromptRegistry
from retrieval.config import SOURCE_NAMES
from retrieval.embed import Embedder, make_embedder
from retrieval.fitted import artifact_dir
from retrieval.store import Store

log = logging.getLogger(__name__)

__all__ = ["EvalRun", "run_eval"]

CASES_FILE = "cases.jsonl"
CACHE_FILE = "llm_cache.sqlite"
CONFIG_FILE = "run_config.json"
REPLAY_DIR = "replay"
_BASELINE_SETTINGS: dict[str, dict[str, Any]] = {
    "embedding": {"rerank_strategy": "retrieval", "explain_mode": "none",
                  # the two embedding sources only: every other known source off, those added later included
                  "fusion_weights": {n: float(n in ("semantic", "item2item")) for n in SOURCE_NAMES}},
    "retrieval": {"rerank_strategy": "retrieval", "explain_mode": "none"},
}  # fmt: skip


@dataclass
class EvalRun:
    """What a run produced: output folder, per-case records, and the results dict written to results.json."""

    out: Path
    records: list[dict[str, Any]]
    results: dict[str, Any]
    split: Split
    arms: list[Variant] = field(default_factory=list)


def _baseline_arms(names: Sequence[str], dataset: EvalDataset) -> list[Variant]:
    arms = []
    for name in names:
        if name not in BASELINES:
            raise ConfigError(f"unknown baseline {name!r}", hint=f"use one of {', '.join(BASELINES)}")
        if name in LOG_BASELINES and dataset.kind != "interactions":
            raise ConfigError(
                f"baseline {name} needs an interaction log; {dataset.name} is a conversation dataset",
                hint="drop it (random, embedding and retrieval work on conversations)",
            )
        arms.append(Variant(name=name, baseline=name, settings=dict(_BASELINE_SETTINGS.get(name, {})), spec=name))
    return arms


def applicable_baselines(dataset: EvalDataset) -> list[str]:
    if dataset.kind == "interactions":
        return list(BASELINES)
    return [b for b in BASELINES if b not in LOG_BASELINES]


def _read_records(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    out = []
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                try:
                    out.append(json.loads(line))
                except json.JSONDecodeError:
                    log.warning("ignoring a partial line in %s (interrupted run)", path)
    return out


def _attribution(gold: set[str], ranked: list[str], candidates: list[str] | None, fallback: str | None) -> str:
    if gold & set(ranked):
        return "hit"
    if candidates is None:
        return "missed"
    if not gold & set(candidates):
        return "not_retrieved"
    return "lost_to_fallback" if fallback else "demoted_by_ranker"


class _Runner:
    def __init__(
        self,
        settings: Settings,
        dataset: EvalDataset,
        protocol: Protocol,
        arms: list[Variant],
        out: Path,
        *,
        engine: LLMEngine | None,
        embedder: Embedder | None,
        store: Store | None,
        registry: PromptRegistry,
        collection: str | None,
        replay: bool,
        cache_path: Path,
        batch_size: int,
        progress: bool,
    ) -> None:
        self.settings, self.dataset, self.protocol, self.arms, self.out = settings, dataset, protocol, arms, out
        self.engine, self.registry, self.replay = engine, registry, replay
        self.batch_size, self.progress = batch_size, progress
        self._embedder, self._store = embedder, store
        self.collection = collection
        self._ranked: str | None = None  # the collection the pipeline ranks (see ensure_collection)
        self._dialogue_ok: bool | None = None  # use the collection's fitted dialogue log (see dialogue_sources)
        self._kept: tuple[str, LLMEngine] | None = None  # the engine this runner started, kept for the next arm
        self.split = make_split(dataset, protocol)  # bad data fails here, before anything is written
        universe = self.split.items if self.split.items is not None else dataset.items
        self.ranker = BaselineRanker(list(universe), self.split.train, seed=protocol.seed,
                                     learned=settings.learned_sources)  # fmt: skip
        out.mkdir(parents=True, exist_ok=True)
        self.cache = LLMCache(cache_path)
        self.shared = SharedRetrieval()

    # -- parts -------------------------------------------------------------------------------------------------
    @property
    def embedder(self) -> Embedder:
        if self._embedder is None:
            self._embedder = make_embedder(self.settings.embed_config(progress=False))
        return self._embedder

    @property
    def store(self) -> Store:
        if self._store is None:
            self._store = DeterministicStore(self.settings.store_config())
        return self._store

    def ensure_collection(self) -> str:
        """The collection holding the dataset's catalog: the given one, or ``eval-<catalog hash>`` ingested now
        (idempotent: unchanged items are not embedded again); narrowed to the split's item universe if it has one."""
        if self._ranked is None:
            base = self.collection or self._ingest()
            items = self.split.items
            self._ranked = base if items is None else restricted_collection(self.store, base, items)
        return self._ranked

    def dialogue_sources(self) -> bool:
        """Use the collection's fitted dialogue log on a dialogue dataset; refused (InputError) when the log holds
        a scored dialogue (:func:`eval.crs.dialogue_log_usable`). `recagent eval folds` fits them per fold."""
        if self._dialogue_ok is None:
            from eval.crs import dialogue_log_usable
            from retrieval.dialogue_sources import ARTIFACT_KIND, load_dialogue_model

            folder = artifact_dir(self.store.config, self.ensure_collection(), ARTIFACT_KIND)
            self._dialogue_ok = dialogue_log_usable(load_dialogue_model(folder), self.split.cases)
        return self._dialogue_ok

    def _ingest(self) -> str:
        from retrieval.ingest import ingest

        digest = file_sha256(self.dataset.catalog_path) if self.dataset.catalog_path.is_file() else "dir"
        name = f"eval-{digest[:12]}" if digest != "dir" else f"eval-{self.dataset.name}"[:60]
        ingest(self.dataset.catalog_path, store_config=self.settings.store_config(),
               embed_config=self.settings.embed_config(progress=self.progress), format=self.dataset.catalog_format,
               mapping=self.dataset.mapping, collection=name, embedder=self.embedder, store=self.store,
               progress=self.progress)  # fmt: skip
        return name

    def _engine_for(self, arm: Variant, vs: EvalSettings) -> LLMEngine | None:
        needs = vs.rerank_strategy in LLM_STRATEGIES or vs.explain_mode == "llm" or llm_sources_on(vs.fusion_weights)
        needs = needs or (vs.rerank_strategy == "learned" and vs.ltr_llm_strategy is not None)  # its LLM feature
        if not needs:
            return None
        if self.replay:
            identity = self.cache.engine(arm.name)
            if identity is None:
                raise CacheMissError(
                    f"replay: the cache {self.cache.path} has no recorded engine for variant {arm.name!r}",
                    hint="replay the run that recorded this cache with the same --variant names",
                )
            return CachingEngine(None, self.cache, identity=identity)
        model_keys = {"llm_model", "llm_backend", "llm_server_url", "llm_adapter"}
        inner = self.engine if self.engine is not None and not (set(arm.settings) & model_keys) else None
        if inner is None:
            # arms with the same LLM settings share one engine (an engine start costs ~1 min on CPU); another
            # model's engine is started only once the previous one is closed (one engine in memory at a time)
            key = json.dumps({k: v for k, v in vs.model_dump(mode="json").items() if k.startswith("llm_")},
                             sort_keys=True, default=str)  # fmt: skip
            if self._kept is not None and self._kept[0] == key:
                inner = self._kept[1]
            else:
                self.release_engine()
                from agent.llm import create_engine

                try:
                    inner = create_engine(vs)
                except RecagentError as exc:
                    raise type(exc)(
                        f"variant {arm.name}: the LLM engine cannot start: {exc.message}", hint=exc.hint
                    ) from exc
                self._kept = (key, inner)
        wrapped = CachingEngine(inner, self.cache)
        self.cache.set_engine(arm.name, wrapped.identity)
        return wrapped

    def recommender(self, arm: Variant) -> Recommender:
        vs = variant_settings(self.settings, arm)
        use_dialogue_log = self.dialogue_sources()  # a refusal comes before any engine starts
        rec = Recommender(vs, engine=self._engine_for(arm, vs), embedder=self.embedder, store=self.store,
                          collection=self.ensure_collection(), interactions=self.split.train,
                          registry=self.registry, dialogue_sources=use_dialogue_log)  # fmt: skip
        if self.split.candidates is not None and "candidates" not in RecommendRequest.model_fields:
            rec.generator = FixedCandidates(self._candidates_by_user())  # type: ignore[assignment]
        elif self.split.candidates is None:
            fingerprint = SharedRetrieval.fingerprint(vs, rec.collection_name)
            rec.generator = self.shared.wrap(rec.generator, fingerprint)  # type: ignore[assignment]
        return rec

    def _candidates_by_user(self) -> dict[str, list[str]]:
        assert self.split.candidates is not None
        return {self._uid(c): self.split.candidates[c.case_id] for c in self.split.cases}

    @staticmethod
    def _uid(case: EvalCase) -> str:
        return case.user_id or case.case_id

    def request(self, case: EvalCase) -> RecommendRequest:
        data: dict[str, Any] = {
            "user_id": self._uid(case),
            "history": [h.model_dump() for h in case.history],
            "query": case.query,
            "liked": case.liked,
            "exclude": case.exclude,
            "k": self.protocol.k,
            "n_candidates": self.protocol.n_candidates,
        }
        if self.split.candidates is not None:
            ids = self.split.candidates[case.case_id]
            if "candidates" in RecommendRequest.model_fields:
                data["candidates"] = ids
            data["n_candidates"] = len(ids)
        return RecommendRequest.model_validate(data)

    # -- records -----------------------------------------------------------------------------------------------
    def _record(
        self, arm: Variant, case: EvalCase, ranked: list[tuple[str, float]], extra: dict[str, Any]
    ) -> dict[str, Any]:
        ids = [i for i, _ in ranked]
        gold = set(case.gold)
        cands = extra.get("candidate_ids")
        record = {
            "variant": arm.name,
            "kind": arm.kind,
            "case_id": case.case_id,
            "user_id": case.user_id,
            "gold": sorted(gold),
            "ranked": ids,
            "scores": [s for _, s in ranked],
            "metrics": M.per_case({"c": case.gold}, {"c": ids}, self.protocol.metric_names())["c"],
            "retrieved": None if cands is None else len(gold & set(cands)) / len(gold),
            "attribution": _attribution(gold, ids[: self.protocol.k], cands, extra.get("fallback_reason")),
            **extra,
        }
        return record

    def _pipeline_records(self, arm: Variant, rec: Recommender, cases: list[EvalCase]) -> list[dict[str, Any]]:
        results: list[Recommendation] = rec.recommend_many([self.request(c) for c in cases])
        self._check_engine_alive(arm)
        out = []
        for case, res in zip(cases, results, strict=True):
            rr = res.rerank
            latency = res.timings_ms.get("retrieve", 0.0) + res.timings_ms.get("rank_batch", 0.0) / len(cases)
            explain = sum(res.timings_ms.get(k, 0.0) for k in ("explain", "explain_retry")) / len(cases)
            extra = {
                "candidate_ids": res.candidate_ids,
                "llm_scores": [i.llm_score for i in res.items],
                "retrieval_ranks": [i.retrieval_rank for i in res.items],
                "fallback_reason": res.fallback_reason,
                "grounded": [i.grounded for i in res.items],
                "justifications": [i.justification for i in res.items],
                "justification_sources": [i.justification_source for i in res.items],
                "grounding_notes": [i.grounding_note for i in res.items],
                "text": self._case_text(case, res) if rec.settings.explain_mode == "llm" else None,
                "flags": sorted({f for i in res.items for f in i.flags}),
                "llm_calls": rr.llm_calls,
                "parse_failures": rr.parse_failures,
                "off_candidate": rr.off_candidate,
                "duplicates": rr.duplicates,
                "appended_missing": rr.appended_missing,
                "agreement": res.agreement,
                "prompt_tokens": res.prompt_tokens,
                "completion_tokens": res.completion_tokens,
                "stage_tokens": res.stage_tokens,  # profile / proposal stages (included in the totals)
                "profile": res.profile,
                "profile_note": res.profile_note,
                "grounding": res.grounding.model_dump(exclude={"hits"}) if res.grounding is not None else None,
                "prompt_versions": res.prompt_versions,
                "model": res.model,
                "latency_ms": round(latency, 1),
                "explain_ms": round(explain, 1) if explain else None,  # this case's share of the batch's explain calls
                "timings_ms": res.timings_ms,
            }
            if res.strategy == "learned" and rec.settings.ltr_llm_strategy:
                extra["llm_feature_missing"] = rr.llm_feature_missing  # why this case's LLM score is missing (or None)
            out.append(self._record(arm, case, [(i.item_id, i.score) for i in res.items], extra))
        return out

    def _case_text(self, case: EvalCase, res: Recommendation) -> dict[str, Any]:
        """The case's text-metric counts (:func:`eval.text_metrics.case_text`): its liked titles are the history
        entries without a rating or rated >= min_rating, and the items liked in the conversation."""
        items = self.dataset.items
        liked = [h.item_id for h in case.history if h.rating is None or h.rating >= self.protocol.min_rating]
        titles = [items[i].title for i in dict.fromkeys([*liked, *case.liked]) if i in items]
        shown = [ShownJustification(i.justification, i.justification_source, i.grounded, i.grounding_note, i.title)
                 for i in res.items]  # fmt: skip
        return case_text(shown, titles, case.query)

    def _baseline_records(self, arm: Variant, cases: list[EvalCase]) -> list[dict[str, Any]]:
        out = []
        for case in cases:
            cands = self.split.candidates[case.case_id] if self.split.candidates is not None else None
            ranked = self.ranker.rank(str(arm.baseline), case, self.protocol.k, cands)
            out.append(self._record(arm, case, ranked, {"candidate_ids": None, "fallback_reason": None,
                                                        "latency_ms": None}))  # fmt: skip
        return out

    def _check_replay(self, arm: Variant) -> None:
        """The ranking layer turns engine errors into fallbacks; in replay a cache miss must stop the run."""
        if self.replay and self.cache.misses:
            raise CacheMissError(
                f"replay: {self.cache.misses} LLM request(s) of variant {arm.name!r} are not in {self.cache.path}",
                hint="replay needs the same data, protocol, variants, prompts and settings as the recorded run; "
                "run without --replay to record the missing outputs",
            )

    def _check_engine_alive(self, arm: Variant) -> None:
        """A dead engine (e.g. its worker killed for memory) would turn every remaining case into a fallback:
        stop instead, before the batch is written, so that running the command again resumes the run."""
        for engine in (self._kept[1] if self._kept else None, self.engine):
            dead = getattr(engine, "is_dead", None)
            if callable(dead) and dead():
                raise EngineUnavailableError(
                    f"variant {arm.name}: the LLM engine died during the run (see its log above for the cause, "
                    "e.g. a worker killed for lack of memory); the cases recorded so far are kept",
                    hint="run the same command again to resume; free memory or lower RECAGENT_LLM_MEMORY_FRACTION "
                    "if the engine was killed for memory",
                )

    def release_engine(self) -> None:
        """Close the engine this runner started (never one it was given)."""
        if self._kept is not None:
            kept, self._kept = self._kept[1], None
            kept.close()

    # -- main loop ---------------------------------------------------------------------------------------------
    def run(self, cases_path: Path, done: set[tuple[str, str]]) -> None:
        todo = {arm.name: [c for c in self.split.cases if (arm.name, c.case_id) not in done] for arm in self.arms}
        total = sum(len(v) for v in todo.values())
        bar = tqdm(total=total, desc="eval", unit="case", disable=not self.progress, dynamic_ncols=True)
        with cases_path.open("a", encoding="utf-8") as fh:
            try:
                self._run_arms(fh, todo, bar)
            finally:
                self.release_engine()
        bar.close()

    def _run_arms(self, fh: Any, todo: dict[str, list[EvalCase]], bar: Any) -> None:
        for arm in self.arms:
            cases = todo[arm.name]
            if not cases:
                continue
            bar.set_postfix_str(arm.name)
            rec = self.recommender(arm) if arm.baseline in (None, "embedding", "retrieval") else None
            for at in range(0, len(cases), self.batch_size):
                chunk = cases[at : at + self.batch_size]
                if rec is not None:
                    records = self._pipeline_records(arm, rec, chunk)
                    self._check_replay(arm)
                else:
                    records = self._baseline_records(arm, chunk)
                for record in records:
                    fh.write(json.dumps(record, ensure_ascii=False) + "\n")
                fh.flush()
                bar.update(len(chunk))


def _config_protocol(protocol: Protocol) -> dict[str, Any]:
    """The protocol as a run's config records it; fields added later are left out at their defaults, so that runs
    recorded before them can still be resumed."""
    out = protocol.model_dump(mode="json")
    for name, default in (("part", "test"), ("user_ids", None), ("kcore", 5)):
        if out.get(name) == default:
            out.pop(name, None)
    return out


def _provenance(
    settings: Settings, dataset: EvalDataset, protocol: Protocol, arms: list[Variant], registry: PromptRegistry
) -> dict[str, Any]:
    safe = settings.model_dump(mode="json", exclude={"llm_api_key", "judge_api_key"})
    if safe.get("judge_server_url"):
        safe["judge_server_url"] = redact_url(safe["judge_server_url"])
    return {
        "git_commit": git_commit(),
        "dataset": {
            "name": dataset.name,
            "kind": dataset.kind,
            "catalog": str(dataset.catalog_path),
            "files": {str(f): file_sha256(f) for f in dataset.files if f.is_file()},
            "notes": dataset.notes,
            "match": dataset.match.model_dump() if dataset.match else None,
        },
        "protocol": protocol.model_dump(mode="json"),
        "arms": [a.describe() for a in arms],
        "settings": safe,
        "prompt_templates": {t.name: t.version_id for t in registry.list()},
        "seeds": {"protocol": protocol.seed, "rerank": settings.seed},
    }


def run_eval(
    settings: Settings,
    dataset: EvalDataset,
    protocol: Protocol,
    out: Path,
    *,
    variants: Sequence[Variant] = (),
    baselines: Sequence[str] = (),
    engine: LLMEngine | None = None,
    embedder: Embedder | None = None,
    store: Store | None = None,
    registry: PromptRegistry | None = None,
    collection: str | None = None,
    replay: bool = False,
    resume: bool = False,
    cache_path: Path | None = None,
    batch_size: int = 8,
    progress: bool = True,
    reference: str | None = None,
    published: dict[str, Any] | None = None,
    judge: JudgeConfig | None = None,
    judge_engine: LLMEngine | None = None,
) -> EvalRun:
    """Evaluate ``variants`` and ``baselines`` on the same cases; write cases.jsonl, results.json, report.md,
    report.html and run.trec under ``out`` (``out/replay`` with ``replay=True``, reading ``out/llm_cache.sqlite``).

    Everything that can be checked (dataset, split, variant settings, prompts, output folder) is checked before
    the first LLM call; errors are InputError/ConfigError with a hint.

    Stages: check the arms -> the output folder -> the split (``_Runner``) -> the cases file (resume) -> run every
    arm over the cases -> collect the records -> provenance and report files.
    """
    from eval.report import write_outputs

    registry = registry or PromptRegistry()
    arms = list(variants) + _baseline_arms(baselines, dataset)
    _check_arms(settings, arms, registry)
    cache_path = Path(cache_path) if cache_path else Path(out) / CACHE_FILE
    out = _output_folder(Path(out), cache_path, replay)
    cases_path = out / CASES_FILE
    runner = _Runner(settings, dataset, protocol, arms, out, engine=engine, embedder=embedder, store=store,
                     registry=registry, collection=collection, replay=replay, cache_path=cache_path,
                     batch_size=batch_size, progress=progress)  # fmt: skip
    config = {"dataset": dataset.name, "files": {f.name: file_sha256(f) for f in dataset.files if f.is_file()},
              "protocol": _config_protocol(protocol), "arms": [a.describe() for a in arms],
              "cases": [c.case_id for c in runner.split.cases]}  # fmt: skip
    done = _start_cases_file(out, config, resume=resume, replay=replay)
    (out / CONFIG_FILE).write_text(json.dumps(config, indent=1))
    runner.run(cases_path, done)
    ordered = _collect_records(cases_path, arms, runner.split.cases)
    provenance = _provenance(settings, dataset, protocol, arms, registry)
    provenance["replay"] = replay
    provenance["split_notes"] = runner.split.notes or {}
    verdicts = _judge(runner, judge, judge_engine, ordered) if judge is not None else None
    provenance["llm_cache"] = {"path": str(cache_path), "hits": runner.cache.hits, "misses": runner.cache.misses}
    results = write_outputs(out, ordered, arms, runner.split, dataset, protocol, provenance, reference=reference,
                            published=published, judge=verdicts)  # fmt: skip
    runner.cache.close()
    return EvalRun(out=out, records=ordered, results=results, split=runner.split, arms=arms)


def _judge(
    runner: _Runner, config: JudgeConfig, engine: LLMEngine | None, records: list[dict[str, Any]]
) -> dict[str, Any]:
    """The judge arm over the run's LLM-written justifications, through the run's LLM cache (engine name
    ``@judge``): a replay scores from the cache and stops on a miss; otherwise ``engine`` (tests) or an engine
    on the judge server, closed afterwards."""
    cache, inner = runner.cache, None
    if runner.replay:
        identity = cache.engine(JUDGE_ENGINE_NAME)
        if identity is None:
            raise CacheMissError(
                f"replay: the cache {cache.path} holds no judge answers",
                hint="run without --replay and with the judge configured first, or drop --judge-url/--judge-model",
            )
        wrapped = CachingEngine(None, cache, identity=identity)
    else:
        if engine is None:
            from agent.llm import create_engine

            engine = inner = create_engine(config.engine_settings(runner.settings))
        wrapped = CachingEngine(engine, cache)
        cache.set_engine(JUDGE_ENGINE_NAME, wrapped.identity)
    misses = cache.misses
    try:
        summary = run_judge(
            wrapped,
            config,
            records,
            runner.split.cases,
            runner.dataset.items,
            min_rating=runner.protocol.min_rating,
            seed=runner.protocol.seed,
            out=runner.out,
        )
    finally:
        if inner is not None:
            inner.close()
    if runner.replay and cache.misses > misses:
        raise CacheMissError(
            f"replay: {cache.misses - misses} judge request(s) are not in {cache.path}",
            hint="replay with the same judge settings (--judge-max) as the recorded run",
        )
    return summary


def _check_arms(settings: Settings, arms: list[Variant], registry: PromptRegistry) -> None:
    """Stage 1: at least one arm, unique names, valid settings and ranking overrides, known prompt templates."""
    if not arms:
        raise ConfigError("nothing to evaluate", hint="give --variant NAME:strategy=... and/or --baselines")
    names = [a.name for a in arms]
    if len(set(names)) != len(names):
        raise ConfigError(f"arm names repeat: {names}", hint="give every --variant its own name")
    for arm in arms:
        vs = variant_settings(settings, arm)  # validates the settings overrides
        vs.rerank_config()  # validates ranking overrides
        for template in [t for k, t in arm.rerank.items() if k.endswith("_template")]:
            if template not in registry:
                raise ConfigError(
                    f"variant {arm.name}: unknown prompt {template!r}", hint="see `recagent prompts list`"
                )


def _output_folder(out: Path, cache_path: Path, replay: bool) -> Path:
    """Stage 2: the folder the run writes (``out/replay`` for a replay, which needs the LLM cache)."""
    if not replay:
        return out
    if not cache_path.is_file():
        raise InputError(f"replay: no LLM cache at {cache_path}", hint="run without --replay first (same --out)")
    return out / REPLAY_DIR


def _start_cases_file(out: Path, config: dict[str, Any], *, resume: bool, replay: bool) -> set[tuple[str, str]]:
    """Stage 3: the (arm, case) pairs already done. ``resume`` continues a run started with the same config (a
    partial last line is dropped); otherwise an existing evaluation is refused, or cleared for a replay."""
    cases_path = out / CASES_FILE
    if resume:
        previous = json.loads((out / CONFIG_FILE).read_text()) if (out / CONFIG_FILE).is_file() else None
        if previous is not None and previous != config:
            changed = sorted(k for k in config if previous.get(k) != config[k])
            raise ConfigError(
                f"--resume: {out} was started with a different {', '.join(changed)}",
                hint="resume with the same dataset, protocol and variants, or use another --out",
            )
        kept = _read_records(cases_path)
        if cases_path.exists():  # drop a partial last line (interrupted write) before appending
            cases_path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in kept), encoding="utf-8")
        return {(r["variant"], r["case_id"]) for r in kept}
    if cases_path.exists() and cases_path.stat().st_size:
        if replay:
            cases_path.unlink()
        else:
            raise ConfigError(
                f"{out} already holds an evaluation", hint="add --resume to continue it, or use another --out"
            )
    return set()


def _collect_records(cases_path: Path, arms: list[Variant], cases: Sequence[EvalCase]) -> list[dict[str, Any]]:
    """Stage 5: this run's records (one per arm and case, the last written wins), in arm then case order."""
    wanted = {(a.name, c.case_id) for a in arms for c in cases}
    records: dict[tuple[str, str], dict[str, Any]] = {}
    for r in _read_records(cases_path):
        if (r["variant"], r["case_id"]) in wanted:
            records[(r["variant"], r["case_id"])] = r
    order = {(a.name, c.case_id): n for n, (a, c) in enumerate((a, c) for a in arms for c in cases)}
    return sorted(records.values(), key=lambda r: order[(r["variant"], r["case_id"])])


def sample_seed_cases(cases: Sequence[EvalCase], n: int, seed: int) -> list[EvalCase]:
    return random.Random(seed).sample(list(cases), min(n, len(cases)))
