"""Any catalog and any log through a column mapping alone: issue 23's books case, with `eval run` and `train`."""

from __future__ import annotations

import csv
import random
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from agent.errors import InputError
from agent.settings import Settings
from recagent import cmd_eval
from retrieval.errors import CatalogError
from retrieval.ingest import ingest
from retrieval.interactions import load_log_mapping
from train.data import load_data

from testkit import cli_app

MAPPING = """
[mapping]
id = "book_id"
title = "title"
text = ["authors", "original_title"]

[interactions]
user = "user_id"
item = "book_id"
rating = "rating"
"""


@pytest.fixture(scope="module")
def books(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A goodbooks-like folder: books.csv (ids in ``book_id``, URLs and ISBNs beside the text), ratings.csv
    ``user_id,book_id,rating`` without timestamps (file order is time), and books.toml mapping both."""
    folder = tmp_path_factory.mktemp("books")
    with (folder / "books.csv").open("w", newline="", encoding="utf-8") as fh:
        out = csv.writer(fh)
        out.writerow(["book_id", "authors", "original_title", "title", "isbn", "image_url", "ratings_count"])
        for b in range(1, 13):
            out.writerow([b, f"Author {b % 4}", f"Original {b}", f"Book {b}", f"97800000{b:04d}",
                          f"https://images.example/{b}.jpg", 100 * b])  # fmt: skip
    rng = random.Random(0)
    with (folder / "ratings.csv").open("w", newline="", encoding="utf-8") as fh:
        out = csv.writer(fh)
        out.writerow(["user_id", "book_id", "rating"])
        for user in range(1, 9):
            for book in rng.sample(range(1, 13), 6):
                out.writerow([user, book, rng.randint(1, 5)])
    (folder / "books.toml").write_text(MAPPING, encoding="utf-8")
    return folder


def _app(settings: Settings) -> typer.Typer:
    return cli_app(settings, "eval", cmd_eval.app)


def test_books_without_a_mapping_fail_with_a_hint_eval_run_can_follow(
    eval_settings: Settings, books: Path, tmp_path: Path
) -> None:
    runner = CliRunner()
    base = ["eval", "run", str(books), "--catalog", str(books / "books.csv"), "--baseline", "popularity"]
    no_catalog_map = runner.invoke(_app(eval_settings), [*base, "--out", str(tmp_path / "a")])
    err = no_catalog_map.exception
    assert isinstance(err, CatalogError) and "'id'" in err.message and "'book_id'" in err.message
    assert "--mapping FILE" in (err.hint or "")
    no_log_map = runner.invoke(_app(eval_settings), [*base, "--mapping", str(books / "books.toml")])
    err = no_log_map.exception
    assert isinstance(err, CatalogError) and "'user_id'" in err.message and "--interactions-mapping" in (err.hint or "")
    helped = runner.invoke(_app(eval_settings), ["eval", "run", "--help"], env={"COLUMNS": "200"})
    for option in ("--mapping", "--interactions-mapping", "--interactions", "--id-col", "--text-cols"):
        assert option in helped.output  # every option a hint names exists


def test_books_run_through_the_mapping_alone(eval_settings: Settings, books: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    args = ["eval", "run", str(books), "--catalog", str(books / "books.csv"), "--mapping", str(books / "books.toml"),
            "--interactions-mapping", str(books / "books.toml"), "--split", "loo", "--kcore", "3",
            "--baseline", "popularity", "--baseline", "retrieval", "--out", str(tmp_path / "run")]  # fmt: skip
    done = runner.invoke(_app(eval_settings), args)
    assert done.exit_code == 0, done.output
    import json

    results = json.loads((tmp_path / "run" / "results.json").read_text())
    notes = results["provenance"]["split_notes"]
    assert notes["order"] == "file order (the log has no timestamps)" and notes["users"] == 8
    assert results["cases"] == 8 and set(results["arms"]) == {"popularity", "retrieval"}
    # the evaluator's own ingest embedded the mapped text only: no image URL, no ISBN
    from retrieval.store import Store

    store = Store(eval_settings.store_config())
    name = next(n for n in store.collection_names() if n.startswith("eval-") and "-u" not in n and n != "eval-test"
                and "Book 3" in str(store.collection(n).raw.get(ids=["3"])["documents"]))  # fmt: skip
    doc = store.collection(name).raw.get(ids=["3"])["documents"][0]
    assert "Author 3" in doc and "Original 3" in doc and "images.example" not in doc and "9780" not in doc
    # the pipeline ranked the k-core items only: a copy of that collection holding exactly them
    ranked = [n for n in store.collection_names() if n.startswith(f"{name}-u")]
    assert len(ranked) == 1 and notes["items"] == store.collection(ranked[0]).count() < 12


def test_an_ingested_collection_stands_in_for_the_catalog(eval_settings: Settings, books: Path, tmp_path: Path) -> None:
    from retrieval.mapping import load_mapping

    ingest(books / "books.csv", store_config=eval_settings.store_config(),
           embed_config=eval_settings.embed_config(progress=False), mapping=load_mapping(books / "books.toml"),
           collection="books-test")  # fmt: skip
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "log.csv").write_bytes((books / "ratings.csv").read_bytes())  # no catalog file anywhere near it
    runner = CliRunner()
    args = ["eval", "run", str(logs), "--interactions", str(logs / "log.csv"), "--interactions-mapping",
            str(books / "books.toml"), "--collection", "books-test", "--baseline", "itemknn", "--min-history", "2",
            "--out", str(tmp_path / "run")]  # fmt: skip
    done = runner.invoke(_app(eval_settings), args)
    assert done.exit_code == 0, done.output
    without = runner.invoke(_app(eval_settings), [a for a in args if a not in ("--collection", "books-test")])
    assert isinstance(without.exception, InputError) and "--collection NAME" in (without.exception.hint or "")


def test_train_commands_read_the_same_mapping(books: Path) -> None:
    from retrieval.mapping import load_mapping

    data = load_data(books / "books.csv", books / "ratings.csv", mapping=load_mapping(books / "books.toml"),
                     log_mapping=load_log_mapping(books / "books.toml"))  # fmt: skip
    assert len(data.items) == 12 and data.interactions is not None and len(data.interactions) == 48
    with pytest.raises(CatalogError, match="'book_id'"):
        load_data(books / "books.csv", books / "ratings.csv")
    from recagent import cmd_train

    helped = CliRunner().invoke(cmd_train.app, ["ranker", "--help"], env={"COLUMNS": "200"})
    assert "--interactions-mapping" in helped.output and "--mapping" in helped.output
