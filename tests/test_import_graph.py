"""The project's import graph: every module imports in a fresh interpreter, module-level imports form no circle,
and the floors hold (``core`` < ``prompts``, ``retrieval`` < ``agent`` < ``eval`` < ``train`` < ``recagent``)."""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("core", "prompts", "retrieval", "agent", "eval", "train", "recagent")
# what each top-level package must never import (at module level or inside a function)
FORBIDDEN: dict[str, set[str]] = {
    "core": {"prompts", "retrieval", "agent", "eval", "train", "recagent"},
    "prompts": {"retrieval", "agent", "eval", "train", "recagent"},
    "retrieval": {"agent", "eval", "train", "recagent"},
    "agent": {"eval", "train", "recagent"},
    "eval": {"train", "recagent"},
    "train": {"recagent"},
}


def module_files() -> dict[str, Path]:
    out = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join(parts)] = path
    return out


MODULES = module_files()


def _type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.AST, module_level: bool) -> Iterator[str]:
    """Names imported by ``tree``; with ``module_level`` only those run when the module is imported (not inside
    functions, not under ``if TYPE_CHECKING``)."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module
            yield from (f"{node.module}.{alias.name}" for alias in node.names)
        elif module_level and isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            continue
        elif module_level and isinstance(node, ast.If) and _type_checking(node):
            yield from _imports(ast.Module(body=node.orelse, type_ignores=[]), module_level)
        else:
            yield from _imports(node, module_level)


def edges(module_level: bool) -> dict[str, set[str]]:
    """Project module -> the project modules it imports (a ``from a import b`` names the module ``a.b`` if it is
    one, else ``a``)."""
    graph: dict[str, set[str]] = {}
    for name, path in MODULES.items():
        targets = {t for t in _imports(ast.parse(path.read_text(encoding="utf-8")), module_level) if t in MODULES}
        graph[name] = {t for t in targets if t != name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` (as a path that starts and ends at the same module), or None."""
    state: dict[str, int] = {}  # 1: on the stack, 2: done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (found := visit(start)):
            return found
    return None


def test_find_cycle_by_hand() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"a"}}) == ["a", "a"]


def test_the_graph_sees_the_imports_that_matter() -> None:
    graph = edges(module_level=True)
    assert "agent.errors" in graph["agent.llm.base"]  # a plain module-level import
    assert "agent.rerank.core" in graph["agent.rerank"]  # `from package.module import name`
    lazy = edges(module_level=False)
    assert "agent.pipeline" in lazy["recagent.demo"] and "agent.pipeline" not in graph["recagent.demo"]


def test_no_import_cycle_at_module_level() -> None:
    cycle = find_cycle(edges(module_level=True))
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_floors_hold(package: str) -> None:
    bad = sorted(
        f"{name} imports {target}"
        for name, targets in edges(module_level=False).items()
        if name.split(".")[0] == package
        for target in targets
        if target.split(".")[0] in FORBIDDEN[package]
    )
    assert not bad, "\n".join(bad)


def test_every_module_imports_in_a_fresh_interpreter() -> None:
    script = "\n".join(
        [
            "import importlib, sys",
            "bad = []",
            f"for name in {sorted(MODULES)!r}:",
            "    try:",
            "        importlib.import_module(name)",
            "    except Exception as exc:",
            "        bad.append(f'{name}: {exc!r}')",
            "print('\\n'.join(bad))",
            "sys.exit(1 if bad else 0)",
        ]
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
