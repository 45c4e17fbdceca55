"""The learned ranker's LLM feature (``ltr_llm_strategy``), logic with the scripted FakeEngine: the LLM strategy's
per-candidate score lands in the ``llm.score`` column, LLM failures become NaN and are counted (never a crash), a
model trained without the feature is refused when it is switched on (and the reverse), and the training path
scores only the groups it is given. The real parts (Chroma, embedder, the tiny vLLM engine) are in
tests/train/test_ltr_llm_real.py."""

from __future__ import annotations

import math
import random
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from agent.errors import ConfigError, InputError
from agent.rerank import RankingContext, RerankConfig
from agent.rerank.learned import LLM_FEATURE, LearnedModel, LearnedRanker, llm_feature_scores
from agent.settings import Settings
from eval.datasets import EvalCase
from prompts import PromptRegistry
from retrieval.interactions import Interactions
from retrieval.ltr_features import FeatureBuilder, feature_matrix
from retrieval.types import HistoryEntry, Item
from train.ltr import LtrFitConfig, fit_ranker
from train.ltr_data import LtrData, LtrDataConfig, RankGroupRows
from train.ltr_llm import LtrLlm, add_llm_scores

from fakes import FakeEngine, Taste, make_candidates, make_user, text_of

FAST = LtrFitConfig(rounds=60, patience=20, min_data_in_leaf=5, threads=1)


def _ctx(n: int = 6) -> RankingContext:
    return RankingContext(user=make_user(), candidates=make_candidates(n), k=3,
                          config=RerankConfig(strategy="learned", explain="none", calibrate=False))  # fmt: skip


def _taste() -> FakeEngine:
    """Likes 'Book 4' best, then 'Book 1', dislikes the rest (option log-probs by title)."""
    return FakeEngine(score_fn=Taste({"Book 4": 3.0, "Book 1": 1.5}).score)


# ------------------------------------------------------------------------------------------------ serving side
def test_llm_scores_come_back_per_candidate_in_context_order() -> None:
    engine = _taste()
    ctx = _ctx()
    [feature] = llm_feature_scores(engine, PromptRegistry(), [ctx], "options")
    assert feature.missing is None and len(feature.scores) == 6
    assert max(range(6), key=lambda i: feature.scores[i]) == 4  # Book 4 is the LLM's favourite
    assert sorted(range(6), key=lambda i: -feature.scores[i])[:2] == [4, 1]
    assert feature.result is not None and feature.result.llm_calls == 1 and feature.result.prompt_tokens > 0
    assert engine.methods() == ["score_options"]  # the options strategy's own call, no justification
    assert ctx.config.strategy == "learned" and ctx.k == 3  # the caller's context is left as it was


def test_llm_failures_become_nan_with_the_reason_never_a_crash() -> None:
    broken = FakeEngine(error=RuntimeError("engine went away"))
    ok_and_bad = llm_feature_scores(broken, PromptRegistry(), [_ctx(), _ctx(4)], "options")
    assert all(f.missing is not None and f.missing.startswith("engine_error") for f in ok_and_bad)
    assert all(math.isnan(v) for f in ok_and_bad for v in f.scores) and [len(f.scores) for f in ok_and_bad] == [6, 4]
    [none] = llm_feature_scores(None, PromptRegistry(), [_ctx()], "options")  # no engine configured at all
    assert none.missing is not None and "no LLM engine" in none.missing and all(math.isnan(v) for v in none.scores)


# ------------------------------------------------------------------------------------------------ a model with it
def _groups(n: int, seed: int, *, with_llm: bool = True) -> list[RankGroupRows]:
    """20 candidates per user; the target is the one the LLM scores highest (llm.score), at a random fused rank;
    a tenth of the users have no LLM score (NaN), as when the LLM fails."""
    rng = random.Random(seed)
    groups = []
    for u in range(n):
        target = rng.randrange(20)
        ids = [f"u{seed}-{u}-i{j}" for j in range(20)]
        failed = rng.random() < 0.1
        rows = []
        for j in range(20):
            row = {"fused.rank": float(j + 1), "item.pop": rng.uniform(0, 5)}
            if with_llm:
                row[LLM_FEATURE] = math.nan if failed else (2.0 if j == target else rng.uniform(-1.0, 1.5))
            rows.append(row)
        groups.append(RankGroupRows(f"u{seed}-{u}", ["h"], ids, [ids[target]], rows,
                                    [int(j == target) for j in range(20)]))  # fmt: skip
    return groups


