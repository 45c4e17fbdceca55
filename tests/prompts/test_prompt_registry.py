"""The registry: loading, hashing, lookup, variables, front-matter and body validation."""

from __future__ import annotations

import ast
import hashlib
import shutil
from pathlib import Path

import pytest
from prompt_examples import BUILTINS, MOVIES, variables_for, write_template

from prompts import BUILTIN_DIR, TASKS, PromptError, PromptRegistry


def test_lists_every_builtin_with_distinct_hashes(registry: PromptRegistry) -> None:
    infos = registry.list()
    assert sorted(i.name for i in infos) == sorted(BUILTINS)
    assert {i.task for i in infos} == set(TASKS)
    assert len({i.hash for i in infos}) == len(infos)
    for info in infos:
        assert info.description and info.version
        assert info.version_id == f"{info.name}@{info.hash}"


def test_hash_is_sha256_of_the_file_bytes(registry: PromptRegistry) -> None:
    template = registry.get("rank_options")
    expected = hashlib.sha256((BUILTIN_DIR / "rank_options.j2").read_bytes()).hexdigest()[:12]
    assert template.content_hash == expected
    assert (
        registry.render("rank_options", variables_for("rank_options", MOVIES)).version_id == f"rank_options@{expected}"
    )


def test_hash_changes_when_the_file_changes(tmp_path: Path) -> None:
    shutil.copy(BUILTIN_DIR / "rank_options.j2", tmp_path / "rank_options.j2")
    before = PromptRegistry([tmp_path], include_builtin=False).get("rank_options")
    path = tmp_path / "rank_options.j2"
    path.write_text(path.read_text(encoding="utf-8").replace("best recommendation", "best pick"), encoding="utf-8")
    after = PromptRegistry([tmp_path], include_builtin=False).get("rank_options")
    assert before.content_hash != after.content_hash
    assert before.version_id != after.version_id
    # a change that does not alter the rendering still changes the version (it is the file that is versioned)
    path.write_text(path.read_text(encoding="utf-8") + "\n", encoding="utf-8")
    assert PromptRegistry([tmp_path], include_builtin=False).get("rank_options").content_hash != after.content_hash


def test_user_dir_adds_a_variant_of_a_task(tmp_path: Path) -> None:
    write_template(
        tmp_path,
        "rank_options_short",
        """\
        {% block user %}
        {% for c in candidates %}({{ option_label(loop.index0) }}) {{ c.title | data }}
        {% endfor %}
        {% endblock %}
        {% block assistant_prefix %}Best: ({% endblock %}
        """,
        variables="  candidates: Items.\n  history: {description: Ignored here., default: []}\n",
    )
    registry = PromptRegistry([tmp_path])
    assert [t.name for t in registry.by_task("rank_options")] == ["rank_options", "rank_options_short"]
    rendered = registry.render("rank_options_short", {"candidates": MOVIES["candidates"]})
    assert rendered.text.startswith("(A) Bug's Life, A (1998)\n(B) Shining, The (1980)")
    assert rendered.text.endswith("Best: (")
    assert [m.role for m in rendered.messages] == ["user", "assistant"]
    assert "rank_options_short" in [i.name for i in registry.list()]


def test_user_template_may_not_reuse_a_builtin_name(tmp_path: Path) -> None:
    write_template(tmp_path, "rank_options", "{% block user %}{{ x }}{% endblock %}")
    with pytest.raises(PromptError) as err:
        PromptRegistry([tmp_path])
    assert str(tmp_path / "rank_options.j2") in err.value.message
    assert str(BUILTIN_DIR / "rank_options.j2") in err.value.message
    assert "rank_options_mine" in err.value.hint


def test_missing_directory_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(PromptError, match="does not exist"):
        PromptRegistry([tmp_path / "nope"])


def test_unknown_name_lists_names_and_suggests(registry: PromptRegistry) -> None:
    with pytest.raises(PromptError) as err:
        registry.get("rank_option")
    assert "did you mean 'rank_options'" in err.value.message
    for name in BUILTINS:
        assert name in err.value.hint


def test_by_task_unknown_task(registry: PromptRegistry) -> None:
    with pytest.raises(PromptError, match="did you mean 'rank_listwise'"):
        registry.by_task("rank_listwis")
    assert [t.name for t in registry.by_task("explain")] == ["explain"]


