"""The prompt registry: built-in templates plus user directories, looked up by name or by task."""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from core.errors import PromptError
from prompts.template import TASKS, PromptTemplate, RenderedPrompt, load_template, make_environment

__all__ = ["BUILTIN_DIR", "PromptRegistry", "TemplateInfo"]

BUILTIN_DIR = Path(__file__).resolve().parent / "templates"


class TemplateInfo(BaseModel):
    """One row of :meth:`PromptRegistry.list`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    task: str
    version: str
    hash: str
    version_id: str
    description: str
    path: str


class PromptRegistry:
    """Every template the agent can use, loaded and validated up front (a broken file fails at construction).

    ``dirs`` are user directories whose ``*.j2`` files add templates, typically variants of a built-in task
    (``rank_options_short`` next to ``rank_options``). Names are unique across all directories: a user file may not
    silently replace a built-in one, so a name always means one file (and ``version_id`` pins its content).
    """

    def __init__(self, dirs: Sequence[Path | str] | None = None, *, include_builtin: bool = True) -> None:
        env = make_environment()
        roots = ([BUILTIN_DIR] if include_builtin else []) + [Path(d).expanduser() for d in dirs or ()]
        self._templates: dict[str, PromptTemplate] = {}
        for root in roots:
            if not root.is_dir():
                raise PromptError(
                    f"prompt template directory {root} does not exist or is not a directory",
                    hint="create it, or pass a directory that holds NAME.j2 template files",
                )
            for path in sorted(root.glob("*.j2")):
                template = load_template(path, env)
                previous = self._templates.get(template.name)
                if previous is not None:
                    raise PromptError(
                        f"two templates are named {template.name!r}: {previous.path} and {path}",
                        hint=f"give the variant its own name (file name and 'name:' field), e.g. {template.name}_mine",
                    )
                self._templates[template.name] = template
        self.dirs = roots

    def __contains__(self, name: object) -> bool:
        return name in self._templates

    def __len__(self) -> int:
        return len(self._templates)

    def names(self) -> list[str]:
        return sorted(self._templates)

    def tasks(self) -> list[str]:
        """The tasks at least one template implements, in the canonical order."""
        present = {t.task for t in self._templates.values()}
        return [t for t in TASKS if t in present]

    def get(self, name: str) -> PromptTemplate:
        template = self._templates.get(name)
        if template is not None:
            return template
        names = self.names()
        near = difflib.get_close_matches(str(name), names, n=1, cutoff=0.5)
        guess = f"; did you mean {near[0]!r}?" if near else ""
        raise PromptError(
            f"unknown prompt template {name!r}{guess}",
            hint=f"available templates: {', '.join(names) or '(none)'}; to define a new one, add NAME.j2 to a "
            "template directory and load it (PromptRegistry([dir]) or `recagent prompts ... --dir DIR`)",
        )

    def by_task(self, task: str) -> list[PromptTemplate]:
        """All variants of a task, sorted by name (what an evaluator compares)."""
        found = sorted((t for t in self._templates.values() if t.task == task), key=lambda t: t.name)
        if not found:
            known = self.tasks()
            near = difflib.get_close_matches(str(task), list(TASKS), n=1)
            guess = f"; did you mean {near[0]!r}?" if near else ""
            raise PromptError(
                f"no template implements task {task!r}{guess}",
                hint=f"tasks with templates: {', '.join(known) or '(none)'}; "
                "a template's task is the 'task:' field of its front matter",
            )
        return found

    def render(
        self, name: str, variables: Mapping[str, Any], *, allow_extra: bool = False, layout: str = "chat"
    ) -> RenderedPrompt:
        """Render ``name`` in ``layout`` (``chat``, or ``fewshot`` for templates that define it)."""
        return self.get(name).render(variables, allow_extra=allow_extra, layout=layout)

    def to_langchain(self, name: str, *, allow_extra: bool = False) -> Any:
        """A ``langchain_core.prompts.ChatPromptTemplate`` that renders ``name`` in our sandbox."""
        return self.get(name).to_langchain(allow_extra=allow_extra)

    def list(self) -> list[TemplateInfo]:  # defined last: the name shadows the builtin inside the class body
        return [
            TemplateInfo(
                name=t.name,
                task=t.task,
                version=t.version,
                hash=t.content_hash,
                version_id=t.version_id,
                description=t.description,
                path=str(t.path),
            )
            for t in sorted(self._templates.values(), key=lambda t: (TASKS.index(t.task), t.name))
        ]
