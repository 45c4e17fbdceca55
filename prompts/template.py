"""One prompt template file: YAML front matter + a sandboxed Jinja2 body made of named blocks.

File layout (see docs/prompts.md)::

    ---
    name: rank_options            # must equal the file name without .j2
    version: "1.0"                # human label; the recorded version is the content hash
    task: rank_options
    description: ...
    output: option_label          # or {format: json, schema: listwise} or {format: json, schema: {...}}
    variables:
      candidates: Items to choose from; each {id, title, attributes?, text?, label?}.
      need: {description: What the user asked for., default: ""}
    messages:                     # optional; this is the default layout
      - {role: system, block: system}
      - {role: user, block: user}
      - {role: assistant, block: assistant_prefix}
    ---
    {% block system %}...{% endblock %}
    {% block user %}...{% endblock %}
    {% block assistant_prefix %}Answer: ({% endblock %}

Each block is rendered on its own, in the sandbox, with the same variables; an empty block yields no message.
``text`` (for base models) is the non-empty parts joined by a blank line, so it ends with the assistant prefix.
"""

from __future__ import annotations

import copy
import difflib
import hashlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from jinja2 import TemplateSyntaxError, meta, nodes
from jinja2.environment import Template
from jinja2.exceptions import SecurityError, TemplateError, UndefinedError
from jinja2.sandbox import ImmutableSandboxedEnvironment
from pydantic import BaseModel, ConfigDict

from core.errors import PromptError
from prompts.frontmatter import (
    DEFAULT_LAYOUT,
    LAYOUTS,
    TASKS,
    FewShotSpec,
    FrontMatter,
    Layout,
    MessageSlot,
    OutputSpec,
    Role,
    VariableSpec,
    parse_front_matter,
    split_front_matter,
)
from prompts.sandbox import make_environment
from prompts.schemas import build_schema

__all__ = [
    "LAYOUTS",
    "TASKS",
    "FewShotSpec",
    "Layout",
    "Message",
    "OutputSpec",
    "PromptTemplate",
    "RenderedPrompt",
    "VariableSpec",
    "load_template",
    "make_environment",
]

HASH_LENGTH = 12


class Message(BaseModel):
    """One chat message."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    role: Role
    content: str


class RenderedPrompt(BaseModel):
    """A template rendered with concrete variables, in chat (``messages``) and completion (``text``) form.

    When the last message has role ``assistant`` it is a prefill: the model continues it (vLLM:
    ``continue_final_message=True, add_generation_prompt=False``). ``text`` always ends with that prefix.

    ``layout`` ``fewshot`` (base models): ``text`` is the whole completion prompt (worked examples, then the open
    case), sent as plain text; ``messages`` holds it as one assistant prefill; the answer ends at ``stop``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    task: str
    version_id: str
    messages: list[Message]
    text: str
    layout: Layout = "chat"
    stop: list[str] = []
    max_tokens: int | None = None

    def engine_input(self) -> str | list[dict[str, str]]:
        """What an engine takes: the plain completion text (few-shot layout) or the chat messages."""
        return self.text if self.layout == "fewshot" else self.chat_messages()

    @property
    def assistant_prefix(self) -> str:
        """The prefill the model must continue ("" when the prompt ends with a user message)."""
        if self.messages and self.messages[-1].role == "assistant":
            return self.messages[-1].content
        return ""

    def chat_messages(self) -> list[dict[str, str]]:
        """Plain ``[{"role": ..., "content": ...}]`` dicts for OpenAI-style chat APIs."""
        return [{"role": m.role, "content": m.content} for m in self.messages]


