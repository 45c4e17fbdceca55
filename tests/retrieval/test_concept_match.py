"""The concept matcher of the chat's avoidances: exact word / stem matches on fields, tags and text first, then
centred embedding similarity (hand-made vectors, hand-checked scores); the real bundled MiniLM on a few tags (slow)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest

from retrieval.avoid import (
    TEMPLATE,
    ConceptMatcher,
    background_texts,
    concept_words,
    item_pieces,
    stem_equal,
)
from retrieval.errors import InputError
from retrieval.types import Item

VECTORS = {  # 3-d toy space: axis 0 "violence", axis 1 "comedy", axis 2 "music"
    "violent": [1.0, 0.0, 0.0],
    "brutality": [0.8, 0.6, 0.0],  # cos with violent 0.8
    "slapstick": [0.0, 1.0, 0.0],
    "A long fight in the rain.": [0.6, 0.0, 0.8],  # cos 0.6
    "songs": [0.0, 0.0, 1.0],
}


class TableEmbedder:
    """Vectors from :data:`VECTORS` (the matcher's template stripped); records what it was asked."""

    id = "table"
    dim = 3

    def __init__(self) -> None:
        self.asked: list[str] = []

    def embed(self, texts: Sequence[str], *, progress: bool | None = None) -> np.ndarray:
        prefix = TEMPLATE.format("")
        out = []
        for t in texts:
            key = t[len(prefix) :] if t.startswith(prefix) else t
            self.asked.append(key)
            out.append(VECTORS.get(key, [0.0, 0.0, 0.0]))
        return np.asarray(out, dtype=np.float32)


def item(item_id: str, tags: list[str] | None = None, plot: str | None = None, **meta: object) -> Item:
    metadata: dict[str, object] = dict(meta)
    if tags is not None:
        metadata["tags"] = tags
    return Item(id=item_id, title=f"Title {item_id}", texts={"plot": plot} if plot else {}, metadata=metadata)  # type: ignore[arg-type]


def test_stem_equal_and_concept_words() -> None:
    assert stem_equal("violent", "violence") and stem_equal("depressing", "depression")
    assert stem_equal("gore", "gores") and stem_equal("subtitles", "subtitle")
    assert not stem_equal("animal", "animation") and not stem_equal("gore", "gory")
    assert not stem_equal("violin", "violent")
    assert concept_words("not too violent") == ["violent"] and concept_words("jump scares") == ["jump", "scares"]


def test_pieces_are_string_values_and_sentences() -> None:
    it = item("1", ["dark", "casual violence"], "One. Two! Three?", year=1999, genres=["Crime"], cult=True)
    pieces = [(p.field, p.text, p.is_text) for p in item_pieces(it)]
    assert ("tags", "casual violence", False) in pieces and ("genres", "Crime", False) in pieces
    assert [p[1] for p in pieces if p[2]] == ["One.", "Two!", "Three?"]
    assert not any(p[1] in ("1999", "True") for p in pieces)  # numbers and booleans are not read


def test_exact_match_on_tags_and_text_without_embedder() -> None:
    m = ConceptMatcher(None)
    items = [
        item("a", ["casual violence"]),
        item("b", ["funny"], "A violent gang takes over the town."),
        item("c", ["violin music"]),
        item("d"),
    ]
    hits = m.match("violent", items)
    assert [h.kind if h else None for h in hits] == ["exact", "exact", None, None]
    assert hits[0] is not None and (hits[0].field, hits[0].text, hits[0].is_text) == ("tags", "casual violence", False)
    assert hits[1] is not None and hits[1].is_text and hits[1].field == "plot"
    assert m.match("jump scares", [item("e", ["jump scare"]), item("f", ["jump"])])[1] is None  # every word needed


def test_similarity_threshold_decides() -> None:
    emb = TableEmbedder()
    items = [item("a", ["brutality"]), item("b", ["slapstick"]), item("c", plot="A long fight in the rain."), item("d")]
    best = ConceptMatcher(emb, threshold=0.0).best("violent", items)
    assert [round(h.score, 3) if h else None for h in best] == [0.8, 0.0, 0.6, None]
    for threshold, expected in ((0.7, [True, False, False, False]), (0.5, [True, False, True, False])):
        assert [h is not None for h in ConceptMatcher(emb, threshold=threshold).match("violent", items)] == expected
    hit = ConceptMatcher(emb, threshold=0.5).match("violent", items)[2]
    assert hit is not None and hit.kind == "similar" and hit.is_text and hit.text == "A long fight in the rain."


def test_piece_vectors_are_cached() -> None:
    emb = TableEmbedder()
    m = ConceptMatcher(emb, threshold=0.5)
    m.match("violent", [item("a", ["brutality"]), item("b", ["brutality", "slapstick"])])
    m.match("violent", [item("c", ["brutality"])])
    assert sorted(emb.asked) == ["brutality", "slapstick", "violent"]


def test_centring_on_the_background() -> None:
    # every vector shares a common direction (axis 1); centring on the background mean removes it
    emb = TableEmbedder()
    plain = ConceptMatcher(emb, threshold=0.0).best("violent", [item("a", ["brutality"])])[0]
    centred = ConceptMatcher(emb, threshold=0.0, background=["slapstick"]).best("violent", [item("a", ["brutality"])])
    assert plain is not None and centred[0] is not None
    # violent - (0,1,0) = (1,-1,0)/sqrt2, brutality - (0,1,0) = (0.8,-0.4,0)/sqrt(0.8): cos = 1.2 / (sqrt2 * sqrt0.8)
    assert centred[0].score == pytest.approx(1.2 / (np.sqrt(2) * np.sqrt(0.8)), abs=1e-5)
    assert plain.score == pytest.approx(0.8, abs=1e-5)


def test_background_texts_are_the_most_common_values() -> None:
    records = [{"tags": ["a", "b"], "genre": "x"}, {"tags": ["a"], "genre": "x", "year": 2000}, {"tags": ["c"]}]
    assert background_texts(records, limit=2) == ["a", "x"]
    assert background_texts(records) == ["a", "x", "b", "c"]


def test_bad_threshold_is_refused() -> None:
    with pytest.raises(InputError, match="outside"):
        ConceptMatcher(None, threshold=2.0)


@pytest.mark.slow
def test_real_minilm_finds_related_tags_above_the_default_threshold() -> None:
    from retrieval.config import EmbedConfig
    from retrieval.embed import make_embedder

    m = ConceptMatcher(make_embedder(EmbedConfig(progress=False)))
    hits = m.match("violent", [item("a", ["brutality"]), item("b", ["cute", "feel-good"]), item("c", ["violence"])])
    assert hits[0] is not None and hits[0].kind == "similar"
    assert hits[1] is None
    assert hits[2] is not None and hits[2].kind == "exact"
