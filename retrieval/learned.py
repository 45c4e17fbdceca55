"""The sources that learn from an interaction log (transition, EASE): their settings and how they are built.

Each is fitted once per (log, settings) and cached on disk (:mod:`retrieval.fitcache`) in the folder that
``cache_dir(kind)`` gives (``retrieval.fitted.artifact_dir`` for a collection); a source whose fusion weight is 0
is not built at all (no fit).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from retrieval.ease import EaseConfig, EaseSource
from retrieval.fitted import log_fingerprint
from retrieval.interactions import Interactions
from retrieval.seqsource import LogItemSource
from retrieval.transition import TransitionConfig, TransitionSource

__all__ = ["LEARNED_SOURCES", "LearnedSourcesConfig", "build_learned_source", "learned_sources"]

LEARNED_SOURCES = ("transition", "ease")


class LearnedSourcesConfig(BaseModel):
    """Settings of every log-learned source."""

    model_config = ConfigDict(extra="forbid")

    transition: TransitionConfig = Field(default_factory=TransitionConfig)
    ease: EaseConfig = Field(default_factory=EaseConfig)


def build_learned_source(
    name: str,
    interactions: Interactions,
    config: LearnedSourcesConfig | None = None,
    *,
    cache_dir: Path | None = None,
    fingerprint: str | None = None,
) -> LogItemSource:
    """One log-learned source by name (``transition`` or ``ease``), fitted or read from ``cache_dir``."""
    config = config or LearnedSourcesConfig()
    if name == "transition":
        return TransitionSource(interactions, config.transition, cache_dir=cache_dir, fingerprint=fingerprint)
    if name == "ease":
        return EaseSource(interactions, config.ease, cache_dir=cache_dir, fingerprint=fingerprint)
    raise KeyError(f"unknown log-learned source {name!r}; known: {', '.join(LEARNED_SOURCES)}")


def learned_sources(
    interactions: Interactions,
    weights: Mapping[str, float],
    config: LearnedSourcesConfig | None = None,
    cache_dir: Callable[[str], Path] | None = None,
) -> list[LogItemSource]:
    """The log-learned sources whose fusion weight is > 0 (a source missing from ``weights`` weighs 1, as in
    :func:`retrieval.candidates.rrf_fuse`), fitted or read from the cache."""
    wanted = [name for name in LEARNED_SOURCES if weights.get(name, 1.0) > 0]
    if not wanted:
        return []
    fingerprint = log_fingerprint(interactions)
    return [
        build_learned_source(
            name, interactions, config, cache_dir=cache_dir(name) if cache_dir else None, fingerprint=fingerprint
        )
        for name in wanted
    ]
