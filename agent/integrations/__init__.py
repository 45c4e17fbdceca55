"""recagent inside other frameworks: the Recommender as a LangChain tool and Runnable, sessions as a LangChain chat
message history. Import from the submodules (``agent.integrations.langchain``, ``agent.integrations.history``)."""
