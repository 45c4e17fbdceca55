"""Fixtures of the prompt-template tests (example data lives in prompt_examples.py)."""

from __future__ import annotations

import pytest

from prompts import PromptRegistry


@pytest.fixture(scope="session")
def registry() -> PromptRegistry:
    return PromptRegistry()
