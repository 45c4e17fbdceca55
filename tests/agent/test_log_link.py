"""An interaction log with its own ids linked to a catalog BY TITLE (agent/log_link.py), and the log-learned
sources fitted on the linked rows serving a conversation's mentioned movies."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from agent.errors import InputError
from agent.log_link import link_titles, linked_log, read_titles, relabel, split_title
from agent.settings import load_settings
from recagent import cmd_eval
from retrieval.candidates import SourceRequest
from retrieval.ease import EaseSource
from retrieval.interactions import Interactions, read_interactions
from retrieval.transition import TransitionSource
from retrieval.types import UserQuery

from testkit import cli_app

CATALOG = {
    "a": "The American President (1995)",
    "b": "Heat (1995)",
    "k1": "King Kong (1933)",
    "k2": "King Kong (2005)",
    "l": "Lock, Stock and Two Smoking Barrels (1998)",
    "i": "Ice Age (2002)",
    "s": "Kingsman: The Secret Service (2014)",
}
LOG = {
    "1": "American President, The (1995)",  # exact once the trailing article moves to the front
    "2": "Heat",  # no year: one catalog title
    "3": "King Kong",  # no year: two catalog films (1933, 2005)
    "4": "Lock, Stock & Two Smoking Barrels (1998)",  # fuzzy, same year
    "5": "A Film Nobody Made (2001)",
    "6": "Ice Age 2 (2006)",  # close, but another number: not Ice Age
    "7": "Kingsman: The Secret Service (2015)",  # a year apart: same title
    "8": "Heat (1972)",  # same title, 23 years apart: another film
}


def test_split_title_moves_the_article_and_reads_the_year() -> None:
    assert split_title("American President, The (1995)") == (("the", "american", "president"), 1995)
    assert split_title("Heat") == (("heat",), None)
    assert split_title("Heat", 1995) == (("heat",), 1995)


def test_link_titles_exact_yearless_fuzzy_ambiguous_unlinked() -> None:
    report = link_titles(LOG, CATALOG)
    assert report.status == {"1": "exact", "2": "title", "3": "ambiguous", "4": "fuzzy", "5": "unlinked",
                             "6": "unlinked", "7": "title", "8": "unlinked"}  # fmt: skip
    assert report.links == {"1": "a", "2": "b", "4": "l", "7": "s"}
    # an explicit year column wins over a missing one in the title: "Heat" + 1972 is not Heat (1995)
    assert link_titles({"2": "Heat"}, CATALOG, log_years={"2": 1972}).status == {"2": "unlinked"}


def test_relabel_counts_rows_and_rewrites_ids() -> None:
    report = link_titles(LOG, CATALOG)
    log = Interactions.from_records(["u1", "u1", "u1", "u2", "u2", "u3"], ["1", "2", "3", "1", "5", "9"])
    linked = relabel(log, report)
    assert report.rows["exact"] == 2 and report.rows["title"] == 1
    assert report.rows["ambiguous"] == 1 and report.rows["unlinked"] == 2  # "5" and "9" (no title at all)
    assert len(linked) == 3 and sorted(linked.item_ids) == ["a", "b"]
    assert [linked.item_ids[i] for i in linked.items] == ["a", "b", "a"]
    summary = report.summary()
    assert "rows: 6" in summary and "linked: 4 items, 3 rows" in summary and "ambiguous (not used): 1 items" in summary
    with pytest.raises(InputError, match="no row"):
        relabel(Interactions.from_records(["u"], ["5"]), report)


def test_link_titles_refuses_an_empty_side() -> None:
    with pytest.raises(InputError, match="log has no titles"):
        link_titles({}, CATALOG)


def _files(folder: Path) -> tuple[Path, Path]:
    """MovieLens-shaped files: every user watches American President then Heat; one also King Kong."""
    folder.mkdir(parents=True, exist_ok=True)
    movies = folder / "movies.csv"
    movies.write_text("movieId,title,genres\n" + "".join(f'{k},"{v}",Drama\n' for k, v in LOG.items()), "utf-8")
    rows = ["userId,movieId,rating,timestamp"]
    for u in range(4):
        rows += [f"{u},1,4.0,{100 + u}", f"{u},2,4.0,{200 + u}"]
    rows += ["9,3,3.0,50", "9,4,5.0,60"]
    ratings = folder / "ratings.csv"
    ratings.write_text("\n".join(rows) + "\n", "utf-8")
    return ratings, movies


def test_linked_log_sources_serve_conversation_seeds(tmp_path: Path) -> None:
    ratings, movies = _files(tmp_path)
    interactions, report = linked_log(ratings, movies, CATALOG)
    assert report.rows["exact"] == 4 and report.rows["title"] == 4 and report.rows["ambiguous"] == 1
    query = UserQuery(need="I loved The American President", liked=["a"], n=5)
    request = SourceRequest(query=query, k=5, exclude=frozenset(query.excluded_ids()))
    for source in (EaseSource(interactions), TransitionSource(interactions)):
        found = source.retrieve(request)
        assert found and found[0][0] == "b", source.name  # Heat followed American President for every user
        assert "a" not in [i for i, _ in found]  # the seed is never recommended back
    cold = UserQuery(need="anything", n=5)
    assert EaseSource(interactions).retrieve(SourceRequest(query=cold, k=5)) == []


def test_read_titles_names_a_missing_column(tmp_path: Path) -> None:
    _, movies = _files(tmp_path)
    assert read_titles(movies, id_col="movieId", title_col="title")[0]["2"] == "Heat"
    with pytest.raises(InputError, match="no column name"):
        read_titles(movies, id_col="movieId", title_col="name")


@pytest.mark.slow
def test_eval_folds_with_a_title_linked_log(tmp_path: Path) -> None:
    """`recagent eval folds --log`: the linked log's arms and the link summary in the report (real parts)."""
    from tests.eval.test_eval_folds_cli import _dataset

    data = _dataset(tmp_path)
    movies = json.loads((data / "movies.json").read_text(encoding="utf-8"))
    folder = tmp_path / "ml"
    folder.mkdir()
    (folder / "movies.csv").write_text(
        "movieId,title\n" + "".join(f'{k},"{v["name"]}"\n' for k, v in movies.items()) + '999,"Nobody (2001)"\n',
        "utf-8")  # fmt: skip
    rows = ["userId,movieId,rating,timestamp"] + [f"{u},{100 + u % 6},4,1\n{u},{106 + u % 6},4,2" for u in range(6)]
    (folder / "ratings.csv").write_text("\n".join([*rows, "7,999,4,1"]) + "\n", "utf-8")
    settings = load_settings(home=tmp_path / "home")
    out = tmp_path / "out"
    app = cli_app(settings, "eval", cmd_eval.app)
    args = ["eval", "folds", str(data), "--folds", "2", "--out", str(out), "--log", str(folder)]
    done = CliRunner().invoke(app, args)
    assert done.exit_code == 0, done.output
    doc = json.loads((out / "results.json").read_text(encoding="utf-8"))
    assert "fused default + title-linked log (ease 1, transition 1)" in doc["results"]
    # movie d+6 always follows movie d in the log: the log alone finds every gold movie first
    assert doc["results"]["title-linked log alone (ease + transition)"]["recall@1"] == 1.0
    assert doc["paired_log"] is not None and "unlinked (not used): 1 items, 1 rows" in doc["meta"]["log"]
    missing = CliRunner().invoke(app, ["eval", "folds", str(data), "--out", str(out), "--log", str(tmp_path / "x.csv")])
    assert isinstance(missing.exception, InputError) and "--log-titles" in missing.exception.hint


