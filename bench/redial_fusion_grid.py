"""Choose the fusion weights of the conversation sources on VALIDATION parts only (never a held-out fold).

For each of the K outer folds of `recagent eval folds`, the same seeded validation part of its training dialogues
(eval.crs_folds.choose_config) is scored with the dialogue sources (comention, recommended_popularity, attribute)
fitted on the rest of the training dialogues (default settings), fused with the content lists cached by
`recagent eval folds` (OUT/content_lists.jsonl) under each weight setting, with weighted reciprocal-rank fusion
(``rrf``) and with a weighted sum of max-scaled scores (``score``). Prints iEvaLM Recall@1/10/50 pooled over the K
validation parts, best 15 settings first.

    python -m bench.redial_fusion_grid ../shared/data/redial-dev runs/redial-folds/content_lists.jsonl
"""

from __future__ import annotations

import itertools
import json
import sys
from collections.abc import Mapping
from pathlib import Path

from eval.crs import dialogue_folds, ievalm_recall
from eval.crs_folds import dialogue_lists, fuse, validation_part
from eval.datasets import EvalCase, load_dataset
from eval.dialogue_log import log_from_cases
from retrieval.attribute_source import AttributeIndex
from retrieval.candidates import Scored
from retrieval.catalog import read_catalog
from retrieval.dialogue_sources import DialogueSourceConfig

NAMES = ("semantic", "item2item", "comention", "recommended_popularity", "attribute")
# the content weights stay at 1.0 (shared with the other request kinds); the dialogue sources' weights vary
GRID = tuple(itertools.product((1.0,), (1.0,), (1.0, 2.0, 3.0), (0.25, 0.5, 1.0), (0.0, 1.0, 2.0, 3.0)))


def score_fuse(lists: Mapping[str, Scored], weights: Mapping[str, float], case: EvalCase, n: int) -> list[str]:
    """Weighted sum of each source's scores divided by its best score (sources with a weight of 0 dropped)."""
    total: dict[str, float] = {}
    for name, ranked in lists.items():
        weight = weights.get(name, 0.0)
        top = max((s for _, s in ranked), default=0.0)
        if weight <= 0 or top <= 0:
            continue
        for item_id, score in ranked:
            total[item_id] = total.get(item_id, 0.0) + weight * max(score, 0.0) / top
    liked = set(case.liked)
    return [i for i in sorted(total, key=lambda i: (-total[i], i)) if i not in liked][:n]


def main(dataset: Path, content_path: Path, folds: int = 5, seed: int = 0) -> None:
    data = load_dataset(dataset)
    cases = data.cases
    attributes = AttributeIndex(read_catalog(data.catalog_path, format=data.catalog_format, mapping=data.mapping).items)
    content = {}
    for line in content_path.read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        content[row["case_id"]] = row["lists"]
    log = log_from_cases(cases)
    grid = [dict(zip(NAMES, w, strict=True)) for w in GRID]
    methods = ("rrf", "score")
    ranked: dict[tuple[str, int], dict[str, list[str]]] = {(m, i): {} for m in methods for i in range(len(grid))}
    golds: dict[str, list[str]] = {}
    for number, fold in enumerate(dialogue_folds(cases, folds, seed)):
        fit_log, valid_cases = validation_part(log.without(fold), cases, folds, seed + number)
        learned = dialogue_lists(fit_log, DialogueSourceConfig(), valid_cases, 100, None, attributes)
        for c in valid_cases:
            golds[c.case_id] = list(c.gold)
            lists = {**content[c.case_id], **learned[c.case_id]}
            for i, weights in enumerate(grid):
                ranked[("rrf", i)][c.case_id] = fuse(lists, weights, c, 50, 60)
                ranked[("score", i)][c.case_id] = score_fuse(lists, weights, c, 50)
    rows = [(ievalm_recall(golds, ranked[key]), key[0], grid[key[1]]) for key in ranked]
    rows.sort(key=lambda r: (-r[0]["recall@10"], -r[0]["recall@50"]))
    for scores, method, weights in rows[:15]:
        print({k: round(v, 4) for k, v in scores.items()}, method, weights)
    for method in methods:
        best = next(r for r in rows if r[1] == method)
        print("best", method, {k: round(v, 4) for k, v in best[0].items()}, best[2])


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
