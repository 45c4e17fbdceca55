"""Choose the fusion weights of the dialogue sources on VALIDATION parts only (never a held-out fold).

For each of the K outer folds of `recagent eval folds`, the same seeded validation part of its training dialogues
(eval.crs_folds.choose_config) is scored with the dialogue sources fitted on the rest of the training dialogues
(default settings), fused with the content lists cached by `recagent eval folds` (OUT/content_lists.jsonl) under
each weight setting. Prints iEvaLM Recall@1/10/50 pooled over the K validation parts.

    python -m bench.redial_fusion_grid ../shared/data/redial-dev runs/redial-folds/content_lists.jsonl
"""

from __future__ import annotations

import itertools
import json
import random
import sys
from pathlib import Path

from eval.crs import dialogue_folds, ievalm_recall
from eval.crs_folds import dialogue_lists, fuse
from eval.datasets import load_dataset
from eval.dialogue_log import log_from_cases
from retrieval.dialogue_sources import DialogueSourceConfig


def main(dataset: Path, content_path: Path, folds: int = 5, seed: int = 0) -> None:
    cases = load_dataset(dataset).cases
    content = {}
    for line in content_path.read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        content[row["case_id"]] = row["lists"]
    log = log_from_cases(cases)
    grid = [
        dict(zip(("semantic", "item2item", "comention", "recommended_popularity"), w, strict=True))
        for w in itertools.product((0.0, 0.5, 1.0), (0.0, 0.5, 1.0), (1.0, 2.0), (0.25, 0.5, 1.0))
    ]
    ranked: dict[int, dict[str, list[str]]] = {i: {} for i in range(len(grid))}
    golds: dict[str, list[str]] = {}
    for number, fold in enumerate(dialogue_folds(cases, folds, seed)):
        training = log.without(fold)
        dialogues = sorted(training.dialog_ids)
        random.Random(seed + number).shuffle(dialogues)
        valid = set(dialogues[: max(1, len(dialogues) // max(1, folds - 1))])
        valid_cases = [c for c in cases if str(c.meta.get("dialog_id")) in valid]
        learned = dialogue_lists(training.without(valid), DialogueSourceConfig(), valid_cases, 100, None)
        for c in valid_cases:
            golds[c.case_id] = list(c.gold)
            lists = {**content[c.case_id], **learned[c.case_id]}
            for i, weights in enumerate(grid):
                ranked[i][c.case_id] = fuse(lists, weights, c, 50, 60)
    rows = [(ievalm_recall(golds, ranked[i]), grid[i]) for i in range(len(grid))]
    rows.sort(key=lambda r: (-r[0]["recall@10"], -r[0]["recall@50"]))
    for scores, weights in rows[:15]:
        print({k: round(v, 4) for k, v in scores.items()}, weights)


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
