"""One justification report over several evaluation runs (``recagent eval text-report RUN... --out FILE.md``).

Each run's ``results.json`` (written by ``eval run``) contributes its "Justifications" section (metrics with CIs,
fallbacks, latency, paired differences, judge, verbatim samples; :func:`eval.text_report.render_text_section`),
headed by its dataset, cases, protocol and arms. Writes FILE.md and FILE.html.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from agent.errors import InputError
from eval.report import markdown_to_html
from eval.text_report import render_text_section

__all__ = ["text_report"]


def _results(run: Path) -> dict[str, Any]:
    path = run / "results.json" if run.is_dir() else run
    if not path.is_file():
        raise InputError(f"{path} does not exist", hint="give the --out folder of a finished `recagent eval run`")
    try:
        results: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise InputError(f"{path} is not JSON: {exc.msg}", hint="run `recagent eval run` again") from exc
    if "arms" not in results or "provenance" not in results:
        raise InputError(f"{path} is not an evaluation's results.json", hint="give an `eval run --out` folder")
    return results


def _run_section(run: Path, results: dict[str, Any]) -> list[str]:
    prov = results["provenance"]
    protocol = prov.get("protocol", {})
    arms = [f"`{a['name']}` ({a.get('spec') or a['name']})" for a in prov.get("arms", [])]
    lines = [f"## {prov['dataset']['name']} ({results['cases']} cases)", ""]
    lines += [
        f"- run: `{run}`; split={protocol.get('split')}, users={protocol.get('users')}, seed={protocol.get('seed')}, "
        f"items justified per case: {max(protocol.get('ks') or [0])}; git commit: {prov.get('git_commit') or '?'}",
        f"- arms: {', '.join(arms)}",
        f"- models: {', '.join(sorted({m for a in results['arms'].values() for m in a.get('models') or []})) or '-'}",
        "",
    ]
    section = render_text_section(results)
    if not section:
        return [*lines, "No arm of this run asked the LLM for justifications (explain=llm).", ""]
    return lines + [line.replace("## ", "### ", 1) if line.startswith("## ") else line for line in section]


def text_report(runs: Sequence[Path], out: Path, *, title: str, preamble: str = "") -> Path:
    """Write ``out`` (markdown) and its ``.html`` sibling from the runs' results; returns the markdown path."""
    if not runs:
        raise InputError("no run given", hint="give one or more `eval run --out` folders")
    loaded = [(Path(r), _results(Path(r))) for r in runs]
    lines = [f"# {title}", ""]
    if preamble.strip():
        lines += [preamble.strip(), ""]
    for run, results in loaded:
        lines += _run_section(run, results)
    markdown = "\n".join(lines) + "\n"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(markdown, encoding="utf-8")
    out.with_suffix(".html").write_text(markdown_to_html(markdown, title=title), encoding="utf-8")
    return out
