"""The Recommender as a LangChain tool (for agents that call tools) and as a Runnable (for chains).

    tool = recommender_tool(recommender)           # StructuredTool "recommend_items", pydantic args schema
    tool.invoke({"query": "a light comedy", "filters": ["year>=1990"], "k": 3})   # -> JSON text

    chain = RecommenderRunnable(recommender)       # Runnable[RecommendRequest | dict, Recommendation]
    chain.batch([{"query": "heist"}, {"query": "space"}])   # ONE recommend_many call: the engine batches them

The tool answers with JSON text (ids, titles, justifications) because tool results go back into a model's prompt;
the Runnable returns the full :class:`~agent.pipeline.Recommendation`. Bad input comes back as the tool's error text
(``handle_tool_error``) with the fix, so a calling agent can correct itself.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from langchain_core.runnables import Runnable, RunnableConfig
from langchain_core.tools import StructuredTool, ToolException
from pydantic import BaseModel, ConfigDict, Field

from agent.errors import RecagentError
from agent.filter_syntax import parse_filters
from agent.pipeline import Recommendation, Recommender, RecommendRequest

__all__ = ["RecommendToolInput", "RecommenderRunnable", "recommendation_summary", "recommender_tool"]

TOOL_NAME = "recommend_items"
TOOL_DESCRIPTION = (
    "Recommend catalog items with short justifications. Give a free-text need (query) and/or item ids the user "
    "liked; optional filters such as 'genre=Comedy', 'not-genre=Horror', 'year>=1990'. Returns JSON: a list of "
    "{id, title, why} best first."
)


class RecommendToolInput(BaseModel):
    """Arguments of the ``recommend_items`` tool."""

    model_config = ConfigDict(extra="forbid")

    query: str | None = Field(None, max_length=2000, description="What the user is looking for, in their words.")
    liked: list[str] = Field(default_factory=list, description="Item ids the user liked (similarity seeds).")
    disliked: list[str] = Field(default_factory=list, description="Item ids never to recommend.")
    filters: list[str] = Field(
        default_factory=list, description="Hard filters: genre=X, not-genre=X, year>=N, year<=N, FIELD=VALUE."
    )
    k: int = Field(5, ge=1, le=20, description="How many items.")
    user_id: str | None = Field(None, description="User id whose history to use, when an interaction log is set.")


def recommendation_summary(rec: Recommendation) -> dict[str, Any]:
    """The compact view a calling model needs."""
    return {
        "items": [
            {"id": i.item_id, "title": i.title, "why": i.justification or "", "attributes": i.metadata}
            for i in rec.items
        ],
        "fallback_reason": rec.fallback_reason,
    }


def recommender_tool(recommender: Recommender, *, name: str = TOOL_NAME) -> StructuredTool:
    """A LangChain StructuredTool around ``recommender`` (pydantic args schema :class:`RecommendToolInput`)."""

    def run(**kwargs: Any) -> str:
        args = RecommendToolInput(**kwargs)
        if not (args.query or args.liked or args.user_id):
            raise ToolException("nothing to recommend from: give a query, liked item ids or a user_id")
        try:
            request = RecommendRequest(
                user_id=args.user_id,
                query=args.query,
                liked=args.liked,
                disliked=args.disliked,
                constraints=parse_filters(args.filters),
                k=args.k,
            )
            rec = recommender.recommend(request)
        except RecagentError as exc:
            raise ToolException(f"{exc.message} (how to fix: {exc.hint})" if exc.hint else exc.message) from exc
        return json.dumps(recommendation_summary(rec), ensure_ascii=False, default=str)

    return StructuredTool.from_function(
        func=run,
        name=name,
        description=TOOL_DESCRIPTION,
        args_schema=RecommendToolInput,
        handle_tool_error=True,
    )


class RecommenderRunnable(Runnable[RecommendRequest | dict[str, Any], Recommendation]):
    """``invoke`` = :meth:`Recommender.recommend`; ``batch`` = ONE :meth:`Recommender.recommend_many` call."""

    def __init__(self, recommender: Recommender) -> None:
        self.recommender = recommender

    @staticmethod
    def _request(value: RecommendRequest | dict[str, Any] | str) -> RecommendRequest:
        if isinstance(value, RecommendRequest):
            return value
        if isinstance(value, str):
            return RecommendRequest(query=value)
        return RecommendRequest.model_validate(value)

    def invoke(
        self, input: RecommendRequest | dict[str, Any], config: RunnableConfig | None = None, **kwargs: Any
    ) -> Recommendation:
        return self.recommender.recommend(self._request(input))

    def batch(
        self,
        inputs: Sequence[RecommendRequest | dict[str, Any]] | list[Any],
        config: RunnableConfig | list[RunnableConfig] | None = None,
        *,
        return_exceptions: bool = False,
        **kwargs: Any,
    ) -> list[Recommendation]:
        if not inputs:
            return []
        return self.recommender.recommend_many([self._request(v) for v in inputs])