def test_missing_variable_is_named(registry: PromptRegistry) -> None:
    variables = variables_for("rank_listwise", MOVIES)
    del variables["candidates"]
    with pytest.raises(PromptError) as err:
        registry.render("rank_listwise", variables)
    assert "missing variable(s) candidates" in err.value.message
    assert "Items to rank" in err.value.hint  # the description tells the caller what to pass


def test_unknown_variable_is_rejected_unless_allowed(registry: PromptRegistry) -> None:
    variables = variables_for("rank_options", MOVIES) | {"candidate": {}}
    with pytest.raises(PromptError) as err:
        registry.render("rank_options", variables)
    assert "unknown variable(s) candidate (did you mean candidates?)" in err.value.message
    rendered = registry.render("rank_options", variables, allow_extra=True)
    assert rendered == registry.render("rank_options", variables_for("rank_options", MOVIES))


def test_optional_variable_takes_its_default(registry: PromptRegistry) -> None:
    variables = variables_for("rank_options", MOVIES)
    assert "need" in registry.get("rank_options").optional_variables
    with_need = registry.render("rank_options", variables).text
    without = registry.render("rank_options", {k: v for k, v in variables.items() if k != "need"}).text
    assert "<<<REQUEST>>>" in with_need and MOVIES["need"] in with_need
    assert "<<<REQUEST>>>" not in without
    assert without == registry.render("rank_options", variables | {"need": ""}).text


def test_variables_must_be_a_mapping(registry: PromptRegistry) -> None:
    with pytest.raises(PromptError, match="must be a mapping"):
        registry.render("user_profile", [("history", [])])  # type: ignore[arg-type]


def test_wrong_variable_shape_is_a_prompt_error(registry: PromptRegistry) -> None:
    with pytest.raises(PromptError) as err:
        registry.render("rank_options", {"history": [], "candidates": [{"id": "1"}]})  # no title
    assert "title" in err.value.message
    with pytest.raises(PromptError, match="rendering failed"):
        registry.render("rank_listwise", {"history": [], "candidates": MOVIES["candidates"], "k": "two"})


# ---------------------------------------------------------------------------------------------- front matter


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("---\nversion: 1\ntask: explain\ndescription: d\noutput: text\nvariables: {}\n---\n", "name: Field required"),
        ("---\nname: bad\nversion: 1\ndescription: d\noutput: text\nvariables: {}\n---\n", "task: Field required"),
        ("---\nname: bad\nversion: 1\ntask: rank\ndescription: d\noutput: text\nvariables: {}\n---\n", "task:"),
        (
            "---\nname: bad\nversion: 1\ntask: explain\ndescription: d\noutput: text\nvariables: {}\n"
            "colour: red\n---\n",
            "colour: Extra inputs",
        ),
        ("---\nname: bad\ntask: explain\ndescription: a: b\n---\n", "bad.j2:4: the front matter is not valid YAML"),
        ("---\nname: bad\ntask: explain\ndescription: [unclosed\n---\n", "not valid YAML"),
        ("---\n- a list\n---\n", "must be a YAML mapping"),
        ("name: bad\n", "must start with a '---' line"),
        ("---\nname: bad\n", "never closed"),
        (
            "---\nname: other\nversion: 1\ntask: explain\ndescription: d\noutput: text\nvariables: {}\n---\n",
            "is named 'bad'.j2",
        ),
        (
            "---\nname: bad\nversion: 1\ntask: explain\ndescription: d\noutput: json\nvariables: {}\n---\n",
            "format json needs a schema",
        ),
        (
            "---\nname: bad\nversion: 1\ntask: explain\ndescription: d\noutput: {format: json, schema: nope}\n"
            "variables: {}\n---\n",
            "unknown schema 'nope'",
        ),
        (
            "---\nname: bad\nversion: 1\ntask: explain\ndescription: d\noutput: text\nvariables: {x: {}}\n---\n",
            "variables.x.description",
        ),
    ],
)
def test_front_matter_errors_name_the_file(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "bad.j2"
    path.write_text(text + "{% block user %}hi{% endblock %}\n", encoding="utf-8")
    with pytest.raises(PromptError) as err:
        PromptRegistry([tmp_path], include_builtin=False)
    assert str(path) in err.value.message
    assert expected in err.value.message
    assert err.value.hint


def test_version_may_be_a_number(tmp_path: Path) -> None:
    path = tmp_path / "v.j2"
    path.write_text(
        "---\nname: v\nversion: 2\ntask: explain\ndescription: d\noutput: text\nvariables: {}\n---\n"
        "{% block user %}hi{% endblock %}\n",
        encoding="utf-8",
    )
    assert PromptRegistry([tmp_path], include_builtin=False).get("v").version == "2"


# ---------------------------------------------------------------------------------------------- body checks


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("{% block user %}{{ y }}{% endblock %}", "not declared in the front matter: y"),
        ("{% block user %}{{ xx }}{% endblock %}", "xx (did you mean x?)"),
        ("Hello\n{% block user %}{{ x }}{% endblock %}", "outside a {% block %}"),
        ("{% set a = 1 %}{% block user %}{{ x }}{% endblock %}", "outside a {% block %}"),
        ("{% block user %}{% include 'other.j2' %}{% endblock %}", "cannot extend, include or import"),
        ("{% extends 'rank_options.j2' %}", "cannot extend, include or import"),
        ("{% block user %}{{ x }}{% block system %}s{% endblock %}{% endblock %}", "may not be nested"),
        ("{% block question %}{{ x }}{% endblock %}", "question are not part of the message layout"),
        ("\n\n", "has no {% block %}"),
    ],
)
def test_body_errors(tmp_path: Path, body: str, expected: str) -> None:
    path = write_template(tmp_path, "bad", body)
    with pytest.raises(PromptError) as err:
        PromptRegistry([tmp_path], include_builtin=False)
    assert str(path) in err.value.message
    assert expected in err.value.message


