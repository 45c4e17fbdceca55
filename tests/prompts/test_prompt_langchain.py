"""The LangChain adapter renders through our sandbox and matches our own rendering exactly."""

from __future__ import annotations

from pathlib import Path

import pytest
from jinja2.exceptions import SecurityError
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage
from langchain_core.prompts import ChatPromptTemplate
from prompt_examples import BOOKS, BUILTINS, MOVIES, variables_for, write_template

from prompts import PromptError, PromptRegistry

ROLE = {SystemMessage: "system", HumanMessage: "user", AIMessage: "assistant"}


@pytest.mark.parametrize("name", BUILTINS)
def test_format_messages_equals_our_rendering(registry: PromptRegistry, name: str) -> None:
    variables = variables_for(name, BOOKS)
    prompt = registry.to_langchain(name)
    assert isinstance(prompt, ChatPromptTemplate)
    ours = registry.render(name, variables)
    theirs = prompt.format_messages(**variables)
    assert [(ROLE[type(m)], m.content) for m in theirs] == [(m.role, m.content) for m in ours.messages]
    assert sorted(prompt.input_variables) == sorted(registry.get(name).required_variables)
    assert prompt.metadata == {"recagent_prompt": ours.version_id, "recagent_task": ours.task}


def test_invoke_and_optional_variables(registry: PromptRegistry) -> None:
    prompt = registry.to_langchain("rank_options")
    assert prompt.optional_variables == ["need"]
    variables = {"history": MOVIES["history"], "candidates": MOVIES["candidates"]}
    value = prompt.invoke(variables)
    assert [m.content for m in value.to_messages()] == [
        m.content for m in registry.render("rank_options", variables).messages
    ]
    with pytest.raises(KeyError, match="history"):
        prompt.invoke({"candidates": MOVIES["candidates"]})


def test_data_is_not_re_evaluated_by_langchain(registry: PromptRegistry) -> None:
    payload = "{x} {{ 7*7 }} {% raw %}"
    variables = {"item": {"title": payload, "attributes": {"note": "{history}"}}}
    messages = registry.to_langchain("enrich_item").format_messages(**variables)
    user = messages[1].content
    assert f"title: {payload}" in user and "note: {history}" in user and "49" not in user


def test_errors_stay_prompt_errors(registry: PromptRegistry) -> None:
    prompt = registry.to_langchain("user_profile")
    with pytest.raises(PromptError, match="unknown variable"):
        prompt.format_messages(history=[], colour="red")
    assert registry.to_langchain("user_profile", allow_extra=True).format_messages(history=[], colour="red")


def test_sandbox_applies_through_langchain(tmp_path: Path) -> None:
    write_template(tmp_path, "evil", "{% block user %}{{ x.__class__.__mro__ }}{% endblock %}")
    prompt = PromptRegistry([tmp_path], include_builtin=False).to_langchain("evil")
    with pytest.raises(PromptError) as err:
        prompt.format_messages(x="a")
    assert isinstance(err.value.__cause__, SecurityError)