def _log() -> Interactions:
    return Interactions.from_records(["a", "a", "b"], ["x", "y", "x"], [4.0, 5.0, 3.0], [1, 2, 3])


def _fit(out: Path, *, with_llm: bool) -> LearnedModel:
    record = {"strategy": "options", "feature": LLM_FEATURE} if with_llm else None
    data = LtrData(fit=_groups(150, 0, with_llm=with_llm), stop=_groups(40, 1, with_llm=with_llm), serve_log=_log(),
                   forbidden={}, llm_feature=record)  # fmt: skip
    fit_ranker(data, out, data_cfg=LtrDataConfig(), fit_cfg=FAST, provenance={}, started=time.perf_counter(),
               progress=False)  # fmt: skip
    return LearnedModel.load(out)


class _Collection:
    """What the feature builder reads: the fake candidates' items, no embeddings."""

    def __init__(self, items: Sequence[Item]) -> None:
        self.items = {i.id: i for i in items}

    def get_items(self, ids: Sequence[str]) -> dict[str, Item]:
        return {i: self.items[i] for i in ids if i in self.items}

    def get_embeddings(self, ids: Sequence[str]) -> dict[str, np.ndarray]:
        return {}


def test_the_llm_score_is_the_models_feature_in_its_column(tmp_path: Path) -> None:
    model = _fit(tmp_path / "m", with_llm=True)
    assert LLM_FEATURE in model.feature_names and model.llm_strategy == "options"
    assert model.manifest["llm_feature"]["strategy"] == "options"
    assert model.manifest["importances"][0]["feature"] == LLM_FEATURE  # the planted signal is in that column
    cands = make_candidates(8)
    ranker = LearnedRanker(model, FeatureBuilder(None, _Collection([c.item for c in cands])))
    llm = [0.1, -0.5, 0.0, 1.9, 0.3, -0.2, 0.4, 0.2]
    rows = ranker.features.rows([], [c.candidate for c in cands], llm_scores=llm)
    column = feature_matrix(rows, model.feature_names)[:, model.feature_names.index(LLM_FEATURE)]
    assert column.tolist() == llm
    scores = ranker.scores([], [c.candidate for c in cands], llm_scores=llm)
    assert max(range(8), key=lambda i: scores[i]) == 3  # the LLM's favourite goes first
    missing = ranker.scores([], [c.candidate for c in cands], llm_scores=[math.nan] * 8)
    assert len(missing) == 8 and all(math.isfinite(s) for s in missing)  # NaN is "missing" for the booster


def test_a_model_and_the_setting_must_agree_on_the_llm_feature(tmp_path: Path) -> None:
    with_llm = _fit(tmp_path / "with", with_llm=True)
    without = _fit(tmp_path / "without", with_llm=False)
    with_llm.check_llm("options")
    without.check_llm(None)
    with pytest.raises(ConfigError, match="trained without the LLM feature") as exc:
        without.check_llm("options")
    assert "--llm-strategy options" in (exc.value.hint or "")
    with pytest.raises(ConfigError, match="trained with the LLM feature") as exc:
        with_llm.check_llm(None)
    assert "ltr_llm_strategy=options" in (exc.value.hint or "")
    with pytest.raises(ConfigError, match="options strategy's LLM score, not pointwise"):
        with_llm.check_llm("pointwise")
    cands = [c.candidate for c in make_candidates(3)]
    builder = FeatureBuilder(None, _Collection([c.item for c in make_candidates(3)]))
    with pytest.raises(ConfigError):
        LearnedRanker(with_llm, builder).scores([], cands)  # served without the scores it was trained on
    with pytest.raises(ConfigError):
        LearnedRanker(without, builder).scores([], cands, llm_scores=[0.0, 1.0, 2.0])


# ------------------------------------------------------------------------------------------------ training side
def _train_groups() -> tuple[list[RankGroupRows], dict[str, EvalCase], _Collection]:
    cands = make_candidates(12)
    items = [c.item for c in cands] + [Item(id="h1", title="Earlier Book", metadata={"year": 1990})]
    groups, cases = [], {}
    for u in range(5):
        ids = [c.id for c in cands[u : u + 6]]
        groups.append(RankGroupRows(f"u{u}", ["h1"], ids, [ids[0]], [{"fused.rank": float(r + 1)} for r in range(6)],
                                    [1, 0, 0, 0, 0, 0]))  # fmt: skip
        cases[f"u{u}"] = EvalCase(case_id=f"c{u}", user_id=f"u{u}", history=[HistoryEntry(item_id="h1", rating=5)],
                                  gold={ids[0]: 1})  # fmt: skip
    return groups, cases, _Collection(items)