def _check_body(env: ImmutableSandboxedEnvironment, body: str, front: FrontMatter, path: Path, offset: int) -> None:
    try:
        ast = env.parse(body)
    except TemplateSyntaxError as exc:
        raise PromptError(
            f"{path}:{(exc.lineno or 0) + offset}: Jinja syntax error: {exc.message}",
            hint="fix the tag on that line (every {% block %} needs its {% endblock %}, every {{ a matching }})",
        ) from exc

    def line(node: nodes.Node) -> int:
        return int(getattr(node, "lineno", 0)) + offset

    for node in ast.find_all((nodes.Extends, nodes.Include, nodes.Import, nodes.FromImport)):
        raise PromptError(
            f"{path}:{line(node)}: templates cannot extend, include or import other templates",
            hint="copy the shared text into this file: a template is one self-contained file so that its content "
            "hash is its version",
        )
    top_blocks: list[str] = []
    for stmt in ast.body:
        if isinstance(stmt, nodes.Block):
            top_blocks.append(stmt.name)
        elif isinstance(stmt, nodes.Output) and all(
            isinstance(n, nodes.TemplateData) and not n.data.strip() for n in stmt.nodes
        ):
            continue
        else:
            raise PromptError(
                f"{path}:{line(stmt)}: text or tags outside a {{% block %}} are never rendered",
                hint="move it inside a block (system, user, assistant_prefix, or one named in 'messages')",
            )
    all_blocks = [b.name for b in ast.find_all(nodes.Block)]
    if len(all_blocks) != len(top_blocks):
        nested = sorted(set(all_blocks) - set(top_blocks)) or all_blocks
        raise PromptError(
            f"{path}: blocks may not be nested ({', '.join(nested)})",
            hint="close each {% block %} before opening the next one",
        )
    if not top_blocks:
        raise PromptError(
            f"{path}: the body has no {{% block %}}, so no message would be rendered",
            hint="put the prompt in {% block system %}...{% endblock %} and {% block user %}...{% endblock %}",
        )
    layout_blocks = [slot.block for slot in (front.messages or DEFAULT_LAYOUT)]
    if front.fewshot is not None:
        if front.fewshot.block not in top_blocks:
            raise PromptError(
                f"{path}: 'fewshot' names block {front.fewshot.block!r} that the body does not define",
                hint="add the {% block NAME %}...{% endblock %} that renders the few-shot prompt, or remove 'fewshot'",
            )
        layout_blocks.append(front.fewshot.block)
    unused = [b for b in top_blocks if b not in layout_blocks]
    if unused:
        raise PromptError(
            f"{path}: block(s) {', '.join(unused)} are not part of the message layout and would be ignored",
            hint="use the block names system, user and assistant_prefix, or list every block under 'messages'",
        )
    if front.messages is not None:
        missing = [b for b in layout_blocks if b not in top_blocks]
        if missing:
            raise PromptError(
                f"{path}: 'messages' names block(s) {', '.join(missing)} that the body does not define",
                hint="add the {% block NAME %}...{% endblock %} or remove the entry from 'messages'",
            )
    undeclared = sorted(meta.find_undeclared_variables(ast) - set(front.variables) - set(env.globals))
    if undeclared:
        near = {u: difflib.get_close_matches(u, list(front.variables), n=1) for u in undeclared}
        tips = [f"{u} (did you mean {near[u][0]}?)" if near[u] else u for u in undeclared]
        raise PromptError(
            f"{path}: the body uses variable(s) not declared in the front matter: {', '.join(tips)}",
            hint="declare each under 'variables' with a short description (add 'default:' to make it optional)",
        )


