"""LLM engine layer: one interface (:class:`LLMEngine`), three backends, chosen by settings."""

from __future__ import annotations

import importlib.util

from agent.errors import ConfigError
from agent.llm.base import ChatMessage, Generation, LLMEngine, LLMRequest, OptionScores
from agent.llm.models import resolve_model
from agent.settings import Settings

__all__ = ["ChatMessage", "Generation", "LLMEngine", "LLMRequest", "OptionScores", "choose_backend", "create_engine"]


def choose_backend(settings: Settings) -> str:
    if settings.llm_backend != "auto":
        return settings.llm_backend
    if settings.server_urls:
        return "openai"
    return "vllm" if importlib.util.find_spec("vllm") is not None else "hf"


def create_engine(settings: Settings) -> LLMEngine:
    """The engine the settings ask for (the in-process vLLM engine is shared within the process)."""
    backend = choose_backend(settings)
    if backend == "openai":
        from agent.llm.openai_server import OpenAIServerEngine

        return OpenAIServerEngine(settings)
    if settings.server_urls and settings.llm_backend != "auto":
        raise ConfigError(
            f"RECAGENT_LLM_SERVER_URL is set but RECAGENT_LLM_BACKEND={backend}",
            hint="unset one of them: the server URL is only used by the openai backend",
        )
    model_path = resolve_model(settings)
    if backend == "vllm":
        from agent.llm.vllm_local import get_engine

        return get_engine(settings, model_path)
    from agent.llm.hf_local import HFEngine

    return HFEngine(settings, model_path)
