"""`recagent ingest` as a typer sub-app mounted like recagent/cli.py mounts its sub-apps."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import typer
from typer.testing import CliRunner

from recagent.cmd_ingest import IngestDeps, build_app, configs_from_context
from retrieval.config import EmbedConfig, StoreConfig
from retrieval.errors import CatalogError, ConfigError
from retrieval.store import Store

from retrieval_helpers import FakeEmbedder


def make_cli(tmp_path: Path, embedder: FakeEmbedder) -> typer.Typer:
    config = StoreConfig(path=tmp_path / "chroma", collection="items")

    def provider(ctx: typer.Context) -> IngestDeps:
        return IngestDeps(config, EmbedConfig(progress=False), embedder=embedder)

    root = typer.Typer()

    @root.callback()
    def _root() -> None:
        pass

    root.add_typer(build_app(provider))  # as recagent/cli.py should: no name
    return root


BOOKS = "isbn;name;authors;year;blurb\n1;Dune;Frank Herbert;1965;Spice\n2;Emma;Jane Austen;1815;Match\n2;Dup;X;1;Y\n"


def test_ingest_csv_with_options(tmp_path: Path, fake_embedder: FakeEmbedder) -> None:
    path = tmp_path / "books.csv"
    path.write_text(BOOKS)
    cli = make_cli(tmp_path, fake_embedder)
    args = ["ingest", str(path), "--id-col", "isbn", "--title-col", "name", "--text-cols", "blurb",
            "--meta", "year:int", "--meta", "authors:list", "--collection", "books"]  # fmt: skip
    result = CliRunner().invoke(cli, args, terminal_width=200)
    assert result.exit_code == 0, result.output
    assert "rows read" in result.output and "duplicate_id" in result.output and "line 4" in result.output
    coll = Store(StoreConfig(path=tmp_path / "chroma")).collection("books")
    assert coll.get_items(["1"])["1"].metadata == {"year": 1965, "authors": ["Frank Herbert"]}
    again = CliRunner().invoke(cli, [*args, "--json"])
    report = json.loads(again.output)
    assert report["store"]["embedded"] == 0 and report["store"]["unchanged"] == 2
    assert report["rows_read"] == report["accepted"] + report["rejected"] == 3


def test_ingest_mapping_file_and_strict(tmp_path: Path, fake_embedder: FakeEmbedder) -> None:
    path = tmp_path / "books.csv"
    path.write_text(BOOKS)
    mapping = tmp_path / "books.toml"
    mapping.write_text('id = "isbn"\ntitle = "name"\ntext = ["blurb"]\n[metadata]\nyear = "int"\n')
    cli = make_cli(tmp_path, fake_embedder)
    result = CliRunner().invoke(cli, ["ingest", str(path), "--mapping", str(mapping), "--strict"])
    assert isinstance(result.exception, CatalogError)  # recagent.cli.main prints message + hint, no traceback
    assert "duplicate_id" in result.exception.message and result.exception.hint


@pytest.mark.parametrize(
    ("args", "error", "text"),
    [
        (["--format", "xml"], CatalogError, "unknown format"),
        (["--meta", "year"], Exception, "COLUMN:TYPE"),
        (["--collection", "a"], ConfigError, "invalid collection name"),
        (["--id-col", "nope"], CatalogError, "'nope'"),
    ],
)
def test_ingest_errors(tmp_path: Path, fake_embedder: FakeEmbedder, args: list[str], error: type, text: str) -> None:
    path = tmp_path / "b.csv"
    path.write_text("id,title\n1,x\n")
    result = CliRunner().invoke(make_cli(tmp_path, fake_embedder), ["ingest", str(path), *args])
    assert isinstance(result.exception, error) and text in str(result.exception)
    missing = CliRunner().invoke(make_cli(tmp_path, fake_embedder), ["ingest", str(tmp_path / "none.csv")])
    assert isinstance(missing.exception, CatalogError) and "does not exist" in str(missing.exception)


def test_configs_from_context_maps_settings(tmp_path: Path) -> None:
    from agent.settings import load_settings

    settings = load_settings(
        home=tmp_path, chroma_url="http://h:1", collection="books", embed_model="/m",
        embed_batch_size=8, embed_device="cpu", embed_threads=1, catalog_max_field_chars=100,
    )  # fmt: skip
    ctx = typer.Context(typer.main.get_command(build_app()), obj=SimpleNamespace(settings=settings))
    deps = configs_from_context(ctx)
    assert deps.store_config == StoreConfig(path=tmp_path / "chroma", url="http://h:1", collection="books")
    embed = deps.embed_config
    assert (embed.model, embed.batch_size, embed.device, embed.num_threads) == ("/m", 8, "cpu", 1)
    assert embed.query_threads == EmbedConfig().query_threads
    assert deps.clean is not None and deps.clean.max_field_chars == 100
