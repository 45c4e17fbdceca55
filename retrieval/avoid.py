"""Does an item carry an avoided concept ("violent", "gore", "depressing", "subtitles")?

The chat's avoidances (:mod:`agent.chat.avoid` decides what to do with a match) are concepts in the user's words,
not catalog values: "violence" is no genre, but tags and plots carry it. :class:`ConceptMatcher` reads an item as
*pieces* - every string value of its metadata (a tag, a genre, a director) and every sentence of its free-text
fields (a plot) - and matches in two steps:

1. **exact**: every content word of the concept is a word of one piece, up to a shared stem ("violent" matches the tag
   "casual violence": same first six letters; "gore" matches "gore" and "gores" only);
2. **similar**: the cosine similarity between the concept and a piece, both embedded by the collection's own
   embedder as ``about {text}`` and centred on the mean vector of the catalog's most common values (short category
   words such as genres are close to every word otherwise), is at least ``threshold``. That is the synonym
   expansion ("violent" -> "brutality") and the reading of plots, with no word list: the threshold is chosen on a
   dev split of a tagged catalog by ``bench/avoid_threshold.py`` (figures in docs/chat.md).

Piece embeddings are cached by text (tags repeat across items), so a chat turn embeds only the pieces it has not
seen. Nothing here knows a domain: fields come from the items themselves.
"""

from __future__ import annotations

import re
import threading
from collections import Counter, OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from retrieval.embed import Embedder
from retrieval.errors import InputError
from retrieval.types import Item

__all__ = [
    "DEFAULT_THRESHOLD",
    "ConceptHit",
    "ConceptMatcher",
    "Piece",
    "background_texts",
    "concept_words",
    "item_pieces",
    "stem_equal",
]

DEFAULT_THRESHOLD = 0.39
"""Similarity threshold chosen on the dev split of MovieLens tags (bench/avoid_threshold.py; docs/chat.md)."""
MAX_SENTENCES = 20
MAX_PIECE_CHARS = 300
CACHE_SIZE = 50_000
BACKGROUND = 512
TEMPLATE = "about {}"
_WORD = re.compile(r"[^\W_]+")
_SENTENCE = re.compile(r"(?<=[.!?;])\s+")
_FILLER = frozenset(
    "a an the and or of to in on at for with by too very so that this these those any anything something "
    "much many more less overly really particularly super kind sort bit lot no not without nothing".split()
)


@dataclass(frozen=True)
class Piece:
    """One readable part of an item: a metadata value or a sentence of a text field."""

    field: str
    text: str
    is_text: bool


@dataclass(frozen=True)
class ConceptHit:
    """Why an item matched a concept: ``exact`` (a word of the piece) or ``similar`` (embedding similarity)."""

    kind: Literal["exact", "similar"]
    field: str
    text: str
    is_text: bool
    score: float


def words(text: str) -> list[str]:
    return [w.casefold() for w in _WORD.findall(text)]


def concept_words(concept: str) -> list[str]:
    """The words of a concept that carry its meaning ("too violent" -> ["violent"])."""
    return [w for w in words(concept) if w not in _FILLER and not w.isdigit()]


def stem_equal(a: str, b: str) -> bool:
    """Same word up to a plural or a shared stem of at least six letters that leaves at most three letters of the
    shorter word ("violent" / "violence", "depressing" / "depression"; not "animal" / "animation")."""
    if a == b or a + "s" == b or b + "s" == a or a + "es" == b or b + "es" == a:
        return True
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n >= 6 and n >= min(len(a), len(b)) - 3


def item_pieces(item: Item) -> list[Piece]:
    """The item's string metadata values and the sentences of its text fields (numbers, booleans and the title
    are not read)."""
    out: list[Piece] = []
    for name, value in item.metadata.items():
        values = value if isinstance(value, list) else [value]
        out += [Piece(name, v.strip()[:MAX_PIECE_CHARS], False) for v in values if isinstance(v, str) and v.strip()]
    for name, text in item.texts.items():
        sentences = [s.strip() for s in _SENTENCE.split(text) if s.strip()]
        out += [Piece(name, s[:MAX_PIECE_CHARS], True) for s in sentences[:MAX_SENTENCES]]
    return out


def background_texts(records: Iterable[Mapping[str, Any]], limit: int = BACKGROUND) -> list[str]:
    """The ``limit`` most common string values of the records' metadata (ties alphabetically): the texts whose mean
    vector the similarity is centred on."""
    counts: Counter[str] = Counter()
    for meta in records:
        for value in meta.values():
            values = value if isinstance(value, list) else [value]
            counts.update(v.strip()[:MAX_PIECE_CHARS] for v in values if isinstance(v, str) and v.strip())
    return [t for t, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:limit]]


