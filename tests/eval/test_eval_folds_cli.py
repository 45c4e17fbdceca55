"""`recagent eval folds` end to end on real parts: a small ReDial-shaped dataset, the bundled embedder, an
embedded Chroma store, 2 folds by dialogue (slow: the real embedder)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from agent.settings import load_settings
from recagent import cmd_eval

from testkit import cli_app

GENRES = ["horror", "comedy", "drama"]


def _dataset(folder: Path) -> Path:
    movies = {
        str(100 + i): {"name": f"Movie {i} ({1980 + i})", "genre": [GENRES[i % 3]], "director": [f"D{i % 4}"],
                       "plot": f"A {GENRES[i % 3]} story number {i}.", "writer": [], "star": [], "imdb_id": f"tt{i}"}
        for i in range(12)
    }  # fmt: skip
    (folder / "movies.json").write_text(json.dumps(movies), encoding="utf-8")
    rows = []
    for d in range(8):  # every dialogue: movie d mentioned, then movie d + 6 recommended (a learnable pair)
        a, b = d % 6, d % 6 + 6
        rows.append({"dialog_id": f"d{d}", "turn_id": 2, "context": ["", "hi", f"I like Movie {a} ({1980 + a})"],
                     "entity": [f"Movie {a} ({1980 + a})"], "rec": [f"Movie {b} ({1980 + b})"]})  # fmt: skip
    (folder / "turns.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return folder


@pytest.mark.slow
def test_eval_folds_writes_the_ievalm_report(tmp_path: Path) -> None:
    data = _dataset(tmp_path)
    settings = load_settings(home=tmp_path / "home")
    out = tmp_path / "out"
    app = cli_app(settings, "eval", cmd_eval.app)
    done = CliRunner().invoke(app, ["eval", "folds", str(data), "--folds", "2", "--out", str(out)])
    assert done.exit_code == 0, done.output
    doc = json.loads((out / "results.json").read_text(encoding="utf-8"))
    assert [f["leaked_dialogues"] for f in doc["folds"]] == [0, 0]
    assert sum(f["test_turns"] for f in doc["folds"]) == 8
    results = doc["results"]
    assert results["fused default"]["samples"] == 8
    # dialogues d0/d6 and d1/d7 repeat a pair: when they fall in different folds, comention finds it
    assert 0.0 <= results["comention alone"]["recall@1"] <= 0.5
    assert results["content only (semantic + item2item)"]["recall@50"] == 1.0  # 12 movies: all ranked
    report = (out / "report.md").read_text(encoding="utf-8")
    assert "KBRD (published)" in report and "mentioned earlier in the dialogue are excluded" in report
    assert (out / "report.html").is_file() and (out / "content_lists.jsonl").is_file()
    again = CliRunner().invoke(app, ["eval", "folds", str(data), "--folds", "2", "--out", str(out)])
    assert again.exit_code == 0  # the content lists are read back, not recomputed
    assert len((out / "content_lists.jsonl").read_text(encoding="utf-8").splitlines()) == 8


def test_eval_folds_with_too_many_folds_is_a_clear_error(tmp_path: Path) -> None:
    data = _dataset(tmp_path)
    app = cli_app(load_settings(home=tmp_path / "home"), "eval", cmd_eval.app)
    done = CliRunner().invoke(app, ["eval", "folds", str(data), "--folds", "9", "--out", str(tmp_path / "o")])
    assert done.exit_code != 0 and "folds" in str(done.exception)
