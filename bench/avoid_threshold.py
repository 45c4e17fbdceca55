"""Choose the similarity threshold of the chat's avoidances on a dev split, report precision / recall on test.

    .venv/bin/python bench/avoid_threshold.py                      # the bundled MovieLens (movies.csv + tags.csv)
    .venv/bin/python bench/avoid_threshold.py CATALOG --tag-field keywords --format jsonl --mapping mapping.json

Ground truth from any catalog with a free-text tag list field: an item *carries* a concept word when one of its tags
contains that word (up to a shared stem, :func:`retrieval.avoid.stem_equal`). Concepts are the one-word tags given to
at least ``--min-items`` items and at most ``--max-share`` of them ("violence", "atmospheric"; no word list: they
come from the catalog). Items with at least ``--min-tags`` tags are split by a hash of their id into dev and test
halves.

What is measured is the step that needs a threshold, the embedding similarity of
:class:`retrieval.avoid.ConceptMatcher`: for each (concept, item) pair the pieces that match the concept exactly are
removed from the item first (otherwise the exact step answers trivially), and the item's score is the best similarity
between the concept and what is left (its other tags, genres, text). A pair is predicted positive when the score
reaches the threshold. The threshold with the best F-beta on dev (pooled over concepts; ``--beta 0.5`` by default:
precision counts more, since a false match takes away an item the user asked for) is reported with precision, recall
and F1 on test, and the whole curve on both halves with ``--out FILE`` (JSON). Results in docs/chat.md.
"""

from __future__ import annotations

import sys
from pathlib import Path

# bench/retrieval.py would shadow the `retrieval` package: drop this folder from the import path
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import argparse
import hashlib
import json
import time
from collections import Counter
from typing import Any

from retrieval.avoid import ConceptMatcher, background_texts, concept_words, item_pieces, stem_equal, words
from retrieval.catalog import read_catalog
from retrieval.config import EmbedConfig
from retrieval.embed import make_embedder
from retrieval.mapping import ColumnMapping
from retrieval.types import Item

ROOT = Path(__file__).resolve().parents[1]
MOVIELENS = ROOT / "data" / "movielens-latest-small"
GRID = [round(0.2 + 0.01 * i, 2) for i in range(71)]


def is_dev(item_id: str) -> bool:
    return hashlib.sha256(item_id.encode()).digest()[0] % 2 == 0


def tags_of(item: Item, field: str) -> list[str]:
    value = item.metadata.get(field)
    return [v for v in value if isinstance(v, str)] if isinstance(value, list) else []


def carries(item: Item, field: str, concept: str) -> bool:
    return any(stem_equal(concept, w) for tag in tags_of(item, field) for w in words(tag))


def choose_concepts(items: list[Item], field: str, min_items: int, max_share: float, limit: int) -> list[str]:
    counts: Counter[str] = Counter()
    for item in items:
        counts.update({w for tag in tags_of(item, field) for w in [tag.casefold()] if concept_words(w) == [w]})
    top = max(min_items, int(max_share * len(items)))
    ranked = [w for w, n in counts.most_common() if min_items <= n <= top and not w.isdigit()]
    chosen: list[str] = []
    for w in ranked:  # one concept per stem ("violent" and "violence" are the same concept)
        if not any(stem_equal(w, c) for c in chosen):
            chosen.append(w)
    return chosen[:limit]


def without_concept(item: Item, concept: str) -> Item:
    """The item with every metadata value and text that matches ``concept`` exactly removed."""
    matcher = ConceptMatcher(None)
    meta: dict[str, Any] = {}
    for name, value in item.metadata.items():
        values = value if isinstance(value, list) else [value]
        kept = [v for v in values if not (isinstance(v, str) and matcher.exact(concept, _probe(name, v)))]
        if isinstance(value, list):
            meta[name] = kept
        elif kept:
            meta[name] = value
    texts = {k: t for k, t in item.texts.items() if not matcher.exact(concept, Item(id="x", title="x", texts={k: t}))}
    return Item(id=item.id, title=item.title, texts=texts, metadata=meta)


def _probe(name: str, value: str) -> Item:
    return Item(id="x", title="x", metadata={name: value})


