"""The sequential model: the leave-one-out split by hand, learning a deterministic sequence, resuming, the CLI."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import typer
from pydantic import ValidationError
from seq_toy import TINY, cyclic_log
from typer.testing import CliRunner

from agent.errors import ConfigError, InputError
from agent.settings import Settings, load_settings
from recagent import cmd_train
from retrieval.interactions import Interactions
from retrieval.seqmodel import SeqModelConfig, load_model
from train.seq_data import loo_split, training_windows
from train.seq_metrics import next_item_metrics, target_ranks
from train.sequential import SeqTrainConfig, fit_sequential, train_on_split

from testkit import cli_app


def test_loo_split_by_hand() -> None:
    # user a: 5 items, two share time 3 (ties broken by item id: 9 before 10); user b: 3 items; user c: item 77 is
    # rare (2 interactions < 3): removed, then c has 2 interactions left and is removed too.
    rows = [("a", "10", 3), ("a", "1", 1), ("a", "9", 3), ("a", "2", 2), ("a", "5", 4),
            ("b", "1", 1), ("b", "2", 2), ("b", "9", 3), ("b", "10", 4), ("b", "5", 5),
            ("c", "77", 1), ("c", "1", 2), ("c", "2", 3), ("d", "77", 1), ("d", "5", 2), ("d", "9", 3), ("d", "10", 9),
            ("d", "1", 5), ("d", "2", 6)]  # fmt: skip
    log = Interactions.from_records([r[0] for r in rows], [r[1] for r in rows], None, [r[2] for r in rows])
    split = loo_split(log, min_count=3)
    assert split.users == ["a", "b", "d"]
    named = [[split.item_ids[t - 1] for t in seq] for seq in split.train]
    assert named == [["1", "2", "9"], ["1", "2", "9"], ["5", "9", "1"]]
    assert [split.item_ids[t - 1] for t in split.val] == ["10", "10", "2"]
    assert [split.item_ids[t - 1] for t in split.test] == ["5", "5", "10"]
    assert split.counts["interactions_read"] == 19 and split.counts["interactions_kept"] == 15
    train_log = split.train_log()
    assert [h.item_id for h in train_log.history("a")] == ["1", "2", "9"]  # "10" (same time as "9") left out
    assert train_log.history("c") == []
    with_val = split.train_log(with_validation=True)
    assert [h.item_id for h in with_val.history("d")] == ["5", "9", "1", "2"]


def test_loo_split_without_timestamps_keeps_file_order() -> None:
    users = ["a"] * 4 + ["b"] * 4 + ["c"] * 4
    items = ["9", "3", "7", "1", "3", "9", "1", "7", "1", "3", "9", "7"]
    split = loo_split(Interactions.from_records(users, items), min_count=3)
    parts = zip(split.train, split.val, split.test, strict=True)
    named = [[split.item_ids[t - 1] for t in [*seq, v, x]] for seq, v, x in parts]
    assert named == [["9", "3", "7", "1"], ["3", "9", "1", "7"], ["1", "3", "9", "7"]]


def test_training_windows_cover_every_label() -> None:
    windows = training_windows([[1, 2, 3, 4, 5, 6, 7]], 3)
    assert windows == [[4, 5, 6, 7], [1, 2, 3, 4]]
    labels = [t for w in windows for t in w[1:]]
    assert sorted(labels) == [2, 3, 4, 5, 6, 7]
    assert training_windows([[1]], 3) == []


def test_metrics_by_hand() -> None:
    import numpy as np

    metrics = next_item_metrics(np.array([0, 1, 10]), ks=(1, 2))
    assert metrics["recall@1"] == pytest.approx(1 / 3) and metrics["recall@2"] == pytest.approx(2 / 3)
    assert metrics["ndcg@2"] == pytest.approx((1 + 1 / np.log2(3)) / 3)
    assert metrics["mrr"] == pytest.approx((1 + 1 / 2 + 1 / 11) / 3)


def test_learns_a_deterministic_sequence(tmp_path: Path) -> None:
    split = loo_split(cyclic_log(), min_count=5)
    cfg = SeqTrainConfig(model=TINY, epochs=15, batch_size=16, lr=1e-2, patience=40, threads=1)
    result = train_on_split(split, tmp_path / "m", cfg, progress=False)
    saved = load_model(tmp_path / "m")
    histories = [[*t, v] for t, v in zip(split.train, split.val, strict=True)]
    ranks = target_ranks(saved.model, histories, split.test)
    assert (ranks == 0).mean() > 0.9  # HR@1 on the test item
    assert result.manifest["best"]["recall@10"] > 0.9
    assert result.manifest["complete"] and len(result.manifest["curve"]) >= 1


def test_resumed_run_equals_uninterrupted(tmp_path: Path) -> None:
    split = loo_split(cyclic_log(users=24), min_count=5)
    cfg = SeqTrainConfig(model=TINY.model_copy(update={"dropout": 0.3}), loss="bce", epochs=4, batch_size=8,
                         patience=10, threads=1)  # fmt: skip
    whole = train_on_split(split, tmp_path / "whole", cfg, progress=False)
    part = train_on_split(split, tmp_path / "part", cfg, progress=False, stop_after=2)
    assert not part.manifest["complete"] and part.manifest["epochs"]["done"] == 2
    with pytest.raises(InputError, match="already holds"):
        train_on_split(split, tmp_path / "part", cfg, progress=False)
    resumed = train_on_split(split, tmp_path / "part", cfg, progress=False, resume=True)
    assert resumed.manifest["curve"] == whole.manifest["curve"]
    assert resumed.manifest["best"] == whole.manifest["best"]
    for name in ("model.pt", "checkpoint.pt"):
        a = torch.load(tmp_path / "whole" / name, weights_only=False)
        b = torch.load(tmp_path / "part" / name, weights_only=False)
        a, b = a.get("model", a), b.get("model", b)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    other = cfg.model_copy(update={"lr": 0.5})
    with pytest.raises(InputError, match="other settings"):
        train_on_split(split, tmp_path / "part", other, progress=False, resume=True)
    with pytest.raises(InputError, match="no checkpoint"):
        train_on_split(split, tmp_path / "fresh", cfg, progress=False, resume=True)


def test_fit_records_the_logs_it_serves(tmp_path: Path) -> None:
    from retrieval.fitted import log_fingerprint

    log = cyclic_log(users=12)
    cfg = SeqTrainConfig(model=TINY, epochs=1, threads=1)
    result, split = fit_sequential(log, tmp_path / "m", cfg, progress=False)
    serves = result.manifest["log"]["serves"]
    assert serves["log"] == log_fingerprint(log)
    assert serves["train"] == log_fingerprint(split.train_log()) == result.manifest["log"]["train_fingerprint"]
    assert len(set(serves.values())) == 3  # the log is its own k-core here
    assert result.manifest["split"]["users"] == 12 and result.manifest["cost"]["torch_threads"] == 1


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValidationError, match="multiple of heads"):
        SeqModelConfig(dim=30, heads=4)
    with pytest.raises(ValidationError, match="loss"):
        SeqTrainConfig.model_validate({"loss": "hinge"})
    with pytest.raises(InputError, match="no user keeps"):
        loo_split(cyclic_log(users=3, length=4), min_count=5)


def _app(settings: Settings) -> typer.Typer:
    return cli_app(settings, "train", cmd_train.app)


def _ml_folder(tmp_path: Path, log: Interactions) -> Path:
    """``log`` written as a MovieLens folder (movies.csv, ratings.csv)."""
    folder = tmp_path / "ml"
    folder.mkdir()
    (folder / "movies.csv").write_text(
        "movieId,title,genres\n" + "".join(f"{i},Movie {i} (2000),Drama\n" for i in log.item_ids), encoding="utf-8"
    )
    lines = [f"{log.user_ids[int(u)]},{log.item_ids[int(i)]},4.0,{t}" for u, i, t in
             zip(log.users, log.items, log.timestamps, strict=True)]  # fmt: skip
    (folder / "ratings.csv").write_text("userId,movieId,rating,timestamp\n" + "\n".join(lines) + "\n", "utf-8")
    return folder


def test_cli_errors_and_a_real_run(tmp_path: Path) -> None:
    folder = _ml_folder(tmp_path, cyclic_log(users=16))
    settings = load_settings(home=tmp_path / "home")
    app, runner = _app(settings), CliRunner()
    common = ["train", "sequential", "--catalog", str(folder), "--interactions", str(folder / "ratings.csv")]
    heads = runner.invoke(app, [*common, "--dim", "30", "--heads", "4"])
    assert isinstance(heads.exception, ValidationError) and "multiple of heads" in str(heads.exception)
    loss = runner.invoke(app, [*common, "--loss", "hinge"])
    assert isinstance(loss.exception, ValidationError) and "loss" in str(loss.exception)
    both = runner.invoke(app, [*common, "--resume", "--force"])
    assert isinstance(both.exception, ConfigError) and "exclude each other" in both.exception.message
    missing = runner.invoke(app, ["train", "sequential", "--catalog", str(tmp_path / "no"), "--interactions", "x"])
    assert isinstance(missing.exception, InputError) and "does not exist" in missing.exception.message
    tiny = ["--max-len", "8", "--dim", "16", "--heads", "1", "--blocks", "1", "--epochs", "2", "--threads", "1"]
    ok = runner.invoke(app, [*common, *tiny])
    assert ok.exit_code == 0, ok.output
    assert "best epoch" in ok.output and "test NDCG@10" in ok.output
    default_dir = settings.store_config().path.parent / "artifacts" / settings.collection / "sequential"
    assert load_model(default_dir).manifest["complete"]
    again = runner.invoke(app, [*common, *tiny])
    assert isinstance(again.exception, InputError) and "--force" in again.exception.hint
    assert runner.invoke(app, [*common, *tiny, "--force"]).exit_code == 0


def test_split_temporal_learns_the_log_eval_run_serves(tmp_path: Path) -> None:
    """`--split temporal`: the model learns the evaluator's temporal train log (test targets and what follows them
    removed), so `eval run --split temporal` serves it; the whole log (which holds the test targets) is refused."""
    from retrieval.sequential import open_sequential
    from train.config import SplitOptions
    from train.data import load_data
    from train.eval_log import eval_train_log

    folder = _ml_folder(tmp_path, cyclic_log(users=16))
    app, runner = _app(load_settings(home=tmp_path / "home")), CliRunner()
    common = ["train", "sequential", "--catalog", str(folder), "--interactions", str(folder / "ratings.csv"),
              "--out", str(tmp_path / "seq"), "--max-len", "8", "--dim", "16", "--heads", "1", "--blocks", "1",
              "--epochs", "1", "--threads", "1"]  # fmt: skip
    loo = runner.invoke(app, [*common, "--split", "loo"])
    assert isinstance(loo.exception, ConfigError) and "drop --split" in (loo.exception.hint or "")
    bad = runner.invoke(app, [*common, "--split", "weekly"])
    assert isinstance(bad.exception, ConfigError) and "unknown split" in bad.exception.message
    ok = runner.invoke(app, [*common, "--split", "temporal"])
    assert ok.exit_code == 0, ok.output
    assert "learning from the evaluator's test-part train log (208 of 224 interactions)" in ok.output
    data = load_data(folder, folder / "ratings.csv")
    assert data.interactions is not None
    served = eval_train_log(data, SplitOptions(split="temporal"))
    assert len(served) == 16 * 13  # each user's last (positive) item held out
    assert open_sequential(tmp_path / "seq", served, required=True) is not None
    with pytest.raises(ConfigError, match="another interaction log"):
        open_sequential(tmp_path / "seq", data.interactions, required=True)
