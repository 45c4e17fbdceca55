"""Fixtures of the ranking tests: the prompt registry (built-ins + compact test variants), a clean prior cache."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.rerank.calibration import PriorCache
from prompts import PromptRegistry

TEMPLATES = Path(__file__).parent / "templates"


@pytest.fixture(scope="session")
def registry() -> PromptRegistry:
    """Built-in templates plus short variants (``*_compact``) that fit the tiny model's 1024-token context."""
    return PromptRegistry([TEMPLATES])


@pytest.fixture(autouse=True)
def _fresh_priors() -> Iterator[None]:
    PriorCache.clear_memory()
    yield
    PriorCache.clear_memory()
