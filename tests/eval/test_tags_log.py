"""A second kind of log through the column mapping alone: a tags log (userId,movieId,tag,timestamp; several tags of
one movie = repeated (user, item) rows, no rating column), like MovieLens' tags.csv, given to `eval run --split loo`
and `train sequential` with `--interactions-mapping` only (issue 23, docs/eval/movielens-tags.md)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from agent.settings import Settings, load_settings
from recagent import cmd_eval, cmd_train
from retrieval.interactions import InteractionMapping, Interactions, load_log_mapping, read_interactions

from testkit import cli_app

USERS, ITEMS = 8, 8


def _sequence(user: int) -> list[int]:
    return [(user + j) % ITEMS + 1 for j in range(4)]


@pytest.fixture(scope="module")
def tags(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """movies.csv (8 movies) and tags.csv: user u tags 4 movies in turn, each twice (two tags, one second apart),
    and the even users tag their first movie once more at the end."""
    folder = tmp_path_factory.mktemp("tags")
    (folder / "movies.csv").write_text(
        "movieId,title,genres\n" + "".join(f"{i},Movie {i} (2000),Drama\n" for i in range(1, ITEMS + 1)), "utf-8"
    )
    rows = ["userId,movieId,tag,timestamp"]
    for user in range(1, USERS + 1):
        for step, item in enumerate(_sequence(user)):
            at = 1000 * user + 10 * step
            rows += [f"{user},{item},funny,{at}", f"{user},{item},dark,{at + 1}"]
        if user % 2 == 0:
            rows.append(f"{user},{_sequence(user)[0]},again,{1000 * user + 90}")
    (folder / "tags.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    for rule in ("keep", "first", "last"):
        (folder / f"{rule}.toml").write_text(
            f'[interactions]\nuser = "userId"\nitem = "movieId"\ntimestamp = "timestamp"\nrepeats = "{rule}"\n', "utf-8"
        )
    return folder


def test_repeated_rows_by_hand() -> None:
    log = Interactions.from_records(["u", "u", "u", "v", "v"], ["a", "b", "a", "a", "a"], timestamps=[1, 2, 3, 1, 2])
    # sorted by (user, time): u a1, u b2, u a3, v a1, v a2
    assert log.repeated_rows("first").tolist() == [False, False, True, False, True]
    assert log.repeated_rows("last").tolist() == [True, False, False, True, False]


def test_the_repeats_rule_is_counted(tags: Path) -> None:
    rows = 2 * 4 * USERS + USERS // 2
    keep = read_interactions(tags / "tags.csv", mapping=load_log_mapping(tags / "keep.toml"))
    assert len(keep) == rows and keep.report is not None and keep.report.consistent
    assert keep.report.notes["repeated_pairs"].count == 1 and 'repeats = "first"' in keep.report.notes[
        "repeated_pairs"].examples[0]  # fmt: skip
    first = read_interactions(tags / "tags.csv", mapping=load_log_mapping(tags / "first.toml"))
    report = first.report
    assert report is not None and report.consistent and report.rows_read == rows
    assert len(first) == report.accepted == 4 * USERS and report.rejections["repeated_pair"].count == rows - 4 * USERS
    assert np.isnan(first.ratings).all()  # no rating column: no rating, not a made-up one
    assert [h.item_id for h in first.history("2")] == [str(i) for i in _sequence(2)]
    assert [h.timestamp for h in first.history("2")] == [2000, 2010, 2020, 2030]  # the first tag's time
    last = read_interactions(tags / "tags.csv", mapping=load_log_mapping(tags / "last.toml"))
    assert [h.item_id for h in last.history("2")] == [str(i) for i in [*_sequence(2)[1:], _sequence(2)[0]]]
    with pytest.raises(Exception, match="repeats"):
        InteractionMapping.model_validate({"user": "u", "item": "i", "repeats": "merge"})


def _eval(settings: Settings) -> typer.Typer:
    return cli_app(settings, "eval", cmd_eval.app)


def test_eval_run_loo_through_the_mapping_alone(eval_settings: Settings, tags: Path, tmp_path: Path) -> None:
    runner = CliRunner()

    def run(rule: str) -> dict:
        out = tmp_path / rule
        args = ["eval", "run", str(tags), "--interactions", str(tags / "tags.csv"), "--interactions-mapping",
                str(tags / f"{rule}.toml"), "--split", "loo", "--kcore", "2", "--baseline", "popularity",
                "--baseline", "transition", "--out", str(out)]  # fmt: skip
        done = runner.invoke(_eval(eval_settings), args)
        assert done.exit_code == 0, done.output
        return {"results": json.loads((out / "results.json").read_text()), "report": (out / "report.md").read_text()}

    first = run("first")
    notes = first["results"]["provenance"]["split_notes"]
    assert first["results"]["cases"] == USERS and notes["interactions"] == 4 * USERS
    assert notes["targets_in_history"] == 0 and "already in their history" not in first["report"]
    # every tag row kept: each user's last row repeats a movie of the history (its second tag, or the even users'
    # extra tag of the first movie), so no arm can hit any target, and the report says so
    keep = run("keep")
    assert keep["results"]["provenance"]["split_notes"]["targets_in_history"] == USERS
    assert keep["results"]["arms"]["transition"]["metrics"]["hit_rate@20"]["mean"] == 0.0
    assert "8 cases' target is already in their history" in keep["report"] and 'repeats = "first"' in keep["report"]


def test_a_log_without_ratings_is_refused_by_the_rating_splits(eval_settings: Settings, tags: Path) -> None:
    from agent.errors import InputError

    args = ["eval", "run", str(tags), "--interactions", str(tags / "tags.csv"), "--interactions-mapping",
            str(tags / "first.toml"), "--baseline", "popularity", "--split", "temporal"]  # fmt: skip
    done = CliRunner().invoke(_eval(eval_settings), args)
    assert isinstance(done.exception, InputError) and "no rating column" in done.exception.message
    assert "--split loo" in (done.exception.hint or "")


def test_train_sequential_through_the_mapping_alone(tags: Path, tmp_path: Path) -> None:
    from retrieval.seqmodel import load_model

    app = cli_app(load_settings(home=tmp_path / "home"), "train", cmd_train.app)
    args = ["train", "sequential", "--catalog", str(tags), "--interactions", str(tags / "tags.csv"),
            "--interactions-mapping", str(tags / "first.toml"), "--min-count", "3", "--out", str(tmp_path / "seq"),
            "--max-len", "8", "--dim", "16", "--heads", "1", "--blocks", "1", "--epochs", "2",
            "--threads", "1"]  # fmt: skip
    done = CliRunner().invoke(app, args)
    assert done.exit_code == 0, done.output
    manifest = load_model(tmp_path / "seq").manifest
    assert manifest["complete"] and manifest["split"]["interactions_read"] == 4 * USERS
