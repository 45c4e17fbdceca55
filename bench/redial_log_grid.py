"""Does an interaction log linked to the catalog BY TITLE add to the conversation default? VALIDATION parts only.

The log (e.g. MovieLens ratings + movies.csv titles) is linked to the dataset's catalog with
:func:`agent.log_link.link_titles`, and the log-learned item-to-item sources ``ease`` and ``transition`` are fitted
on the linked rows; their lists for a turn's mentioned movies are fused (RRF) with the content lists cached by
`recagent eval folds` (OUT/content_lists.jsonl) and the dialogue sources fitted as in
:mod:`bench.redial_fusion_grid` (same seeded validation parts), at the current default weights plus a weight grid
for ``ease`` and ``transition``. Prints iEvaLM Recall@1/10/50 pooled over the K validation parts.

    python -m bench.redial_log_grid ../shared/data/redial-dev runs/redial-folds/content_lists.jsonl \
        ../shared/data/movielens-latest-small
"""

from __future__ import annotations

import itertools
import json
import sys
from pathlib import Path

from agent.log_link import link_titles, read_titles, relabel
from eval.crs import dialogue_folds, ievalm_recall
from eval.crs_folds import CONTENT_SOURCES, DIALOGUE_SOURCES, _request, dialogue_lists, fuse, validation_part
from eval.datasets import load_dataset
from eval.dialogue_log import log_from_cases
from retrieval.attribute_source import AttributeIndex
from retrieval.catalog import read_catalog
from retrieval.config import DEFAULT_SOURCE_WEIGHTS
from retrieval.dialogue_sources import DialogueSourceConfig
from retrieval.ease import EaseSource
from retrieval.interactions import read_interactions
from retrieval.transition import TransitionSource

GRID = tuple(itertools.product((0.0, 0.5, 1.0, 2.0), (0.0, 0.5, 1.0, 2.0)))


def main(dataset: Path, content_path: Path, movielens: Path, folds: int = 5, seed: int = 0) -> None:
    data = load_dataset(dataset)
    cases = data.cases
    catalog = read_catalog(data.catalog_path, format=data.catalog_format, mapping=data.mapping)
    attributes = AttributeIndex(catalog.items)
    titles, _ = read_titles(movielens / "movies.csv", id_col="movieId", title_col="title")
    report = link_titles(titles, {i.id: i.title for i in catalog.items})
    linked = relabel(read_interactions(movielens / "ratings.csv"), report)
    print(report.summary())
    log_sources = [EaseSource(linked), TransitionSource(linked)]
    content = {}
    for line in content_path.read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        content[row["case_id"]] = row["lists"]
    base = {s: DEFAULT_SOURCE_WEIGHTS[s] for s in CONTENT_SOURCES + DIALOGUE_SOURCES}
    grid = [{**base, "ease": e, "transition": t} for e, t in GRID]
    grid += [{"ease": 1.0}, {"transition": 1.0}]
    log = log_from_cases(cases)
    ranked: list[dict[str, list[str]]] = [{} for _ in grid]
    golds: dict[str, list[str]] = {}
    seeded: dict[str, bool] = {}
    for number, fold in enumerate(dialogue_folds(cases, folds, seed)):
        fit_log, valid_cases = validation_part(log.without(fold), cases, folds, seed + number)
        learned = dialogue_lists(fit_log, DialogueSourceConfig(), valid_cases, 100, None, attributes)
        for c in valid_cases:
            golds[c.case_id] = list(c.gold)
            request = _request(c, 100, None)
            logged = {s.name: s.retrieve(request) for s in log_sources}
            seeded[c.case_id] = bool(logged["ease"])
            lists = {**content[c.case_id], **learned[c.case_id], **logged}
            for i, weights in enumerate(grid):
                ranked[i][c.case_id] = fuse(lists, weights, c, 50, 60)
    samples = sum(len(set(g)) for g in golds.values())
    reached = sum(g in linked.item_index for gold in golds.values() for g in set(gold))
    print(f"validation turns {len(golds)}, with a linked seed {sum(seeded.values())}; gold samples whose movie "
          f"is in the linked log {reached}/{samples}")  # fmt: skip
    rows = [(ievalm_recall(golds, ranked[i]), grid[i]) for i in range(len(grid))]
    for scores, weights in sorted(rows, key=lambda r: (-r[0]["recall@50"], -r[0]["recall@10"])):
        extra = {k: weights.get(k, 0.0) for k in ("ease", "transition")}
        alone = "" if "semantic" in weights else " (alone)"
        print({k: round(v, 4) for k, v in scores.items()}, extra, alone)


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]))
