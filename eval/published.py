"""Published figures shown beside a run's own arms, labelled as published (never re-run, no CIs).

A JSON file (``recagent eval run ... --published FILE``)::

    {"source": "LlamaRec (Yue et al., 2023), Table 2", "note": "same split: ...",
     "rows": [{"name": "SASRec", "metrics": {"ndcg@10": 0.0522, "recall@10": 0.0993}}, ...]}

Metric names are the evaluator's (``ndcg@10``, ``recall@10``, ...); the report shows a row's figures under the
run's metric columns and ``-`` where the publication gives none.
"""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from agent.errors import InputError

__all__ = ["PublishedRow", "PublishedTable", "load_published", "published_section"]


class PublishedRow(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1)
    metrics: dict[str, float] = Field(min_length=1)

    @field_validator("metrics")
    @classmethod
    def _metric_names(cls, value: dict[str, float]) -> dict[str, float]:
        bad = [m for m in value if "@" not in m or not m.split("@", 1)[1].isdigit()]
        if bad:
            raise ValueError(f"metric names must look like ndcg@10, got {bad}")
        return value


class PublishedTable(BaseModel):
    model_config = ConfigDict(extra="forbid")

    source: str = Field(min_length=1, description="Where the figures were published (paper, table).")
    note: str | None = Field(None, description="How the published setting relates to this run's.")
    rows: list[PublishedRow] = Field(min_length=1)


def load_published(path: Path) -> PublishedTable:
    """Read and validate a published-figures file; InputError with the fix when it is missing or malformed."""
    fix = 'a JSON object {"source": ..., "rows": [{"name": ..., "metrics": {"ndcg@10": 0.07}}]}'
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise InputError(f"cannot read --published {path}: {exc}", hint=f"give {fix}") from exc
    except json.JSONDecodeError as exc:
        raise InputError(f"--published {path} is not JSON: {exc.msg} (line {exc.lineno})", hint=f"give {fix}") from exc
    try:
        return PublishedTable.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'file'}: {e['msg']}" for e in exc.errors())
        raise InputError(f"--published {path}: {problems}", hint=f"give {fix}") from exc


def published_section(table: dict[str, object] | None, metric_names: list[str]) -> list[str]:
    """Markdown lines of the published figures (``table`` as stored in results.json), or none."""
    if not table:
        return []
    pub = PublishedTable.model_validate(table)
    shown = [m for m in metric_names if any(m in r.metrics for r in pub.rows)]
    extra = sorted({m for r in pub.rows for m in r.metrics} - set(metric_names))
    columns = shown + extra
    lines = ["## Published figures (not re-run)", "", f"Source: {pub.source}. Reported as published: no confidence "
             "intervals, not computed by this run.", ""]  # fmt: skip
    if pub.note:
        lines += [pub.note, ""]
    lines += ["| published | " + " | ".join(columns) + " |", "|" + "---|" * (len(columns) + 1)]
    for row in pub.rows:
        cells = [f"{row.metrics[m]:.4f}" if m in row.metrics else "-" for m in columns]
        lines.append(f"| {row.name} (published) | " + " | ".join(cells) + " |")
    return [*lines, ""]