class PromptTemplate:
    """A loaded, validated template. Immutable; render with :meth:`render`."""

    def __init__(self, path: Path, source: bytes, env: ImmutableSandboxedEnvironment | None = None) -> None:
        self.path = path
        self.content_hash = hashlib.sha256(source).hexdigest()[:HASH_LENGTH]
        try:
            self.source = source.decode("utf-8-sig")  # tolerate an editor's byte-order mark
        except UnicodeDecodeError as exc:
            raise PromptError(
                f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})",
                hint="save the template as UTF-8",
            ) from exc
        self._env = env or make_environment()
        front_text, self.body, offset = split_front_matter(self.source, path)
        self.front = parse_front_matter(front_text, path, path.name.removesuffix(".j2"))
        _check_body(self._env, self.body, self.front, path, offset)
        # Keep Jinja's line numbers equal to the file's by padding the body with the front matter's line count.
        self._compiled: Template = self._env.from_string("\n" * offset + self.body)
        self.layout: tuple[MessageSlot, ...] = tuple(self.front.messages or DEFAULT_LAYOUT)

    # ---- metadata
    @property
    def name(self) -> str:
        return self.front.name

    @property
    def task(self) -> str:
        return str(self.front.task)

    @property
    def version(self) -> str:
        return self.front.version

    @property
    def description(self) -> str:
        return self.front.description

    @property
    def output(self) -> OutputSpec:
        return self.front.output

    @property
    def fewshot(self) -> FewShotSpec | None:
        return self.front.fewshot

    @property
    def layouts(self) -> tuple[str, ...]:
        """The layouts this template renders: always ``chat``; ``fewshot`` when the front matter defines it."""
        return LAYOUTS if self.front.fewshot is not None else ("chat",)

    @property
    def variables(self) -> dict[str, VariableSpec]:
        return dict(self.front.variables)

    @property
    def version_id(self) -> str:
        """``name@hash``: what results record, so a changed file is never mistaken for the old one."""
        return f"{self.name}@{self.content_hash}"

    @property
    def required_variables(self) -> list[str]:
        return [n for n, spec in self.front.variables.items() if spec.required]

    @property
    def optional_variables(self) -> list[str]:
        return [n for n, spec in self.front.variables.items() if not spec.required]

    def output_schema(self, *args: Any, **kwargs: Any) -> dict[str, Any] | None:
        """The JSON schema of the expected output (built per request for named schemas); None if not JSON."""
        spec = self.output.schema_
        if spec is None:
            return None
        if isinstance(spec, str):
            return build_schema(spec, *args, **kwargs)
        return copy.deepcopy(spec)

    def __repr__(self) -> str:
        return f"PromptTemplate({self.version_id!r}, task={self.task!r}, path={str(self.path)!r})"

    # ---- rendering
    def resolve_variables(self, variables: Mapping[str, Any], *, allow_extra: bool = False) -> dict[str, Any]:
        """Check the given variables against the declaration and fill in defaults."""
        if not isinstance(variables, Mapping):
            raise PromptError(
                f"{self.name}: variables must be a mapping of name -> value, got {type(variables).__name__}",
                hint=f"pass a dict with {', '.join(self.front.variables) or 'no keys'}",
            )
        declared = self.front.variables
        missing = [n for n in self.required_variables if n not in variables]
        if missing:
            described = "; ".join(f"{n}: {declared[n].description}" for n in missing)
            raise PromptError(
                f"{self.name}: missing variable(s) {', '.join(missing)}",
                hint=f"pass them ({described})",
            )
        extra = [str(k) for k in variables if k not in declared]
        if extra and not allow_extra:
            tips = []
            for e in extra:
                near = difflib.get_close_matches(e, list(declared), n=1)
                tips.append(f"{e} (did you mean {near[0]}?)" if near else e)
            raise PromptError(
                f"{self.name}: unknown variable(s) {', '.join(tips)}",
                hint=f"this template takes {', '.join(declared) or 'no variables'}; remove the others "
                "(or render with allow_extra=True when one variable set feeds several variants)",
            )
        values = {n: copy.deepcopy(spec.default) for n, spec in declared.items() if not spec.required}
        values.update({k: v for k, v in variables.items() if k in declared})
        return values

    def _slots(self, layout: str) -> tuple[MessageSlot, ...]:
        if layout == "chat":
            return self.layout
        if layout == "fewshot" and self.front.fewshot is not None:
            return (MessageSlot(role="assistant", block=self.front.fewshot.block),)
        raise PromptError(
            f"{self.name} has no {layout!r} layout (it renders: {', '.join(self.layouts)})",
            hint="add a 'fewshot:' entry and its block to the template (see docs/prompts.md), or use the chat layout"
            if layout == "fewshot"
            else f"layouts are {', '.join(LAYOUTS)}",
        )

    def render_blocks(
        self, variables: Mapping[str, Any], *, allow_extra: bool = False, layout: str = "chat"
    ) -> dict[str, str]:
        """Render every block of ``layout`` on its own, in the sandbox; system/user text is stripped, prefixes
        (and the few-shot block) keep their spaces."""
        slots = self._slots(layout)
        values = self.resolve_variables(variables, allow_extra=allow_extra)
        out: dict[str, str] = {}
        try:
            for slot in slots:
                block = self._compiled.blocks.get(slot.block)
                if block is None:
                    continue
                text = "".join(block(self._compiled.new_context(values)))
                out[slot.block] = text.strip("\n") if slot.role == "assistant" else text.strip()
        except PromptError:
            raise
        except SecurityError as exc:
            raise PromptError(
                f"{self.name} ({self.path}): the template tried something the sandbox forbids: {exc}",
                hint="templates may only read variables and use the filters data, clip and as_json; remove access "
                "to underscore attributes or unsafe methods",
            ) from exc
        except UndefinedError as exc:
            raise PromptError(
                f"{self.name} ({self.path}): {exc}",
                hint="a variable lacks a field the template reads (items need id and title; use "
                "'x.field is defined' in the template for optional fields); see `recagent prompts show "
                f"{self.name}`",
            ) from exc
        except TemplateError as exc:
            raise PromptError(
                f"{self.name} ({self.path}): rendering failed: {exc}",
                hint="fix the template line named above, or the variable it reads",
            ) from exc
        except (TypeError, ValueError, KeyError, AttributeError, IndexError, ArithmeticError, RecursionError) as exc:
            raise PromptError(
                f"{self.name} ({self.path}): rendering failed: {type(exc).__name__}: {exc}",
                hint="check the shape of the variables (lists of dicts with id, title, attributes ...) against "
                f"`recagent prompts show {self.name}`",
            ) from exc
        return out

    def render(
        self, variables: Mapping[str, Any], *, allow_extra: bool = False, layout: str = "chat"
    ) -> RenderedPrompt:
        """Render to chat messages and completion text (``layout`` chat), or to the few-shot completion text
        (``layout`` fewshot). Missing or unknown variables raise PromptError."""
        slots = self._slots(layout)
        parts = self.render_blocks(variables, allow_extra=allow_extra, layout=layout)
        messages = [Message(role=slot.role, content=parts[slot.block]) for slot in slots if parts.get(slot.block)]
        if not messages:
            raise PromptError(
                f"{self.name}: every block rendered empty, there is no prompt",
                hint="check the variables: the blocks' {% if %} conditions all came out false",
            )
        return RenderedPrompt(
            name=self.name,
            task=self.task,
            version_id=self.version_id,
            messages=messages,
            text="\n\n".join(m.content for m in messages),
            layout="fewshot" if layout == "fewshot" else "chat",
            stop=list(self.front.fewshot.stop) if layout == "fewshot" and self.front.fewshot else [],
            max_tokens=self.front.fewshot.max_tokens if layout == "fewshot" and self.front.fewshot else None,
        )

    def to_langchain(self, *, allow_extra: bool = False) -> Any:
        """A ``langchain_core`` ChatPromptTemplate that renders through this template's sandbox."""
        from prompts.lc import to_chat_prompt_template

        return to_chat_prompt_template(self, allow_extra=allow_extra)


def load_template(path: Path, env: ImmutableSandboxedEnvironment | None = None) -> PromptTemplate:
    """Read and validate one ``.j2`` file."""
    try:
        source = path.read_bytes()
    except OSError as exc:
        raise PromptError(
            f"cannot read template {path}: {exc.strerror or exc}",
            hint="check the path and its permissions",
        ) from exc
    return PromptTemplate(path, source, env)
