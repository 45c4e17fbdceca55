"""Per-user state while a batch moves through the stages (internal)."""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from typing import Any

from agent.llm.base import Generation
from agent.llm.batching import CallFailure
from agent.rerank.blend import mean_pairwise_tau
from agent.schemas import CandidateItem, RankingContext, RerankConfig

__all__ = ["Job", "pick_reason"]


def pick_reason(reasons: list[str]) -> str:
    """The fallback reason of a user none of whose requests gave a usable answer: an engine error or a timeout
    first, then invalid output, else empty."""
    for r in reasons:
        if r.startswith("engine_error") or r == "timeout" or r.startswith("prompt_error"):
            return r
    return "invalid_output" if "invalid_output" in reasons else "empty"


@dataclass
class Job:
    index: int
    ctx: RankingContext
    cands: list[CandidateItem]
    strategy: str
    config: RerankConfig
    k: int
    llm_scores: list[float] | None = None
    order_vectors: list[list[float]] = field(default_factory=list)
    drafts: dict[int, str] = field(default_factory=dict)
    listed: set[int] = field(default_factory=set)
    fallback_reason: str | None = None
    reasons: list[str] = field(default_factory=list)
    raw: list[str] = field(default_factory=list)
    prompt_versions: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    llm_calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    parse_failures: int = 0
    off_candidate: int = 0
    duplicates: int = 0
    calibrated: bool = False

    @classmethod
    def build(cls, index: int, ctx: RankingContext, strategy: str | None = None) -> Job:
        seen: set[str] = set()
        cands = []
        for c in ctx.candidates:  # a candidate listed twice keeps its first (best) retrieval position
            if c.id not in seen:
                seen.add(c.id)
                cands.append(c)
        config = ctx.config if strategy is None else ctx.config.model_copy(update={"strategy": strategy})
        return cls(index, ctx, cands, config.strategy, config, min(ctx.k, len(cands)))

    @property
    def n(self) -> int:
        return len(self.cands)

    @property
    def uses_llm_ranking(self) -> bool:
        return self.strategy != "retrieval" and self.fallback_reason is None

    def orders(self) -> list[list[int]]:
        """Order 0 is the retrieval order; the others are seeded permutations of it."""
        perms = [list(range(self.n))]
        for o in range(1, self.config.n_orders):
            perm = list(range(self.n))
            random.Random(f"{self.config.seed}:{o}").shuffle(perm)
            perms.append(perm)
        return perms

    def fail(self, reason: str) -> None:
        if self.fallback_reason is None:
            self.fallback_reason = reason
            self.llm_scores = None

    def add_version(self, version_id: str) -> None:
        if version_id not in self.prompt_versions:
            self.prompt_versions.append(version_id)

    def took(self, result: Generation | CallFailure) -> None:
        """Account one generate request."""
        self.llm_calls += 1
        if isinstance(result, CallFailure):
            raw = getattr(result.error, "raw", None)
            if isinstance(raw, str):
                self.raw.append(raw)
            self.reasons.append(result.reason)
            if result.reason == "invalid_output":
                self.parse_failures += 1
            return
        self.raw.append(result.text)
        self.prompt_tokens += result.prompt_tokens
        self.completion_tokens += result.completion_tokens

    def took_scores(self, raw: dict[str, Any], prompt_tokens: int) -> None:
        self.llm_calls += 1
        self.prompt_tokens += prompt_tokens
        self.raw.append(json.dumps(raw, sort_keys=True))

    def conclude(self, vectors: list[list[float]]) -> None:
        """Aggregate the per-order score vectors (mean), or fall back when no order produced one."""
        if not vectors:
            self.fail(pick_reason(self.reasons))
            return
        self.order_vectors = vectors
        self.llm_scores = [sum(col) / len(vectors) for col in zip(*vectors, strict=True)]

    @property
    def agreement(self) -> float | None:
        return mean_pairwise_tau(self.order_vectors) if self.fallback_reason is None else None
