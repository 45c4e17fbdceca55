"""Avoidances in chat: what the user wants less of ("not too violent", "no gore", "nothing depressing", "without
subtitles"), read from a message and applied to the candidates before they are ranked.

- :func:`clause_avoidances` reads the concepts after a clause's negative cue (the rules path; the LLM extraction
  fills ``avoid`` in its JSON, checked against the message in :mod:`agent.chat.conversation`). "too", "so", "very",
  "overly" or the cues "less" / "fewer" make an avoidance ``soft``; otherwise it is ``hard``.
- :class:`AvoidancePolicy` applies the session's avoidances to the fused candidates: the floor below
  (:class:`retrieval.avoid.ConceptMatcher`) says whether an item's fields, tags or text match the concept (exactly,
  then by embedding similarity); a hard avoidance leaves the item out, a soft one moves it behind every other
  candidate - so far behind that it reaches the ranker only when fewer than ``k`` others are left - and
  :func:`demote` keeps it behind them after ranking. Each avoidance comes back as an
  :class:`AppliedAvoidance`: what was matched, how many items were left out or ranked lower and why, and the
  sentence the reply carries ("Avoiding "gore": left out 3 items (tagged gore).").
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field

from agent.sessions import Avoidance
from retrieval.avoid import ConceptHit, ConceptMatcher, concept_words, stem_equal
from retrieval.types import Candidate, Item

if TYPE_CHECKING:
    from agent.pipeline import RecommendedItem

__all__ = [
    "MAX_AVOIDANCES",
    "AppliedAvoidance",
    "AvoidancePolicy",
    "avoidance_key",
    "clause_avoidances",
    "demote",
    "describe_avoidances",
    "fold_avoidances",
]

MAX_AVOIDANCES = 8
MAX_CONCEPT_WORDS = 4
SOFTENERS = frozenset("too so very overly particularly really super that much".split())
SOFT_CUES = frozenset({"less", "fewer"})
_SEPARATORS = frozenset({"and", "or", "nor", "neither"})


class AppliedAvoidance(BaseModel):
    """How one avoidance was applied to a turn's candidates."""

    model_config = ConfigDict(extra="forbid")

    concept: str
    strength: Literal["hard", "soft"]
    checked: int = Field(description="Candidates looked at.")
    left_out: int = Field(0, description="Candidates left out (hard).")
    demoted: int = Field(0, description="Candidates ranked lower (soft).")
    item_ids: list[str] = Field(default_factory=list, description="The matching candidates.")
    reasons: dict[str, int] = Field(
        default_factory=dict, description="Why they matched ('tagged violence') -> how many items."
    )
    note: str = Field(description="The sentence the reply carries.")


# ------------------------------------------------------------------------------------------------ reading
def avoidance_key(concept: str) -> tuple[str, ...]:
    return tuple(concept_words(concept))


def clause_avoidances(
    words: Sequence[str], taken: Sequence[bool], neg: Sequence[int], is_content: Callable[[str], bool]
) -> list[Avoidance]:
    """The concepts after a clause's first negative cue (``neg``: cue positions): runs of content words not
    ``taken`` by a title, a reference or a hard-filter value, split at "and" / "or" and at later cues; at most
    :data:`MAX_CONCEPT_WORDS` words each. A softener right after the cue makes the concept soft."""
    if not neg:
        return []
    first = neg[0]
    soft = words[first] in SOFT_CUES
    out: list[Avoidance] = []
    run: list[str] = []

    def flush() -> None:
        if run:
            concept = " ".join(run[:MAX_CONCEPT_WORDS])
            out.append(Avoidance(concept=concept, strength="soft" if soft else "hard"))
            run.clear()

    cues = set(neg)
    for i in range(first + 1, len(words)):
        w = words[i]
        if i in cues:  # a new cue starts a new concept with its own strength ("not too dark and no gore")
            flush()
            soft = w in SOFT_CUES
        elif taken[i] or w in _SEPARATORS:
            flush()
        elif w in SOFTENERS or w in SOFT_CUES:
            soft = soft or not run  # "not too violent": a softener before the concept
        elif is_content(w):
            run.append(w)
    flush()
    return out


def fold_avoidances(old: Sequence[Avoidance], new: Sequence[Avoidance], lifted_words: Sequence[str]) -> list[Avoidance]:
    """The session's avoidances after a message: old ones whose every word the message now asks for
    (``lifted_words``: its need and liked values) are lifted, new ones replace old ones with the same concept, and
    the most recent :data:`MAX_AVOIDANCES` are kept."""
    lifted = set(lifted_words)

    def asked(a: Avoidance) -> bool:
        key = avoidance_key(a.concept)
        return bool(key) and all(any(stem_equal(w, x) for x in lifted) for w in key)

    fresh = {avoidance_key(a.concept) for a in new}
    kept = [a for a in old if not asked(a) and avoidance_key(a.concept) not in fresh]
    out: list[Avoidance] = []
    for a in [*kept, *new]:
        if avoidance_key(a.concept) and avoidance_key(a.concept) not in {avoidance_key(b.concept) for b in out}:
            out.append(a)
    return out[-MAX_AVOIDANCES:]


