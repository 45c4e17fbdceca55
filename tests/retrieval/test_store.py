"""Chroma store on the embedded client and on a real ``chroma run`` server (the ``server`` params are slow)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from retrieval.catalog import read_catalog
from retrieval.config import EmbedConfig, StoreConfig
from retrieval.errors import ConfigError, InputError, StoreError
from retrieval.ingest import ingest
from retrieval.store import HASH_KEY, Store, content_hash
from retrieval.types import Constraints, Item

from retrieval_helpers import FakeEmbedder, free_port


@pytest.fixture(scope="module")
def sample_items(ml_sample: Path) -> list[Item]:
    return read_catalog(ml_sample).items


def test_upsert_is_idempotent_and_incremental(
    store_config: StoreConfig, fake_embedder: FakeEmbedder, sample_items: list[Item]
) -> None:
    store = Store(store_config)
    first = store.upsert(sample_items, fake_embedder)
    assert (first.added, first.updated, first.unchanged, first.embedded) == (300, 0, 0, 300)
    assert store.collection().count() == 300
    calls = fake_embedder.calls

    again = store.upsert(sample_items, fake_embedder)
    assert (again.added, again.updated, again.unchanged, again.embedded) == (0, 0, 300, 0)
    assert fake_embedder.calls == calls, "an unchanged catalog must not call the embedder"

    changed = [item.model_copy(deep=True) for item in sample_items]
    changed[0].title = "Toy Story, the director's cut (1995)"
    changed[1].metadata["tags"] = ["new tag"]
    changed.append(Item(id="new-1", title="A brand new movie", metadata={"genres": ["Drama"]}))
    third = store.upsert(changed, fake_embedder)
    assert (third.added, third.updated, third.unchanged, third.embedded) == (1, 2, 298, 3)
    assert fake_embedder.texts_embedded == 303
    got = store.collection().get_items([changed[0].id, "new-1"])
    assert got[changed[0].id].title == "Toy Story, the director's cut (1995)"

    pruned = store.upsert(changed[:250], fake_embedder, prune=True)
    assert (pruned.pruned, pruned.embedded) == (51, 0)
    coll = store.collection()
    assert coll.count() == 250
    assert set(coll.ids()) == {i.id for i in changed[:250]}


def test_items_round_trip(store_config: StoreConfig, fake_embedder: FakeEmbedder) -> None:
    items = [
        Item(id="b1", title="Dune", texts={"blurb": "Spice."}, metadata={"authors": ["F. Herbert"], "year": 1965}),
        Item(id="b2", title="Emma", metadata={"price": 4.5, "in_print": False, "lang": "en"}),
    ]
    store = Store(store_config)
    store.upsert(items, fake_embedder)
    coll = store.collection()
    assert coll.get_items(["b1", "b2", "missing"]) == {"b1": items[0], "b2": items[1]}
    meta = coll.get_metadata(["b1"])["b1"]
    assert meta[HASH_KEY] and meta["authors"] == ["F. Herbert"]  # lists are Chroma array metadata


def test_where_filters_match_python_constraints(
    store_config: StoreConfig, fake_embedder: FakeEmbedder, sample_items: list[Item]
) -> None:
    store = Store(store_config)
    store.upsert(sample_items, fake_embedder)
    coll = store.collection()
    cases = [
        Constraints(include_genres=["Comedy"]),
        Constraints(include_genres=["Comedy", "Romance"], genre_match="all"),
        Constraints(include_genres=["Horror", "Western"]),
        Constraints(exclude_genres=["Drama", "Comedy"], year_min=1990, year_max=1999),
        Constraints(year_max=1960),
        Constraints(include_genres=["Sci-Fi"], exclude_genres=["Action"], year_min=1980),
    ]
    for constraints in cases:
        expected = {i.id for i in sample_items if constraints.matches(i.id, i.metadata)}
        assert set(coll.ids(where=constraints.to_where())) == expected, constraints
        assert expected, f"the case {constraints} should select something"
    vector = fake_embedder.embed(["comedy"])[0]
    hits = coll.query(vector, 10, where=cases[0].to_where())[0]
    assert len(hits) == 10
    assert all("Comedy" in coll.get_items([i])[i].metadata["genres"] for i, _ in hits)
    sims = [s for _, s in hits]
    assert sims == sorted(sims, reverse=True)


def test_embedder_mismatch_refused(store_config: StoreConfig, sample_items: list[Item]) -> None:
    store = Store(store_config)
    store.upsert(sample_items[:5], FakeEmbedder("model-a"))
    with pytest.raises(StoreError) as err:
        store.upsert(sample_items[:5], FakeEmbedder("model-b"))
    assert "model-a" in err.value.message and "model-b" in err.value.message
    assert "--collection" in err.value.hint
    coll = store.collection()
    assert (coll.embedder_id, coll.dim) == ("model-a-64", 64)
    with pytest.raises(StoreError, match="dimension 8"):
        coll.query(np.ones(8, np.float32), 3)


def test_several_collections_side_by_side(embedded_config: StoreConfig, sample_items: list[Item]) -> None:
    store = Store(embedded_config)
    store.upsert(sample_items[:10], FakeEmbedder("a"), collection="movies-a")
    store.upsert(sample_items[:20], FakeEmbedder("b", dim=32), collection="movies.b")
    assert {"movies-a", "movies.b"} <= set(store.collection_names())
    assert store.collection("movies-a").count() == 10
    assert store.collection("movies.b").count() == 20
    reopened = Store(embedded_config)  # persisted on disk
    assert reopened.collection("movies.b").dim == 32


@pytest.mark.parametrize("name", ["ab", "has space", "bad!", "-leading", "x" * 513])
def test_bad_collection_names(embedded_config: StoreConfig, name: str) -> None:
    store = Store(embedded_config)
    with pytest.raises(ConfigError) as err:
        store.upsert([Item(id="1", title="x")], FakeEmbedder(), collection=name)
    assert "3-512" in err.value.hint


def test_missing_collection_lists_existing(embedded_config: StoreConfig, fake_embedder: FakeEmbedder) -> None:
    store = Store(embedded_config)
    store.upsert([Item(id="1", title="x")], fake_embedder, collection="present")
    with pytest.raises(StoreError, match=r"'absent' does not exist.*present") as err:
        store.collection("absent")
    assert "recagent ingest" in err.value.hint


def test_unwritable_path(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(StoreError) as err:
        Store(StoreConfig(path=blocker / "chroma"))
    assert "RECAGENT_CHROMA_PATH" in err.value.hint


def test_unreachable_server() -> None:
    with pytest.raises(StoreError, match="cannot reach the Chroma server") as err:
        Store(StoreConfig(url=f"http://127.0.0.1:{free_port()}", timeout_s=2))
    assert "chroma run" in err.value.hint
    with pytest.raises(ConfigError):
        Store(StoreConfig(url="ftp://example"))


def test_content_hash_depends_on_everything() -> None:
    base = content_hash("doc", {"a": 1}, "emb")
    assert base == content_hash("doc", {"a": 1}, "emb")
    assert len({base, content_hash("doc2", {"a": 1}, "emb"), content_hash("doc", {"a": 2}, "emb"),
                content_hash("doc", {"a": 1}, "emb2")}) == 4  # fmt: skip


def test_ingest_file_end_to_end(tmp_path: Path, ml_sample: Path, fake_embedder: FakeEmbedder) -> None:
    folder = tmp_path / "ml"
    shutil.copytree(ml_sample, folder)
    config = StoreConfig(path=tmp_path / "chroma", collection="movies")
    kwargs = {"store_config": config, "embed_config": EmbedConfig(progress=False), "embedder": fake_embedder}
    report = ingest(folder, **kwargs)
    assert report.store is not None and report.store.embedded == 300 and report.consistent
    again = ingest(folder, **kwargs)
    assert again.store is not None and (again.store.embedded, again.store.unchanged) == (0, 300)
    assert fake_embedder.calls == 1
    movies = folder / "movies.csv"
    lines = movies.read_text(encoding="utf-8").splitlines()
    lines[1] = lines[1].replace("Toy Story", "Toy Story Remastered")
    movies.write_text("\n".join(lines[:-1]) + "\n", encoding="utf-8")  # one changed, last movie removed
    third = ingest(folder, prune=True, **kwargs)
    assert third.store is not None
    assert (third.store.updated, third.store.embedded, third.store.pruned) == (1, 1, 1)
    with pytest.raises(InputError, match="--prune with --limit"):
        ingest(folder, prune=True, limit=5, **kwargs)


@pytest.mark.slow
def test_real_embedder_ingest_and_query(tmp_path: Path, ml_sample: Path, real_embedder: object) -> None:
    from retrieval.embed import SentenceTransformerEmbedder

    assert isinstance(real_embedder, SentenceTransformerEmbedder)
    config = StoreConfig(path=tmp_path / "chroma", collection="movies")
    before = real_embedder.texts_embedded
    report = ingest(ml_sample, store_config=config, embed_config=real_embedder.config, embedder=real_embedder)
    assert report.store is not None and report.store.embedded == 300
    assert real_embedder.texts_embedded - before == 300
    again = ingest(ml_sample, store_config=config, embed_config=real_embedder.config, embedder=real_embedder)
    assert again.store is not None and again.store.embedded == 0
    assert real_embedder.texts_embedded - before == 300
    coll = Store(config).collection()
    assert (coll.embedder_id, coll.dim) == ("sentence-transformers/all-MiniLM-L6-v2", 384)
    toy = coll.get_embeddings(["1"])["1"]
    assert abs(float(np.linalg.norm(toy)) - 1.0) < 1e-4
    neighbours = [i for i, _ in coll.query(toy, 6)[0]]
    assert neighbours[0] == "1"
    titles = [coll.get_items([i])[i].title for i in neighbours[1:]]
    assert any("Toy Story" in t for t in titles), titles  # the sequels are its nearest neighbours
