"""The justification section end to end: a scripted engine over 8 MovieLens-sample users (real embedder + embedded
Chroma), two explain=llm arms that differ in what they write, a template arm, the judge arm off and on, replay,
and conversation turns whose request is the conversation."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from agent.errors import InputError
from agent.llm.base import LLMRequest
from agent.settings import Settings
from eval.compare import compare_runs
from eval.datasets import load_dataset
from eval.judge import JUDGE_SCHEMA, JudgeConfig
from eval.protocol import Protocol
from eval.runner import run_eval
from eval.variants import parse_variant
from recagent import cmd_eval
from retrieval.embed import Embedder

from fakes import FakeEngine, explained_title, kind_of, text_of
from testkit import cli_app

_HISTORY = re.compile(r"<<<HISTORY>>>\n(.*?)<<<END>>>", re.DOTALL)
_FIELD = re.compile(r"^genres: (.*)$", re.MULTILINE)
ARMS = [
    "long:strategy=retrieval,explain=llm,history_limit=6",
    "short:strategy=retrieval,explain=llm,history_limit=2",
    "tmpl:strategy=retrieval,explain=template",
]


def writer(req: LLMRequest, schema: dict[str, Any] | None) -> str:
    """Explain answers: with more than 2 history lines in the prompt, a sentence naming the user's last liked
    history title (rated >= 4); otherwise the item's title with one of two generic phrases (by its length; a sentence
    naming nothing of the item is refused by the grounding check); an invalid
    output for titles whose length is a multiple of 4."""
    assert kind_of(req) == "explain"
    text = text_of(req)
    title = explained_title(req)
    if len(title) % 4 == 0:
        return "not json"
    genres = _FIELD.search(text.split("<<<ITEM>>>", 1)[1])
    genre = genres.group(1).split(", ")[0] if genres else title
    cited = [{"field": "genres", "value": genre}] if genres else [{"field": "title", "value": title}]
    lines = [line for line in _HISTORY.search(text).group(1).splitlines() if line.startswith("- ")]  # type: ignore[union-attr]
    liked = [line[2:].split(" | ")[0] for line in lines if float(line.rsplit("rating: ", 1)[1]) >= 4]
    if len(lines) > 2 and liked:
        return json.dumps({"justification": f"Like {liked[-1]}, it is {genre}.", "cited": cited})
    sentence = f"{title} is a fine pick." if len(title) % 2 else f"{title} is worth a look."
    return json.dumps({"justification": sentence, "cited": cited})


def judge_answer(req: LLMRequest, schema: dict[str, Any] | None) -> str:
    assert schema == JUDGE_SCHEMA
    said = text_of(req).split("# The justification shown to the user\n", 1)[1].split("\n", 1)[0]
    return json.dumps({"about_item": True, "true_to_fields": True, "connects_user": said.startswith("Like ")})


def _run(settings: Settings, embedder: Embedder, data: Path, out: Path, **kw: Any) -> Any:
    kw.setdefault("engine", FakeEngine(writer))
    return run_eval(
        settings,
        load_dataset(data),
        Protocol(users=8, seed=5, ks=(5,)),
        out,
        embedder=embedder,
        variants=[parse_variant(v) for v in ARMS],
        collection="eval-test",
        progress=False,
        batch_size=4,
        **kw,
    )


def test_text_section_judge_off_then_on_and_replay(
    eval_settings: Settings, eval_embedder: Embedder, ml_sample: Path, tmp_path: Path
) -> None:
    result = _run(eval_settings, eval_embedder, ml_sample, tmp_path / "off")
    arms = result.results["arms"]
    assert arms["tmpl"]["text"] is None  # asked the LLM for nothing
    long, short = arms["long"]["text"], arms["short"]["text"]
    records = {a: [r for r in result.records if r["variant"] == a] for a in ("long", "short")}
    for name, t in (("long", long), ("short", short)):
        shown = [
            (s, j) for r in records[name] for s, j in zip(r["justification_sources"], r["justifications"], strict=True)
        ]
        assert t["asked"] == len(shown) == 40
        assert t["llm"] == sum(s == "llm" for s, _ in shown) > 0
        assert t["fallbacks"] == t["asked"] - t["llm"] == sum(t["fallbacks_by_reason"].values())
        assert set(t["fallbacks_by_reason"]) == {"invalid_output"}  # 'not json', asked twice, then the template
        assert t["grounding_rate"]["mean"] == t["llm"] / t["asked"]
    for r in records["long"]:  # linked exactly when the sentence names a liked title
        said = [j for s, j in zip(r["justification_sources"], r["justifications"], strict=True) if s == "llm"]
        links = [x for s, x in zip(r["justification_sources"], r["text"]["links"], strict=True) if s == "llm"]
        assert [j.startswith("Like ") for j in said] == [x is not None and x.startswith("names ") for x in links]
    assert long["user_link_rate"]["mean"] == long["title_link_rate"]["mean"] > 0.5
    assert short["user_link_rate"]["mean"] == 0.0
    assert short["distinctness"]["mean"] == 2 / short["llm"]  # two sentences in all
    assert 3 < short["mean_words"]["mean"] <= 15  # the title and a few words
    rows = {(c["metric"], c["arm"]): c for c in result.results["text_comparisons"]}
    assert rows[("text.user_link_rate", "short")]["diff"] < -0.5
    assert rows[("text.user_link_rate", "short")]["verdict"] == "lower"
    latency = result.results["latency"]["long"]
    assert latency["justify_ms_p50"] is not None and latency["request_ms_p50"] >= latency["justify_ms_p50"]
    assert len(result.results["text_samples"]) == 20
    assert {s["arm"] for s in result.results["text_samples"]} == {"long", "short"}
    assert result.results["judge"]["skipped"].startswith("no judge model configured")

    report = (result.out / "report.md").read_text()
    assert "## Justifications (LLM-written text)" in report
    assert "Judge arm: skipped (no judge model configured" in report
    assert "### 20 sample justifications, verbatim" in report
    first = result.results["text_samples"][0]
    assert first["text"] in report.replace("\\", "")
    assert "| long | 40 |" in report and "| tmpl |" not in report.split("## Justifications")[1].split("###")[0]
    assert "Justifications (LLM-written text)" in (result.out / "report.html").read_text()

    compared = compare_runs(result.out, result.out, arm_a="long", arm_b="short")
    link = next(r for r in compared["rows"] if r["metric"] == "text.user_link_rate")
    assert link["diff"] > 0.5 and link["winner"] == "A"

    # the judge arm: one batched call over every LLM-written justification, through the run's cache
    judge = FakeEngine(judge_answer, model_id="judge-model")
    config = JudgeConfig(url="http://judge.invalid/v1", model="judge-model")
    on = _run(eval_settings, eval_embedder, ml_sample, tmp_path / "on", judge=config, judge_engine=judge)
    verdicts = on.results["judge"]
    assert [c.method for c in judge.calls] == ["generate"]
    assert len(judge.calls[0].requests) == long["llm"] + short["llm"] == verdicts["judged"]
    assert verdicts["arms"]["long"]["connects_user"]["mean"] == long["user_link_rate"]["mean"]
    assert verdicts["arms"]["short"]["connects_user"]["mean"] == 0.0
    assert verdicts["arms"]["short"]["about_item"]["mean"] == 1.0
    lines = (tmp_path / "on" / "judge.jsonl").read_text().splitlines()
    assert len(lines) == verdicts["judged"] and json.loads(lines[0])["arm"] == "long"
    report = (tmp_path / "on" / "report.md").read_text()
    assert "Judge arm: `judge-model` at http://judge.invalid/v1 scored" in report

    replayed = _run(eval_settings, eval_embedder, ml_sample, tmp_path / "on", engine=None, replay=True, judge=config)
    assert replayed.results["judge"]["arms"] == verdicts["arms"]
    assert replayed.results["arms"]["long"]["text"] == long

    # `eval text-report`: both runs in one document (md + html), each run's section under its own heading
    app = cli_app(eval_settings, "eval", cmd_eval.app)
    doc = tmp_path / "docs" / "just.md"
    res = CliRunner().invoke(app, ["eval", "text-report", str(tmp_path / "off"), str(tmp_path / "on"), "--out",
                                   str(doc), "--preamble", "Made by a test."])  # fmt: skip
    assert res.exit_code == 0, res.output
    md = doc.read_text()
    assert md.startswith("# Justifications: what the LLM writes\n\nMade by a test.")
    assert md.count("### Justifications (LLM-written text)") == 2 and md.count("sample justifications, verbatim") == 2
    assert "Judge arm: skipped" in md and "Judge arm: `judge-model`" in md
    assert "<table>" in doc.with_suffix(".html").read_text()
    bad = CliRunner().invoke(app, ["eval", "text-report", str(tmp_path / "nothing"), "--out", str(doc)])
    assert isinstance(bad.exception, InputError) and "eval run" in bad.exception.hint


def test_conversation_turns_link_to_the_request(
    eval_settings: Settings, eval_embedder: Embedder, ml_sample: Path, tmp_path: Path
) -> None:
    import csv

    with (ml_sample / "movies.csv").open(encoding="utf-8") as fh:
        titles = [row["title"] for row in csv.DictReader(fh)][:30]
    turns = tmp_path / "turns.jsonl"
    rows = [
        {
            "dialog_id": f"d{i}",
            "turn_id": 2,
            "context": ["Hi", "Any gripping submarine thrillers?"],
            "entity": [],
            "rec": [titles[10 + i]],
        }
        for i in range(4)
    ]
    turns.write_text("\n".join(json.dumps(r) for r in rows) + "\n")

    def echo(req: LLMRequest, schema: dict[str, Any] | None) -> str:
        title = explained_title(req)
        cited = [{"field": "title", "value": title}]
        return json.dumps({"justification": f"{title} is a gripping story.", "cited": cited})

    result = run_eval(
        eval_settings,
        load_dataset(turns, catalog=ml_sample),
        Protocol(ks=(3,)),
        tmp_path / "c",
        embedder=eval_embedder,
        variants=[parse_variant("chat:strategy=retrieval,explain=llm")],
        engine=FakeEngine(echo),
        collection="eval-test",
        progress=False,
    )
    text = result.results["arms"]["chat"]["text"]
    assert text["asked"] == 12 and text["llm"] == 12
    assert text["request_link_rate"]["mean"] == 1.0 and text["title_link_rate"]["mean"] == 0.0
    assert result.records[0]["text"]["links"][0] == "request words: gripping"
