"""`recagent train embedder`: training on a toy task moves validation recall, the output folder loads through
`retrieval.embed.make_embedder`, the CLI runs end to end on the MovieLens sample with a tiny model."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from agent.errors import InputError
from agent.settings import Settings, load_settings
from recagent import cmd_train
from retrieval.config import EmbedConfig
from retrieval.embed import make_embedder
from retrieval.types import Item
from train.embed_pairs import EmbedDataConfig, ItemPair, ValTarget
from train.embedder import EmbedTrainConfig, train_embedder
from train.leakage import LeakageError

from testkit import cli_app

WORDS = (
    "apple barn cedar delta ember fjord grove harbor iris jungle kettle lantern meadow nectar orchid pebble quartz "
    "river saddle timber umbra velvet willow xenon yarrow zephyr anchor bramble candle dune falcon glacier hollow "
    "ivory juniper kelp lagoon marble nimbus oasis"
).split()


def toy_task(seed: int = 0) -> tuple[dict[str, Item], list[ItemPair], list[ValTarget]]:
    """40 items in two groups (a0..a19, b0..b19) whose titles carry no group signal; users like items of one group
    only, so the pairs (all within a group) are the only way to learn the groups. Validation users are new users
    (never paired) of the same items: four items of one group, the target another item of that group."""
    rng = random.Random(seed)
    words = list(WORDS)
    rng.shuffle(words)
    items = {
        f"{g}{i}": Item(
            id=f"{g}{i}",
            title=f"{words[(i * 2 + (g == 'b')) % len(words)]} {words[(i * 3 + 7 + (g == 'b') * 11) % len(words)]}",
        )
        for g in "ab"
        for i in range(20)
    }
    pairs = [ItemPair(f"u{g}", f"{g}{i}", f"{g}{j}") for g in "ab" for i in range(20) for j in range(i + 1, 20)]
    val = []
    for n, g in enumerate("abababab"):
        members = [f"{g}{i}" for i in range(20)]
        rng.shuffle(members)
        history = tuple(members[:4])
        val.append(ValTarget(f"v{n}", members[4], history, frozenset(history), tuple((i, 1.0) for i in history)))
    return items, pairs, val


def test_training_on_a_toy_task_raises_validation_recall(tiny_st_dir: Path, tmp_path: Path) -> None:
    items, pairs, val = toy_task()
    out = tmp_path / "toy"
    cfg = EmbedTrainConfig(lr=3e-3, batch_size=16, epochs=2, eval_every=8, patience=20, warmup_ratio=0.0, threads=2)
    result = train_embedder(
        str(tiny_st_dir),
        pairs,
        val,
        items,
        out,
        forbidden={},
        data_cfg=EmbedDataConfig(),
        train_cfg=cfg,
        progress=False,
    )
    m = result.manifest
    curve = m["val_curve"]
    assert curve[0]["step"] == 0 and m["base"] == curve[0] and len(curve) >= 3
    assert m["best"]["step"] > 0 and m["best"]["mrr"] > m["base"]["mrr"]
    assert m["best"]["recall@20"] > m["base"]["recall@20"]
    losses = [loss for _, loss in m["loss_curve"]]
    assert losses and losses[-1] < losses[0]
    assert m["kind"] == "recagent-embedder" and m["pairs"]["train"] == len(pairs)
    assert m["cost"]["pairs_per_second"] > 0 and m["steps"]["done"] == 2 * -(-len(pairs) // 16)

    # the folder is a sentence-transformers model the product loads; its vectors and id differ from the base's
    tuned = make_embedder(EmbedConfig(model=str(out), progress=False))
    base = make_embedder(EmbedConfig(model=str(tiny_st_dir), progress=False))
    assert tuned.id != base.id and tuned.id == m["embedder_id"]
    texts = ["apple barn", "a quiet film about rivers"]
    got, ref = tuned.embed(texts), base.embed(texts)
    assert got.shape == ref.shape == (2, 32)
    assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    assert not np.allclose(got, ref, atol=1e-3)
    assert (out / "val_users.txt").read_text().count("\n") == len(val) + 1


def test_output_folder_rules_and_guards(tiny_st_dir: Path, tmp_path: Path) -> None:
    items, pairs, val = toy_task()
    cfg = EmbedTrainConfig(max_steps=1, batch_size=8, eval_every=1)
    with pytest.raises(LeakageError):  # the guard runs before any model is loaded
        train_embedder(
            str(tiny_st_dir),
            pairs,
            val,
            items,
            tmp_path / "leak",
            forbidden={"ua": {"a3"}},
            data_cfg=EmbedDataConfig(),
            train_cfg=cfg,
            progress=False,
        )
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(InputError) as caught:
        train_embedder(
            str(tiny_st_dir),
            pairs,
            val,
            items,
            other,
            forbidden={},
            data_cfg=EmbedDataConfig(),
            train_cfg=cfg,
            progress=False,
            force=True,
        )
    assert "other files" in caught.value.message and (other / "notes.txt").exists()
    with pytest.raises(InputError) as caught:
        train_embedder(
            str(tmp_path / "nope" / "..") + "/nope",
            pairs,
            val,
            items,
            tmp_path / "o",
            forbidden={},
            data_cfg=EmbedDataConfig(),
            train_cfg=cfg,
            progress=False,
        )
    assert "cannot load the base embedding model" in caught.value.message and "--base-model" in caught.value.hint
    not_model = tmp_path / "empty-model"
    not_model.mkdir()
    with pytest.raises(InputError) as caught:
        train_embedder(
            str(not_model),
            pairs,
            val,
            items,
            tmp_path / "o2",
            forbidden={},
            data_cfg=EmbedDataConfig(),
            train_cfg=cfg,
            progress=False,
        )
    assert "not a model folder" in caught.value.message


def _app(settings: Settings) -> typer.Typer:
    return cli_app(settings, "train", cmd_train.app)


def _run(app: Any, args: list[str]) -> Any:
    return CliRunner().invoke(app, args)


def test_cli_trains_on_the_sample(ml_sample: Path, tiny_st_dir: Path, tmp_path: Path) -> None:
    app = _app(load_settings(home=tmp_path / "home"))
    out = tmp_path / "run"
    args = [
        "train",
        "embedder",
        "--catalog",
        str(ml_sample),
        "--interactions",
        str(ml_sample / "ratings.csv"),
        "--out",
        str(out),
        "--base-model",
        str(tiny_st_dir),
        "--users",
        "40",
        "--val-users",
        "20",
        "--max-pairs",
        "300",
        "--max-steps",
        "3",
        "--eval-every",
        "2",
        "--batch-size",
        "8",
        "--threads",
        "2",
    ]
    result = _run(app, args)
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert "pairs: 300 from" in result.output and "base recall@20" in result.output and "pairs/s" in result.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["split"]["users"] == 40 and manifest["data_config"]["val_users"] == 20
    assert any(f.endswith("ratings.csv") for f in manifest["data"]["files"])
    assert manifest["data"]["stats"]["pairs"] == 300 and manifest["pairs"]["catalog_items"] == 300
    assert [p["step"] for p in manifest["val_curve"]] == [0, 2, 3]
    assert manifest["base_model"]["path"] == str(tiny_st_dir.resolve())
    assert make_embedder(EmbedConfig(model=str(out), progress=False)).embed(["Toy Story"]).shape == (1, 32)
    again = _run(app, args)  # the folder holds that run now
    assert isinstance(again.exception, InputError) and "--force" in again.exception.hint
    assert manifest["pairs"]["val_users"] == 20 and 20 < manifest["pairs"]["val_queries"] <= 100  # 5 per user at most
    assert (out / "val_users.txt").read_text().count("\n") == 21  # each user once
    assert manifest["data_config"]["val_query"] == "item2item"  # validation scores as the pipeline's item2item
    replaced = _run(app, [*args, "--force", "--max-steps", "1", "--val-query", "recent"])
    assert replaced.exit_code == 0, replaced.output + repr(replaced.exception)
    again_manifest = json.loads((out / "manifest.json").read_text())
    assert again_manifest["steps"]["done"] == 1 and again_manifest["data_config"]["val_query"] == "recent"


def test_cli_bad_input(ml_sample: Path, tiny_st_dir: Path, tmp_path: Path) -> None:
    app = _app(load_settings(home=tmp_path / "home"))
    common = ["train", "embedder", "--out", str(tmp_path / "o"), "--base-model", str(tiny_st_dir)]
    missing = _run(app, [*common, "--catalog", str(tmp_path / "nope"), "--interactions", str(tmp_path / "r.csv")])
    assert isinstance(missing.exception, InputError) and "does not exist" in missing.exception.message
    assert "--catalog" in missing.exception.hint
    data = ["--catalog", str(ml_sample), "--interactions", str(ml_sample / "ratings.csv")]
    few = _run(app, [*common, *data, "--val-users", "100000"])
    assert isinstance(few.exception, InputError) and "too few users" in few.exception.message
    assert "--val-users" in few.exception.hint
    bad_model = _run(app, [*common[:-1], str(tmp_path), *data])
    assert isinstance(bad_model.exception, InputError) and "not a model folder" in bad_model.exception.message
    bad_query = _run(app, [*common, *data, "--val-query", "centroid"])
    assert bad_query.exit_code != 0 and "item2item" in str(bad_query.exception)
    assert _run(app, ["train", "embedder", "--help"]).exit_code == 0
