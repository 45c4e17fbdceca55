"""recagent from LangChain: the Recommender as a tool an agent can call, and as a Runnable in a chain.

Run after a catalog is ingested (`make demo` does it, or `recagent ingest PATH`):

    .venv/bin/python examples/langchain_tool.py "a funny heist movie"

Settings come from RECAGENT_* variables / recagent.toml as everywhere else.
"""

from __future__ import annotations

import json
import sys

from langchain_core.runnables import RunnableLambda

from agent.integrations.langchain import RecommenderRunnable, recommendation_summary, recommender_tool
from agent.pipeline import Recommender
from agent.settings import load_settings


def main() -> None:
    need = " ".join(sys.argv[1:]) or "a light comedy"
    recommender = Recommender(load_settings())
    try:
        # 1. a tool: bind it to any tool-calling chat model (model.bind_tools([tool])) or call it directly
        tool = recommender_tool(recommender)
        print("tool:", tool.name, "| arguments:", sorted(tool.args))
        print(tool.invoke({"query": need, "k": 3}))

        # 2. a Runnable: compose it; .batch() sends all requests through ONE recommend_many call
        to_request: RunnableLambda[str, dict[str, object]] = RunnableLambda(lambda q: {"query": q, "k": 3})
        chain = to_request | RecommenderRunnable(recommender) | RunnableLambda(recommendation_summary)
        for result in chain.batch([need, "something " + need.split()[-1] + " but older"]):
            print(json.dumps([item["title"] for item in result["items"]], ensure_ascii=False))
    finally:
        recommender.close()


if __name__ == "__main__":  # the in-process vLLM engine starts worker processes with spawn
    main()