@pytest.mark.slow
def test_recommender_links_a_foreign_log_by_title(ml_sample: Path, tmp_path: Path) -> None:
    """Settings.interactions_titles: a log keyed by its own ids ("x<id>") serves the catalog's ids (real Chroma,
    real embedder), and a conversation's mentioned movie seeds the linked log's sources."""
    from agent.pipeline import Recommender
    from retrieval.ingest import ingest

    settings = load_settings(home=tmp_path / "home", collection="linked")
    ingest(ml_sample, store_config=settings.store_config(), embed_config=settings.embed_config(progress=False),
           collection="linked")  # fmt: skip
    lines = (ml_sample / "movies.csv").read_text(encoding="utf-8").splitlines()
    header, rows = lines[0], lines[1:]
    (tmp_path / "titles.csv").write_text("\n".join([header, *(f"x{r}" for r in rows)]) + "\n", "utf-8")
    ratings = (ml_sample / "ratings.csv").read_text(encoding="utf-8").splitlines()
    foreign = [ratings[0]] + [",".join([u, "x" + m, *rest]) for u, m, *rest in (r.split(",") for r in ratings[1:])]
    (tmp_path / "ratings.csv").write_text("\n".join(foreign) + "\n", "utf-8")  # MovieLens columns, own ids
    linked = settings.model_copy(update={"interactions": tmp_path / "ratings.csv",
                                         "interactions_titles": tmp_path / "titles.csv"})  # fmt: skip
    interactions = Recommender(linked).interactions
    plain = read_interactions(ml_sample / "ratings.csv")
    assert interactions is not None and set(interactions.item_ids) <= set(plain.item_ids)
    assert len(interactions) >= 0.95 * len(plain)  # the sample's own titles: (nearly) every row links
    seed = plain.item_ids[int(plain.items[0])]
    query = UserQuery(need="more like that", liked=[seed], n=5)
    found = TransitionSource(interactions).retrieve(SourceRequest(query=query, k=5))
    assert found and seed not in [i for i, _ in found]
