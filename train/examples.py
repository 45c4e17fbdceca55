"""Option-label training examples: a user's history, lettered options with the held-out target among them, and
the target's letter.

Per user (of the split's TRAIN log only): a target is a positive (rating >= ``min_rating``, or no rating) with
at least ``min_history`` earlier interactions; the history is everything before it (the prompt shows the last
``history``); the options are ``options - 1`` negatives drawn from the pipeline's fused candidates for that
history (kept in retrieval order) with the target inserted at a seeded random position, so the label is spread
over all letters (the base model's last-label bias cannot fit the data). Negatives never include the user's
other interactions nor any of the user's ``forbidden`` (test) items.

With ``order="retrieval"`` an example is shaped like an inference window instead: the options are the first
``options`` fused candidates in fused order, and the target keeps its own fused rank (its letter). A target the
retrieval did not put among them is skipped (at inference such a case cannot be ranked right whatever the model
does), and further earlier positives are tried, up to ``tries`` per wanted example. The label spread then follows
where retrieval puts the held-out items, so the model learns what it must add to the retrieval order.

Prompts are rendered by :func:`render_messages` exactly as :meth:`agent.rerank.options.OptionsStrategy.render` renders a
window at inference (same template, variables and :class:`~agent.schemas.UserContext` helpers; a test checks the
two agree token for token).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from agent.rerank.pointwise import render_judgement
from agent.schemas import CandidateItem, UserContext
from prompts import PromptRegistry, option_label
from retrieval.types import Candidate, HistoryEntry, Item, UserQuery

__all__ = [
    "FuseFn",
    "ItemsFn",
    "OptionOrder",
    "RankExample",
    "RankerStrategy",
    "labels",
    "pointwise_options",
    "render_messages",
    "render_pointwise",
    "user_examples",
]

OptionOrder = Literal["random", "retrieval"]
"""How options are laid out: sampled negatives with the target at a random letter, or an inference window."""
RankerStrategy = Literal["options", "pointwise"]
"""The ranking strategy a run trains (``rerank_strategy`` at inference)."""

FuseFn = Callable[[UserQuery], list[Candidate]]
"""Fused candidates for a query (the pipeline's ``CandidateGenerator.generate``)."""
ItemsFn = Callable[[list[str]], Mapping[str, Item]]
"""Catalog items by id (the collection's ``get_items``)."""


def labels(m: int) -> list[str]:
    return [option_label(i) for i in range(m)]


class RankExample(BaseModel):
    """One prompt and its answer: ``options[label]`` is the target."""

    model_config = ConfigDict(extra="forbid")

    user_id: str
    target_id: str
    label: int
    user: UserContext
    options: list[CandidateItem]
    target_retrieved: bool = False

    @property
    def label_text(self) -> str:
        return option_label(self.label)

    def history_ids(self) -> list[str]:
        return [h.item_id for h in self.user.history if h.item_id is not None]

    def option_ids(self) -> list[str]:
        return [c.id for c in self.options]


def render_messages(
    registry: PromptRegistry, template: str, example: RankExample, *, history_limit: int, include_text: bool
) -> list[dict[str, str]]:
    """The chat messages of ``example``: the same call as ``run_options`` makes for one window."""
    rendered = registry.render(
        template,
        {
            "history": example.user.prompt_history(history_limit),
            "need": example.user.prompt_need(),
            "candidates": [c.prompt_vars(include_text=include_text) for c in example.options],
        },
        allow_extra=True,
    )
    return rendered.chat_messages()


def render_pointwise(
    registry: PromptRegistry,
    template: str,
    example: RankExample,
    option: int,
    *,
    history_limit: int,
    include_text: bool,
) -> list[dict[str, str]]:
    """The chat messages judging ``example.options[option]``: the call ``run_pointwise`` makes for one candidate."""
    user = example.user
    return render_judgement(registry, template, user.prompt_history(history_limit), user.prompt_need(),
                            example.options[option], include_text=include_text).chat_messages()  # fmt: skip


def pointwise_options(example: RankExample, negatives: int, seed: int | str) -> list[int]:
    """The options a pointwise training run asks about for ``example``: the target first, then up to ``negatives``
    other options of its window (a seeded sample per user and target, so reruns and resumes see the same ones)."""
    others = [i for i in range(len(example.options)) if i != example.label]
    rng = random.Random(f"{seed}:pointwise:{example.user_id}:{example.target_id}")
    return [example.label, *sorted(rng.sample(others, min(negatives, len(others))))]


def _is_positive(entry: HistoryEntry, min_rating: float) -> bool:
    return entry.rating is None or entry.rating >= min_rating


def target_positions(
    entries: Sequence[HistoryEntry], *, min_rating: float, min_history: int, count: int, rng: random.Random
) -> list[int]:
    """Up to ``count`` target positions: the last eligible positive first, then random earlier ones."""
    eligible = [i for i, e in enumerate(entries) if i >= min_history and _is_positive(e, min_rating)]
    if not eligible:
        return []
    rest = eligible[:-1]
    picked = rng.sample(rest, min(count - 1, len(rest))) if count > 1 else []
    return [eligible[-1], *sorted(picked, reverse=True)]


def user_examples(
    user_id: str,
    entries: Sequence[HistoryEntry],
    *,
    fuse: FuseFn,
    get_items: ItemsFn,
    forbidden: Collection[str],
    min_rating: float,
    min_history: int,
    count: int,
    options: int,
    pool: int,
    rng: random.Random,
    order: OptionOrder = "random",
    tries: int = 5,
) -> list[RankExample]:
    """The examples of one user from their TRAIN interactions ``entries`` (oldest first)."""
    out: list[RankExample] = []
    all_ids = [e.item_id for e in entries]
    wanted_targets = count * tries if order == "retrieval" else count
    for t in target_positions(entries, min_rating=min_rating, min_history=min_history, count=wanted_targets, rng=rng):
        if len(out) >= count:
            break
        target = entries[t].item_id
        later = [i for i in all_ids[t + 1 :] if i != target]
        query = UserQuery(
            user_id=user_id,
            history=list(entries[:t]),
            exclude=sorted({*later, *forbidden} - {target}),
            n=pool + 1,
        )
        fused = fuse(query)
        retrieved = next((c for c in fused if c.item_id == target), None)
        if order == "retrieval":
            chosen = [c for c in fused if c.item_id not in forbidden][:options]
            if target not in {c.item_id for c in chosen} or len(chosen) < 2:
                continue
        else:
            negatives = [c for c in fused if c.item_id != target and c.item_id not in forbidden][:pool]
            if not negatives:
                continue
            keep = sorted(rng.sample(range(len(negatives)), min(options - 1, len(negatives))))
            chosen = [negatives[i] for i in keep]
            chosen.insert(rng.randrange(len(chosen) + 1), retrieved or Candidate(item_id=target, score=0.0, sources={}))
        wanted = [c.item_id for c in chosen] + [e.item_id for e in entries[:t][-50:]]
        items = get_items(list(dict.fromkeys(wanted)))
        if target not in items:
            continue
        present = [c for c in chosen if c.item_id in items]
        user = UserContext.from_query(query, items)
        out.append(
            RankExample(
                user_id=user_id,
                target_id=target,
                label=[c.item_id for c in present].index(target),
                user=user,
                options=CandidateItem.pair(items, present),
                target_retrieved=retrieved is not None,
            )
        )
    return out


def describe_examples(examples: Sequence[RankExample]) -> dict[str, Any]:
    """Counts for the manifest: examples, users, label spread, how often retrieval had found the target."""
    n = len(examples)
    spread: dict[str, int] = {}
    for ex in examples:
        spread[ex.label_text] = spread.get(ex.label_text, 0) + 1
    return {
        "examples": n,
        "users": len({e.user_id for e in examples}),
        "target_retrieved": round(sum(e.target_retrieved for e in examples) / n, 4) if n else None,
        "mean_options": round(sum(len(e.options) for e in examples) / n, 2) if n else None,
        "labels": dict(sorted(spread.items())),
    }