def describe_avoidances(avoid: Sequence[Avoidance]) -> list[str]:
    """Short phrases for replies that show no items: 'no gore', 'less violent'."""
    return [f"{'no' if a.strength == 'hard' else 'less'} {a.concept}" for a in avoid]


# ------------------------------------------------------------------------------------------------ applying
def _reason(hit: ConceptHit, item: Item, concept: str) -> str:
    if hit.is_text:
        verb = "mentions" if hit.kind == "exact" else "is close to"
        return f'their {hit.field} {verb} "{concept}"'
    tagged = isinstance(item.metadata.get(hit.field), list)
    said = f"tagged {hit.text}" if tagged else f"{hit.field} {hit.text}"
    return said if hit.kind == "exact" else f'{said} (close to "{concept}")'


def _note(a: Avoidance, n: int, checked: int, reasons: Counter[str]) -> str:
    head = f'Avoiding "{a.concept}"' if a.strength == "hard" else f'Less "{a.concept}"'
    if not n:
        return f"{head}: none of the {checked} candidates matched."
    items = "item" if n == 1 else "items"
    top = reasons.most_common(3)
    why = "; ".join(r if k == 1 or len(top) == 1 else f"{k} {r}" for r, k in top)
    more = "; ..." if len(reasons) > 3 else ""
    done = f"left out {n} {items}" if a.strength == "hard" else f"ranked {n} {items} lower"
    return f"{head}: {done} ({why}{more})."


class AvoidancePolicy:
    """Applies avoidances to candidates with a :class:`ConceptMatcher` (see the module docstring)."""

    def __init__(self, matcher: ConceptMatcher) -> None:
        self.matcher = matcher

    def apply(
        self, avoid: Sequence[Avoidance], candidates: Sequence[Candidate], items: dict[str, Item], k: int = 0
    ) -> tuple[list[Candidate], list[AppliedAvoidance]]:
        """The candidates without the hard matches and with the soft matches last (lower scores, same order among
        themselves), and what each avoidance did. With ``k`` (the items to show) the soft matches come only as far
        as fewer than ``k`` other candidates are left: ranked below all others, they would not be shown, and a
        ranker (an LLM) must not bring them back. Candidates whose item is unknown are kept as they are."""
        ids = [c.item_id for c in candidates if c.item_id in items]
        dropped: set[str] = set()
        demoted: set[str] = set()
        applied: list[AppliedAvoidance] = []
        for a in avoid:
            hits = self.matcher.match(a.concept, [items[i] for i in ids])
            matched = [(i, h) for i, h in zip(ids, hits, strict=True) if h is not None]
            reasons = Counter(_reason(h, items[i], a.concept) for i, h in matched)
            (dropped if a.strength == "hard" else demoted).update(i for i, _ in matched)
            n = len(matched)
            applied.append(
                AppliedAvoidance(
                    concept=a.concept,
                    strength=a.strength,
                    checked=len(ids),
                    left_out=n if a.strength == "hard" else 0,
                    demoted=n if a.strength == "soft" else 0,
                    item_ids=[i for i, _ in matched],
                    reasons=dict(reasons.most_common()),
                    note=_note(a, n, len(ids), reasons),
                )
            )
        kept = [c for c in candidates if c.item_id not in dropped and c.item_id not in demoted]
        lower = [c for c in candidates if c.item_id in demoted and c.item_id not in dropped]
        floor = min((c.score for c in kept), default=1.0)
        if k:
            lower = lower[: max(0, k - len(kept))]
        lower = [c.model_copy(update={"score": floor * 0.5 / (1 + j)}) for j, c in enumerate(lower)]
        return kept + lower, applied


def demote(items: Sequence[RecommendedItem], applied: Sequence[AppliedAvoidance]) -> list[RecommendedItem]:
    """The ranked items with the soft-avoided ones moved behind the others (order kept within each group), ranks
    renumbered from 1."""
    lower = {i for a in applied if a.strength == "soft" for i in a.item_ids}
    if not lower & {it.item_id for it in items}:
        return list(items)
    ordered = [it for it in items if it.item_id not in lower] + [it for it in items if it.item_id in lower]
    return [it.model_copy(update={"rank": n}) for n, it in enumerate(ordered, start=1)]
