"""`recagent prompts list|show|render` (the sub-app alone; the main CLI prints PromptErrors)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from prompt_examples import BUILTINS, MOVIES, variables_for, write_template
from typer.testing import CliRunner

from prompts import PromptError, PromptRegistry
from recagent.cmd_prompts import app

runner = CliRunner()


@pytest.fixture
def vars_file(tmp_path: Path) -> Path:
    path = tmp_path / "vars.json"
    path.write_text(json.dumps(variables_for("rank_options", MOVIES)), encoding="utf-8")
    return path


def test_list(registry: PromptRegistry) -> None:
    result = runner.invoke(app, ["list"], env={"COLUMNS": "250"})
    assert result.exit_code == 0, result.output
    for name in BUILTINS:
        assert name in result.output
        assert registry.get(name).content_hash in result.output


def test_show(registry: PromptRegistry) -> None:
    result = runner.invoke(app, ["show", "rank_pointwise"])
    assert result.exit_code == 0, result.output
    template = registry.get("rank_pointwise")
    assert result.output.startswith(f"# {template.version_id}")
    assert template.source in result.output


@pytest.mark.parametrize("fmt", ["text", "messages", "json"])
def test_render_formats(registry: PromptRegistry, vars_file: Path, fmt: str) -> None:
    result = runner.invoke(app, ["render", "rank_options", "--vars", str(vars_file), "--format", fmt])
    assert result.exit_code == 0, result.output
    expected = registry.render("rank_options", variables_for("rank_options", MOVIES))
    if fmt == "text":
        assert result.output == expected.text + "\n"
    elif fmt == "messages":
        assert "----- system -----" in result.output and result.output.rstrip().endswith("Answer: (")
    else:
        assert json.loads(result.output) == expected.model_dump()


def test_render_reads_stdin(registry: PromptRegistry) -> None:
    variables = variables_for("user_profile", MOVIES)
    result = runner.invoke(app, ["render", "user_profile", "--vars", "-"], input=json.dumps(variables))
    assert result.exit_code == 0, result.output
    assert result.output == registry.render("user_profile", variables).text + "\n"


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("{not json", "not valid JSON (line 1"),
        ("[1, 2]", "a JSON list, not an object"),
        ('{"history": []}', "candidates"),
    ],
)
def test_render_variable_errors(tmp_path: Path, content: str, expected: str) -> None:
    path = tmp_path / "v.json"
    path.write_text(content, encoding="utf-8")
    result = runner.invoke(app, ["render", "rank_options", "--vars", str(path)])
    assert isinstance(result.exception, PromptError)
    assert expected in result.exception.message


def test_unknown_template_and_missing_file(tmp_path: Path) -> None:
    result = runner.invoke(app, ["show", "rank_option"])
    assert isinstance(result.exception, PromptError) and "rank_options" in result.exception.message
    result = runner.invoke(app, ["render", "rank_options", "--vars", str(tmp_path / "none.json")])
    assert isinstance(result.exception, PromptError) and "cannot read variables" in result.exception.message


def test_dir_option_adds_templates(tmp_path: Path) -> None:
    write_template(tmp_path, "mine", "{% block user %}Hello {{ x | data }}{% endblock %}", task="chat_reply")
    (tmp_path / "v.json").write_text('{"x": "<<<you>>>"}', encoding="utf-8")
    result = runner.invoke(app, ["render", "mine", "--vars", str(tmp_path / "v.json"), "--dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert result.output == "Hello <<you>>\n"
    assert "mine" in runner.invoke(app, ["list", "--dir", str(tmp_path)], env={"COLUMNS": "250"}).output