def prf(pairs: list[tuple[float, bool]], threshold: float, beta: float = 1.0) -> dict[str, float]:
    tp = sum(1 for s, y in pairs if y and s >= threshold)
    fp = sum(1 for s, y in pairs if not y and s >= threshold)
    fn = sum(1 for s, y in pairs if y and s < threshold)
    p = tp / (tp + fp) if tp + fp else 0.0
    r = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * p * r / (p + r) if p + r else 0.0
    b2 = beta * beta
    fb = (1 + b2) * p * r / (b2 * p + r) if p + r else 0.0
    return {"threshold": threshold, "precision": round(p, 4), "recall": round(r, 4), "f1": round(f1, 4),
            "fbeta": round(fb, 4), "tp": tp, "fp": fp, "fn": fn}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("catalog", nargs="?", default=str(MOVIELENS), help="catalog file or MovieLens folder")
    ap.add_argument("--format", default="auto")
    ap.add_argument("--mapping", help="column mapping JSON file (CSV/JSONL catalogs)")
    ap.add_argument("--tag-field", default="tags", help="the free-text tag list field (ground truth)")
    ap.add_argument("--min-tags", type=int, default=3, help="items with fewer tags are left out")
    ap.add_argument("--min-items", type=int, default=5, help="a concept tag is given to at least this many items")
    ap.add_argument("--max-share", type=float, default=0.15, help="... and by at most this share of them")
    ap.add_argument("--concepts", type=int, default=60, help="most concepts (most frequent first)")
    ap.add_argument("--beta", type=float, default=0.5, help="F-beta chosen on dev (0.5: precision first)")
    ap.add_argument("--out", type=Path, help="write the curves and the chosen threshold as JSON")
    args = ap.parse_args(argv)

    started = time.perf_counter()
    mapping = ColumnMapping.model_validate_json(Path(args.mapping).read_text()) if args.mapping else None
    catalog = read_catalog(args.catalog, format=args.format, mapping=mapping)
    items = [it for it in catalog.items if len(tags_of(it, args.tag_field)) >= args.min_tags]
    if not items:
        print(f"no item has {args.min_tags}+ values in {args.tag_field!r}: give the tag field (--tag-field)")
        return 2
    concepts = choose_concepts(items, args.tag_field, args.min_items, args.max_share, args.concepts)
    dev_items = [it for it in items if is_dev(it.id)]
    test_items = [it for it in items if not is_dev(it.id)]
    print(f"{len(catalog.items)} items read, {len(items)} with {args.min_tags}+ tags: {len(dev_items)} dev / "
          f"{len(test_items)} test; {len(concepts)} concepts: {', '.join(concepts)}")  # fmt: skip
    background = background_texts(it.metadata for it in catalog.items)  # as the chat does (agent/chat/avoid.py)
    matcher = ConceptMatcher(make_embedder(EmbedConfig(progress=False)), background=background)
    matcher.vectors(sorted({p.text for it in items for p in item_pieces(it)}))  # every piece embedded once
    halves: dict[str, list[tuple[float, bool]]] = {"dev": [], "test": []}
    per_concept: dict[str, dict[str, int]] = {}
    for concept in concepts:
        for name, part in (("dev", dev_items), ("test", test_items)):
            labels = [carries(it, args.tag_field, concept) for it in part]
            stripped = [without_concept(it, concept) for it in part]
            hits = matcher.best(concept, stripped)
            halves[name] += [(h.score if h is not None else -1.0, y) for h, y in zip(hits, labels, strict=True)]
            per_concept.setdefault(concept, {})[f"{name}_positives"] = sum(labels)
    curves = {name: [prf(pairs, t, args.beta) for t in GRID] for name, pairs in halves.items()}
    best = max(curves["dev"], key=lambda r: (r["fbeta"], r["threshold"]))
    threshold = best["threshold"]
    test = prf(halves["test"], threshold, args.beta)
    positives = {name: sum(y for _, y in pairs) for name, pairs in halves.items()}
    print(f"pairs: dev {len(halves['dev'])} ({positives['dev']} positive), test {len(halves['test'])} "
          f"({positives['test']} positive)")  # fmt: skip
    print(f"chosen on dev (best F{args.beta:g}): threshold {threshold} (dev P {best['precision']:.3f} "
          f"R {best['recall']:.3f} F1 {best['f1']:.3f})")  # fmt: skip
    print(f"test at {threshold}: precision {test['precision']:.3f}, recall {test['recall']:.3f}, F1 {test['f1']:.3f} "
          f"(tp {test['tp']}, fp {test['fp']}, fn {test['fn']})")  # fmt: skip
    for t in (0.3, 0.4, 0.5, 0.6):
        row = prf(halves["test"], t)
        print(f"  test at {t}: P {row['precision']:.3f} R {row['recall']:.3f} F1 {row['f1']:.3f}")
    print(f"{time.perf_counter() - started:.1f} s")
    if args.out:
        args.out.write_text(json.dumps({"threshold": threshold, "dev_best": best, "test": test, "concepts": concepts,
                                        "per_concept": per_concept, "curves": curves}, indent=1))  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
