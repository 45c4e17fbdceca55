"""Stand-ins the evaluator puts into a :class:`~agent.pipeline.Recommender`: the sampled protocol's fixed candidate
lists (:class:`FixedCandidates`), and candidate lists shared by the arms of a run whose retrieval settings are equal
(:class:`SharedRetrieval`, through :class:`MemoGenerator`)."""

from __future__ import annotations

import json
from typing import Any

from agent.settings import Settings
from retrieval.types import Candidate, SourceHit, UserQuery

__all__ = ["FixedCandidates", "MemoGenerator", "SharedRetrieval"]


class FixedCandidates:
    """Stands in for the Recommender's candidate generator under the sampled protocol: returns the case's sampled
    set (looked up by the query's user id), in the given order, with a rank-based score."""

    def __init__(self, candidates: dict[str, list[str]]) -> None:
        self.candidates = candidates

    def generate(self, query: UserQuery) -> list[Candidate]:
        ids = self.candidates[str(query.user_id)]
        n = len(ids)
        return [Candidate(item_id=i, score=(n - r) / n, sources={"sampled": SourceHit(rank=r + 1, score=(n - r) / n)})
                for r, i in enumerate(ids)]  # fmt: skip


# settings that only change what happens after candidate generation (ranking, explanations, serving, chat)
_RANKING_ONLY_PREFIXES = ("rerank_", "explain_", "llm_", "chat_", "server_", "session_", "enrich_", "profile_",
                          "ground_", "max_", "ltr_")  # fmt: skip
_RANKING_ONLY_FIELDS = {"k", "debug"}


class SharedRetrieval:
    """Candidate lists shared by the arms of a run: arms whose retrieval settings are equal (e.g. ``opt-pure``,
    ``default`` and the ``retrieval`` baseline differ only after retrieval) get the same candidates for the same
    query, computed once. A call with LLM candidate sources (``extra`` / ``weights``) is not shared."""

    def __init__(self) -> None:
        self.lists: dict[tuple[str, str], list[Candidate]] = {}

    @staticmethod
    def fingerprint(settings: Settings, collection: str) -> str:
        kept = {k: v for k, v in settings.model_dump(mode="json").items()
                if k not in _RANKING_ONLY_FIELDS and not k.startswith(_RANKING_ONLY_PREFIXES)}  # fmt: skip
        return json.dumps({"settings": kept, "collection": collection}, sort_keys=True, default=str)

    def wrap(self, generator: Any, fingerprint: str) -> MemoGenerator:
        return MemoGenerator(self, generator, fingerprint)


class MemoGenerator:
    """A Recommender's candidate generator behind :class:`SharedRetrieval`."""

    def __init__(self, shared: SharedRetrieval, inner: Any, fingerprint: str) -> None:
        self.shared, self.inner, self.fingerprint = shared, inner, fingerprint

    def generate(self, query: UserQuery, **kwargs: Any) -> list[Candidate]:
        if any(v is not None for v in kwargs.values()):
            return list(self.inner.generate(query, **kwargs))
        key = (self.fingerprint, query.model_dump_json())
        found = self.shared.lists.get(key)
        if found is None:
            found = self.shared.lists[key] = list(self.inner.generate(query))
        return [c.model_copy(deep=True) for c in found]

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)
