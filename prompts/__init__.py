"""Prompt templates: one sandboxed Jinja2 file per prompt, versioned by content hash.

    from prompts import PromptRegistry
    registry = PromptRegistry()                      # built-ins; PromptRegistry([Path("my_prompts")]) adds yours
    prompt = registry.render("rank_options", {"history": [...], "candidates": [...]})
    prompt.messages, prompt.text, prompt.version_id  # chat form, completion form, "rank_options@3f2a9c1b0d4e"

Ground floor: imports nothing from ``agent``, ``eval`` or ``recagent``. See docs/prompts.md.
"""

from __future__ import annotations

from core.errors import PromptError
from prompts.filters import clean_data, clip, option_label
from prompts.registry import BUILTIN_DIR, PromptRegistry, TemplateInfo
from prompts.schemas import (
    build_schema,
    enrich_item_schema,
    explain_schema,
    listwise_schema,
    preferences_schema,
    propose_items_schema,
)
from prompts.template import (
    LAYOUTS,
    TASKS,
    FewShotSpec,
    Message,
    OutputSpec,
    PromptTemplate,
    RenderedPrompt,
    VariableSpec,
    load_template,
)

__all__ = [
    "BUILTIN_DIR",
    "LAYOUTS",
    "TASKS",
    "FewShotSpec",
    "Message",
    "OutputSpec",
    "PromptError",
    "PromptRegistry",
    "PromptTemplate",
    "RenderedPrompt",
    "TemplateInfo",
    "VariableSpec",
    "build_schema",
    "clean_data",
    "clip",
    "enrich_item_schema",
    "explain_schema",
    "listwise_schema",
    "load_template",
    "option_label",
    "preferences_schema",
    "propose_items_schema",
]
