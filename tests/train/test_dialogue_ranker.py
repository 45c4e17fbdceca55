"""The conversation ranker in the live pipeline (issue 24), on real parts (embedded Chroma, the CLI, LightGBM):
`recagent train dialogue-sources LOG --ranker` fits it on a made-up log whose answers follow a pattern the fused
order misses (the gold is always the 5th item of the ``item2item`` list of the mentioned movie); conversation turns
then come back in the ranker's order, with the same features as training; a stale ranker is refused with the
retrain hint; the setting switches it off; a bad option is a clear CLI error."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from agent.chat.conversation import Conversation
from agent.pipeline import Recommender, RecommendRequest
from agent.sessions import open_session_store
from agent.settings import Settings, load_settings
from recagent import cmd_train
from retrieval.conversation_ranker import CatalogItems
from retrieval.dialogue_log import DialogueLog, DialogueTurn
from retrieval.embed import Embedder, make_embedder
from retrieval.ltr_features import FeatureBuilder
from retrieval.types import UserQuery
from train.crs_ltr import turn_group
from train.dialogue import log_cases, turn_query

from testkit import SAMPLE_COLLECTION, cli_app

TRAIN_SEEDS = 150


def _fifth(rec: Recommender, seed: str) -> str:
    return rec.generator.run_sources(UserQuery(liked=[seed], n=1))["item2item"][4][0]


def _write_log(path: Path, rec: Recommender, seeds: list[str]) -> None:
    rows = [{"dialog_id": f"d{n}", "mentioned": [s], "recommended": [_fifth(rec, s)]} for n, s in enumerate(seeds)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def _train(settings: Settings, *args: str) -> str:
    done = CliRunner().invoke(cli_app(settings, "train", cmd_train.app), ["train", "dialogue-sources", *args])
    assert done.exit_code == 0, done.output
    return done.output


@pytest.fixture(scope="module")
def trained(sample_home: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Settings, Embedder, list[str]]:
    """A copy of the 300-movie sample home (real bundled embedder, real Chroma) with the ranker trained by the CLI."""
    tmp = tmp_path_factory.mktemp("crslive")
    home = tmp / "home"
    shutil.copytree(sample_home, home)
    # the content lists lead the fused order here (the ranker trains on the live fusion weights, whatever they are)
    settings = load_settings(home=home, collection=SAMPLE_COLLECTION, session_db_url=str(tmp / "s.sqlite3"),
                             fusion_weights={"comention": 0.25, "recommended_popularity": 0.1})  # fmt: skip
    embedder = make_embedder(settings.embed_config(progress=False))
    before = Recommender(settings, embedder=embedder)
    ids = sorted(before.collection.ids())
    log = tmp / "log.jsonl"
    _write_log(log, before, ids[:TRAIN_SEEDS])
    out = _train(settings, str(log), "--ranker", "--ranker-pools", "10,20")
    assert f"fitted: {TRAIN_SEEDS} turns" in out and "conversation ranker: pool" in out
    return settings, embedder, ids


def _turn(rec: Recommender, seed: str) -> tuple[list[str], object]:
    done = rec.recommend(RecommendRequest(liked=[seed], turn=0, k=5, n_candidates=10, strategy="retrieval"))
    return done.candidate_ids, done


@pytest.mark.slow
def test_conversation_turns_follow_the_ranker(trained: tuple[Settings, Embedder, list[str]]) -> None:
    settings, embedder, ids = trained
    rec = Recommender(settings, embedder=embedder)
    assert rec.conversation_ranker is not None and rec.ranker_problem is None
    assert rec.conversation_ranker.pool in (10, 20)
    fresh = ids[TRAIN_SEEDS : TRAIN_SEEDS + 30]  # movies never mentioned in the log
    hits = 0
    for seed in fresh:
        order, done = _turn(rec, seed)
        assert len(order) == 10 and seed not in order
        assert done.conversation_ranker is not None and "reordered" in done.conversation_ranker  # type: ignore[attr-defined]
        hits += order[0] == _fifth(rec, seed)
    off = Recommender(settings.model_copy(update={"dialogue_ranker": False}), embedder=embedder)
    assert off.conversation_ranker is None
    fused_hits = 0
    for seed in fresh:
        order, done = _turn(off, seed)
        assert done.conversation_ranker is None  # type: ignore[attr-defined]
        fused_hits += order[0] == _fifth(off, seed)
    assert hits >= 0.8 * len(fresh), (hits, fused_hits)
    assert fused_hits <= 0.3 * len(fresh), (hits, fused_hits)
    # a request that is not a conversation turn keeps the fused order
    plain = rec.recommend(RecommendRequest(liked=[fresh[0]], k=5, n_candidates=10, strategy="retrieval"))
    assert plain.conversation_ranker is None
    assert plain.candidate_ids == _turn(off, fresh[0])[0]


@pytest.mark.slow
def test_live_features_equal_training_features(trained: tuple[Settings, Embedder, list[str]]) -> None:
    settings, embedder, ids = trained
    rec = Recommender(settings, embedder=embedder)
    ranker = rec.conversation_ranker
    assert ranker is not None
    model = rec.dialogue_model
    assert model is not None
    seed = ids[3]
    log = DialogueLog([DialogueTurn("d3", (seed,), (_fifth(rec, seed),))])
    case = log_cases(log)[0]
    fusion = settings.fusion_config()
    lists = rec.generator.run_sources(turn_query(case, 1))  # the sources fitted on the whole log
    items = rec.collection.get_items(rec.collection.ids())
    training = turn_group(case, lists, ranker.weights, ranker.pool, fusion.rrf_k,
                          FeatureBuilder(None, CatalogItems(items)), ranker.stats)  # fmt: skip
    query = UserQuery(liked=[seed], n=ranker.pool)
    live = rec.generator.generate(query)
    assert [c.item_id for c in live] == training.candidate_ids
    assert rec.conversation_rows(query, live, 0) == training.rows
    assert all(r["dlg.turn"] == 0.0 and "dlg.rec_pop" in r for r in training.rows)


@pytest.mark.slow
def test_stale_ranker_refused_with_the_retrain_hint(
    trained: tuple[Settings, Embedder, list[str]], tmp_path: Path
) -> None:
    settings, embedder, ids = trained
    base = Recommender(settings, embedder=embedder, dialogue_sources=False)
    other = tmp_path / "other.jsonl"
    _write_log(other, base, ids[:20])
    try:
        out = _train(settings, str(other))  # the dialogue sources move on, the ranker stays
        assert "conversation ranker" not in out
        rec = Recommender(settings, embedder=embedder)
        assert rec.conversation_ranker is None
        assert rec.ranker_problem is not None and "--ranker" in rec.ranker_problem
        done = rec.recommend(RecommendRequest(liked=[ids[200]], turn=1, k=5, strategy="retrieval"))
        assert done.conversation_ranker is None
        assert any("conversation ranker not used" in w for w in done.warnings)
    finally:
        log = settings.home / "restore.jsonl"
        _write_log(log, base, ids[:TRAIN_SEEDS])
        assert f"fitted: {TRAIN_SEEDS} turns" in _train(settings, str(log))  # the ranker's log again
        assert Recommender(settings, embedder=embedder).conversation_ranker is not None


@pytest.mark.slow
def test_bad_ranker_option_is_a_clear_cli_error(trained: tuple[Settings, Embedder, list[str]]) -> None:
    settings, _, _ = trained
    args = ["train", "dialogue-sources", "x.jsonl", "--ranker", "--ranker-pools", "ten"]
    done = CliRunner().invoke(cli_app(settings, "train", cmd_train.app), args)
    assert done.exit_code == 2
    assert "--ranker-pools" in done.output and "comma-separated" in done.output


@pytest.mark.slow
def test_a_chat_turn_uses_the_ranker_and_says_so(
    trained: tuple[Settings, Embedder, list[str]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A real Conversation (rules extraction, template reply, no LLM) over the trained home: the turns are
    conversation requests (``turn`` counts the earlier recommendation turns) and their candidates follow the
    ranker."""
    settings, embedder, ids = trained
    chat_settings = settings.model_copy(
        update={
            "session_db_url": str(tmp_path / "chat.sqlite3"),
            "chat_extract": "rules",
            "chat_reply": "template",
            "rerank_strategy": "retrieval",
            "explain_mode": "template",
        }
    )
    rec = Recommender(chat_settings, embedder=embedder)
    seen: list[int | None] = []
    many = rec.recommend_many

    def spy(requests: list[RecommendRequest], **kw: object) -> object:
        seen.extend(r.turn for r in requests)
        return many(requests, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(rec, "recommend_many", spy)
    store = open_session_store(chat_settings)
    try:
        conv = Conversation(rec, store, chat_settings)
        hits = 0
        later = ids[TRAIN_SEEDS + 30 :]  # never mentioned in the log; plain titles the rules linker takes as typed
        items = rec.collection.get_items(later)
        fresh = [i for i in later if re.fullmatch(r"[A-Z][a-z]+( [a-z]+)* \(\d{4}\)", items[i].title)][:6]
        assert len(fresh) == 6
        for seed in fresh:
            sid = conv.start().session_id
            reply = conv.send(sid, f'I loved "{items[seed].title}"')
            assert reply.recommendation is not None, reply.reply
            assert reply.preferences.liked_ids == [seed]
            assert reply.recommendation.conversation_ranker is not None
            hits += reply.recommendation.candidate_ids[0] == _fifth(rec, seed)
        again = conv.send(sid, "something else")
        assert again.recommendation is not None and again.recommendation.conversation_ranker is not None
    finally:
        store.close()
    assert seen == [0] * len(fresh) + [1]
    assert hits >= len(fresh) - 1, hits