def test_syntax_error_reports_the_file_line(tmp_path: Path) -> None:
    path = write_template(tmp_path, "bad", "{% block user %}\nfine\n{% endfor %}\n{% endblock %}\n")
    with pytest.raises(PromptError) as err:
        PromptRegistry([tmp_path], include_builtin=False)
    # 9 front-matter lines (--- ... ---), so body line 3 is file line 12
    assert f"{path}:12: Jinja syntax error" in err.value.message


def test_custom_message_layout_for_few_shot(tmp_path: Path) -> None:
    write_template(
        tmp_path,
        "fewshot",
        """\
        {% block system %}Pick one.{% endblock %}
        {% block example_question %}(A) red (B) blue. Which is a colour of the sky?{% endblock %}
        {% block example_answer %}Answer: (B){% endblock %}
        {% block user %}{{ x | data }}{% endblock %}
        {% block assistant_prefix %}Answer: ({% endblock %}
        """,
        extra=(
            "messages:\n  - {role: system, block: system}\n  - {role: user, block: example_question}\n"
            "  - {role: assistant, block: example_answer}\n  - {role: user, block: user}\n"
            "  - {role: assistant, block: assistant_prefix}\n"
        ),
    )
    rendered = PromptRegistry([tmp_path], include_builtin=False).render("fewshot", {"x": "(A) cat (B) dog"})
    assert [m.role for m in rendered.messages] == ["system", "user", "assistant", "user", "assistant"]
    assert rendered.messages[2].content == "Answer: (B)"
    assert rendered.assistant_prefix == "Answer: ("
    assert rendered.text == "\n\n".join(m.content for m in rendered.messages)


def test_layout_naming_a_missing_block(tmp_path: Path) -> None:
    write_template(
        tmp_path,
        "bad",
        "{% block user %}{{ x }}{% endblock %}",
        extra="messages:\n  - {role: system, block: intro}\n  - {role: user, block: user}\n",
    )
    with pytest.raises(PromptError, match="does not define"):
        PromptRegistry([tmp_path], include_builtin=False)


def test_empty_blocks_produce_no_message(tmp_path: Path) -> None:
    write_template(
        tmp_path, "t", "{% block system %}{% if x %}sys{% endif %}{% endblock %}{% block user %}u{% endblock %}"
    )
    registry = PromptRegistry([tmp_path], include_builtin=False)
    assert [m.role for m in registry.render("t", {"x": ""}).messages] == ["user"]
    assert [m.role for m in registry.render("t", {"x": "1"}).messages] == ["system", "user"]


def test_prompts_package_stays_on_the_ground_floor() -> None:
    package = Path(__file__).resolve().parents[2] / "prompts"
    for source in package.glob("*.py"):
        tree = ast.parse(source.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                roots = [alias.name.split(".")[0] for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                roots = [(node.module or "").split(".")[0]]
            else:
                continue
            assert not set(roots) & {"agent", "eval", "recagent"}, f"{source.name} imports {roots}"
