"""Issue 27 case 5: unknown users, item ids and filter fields, and impossible filters are reported (``warnings`` in
the result, the terminal output and ``--json``), never a silent popularity list captioned as personal.

Real embedded Chroma holding the 300-movie sample, the real ratings log, a hashing embedder (no model load)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from rich.console import Console

from agent.filter_syntax import parse_filters
from agent.pipeline import Recommender, RecommendRequest
from agent.settings import Settings, load_settings
from retrieval.interactions import read_interactions

from fakes import FakeEngine
from testkit import HashEmbedder, hashed_sample_home

COLLECTION = "warn-test"
EMBEDDER = HashEmbedder()


@pytest.fixture(scope="module")
def settings(ml_sample: Path, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    home = hashed_sample_home(tmp_path_factory.mktemp("home"), ml_sample, EMBEDDER, COLLECTION)
    return load_settings(home=home, collection=COLLECTION, interactions=ml_sample / "ratings.csv",
                         rerank_strategy="retrieval", explain_mode="template")  # fmt: skip


@pytest.fixture(scope="module")
def rec(settings: Settings) -> Recommender:
    log = read_interactions(settings.interactions)  # type: ignore[arg-type]
    return Recommender(settings, engine=FakeEngine(), embedder=EMBEDDER, interactions=log)  # type: ignore[arg-type]


def test_unknown_user_is_reported_and_not_captioned_personal(rec: Recommender) -> None:
    result = rec.recommend(RecommendRequest(user_id="nobody", k=5))
    assert len(result.items) == 5
    assert len(result.warnings) == 1 and "unknown user 'nobody'" in result.warnings[0]
    assert "popularity alone" in result.warnings[0]
    assert not any("for you" in (i.justification or "") for i in result.items)


def test_known_user_has_no_warning(rec: Recommender) -> None:
    user = next(u for u in ["1", "2", "3", "4", "5"] if rec.interactions.history(u))  # type: ignore[union-attr]
    result = rec.recommend(RecommendRequest(user_id=user, k=3))
    assert result.warnings == [] and len(result.items) == 3


def test_unknown_liked_items_are_reported(rec: Recommender) -> None:
    known = rec.collection.ids()[0]
    result = rec.recommend(RecommendRequest(liked=["nope123", known], disliked=["gone"], k=3))
    assert len(result.warnings) == 1
    assert "'nope123', 'gone'" in result.warnings[0] and repr(known) not in result.warnings[0]


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        (["colour=red"], "no item has a field 'colour'"),
        (["year>=3000"], "filter 'year 3000..': no item of collection 'warn-test' matches it"),
        (["runtime<90"], "no item has a field 'runtime'"),
        (["genre=Comedy", "genre=Nonexistent"], None),  # any-of genres: Comedy matches, so the list is not empty
    ],
)
def test_filters_no_item_matches_are_explained(rec: Recommender, filters: list[str], expected: str | None) -> None:
    result = rec.recommend(RecommendRequest(query="adventure", constraints=parse_filters(filters), k=5))
    if expected is None:
        assert result.items and result.warnings == []
        return
    assert result.items == []
    assert any(expected in w for w in result.warnings), result.warnings


def test_filters_that_only_conflict_together(rec: Recommender) -> None:
    """The oldest year and a genre none of that year's items has: each filter matches, the pair does not."""
    meta = rec.collection.get_metadata(rec.collection.ids())
    first = min(m["year"] for m in meta.values() if "year" in m)
    early = {g for m in meta.values() if m.get("year") == first for g in m.get("genres", [])}
    genre = sorted({g for m in meta.values() for g in m.get("genres", [])} - early)[0]
    filters = parse_filters([f"year<={first}", f"genre={genre}"])
    result = rec.recommend(RecommendRequest(query="adventure", constraints=filters, k=5))
    assert result.items == []
    assert result.warnings == ["no item matches all the filters together; drop or widen one of them"]


def test_json_and_table_carry_the_warnings(rec: Recommender) -> None:
    """What `recommend --json` prints (model_dump_json) and the table view (print_recommendation)."""
    from recagent.present import print_recommendation

    result = rec.recommend(RecommendRequest(user_id="nobody", constraints=parse_filters(["colour=red"]), k=5))
    data = json.loads(result.model_dump_json())
    assert data["items"] == [] and any("unknown user" in w for w in data["warnings"])
    assert any("no item has a field 'colour'" in w for w in data["warnings"])
    console = Console(record=True, width=200)
    print_recommendation(result, console)
    text = console.export_text()
    assert "warning: unknown user 'nobody'" in text and "warning: filter 'colour=red'" in text