def test_training_scores_exactly_the_groups_it_is_given(tmp_path: Path) -> None:
    groups, cases, coll = _train_groups()
    engine = _taste()
    settings = Settings(home=tmp_path)
    llm = LtrLlm(engine=engine, registry=PromptRegistry(), strategy="options", chunk=2)
    record = add_llm_scores(settings, groups[:3], cases, coll, llm, progress=False)  # type: ignore[arg-type]
    prompts = [r for call in engine.calls if call.method == "score_options" for r in call.requests]
    # one option prompt per scored group (plus the shared content-free calibration prompts)
    assert record["groups_scored"] == 3 and record["groups_missing"] == 0 and record["llm_calls"] == 3
    assert record["strategy"] == "options" and record["model"] == "fake-model"
    assert all(LLM_FEATURE in row and math.isfinite(row[LLM_FEATURE]) for g in groups[:3] for row in g.rows)
    assert all(LLM_FEATURE not in row for g in groups[3:] for row in g.rows)  # groups not given: never scored
    book4 = groups[0].candidate_ids.index("b4")  # group 0 holds b0..b5: the LLM likes Book 4 best
    assert max(range(6), key=lambda i: groups[0].rows[i][LLM_FEATURE]) == book4
    texts = " ".join(text_of(req) for req in prompts)
    assert "Book 11" not in texts and "Book 9" not in texts  # only the scored groups' candidates were shown


def test_training_failures_are_nan_and_counted_all_failing_is_refused(tmp_path: Path) -> None:
    groups, cases, coll = _train_groups()
    settings = Settings(home=tmp_path)

    def flaky(req, labels):  # type: ignore[no-untyped-def]
        if "Book 2" in text_of(req):  # the groups u0..u2 show Book 2
            return dict.fromkeys(labels, -math.inf)  # no label has any probability: "empty"
        return dict.fromkeys(labels, -1.0)

    llm = LtrLlm(engine=FakeEngine(score_fn=flaky), registry=PromptRegistry(), strategy="options")
    record = add_llm_scores(settings, groups, cases, coll, llm, progress=False)  # type: ignore[arg-type]
    assert record["groups_missing"] == 3 and record["missing_by_reason"] == {"empty": 3}
    assert record["groups_scored"] == 2
    assert all(math.isnan(row[LLM_FEATURE]) for g in groups[:3] for row in g.rows)
    assert all(math.isfinite(row[LLM_FEATURE]) for g in groups[3:] for row in g.rows)
    broken = LtrLlm(engine=FakeEngine(error=RuntimeError("down")), registry=PromptRegistry(), strategy="options")
    with pytest.raises(InputError, match="no LLM score for any of the 5 training groups"):
        add_llm_scores(settings, groups, cases, coll, broken, progress=False)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------------ the evaluator
def test_the_evaluator_counts_missing_llm_features_only_for_arms_that_use_them() -> None:
    from eval import metrics as M

    learned_llm = [
        {"llm_calls": 1, "llm_feature_missing": None},
        {"llm_calls": 1, "llm_feature_missing": None},
        {"llm_calls": 1, "llm_feature_missing": "timeout"},
        {"llm_calls": 0, "llm_feature_missing": None},
    ]
    assert M.llm_failure_rates(learned_llm)["llm_feature_missing_rate"] == 0.25
    assert M.llm_failure_rates(learned_llm)["fallback_rate"] == 0.0  # the ranker still ranked: not a fallback
    assert M.llm_failure_rates([{"llm_calls": 1, "fallback_reason": None}])["llm_feature_missing_rate"] is None


def test_cli_refuses_an_unknown_llm_strategy(tmp_path: Path, ml_small: Path) -> None:
    from typer.testing import CliRunner

    from agent.settings import load_settings
    from recagent import cmd_train

    from testkit import cli_app

    app = cli_app(load_settings(home=tmp_path), "train", cmd_train.app)
    args = ["train", "ranker-ltr", "--catalog", str(ml_small), "--interactions", str(ml_small), "--llm-strategy",
            "learned"]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert isinstance(result.exception, ConfigError), result.output
    assert "--llm-strategy 'learned' is not an LLM strategy" in result.exception.message
    assert "options" in (result.exception.hint or "") and result.exception.exit_code == 2
