"""Issue 27 cases 1 and 4: lone surrogates and NaN/Infinity in JSON(L) catalogs reject the row (file + line +
reason), the rest is ingested, no traceback, no empty collection left behind."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from retrieval.catalog import read_catalog
from retrieval.config import EmbedConfig, StoreConfig
from retrieval.ingest import ingest
from retrieval.store import Store

from retrieval_helpers import FakeEmbedder

GOOD = '{"id": "g", "title": "Good", "description": "fine", "tags": ["a"]}'


def jsonl(tmp_path: Path, *lines: str) -> Path:
    path = tmp_path / "d.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("line", "field"),
    [
        ('{"id": "a", "title": "t \\ud800", "description": "x"}', "title"),
        ('{"id": "a\\udfff", "title": "t", "description": "x"}', "id"),
        ('{"id": "a", "title": "t", "description": "x \\ud800"}', "description"),
        ('{"id": "a", "title": "t", "tags": ["ok", "\\udc80"]}', "tags"),
    ],
)
def test_lone_surrogate_rejects_the_row_with_its_line(tmp_path: Path, line: str, field: str) -> None:
    path = jsonl(tmp_path, GOOD, line)
    catalog = read_catalog(path)
    assert [i.id for i in catalog.items] == ["g"]
    report = catalog.report
    assert report.rows_read == 2 and report.accepted == 1 and report.rejected == 1
    example = report.rejections["lone_surrogate"].examples[0]
    assert example.startswith("line 2:") and repr(field) in example
    example.encode("utf-8")  # the report itself is printable


def test_lone_surrogate_in_a_json_array_names_the_element(tmp_path: Path) -> None:
    path = tmp_path / "d.json"
    path.write_text('[{"id": "1", "title": "ok"}, {"id": "2", "title": "bad \\ud83d"}]', encoding="utf-8")
    catalog = read_catalog(path)
    assert [i.id for i in catalog.items] == ["1"]
    assert catalog.report.rejections["lone_surrogate"].examples[0].startswith("element 1:")


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ('{"id": NaN, "title": "A"}', "non_finite_number"),
        ('{"id": 1e400, "title": "A"}', "non_finite_number"),
        ('{"id": -Infinity, "title": "A"}', "non_finite_number"),
        ('{"id": "x", "title": NaN}', "non_finite_number"),
        ('{"id": "x", "title": Infinity}', "non_finite_number"),
    ],
)
def test_nan_and_infinity_ids_and_titles_are_rejected(tmp_path: Path, line: str, reason: str) -> None:
    catalog = read_catalog(jsonl(tmp_path, GOOD, line))
    assert [i.id for i in catalog.items] == ["g"]
    assert all(i.title != "nan" for i in catalog.items)
    assert catalog.report.rejections[reason].examples[0].startswith("line 2:")


def test_nan_in_other_fields_is_dropped_and_counted(tmp_path: Path) -> None:
    line = '{"id": "x", "title": "X", "description": NaN, "tags": ["a", Infinity, "b"]}'
    catalog = read_catalog(jsonl(tmp_path, line))
    (item,) = catalog.items
    assert "description" not in item.texts
    assert item.texts["tags"] == "a, b"
    assert catalog.report.fixes["non_finite_dropped"].count == 2


def test_ingest_with_a_surrogate_row_keeps_the_rest(tmp_path: Path) -> None:
    path = jsonl(tmp_path, GOOD, '{"id": "a", "title": "t", "description": "x \\ud800"}')
    config = StoreConfig(path=tmp_path / "chroma", collection="abc")
    report = ingest(path, store_config=config, embed_config=EmbedConfig(progress=False), embedder=FakeEmbedder())
    assert report.accepted == 1 and report.rejected == 1
    assert Store(config).collection("abc").count() == 1


def test_only_bad_rows_leave_no_collection_behind(tmp_path: Path) -> None:
    path = jsonl(tmp_path, '{"id": "a", "title": "t", "description": "x \\ud800"}')
    config = StoreConfig(path=tmp_path / "chroma", collection="abc")
    with pytest.raises(Exception, match="lone_surrogate"):
        ingest(path, store_config=config, embed_config=EmbedConfig(progress=False), embedder=FakeEmbedder())
    assert not Store(config).has_collection("abc")


class FailingEmbedder(FakeEmbedder):
    def embed(self, texts: object, *, progress: bool | None = None) -> object:  # type: ignore[override]
        raise RuntimeError("the embedder broke")


def test_a_failed_first_ingest_leaves_no_empty_collection(tmp_path: Path) -> None:
    path = jsonl(tmp_path, GOOD)
    config = StoreConfig(path=tmp_path / "chroma", collection="abc")
    with pytest.raises(RuntimeError, match="embedder broke"):
        ingest(path, store_config=config, embed_config=EmbedConfig(progress=False), embedder=FailingEmbedder())
    assert not Store(config).has_collection("abc")
    ingest(path, store_config=config, embed_config=EmbedConfig(progress=False), embedder=FakeEmbedder())
    with pytest.raises(RuntimeError, match="embedder broke"):  # an existing collection is never dropped
        ingest(jsonl(tmp_path, GOOD.replace("fine", "changed")), store_config=config,
               embed_config=EmbedConfig(progress=False), embedder=FailingEmbedder())  # fmt: skip
    assert Store(config).collection("abc").count() == 1


@pytest.mark.slow
def test_cli_ingest_of_surrogate_file_is_a_report_not_a_traceback(tmp_path: Path) -> None:
    """The issue's reproduction through the real command (real embedder, real Chroma)."""
    lines = [GOOD, '{"id":"a","title":"t","description":"x \\ud800"}', '{"id": NaN, "title": "A"}']
    path = jsonl(tmp_path, *lines)
    env = {k: v for k, v in os.environ.items() if not k.startswith("RECAGENT_")}
    env |= {"RECAGENT_HOME": str(tmp_path / "home"), "RECAGENT_CHROMA_PATH": str(tmp_path / "chroma")}
    out = subprocess.run(
        [sys.executable, "-m", "recagent", "ingest", str(path), "--collection", "abc", "--json"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    assert "Traceback" not in out.stderr
    report = json.loads(out.stdout)
    assert report["accepted"] == 1 and report["rejected"] == 2
    assert set(report["rejections"]) == {"lone_surrogate", "non_finite_number"}