class ConceptMatcher:
    """Matches concepts against items (see the module docstring). ``embedder`` None: exact matches only;
    ``background``: the catalog's common values (:func:`background_texts`), embedded on first use."""

    def __init__(
        self, embedder: Embedder | None, threshold: float = DEFAULT_THRESHOLD, background: Sequence[str] = ()
    ) -> None:
        if not -1.0 <= threshold <= 1.0:
            raise InputError(
                f"the avoidance similarity threshold {threshold} is outside [-1, 1]",
                hint="use a cosine similarity, e.g. the value chosen by bench/avoid_threshold.py",
            )
        self.embedder = embedder
        self.threshold = threshold
        self.background = list(background)
        self._centre: np.ndarray | None = None
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    # -- matching ------------------------------------------------------------------------------------------
    def exact(self, concept: str, item: Item, pieces: Sequence[Piece] | None = None) -> ConceptHit | None:
        wanted = concept_words(concept)
        if not wanted:
            return None
        for piece in item_pieces(item) if pieces is None else pieces:
            have = words(piece.text)
            if all(any(stem_equal(w, h) for h in have) for w in wanted):
                return ConceptHit("exact", piece.field, piece.text, piece.is_text, 1.0)
        return None

    def best(
        self, concept: str, items: Sequence[Item], pieces: Sequence[Sequence[Piece]] | None = None
    ) -> list[ConceptHit | None]:
        """Per item, its piece most similar to ``concept`` (kind ``similar``, any score; None without pieces or
        embedder). Used by :meth:`match` and by the threshold calibration. ``pieces``: the items' pieces when
        already computed."""
        if pieces is None:
            pieces = [item_pieces(it) for it in items]
        if self.embedder is None or not concept_words(concept):
            return [None] * len(items)
        vectors = self.vectors([concept, *{p.text for ps in pieces for p in ps}])
        query = vectors[concept]
        out: list[ConceptHit | None] = []
        for ps in pieces:
            if not ps:
                out.append(None)
                continue
            scores = np.stack([vectors[p.text] for p in ps]) @ query
            top = int(np.argmax(scores))
            p = ps[top]
            out.append(ConceptHit("similar", p.field, p.text, p.is_text, float(scores[top])))
        return out

    def match(self, concept: str, items: Sequence[Item]) -> list[ConceptHit | None]:
        """Per item: an exact hit, else a similar piece at or above the threshold, else None."""
        pieces = [item_pieces(it) for it in items]
        out: list[ConceptHit | None] = [self.exact(concept, it, ps) for it, ps in zip(items, pieces, strict=True)]
        todo = [i for i, hit in enumerate(out) if hit is None]
        if todo:
            similar = self.best(concept, [items[i] for i in todo], [pieces[i] for i in todo])
            for i, hit in zip(todo, similar, strict=True):
                if hit is not None and hit.score >= self.threshold:
                    out[i] = hit
        return out

    # -- embeddings ----------------------------------------------------------------------------------------
    def centre(self) -> np.ndarray | None:
        """The mean vector of the background texts (None without any)."""
        if self._centre is None and self.background and self.embedder is not None:
            self._centre = self._raw(self.background).mean(axis=0)
        return self._centre

    def _raw(self, texts: Sequence[str]) -> np.ndarray:
        assert self.embedder is not None
        vectors = self.embedder.embed([TEMPLATE.format(t) for t in texts], progress=False)
        return _unit(np.asarray(vectors, dtype=np.float32))

    def _embed(self, texts: Sequence[str]) -> np.ndarray:
        vectors = self._raw(texts)
        centre = self.centre()
        return vectors if centre is None else _unit(vectors - centre)

    def vectors(self, texts: Sequence[str]) -> dict[str, np.ndarray]:
        """Unit vectors of ``texts``, from the cache or embedded in one call."""
        with self._lock:
            missing = [t for t in dict.fromkeys(texts) if t not in self._cache]
        fresh = dict(zip(missing, self._embed(missing), strict=True)) if missing else {}
        with self._lock:
            self._cache.update(fresh)
            while len(self._cache) > CACHE_SIZE:
                self._cache.popitem(last=False)
            out = {t: fresh[t] if t in fresh else self._cache[t] for t in texts if t in fresh or t in self._cache}
        rest = [t for t in dict.fromkeys(texts) if t not in out]  # evicted meanwhile by a concurrent call
        if rest:
            out.update(zip(rest, self._embed(rest), strict=True))
        return out


def _unit(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.where(norms == 0, 1.0, norms)
