"""The YAML front matter of a template file: parsed, validated, and turned into models.

See docs/prompts.md for the fields.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from core.errors import PromptError
from prompts.filters import GLOBALS
from prompts.schemas import SCHEMA_BUILDERS

__all__ = [
    "DEFAULT_LAYOUT",
    "DOCS",
    "LAYOUTS",
    "TASKS",
    "FewShotSpec",
    "FrontMatter",
    "MessageSlot",
    "OutputSpec",
    "Role",
    "Task",
    "VariableSpec",
    "parse_front_matter",
    "split_front_matter",
]

Task = Literal[
    "rank_listwise",
    "rank_options",
    "rank_pointwise",
    "explain",
    "extract_preferences",
    "chat_reply",
    "enrich_item",
    "user_profile",
    "propose_items",
]
TASKS: tuple[str, ...] = get_args(Task)
Role = Literal["system", "user", "assistant"]
Layout = Literal["chat", "fewshot"]
LAYOUTS: tuple[str, ...] = get_args(Layout)
_NAME = r"^[a-z][a-z0-9_]*$"
DOCS = "docs/prompts.md"


class OutputSpec(BaseModel):
    """What the model is expected to produce: JSON following a schema, an option label, yes/no or free text."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    format: Literal["json", "option_label", "yes_no", "text"]
    schema_: str | dict[str, Any] | None = Field(default=None, alias="schema")
    description: str = ""

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        return {"format": value} if isinstance(value, str) else value

    @model_validator(mode="after")
    def _check_schema(self) -> OutputSpec:
        if self.format == "json" and self.schema_ is None:
            raise ValueError(f"format json needs a schema: one of {sorted(SCHEMA_BUILDERS)} or an inline JSON schema")
        if self.format != "json" and self.schema_ is not None:
            raise ValueError(f"format {self.format} takes no schema (only format json does)")
        if isinstance(self.schema_, str) and self.schema_ not in SCHEMA_BUILDERS:
            raise ValueError(f"unknown schema {self.schema_!r}; built-in schemas: {sorted(SCHEMA_BUILDERS)}")
        return self


class VariableSpec(BaseModel):
    """A declared variable. Declaring a ``default`` (even ``""`` or ``null``) makes it optional."""

    model_config = ConfigDict(extra="forbid")

    description: str = Field(min_length=1)
    default: Any = None

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        return {"description": value} if isinstance(value, str) else value

    @property
    def required(self) -> bool:
        return "default" not in self.model_fields_set


class FewShotSpec(BaseModel):
    """The few-shot completion layout of a template (for base models): one block rendered as plain text that
    shows a couple of worked examples and ends with the open case, which the model continues up to ``stop``."""

    model_config = ConfigDict(extra="forbid")

    block: str = Field(default="fewshot", pattern=_NAME, description="The block that renders the whole prompt.")
    stop: list[str] = Field(default_factory=lambda: ["\n"], description="The answer ends at the first of these.")
    max_tokens: int = Field(default=32, ge=1, le=512, description="Hard cap on the tokens the model writes.")
    examples: int = Field(default=2, ge=0, le=8, description="Worked examples shown before the open case.")
    auto: bool = Field(
        default=True,
        description="Whether prompt_format auto picks this layout for base models (false: only prompt_format "
        "fewshot does; a per-task decision from its evaluation).",
    )

    @field_validator("stop")
    @classmethod
    def _stops(cls, value: list[str]) -> list[str]:
        if not value or any(not s for s in value):
            raise ValueError("stop needs at least one non-empty string (e.g. a newline)")
        return value


class MessageSlot(BaseModel):
    """One entry of the ``messages`` layout: which block becomes which chat role."""

    model_config = ConfigDict(extra="forbid")

    role: Role
    block: str = Field(pattern=_NAME)


DEFAULT_LAYOUT = (
    MessageSlot(role="system", block="system"),
    MessageSlot(role="user", block="user"),
    MessageSlot(role="assistant", block="assistant_prefix"),
)


class FrontMatter(BaseModel):
    """The YAML header of a template file."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=_NAME)
    version: str = Field(min_length=1)
    task: Task
    description: str = Field(min_length=1)
    output: OutputSpec
    variables: dict[str, VariableSpec]
    messages: list[MessageSlot] | None = None
    fewshot: FewShotSpec | None = None

    @field_validator("version", mode="before")
    @classmethod
    def _version_as_text(cls, value: Any) -> Any:
        return str(value) if isinstance(value, int | float) and not isinstance(value, bool) else value

    @field_validator("variables")
    @classmethod
    def _variable_names(cls, value: dict[str, VariableSpec]) -> dict[str, VariableSpec]:
        for name in value:
            if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", name) or name in GLOBALS or name == "loop":
                raise ValueError(f"{name!r} is not a usable variable name (identifier, not a Jinja global)")
        return value

    @field_validator("messages")
    @classmethod
    def _layout(cls, value: list[MessageSlot] | None) -> list[MessageSlot] | None:
        if value is None:
            return value
        if not value:
            raise ValueError("messages needs at least one {role, block} entry (or leave it out for the default)")
        blocks = [slot.block for slot in value]
        if len(set(blocks)) != len(blocks):
            raise ValueError("each block may appear once in messages")
        return value

    @model_validator(mode="after")
    def _fewshot_block_apart(self) -> FrontMatter:
        layout = self.messages or DEFAULT_LAYOUT
        if self.fewshot is not None and any(slot.block == self.fewshot.block for slot in layout):
            raise ValueError(f"the fewshot block {self.fewshot.block!r} is also a chat message block: give it its own")
        return self


def split_front_matter(source: str, path: Path) -> tuple[str, str, int]:
    """Return (yaml text, body, number of lines before the body)."""
    lines = source.splitlines(keepends=True)
    if not lines or lines[0].strip() != "---":
        raise PromptError(
            f"{path}: a template must start with a '---' line that opens its YAML front matter",
            hint=f"begin the file with '---', the name/version/task/description/output/variables fields, "
            f"then '---' and the Jinja body (see {DOCS})",
        )
    for i in range(1, len(lines)):
        if lines[i].strip() == "---":
            return "".join(lines[1:i]), "".join(lines[i + 1 :]), i + 1
    raise PromptError(
        f"{path}: the front matter opened on line 1 is never closed",
        hint="add a line with exactly '---' between the YAML header and the template body",
    )


def parse_front_matter(text: str, path: Path, stem: str) -> FrontMatter:
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 2}" if mark is not None else str(path)  # the YAML starts on file line 2
        problem = " ".join(str(p) for p in (getattr(exc, "context", None), getattr(exc, "problem", None)) if p)
        raise PromptError(
            f"{where}: the front matter is not valid YAML: {problem or exc}",
            hint="fix the YAML between the two '---' lines; quote values that contain ': ' or start with '{' or '['",
        ) from exc
    if not isinstance(raw, dict):
        raise PromptError(
            f"{path}: the front matter must be a YAML mapping (key: value lines), got {type(raw).__name__}",
            hint=f"write name, version, task, description, output and variables as 'key: value' lines (see {DOCS})",
        )
    try:
        front = FrontMatter.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'front matter'}: {err['msg']}" for err in exc.errors()
        )
        raise PromptError(
            f"{path}: invalid front matter: {problems}",
            hint=f"required fields are name, version, task (one of {', '.join(TASKS)}), description, output and "
            f"variables; see {DOCS}",
        ) from exc
    if front.name != stem:
        raise PromptError(
            f"{path}: the front matter says name {front.name!r} but the file is named {stem!r}.j2",
            hint=f"rename the file to {front.name}.j2 or set name: {stem}",
        )
    return front
