"""LangChain adapter: a ChatPromptTemplate whose formatting happens in our sandbox.

We do not hand LangChain the Jinja source (``template_format="jinja2"``): langchain-core 1.8.3 renders that with a
plain ``SandboxedEnvironment`` (mutable, no StrictUndefined, none of our ``data``/``clip`` filters), and it would
re-parse strings. Nor do we put rendered text into f-string message templates: a title like ``{x}`` would then be
parsed as a placeholder. Instead the ChatPromptTemplate holds one message template (below) that calls
:meth:`PromptTemplate.render` and returns ready-made messages, so data is rendered exactly once, in the sandbox.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.prompts.message import BaseMessagePromptTemplate
from pydantic import ConfigDict

if TYPE_CHECKING:
    from prompts.template import PromptTemplate

__all__ = ["SandboxedMessages", "to_chat_prompt_template"]

_MESSAGE_TYPES: dict[str, type[BaseMessage]] = {
    "system": SystemMessage,
    "user": HumanMessage,
    "assistant": AIMessage,
}


class SandboxedMessages(BaseMessagePromptTemplate):
    """All messages of one recagent template, rendered through its sandboxed Jinja environment."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    template: Any
    allow_extra: bool = False

    @classmethod
    def is_lc_serializable(cls) -> bool:
        return False

    @property
    def input_variables(self) -> list[str]:
        return list(self.template.required_variables)

    def format_messages(self, **kwargs: Any) -> list[BaseMessage]:
        rendered = self.template.render(kwargs, allow_extra=self.allow_extra)
        return [_MESSAGE_TYPES[m.role](content=m.content) for m in rendered.messages]


def to_chat_prompt_template(template: PromptTemplate, *, allow_extra: bool = False) -> ChatPromptTemplate:
    return ChatPromptTemplate(
        [SandboxedMessages(template=template, allow_extra=allow_extra)],
        optional_variables=list(template.optional_variables),
        input_types=dict.fromkeys(template.variables, Any),
        metadata={"recagent_prompt": template.version_id, "recagent_task": template.task},
    )
