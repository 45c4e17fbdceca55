"""A toy ranking task for the tiny random model: the target is the one option whose title says 'yes'."""

from __future__ import annotations

import random

from agent.schemas import CandidateItem, HistoryItem, UserContext
from retrieval.types import Candidate, Item
from train.examples import RankExample

_WORDS = "movie film book comedy drama action thriller romance horror music war western family".split()


def toy_examples(n: int, *, options: int = 4, seed: int = 0, prefix: str = "u") -> list[RankExample]:
    rng = random.Random(seed)
    out = []
    for k in range(n):
        label = rng.randrange(options)
        cands = []
        for j in range(options):
            word = "yes" if j == label else "no"
            item = Item(id=f"{prefix}{k}-i{j}", title=f"{word} {rng.choice(_WORDS)}", metadata={"year": 1990 + j})
            cands.append(CandidateItem(item=item, candidate=Candidate(item_id=item.id, score=0.0, sources={})))
        user = UserContext(
            user_id=f"{prefix}{k}",
            history=[HistoryItem(item_id=f"h{k}-{j}", title=f"the {rng.choice(_WORDS)}") for j in range(2)],
        )
        out.append(RankExample(user_id=f"{prefix}{k}", target_id=cands[label].id, label=label, user=user,
                               options=cands))  # fmt: skip
    return out
