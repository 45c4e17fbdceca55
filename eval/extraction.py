"""How well the chat's preference extraction finds the titles a user likes and dislikes, against dialogue labels.

Data: raw ReDial ``dialogues.jsonl`` (read through :func:`eval.dialogues.utterances`, the reader that cuts the
recommendation turns). Its datasheet: the *initiator* is the recommendation seeker, the *respondent* the
recommender; after the dialogue each of them answered a questionnaire about every mentioned movie, both about the
SEEKER: ``liked`` 1 = the seeker liked it, 0 = did not, 2 = did not say. Gold per movie: the answer both
questionnaires give (or the one present); movies whose two answers differ are left out of the scoring (their
predictions count neither way). The labels are per dialogue, not per message: a movie the seeker liked is gold
"liked" in every seeker message that mentions it.

Cases: the seeker's utterances (consecutive messages merged) that mention at least one movie (``@<id>``), a seeded
sample. Per case the chat's own extraction runs as it does in a session: the rules
(:func:`agent.chat.preferences.parse_message`, with the movies of the recommender's previous utterance as the
items shown last), then, in the LLM arms, the LLM extraction (:class:`agent.chat.extract.PreferenceExtractor`, the
earlier utterances as the session's earlier turns) merged into it; scored is the :class:`PreferenceUpdate` after
the catalog checks, i.e. what the chat keeps: liked = ``liked_ids`` + ``accepted_ids``, disliked = ``disliked_ids``
+ ``rejected_ids``. A predicted movie that is not gold (also one the message does not mention) is a false
positive.

Metrics: micro precision, recall and F1 of liked and of disliked titles (pooled over the cases), each with a
percentile bootstrap CI resampling cases (:func:`eval.compare.bootstrap_ratio_ci`), and the paired difference of
F1 between arms (:func:`eval.compare.paired_ratio_diff_ci`, the same resamples for both arms).
"""

from __future__ import annotations

import json
import os
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from agent.chat.catalog import CatalogIndex
from agent.chat.conversation import turn_vars
from agent.chat.extract import ExtractInput, PreferenceExtractor
from agent.chat.preferences import PreferenceUpdate, parse_message
from agent.errors import InputError
from agent.llm.base import LLMEngine
from agent.sessions import Turn
from agent.settings import Settings
from eval.compare import bootstrap_ratio_ci, paired_ratio_diff_ci
from eval.datasets import TitleIndex, turn_catalog_format
from eval.dialogues import dialogue_lines, is_dialogue_file, utterances
from eval.provenance import git_commit, load_average
from prompts import PromptRegistry
from retrieval.catalog import read_catalog
from retrieval.types import Item

__all__ = [
    "ARMS",
    "Case",
    "Counts",
    "LabelReport",
    "arm_settings",
    "parse_arms",
    "read_cases",
    "run_extraction_eval",
    "score",
]

ARMS = {
    "rules": "rules only (chat_extract=rules)",
    "llm-chat": "rules + LLM, chat layout (prompt_format=chat)",
    "llm-fewshot": "rules + LLM, few-shot layout (prompt_format=fewshot)",
    "llm-auto": "rules + LLM, the layout prompt_format=auto picks for the model",
}
LIKED, DISLIKED = 1, 0


@dataclass
class Case:
    """One seeker utterance that mentions movies, with what the chat would know at that point."""

    case_id: str
    dialog_id: str
    message: str
    turns: list[Turn]
    shown: list[str]
    mentioned: list[str]
    liked: set[str]
    disliked: set[str]
    ignored: set[str] = field(default_factory=set)


@dataclass
class LabelReport:
    dialogues: int = 0
    skipped: int = 0
    seeker_utterances: int = 0
    with_mentions: int = 0
    mentions: int = 0
    unmatched: int = 0
    liked: int = 0
    disliked: int = 0
    unsaid: int = 0
    disagreeing: int = 0


def _label(movie: str, dialogue: Mapping[str, Any]) -> int | None:
    """The seeker's ``liked`` answer for ``movie``: 1, 0, 2 (did not say); None when the two questionnaires differ."""
    answers = set()
    for key in ("initiatorQuestions", "respondentQuestions"):
        questions = dialogue.get(key)
        if isinstance(questions, dict) and isinstance(questions.get(movie), dict):
            liked = questions[movie].get("liked")
            if liked in (0, 1, 2):
                answers.add(int(liked))
    if len(answers) > 1:
        return None
    return answers.pop() if answers else 2


def _dialogue_cases(dialogue: dict[str, Any], ids: Callable[[str, str], str | None], report: LabelReport) -> list[Case]:
    seeker = dialogue.get("initiatorWorkerId")
    if seeker is None or not isinstance(dialogue.get("messages"), list):
        raise ValueError("a dialogue needs 'messages' and 'initiatorWorkerId'")
    names = {str(k): str(v) for k, v in (dialogue.get("movieMentions") or {}).items() if v}
    dialog_id = str(dialogue.get("conversationId", ""))
    turns: list[Turn] = []
    shown: list[str] = []
    cases = []
    for utt in utterances(dialogue):
        movies = [m for m in dict.fromkeys(ids(raw, names.get(raw, "")) for raw in utt["movie_ids"]) if m]
        if utt["sender"] == seeker:
            report.seeker_utterances += 1
            if utt["movie_ids"]:
                report.with_mentions += 1
                report.mentions += len(set(utt["movie_ids"]))
                report.unmatched += len(set(utt["movie_ids"])) - len(movies)
                raw_of = {ids(raw, names.get(raw, "")): raw for raw in utt["movie_ids"]}
                labels = {m: _label(raw_of[m], dialogue) for m in movies}
                case = Case(
                    case_id=f"{dialog_id}_{utt['turn_id']}",
                    dialog_id=dialog_id,
                    message=" ".join(utt["text"].split()),
                    turns=list(turns),
                    shown=list(shown),
                    mentioned=movies,
                    liked={m for m, v in labels.items() if v == LIKED},
                    disliked={m for m, v in labels.items() if v == DISLIKED},
                    ignored={m for m, v in labels.items() if v is None},
                )
                cases.append(case)
            role: Literal["user", "assistant"] = "user"
        else:
            role = "assistant"
            shown = movies
        shown_ids = movies if role == "assistant" else []
        turns.append(Turn(turn_id=len(turns) + 1, role=role, content=utt["text"], item_ids=shown_ids))
    return cases


def read_cases(path: Path, items: Mapping[str, Item]) -> tuple[list[Case], LabelReport]:
    """Every seeker utterance with a movie mention in the raw dialogues ``path`` (movies matched to ``items`` by
    id, else by the mention's name)."""
    if not path.is_file() or not is_dialogue_file(path):
        raise InputError(
            f"{path} is not a raw dialogue file (one JSON dialogue with 'messages' per line)",
            hint="give ReDial's dialogues.jsonl (or its folder): the extraction labels are its questionnaires",
        )
    index = TitleIndex(items.values())

    def ids(raw: str, name: str) -> str | None:
        if raw in items:
            return raw
        return index.match(name)[0] if name else None

    report = LabelReport()
    cases: list[Case] = []
    for _, dialogue in dialogue_lines(path):
        report.dialogues += 1
        try:
            found = _dialogue_cases(dialogue, ids, report) if isinstance(dialogue, dict) else None
        except ValueError:
            found = None
        if found is None:
            report.skipped += 1
            continue
        cases += found
    for case in cases:
        report.liked += len(case.liked)
        report.disliked += len(case.disliked)
        report.disagreeing += len(case.ignored)
        report.unsaid += len(set(case.mentioned) - case.liked - case.disliked - case.ignored)
    if not cases:
        raise InputError(
            f"{path}: no seeker utterance mentions a catalog movie ({report.dialogues} dialogues read)",
            hint="check that the catalog (movies.json) is the one the dialogues refer to",
        )
    return cases, report


# ------------------------------------------------------------------------------------------------ scoring
@dataclass
class Counts:
    """True / false positives and false negatives of one kind (liked or disliked) in one case."""

    tp: int = 0
    fp: int = 0
    fn: int = 0


def kept(update: PreferenceUpdate) -> tuple[set[str], set[str]]:
    """The liked and disliked items the chat keeps from ``update``."""
    return set(update.liked_ids) | set(update.accepted_ids), set(update.disliked_ids) | set(update.rejected_ids)


def score(case: Case, update: PreferenceUpdate) -> tuple[Counts, Counts]:
    """Liked and disliked counts of ``update`` against ``case``'s labels (movies with disagreeing labels skipped)."""
    liked, disliked = kept(update)
    out = []
    for predicted, gold in ((liked, case.liked), (disliked, case.disliked)):
        predicted = predicted - case.ignored
        out.append(Counts(tp=len(predicted & gold), fp=len(predicted - gold), fn=len(gold - predicted)))
    return out[0], out[1]


def _prf(counts: Sequence[Counts], seed: int) -> dict[str, Any]:
    tp, fp, fn = (sum(getattr(c, k) for c in counts) for k in ("tp", "fp", "fn"))
    tps = [c.tp for c in counts]
    out: dict[str, Any] = {"tp": tp, "fp": fp, "fn": fn}
    for name, nums, dens in (
        ("precision", tps, [c.tp + c.fp for c in counts]),
        ("recall", tps, [c.tp + c.fn for c in counts]),
        ("f1", [2 * c.tp for c in counts], [2 * c.tp + c.fp + c.fn for c in counts]),
    ):
        total = sum(dens)
        value = sum(nums) / total if total else 0.0
        lo, hi = bootstrap_ratio_ci(nums, dens, seed=seed) if total else (0.0, 0.0)
        out[name] = {"value": value, "ci_low": lo, "ci_high": hi}
    return out


def f1_terms(counts: Sequence[Counts]) -> tuple[list[float], list[float]]:
    """Per case the numerator (2 tp) and denominator (2 tp + fp + fn) of the pooled F1."""
    return [2.0 * c.tp for c in counts], [2.0 * c.tp + c.fp + c.fn for c in counts]


# ------------------------------------------------------------------------------------------------ arms
def parse_arms(specs: Sequence[str]) -> list[str]:
    """The arm names in ``specs`` (each one of :data:`ARMS`; default: rules, llm-chat, llm-fewshot)."""
    names = [s.strip() for spec in specs for s in spec.split(",") if s.strip()] or ["rules", "llm-chat", "llm-fewshot"]
    unknown = [n for n in names if n not in ARMS]
    if unknown:
        raise InputError(
            f"unknown --variant {', '.join(map(repr, unknown))}",
            hint="choose from " + "; ".join(f"{k}: {v}" for k, v in ARMS.items()),
        )
    return list(dict.fromkeys(names))


def arm_settings(settings: Settings, arm: str) -> Settings:
    if arm == "rules":
        return settings.model_copy(update={"chat_extract": "rules"})
    return settings.model_copy(update={"chat_extract": "llm", "prompt_format": arm.removeprefix("llm-")})


def _inputs(case: Case, settings: Settings) -> ExtractInput:
    return ExtractInput(
        message=case.message,
        conversation=turn_vars(case.turns, settings.chat_history_turns),
        shown=list(case.shown),
        recent=[t.content for t in case.turns[-4:]],
    )


@dataclass
class ArmResult:
    arm: str
    updates: list[PreferenceUpdate]
    llm_only: list[PreferenceUpdate | None]  # the LLM's checked update alone (None: rules arm or no usable answer)
    raw: list[str]
    failures: int
    layout: str
    seconds: float


def run_arm(
    arm: str,
    cases: Sequence[Case],
    index: CatalogIndex,
    settings: Settings,
    engine: LLMEngine | None,
    extractor: PreferenceExtractor,
    *,
    batch: int = 16,
    progress: Callable[[str, int, int], None] | None = None,
) -> ArmResult:
    """The chat's extraction of every case in one arm (rules, or rules + the LLM in one layout)."""
    s = arm_settings(settings, arm)
    started = time.perf_counter()
    updates = [parse_message(c.message, index, c.shown) for c in cases]
    raw = [""] * len(cases)
    llm_only: list[PreferenceUpdate | None] = [None] * len(cases)
    failures = 0
    layout = "rules"
    if s.chat_extract == "llm":
        if engine is None:
            raise InputError(f"arm {arm} needs an LLM engine", hint="configure one (`recagent config`) or use rules")
        layout = extractor.layout(s, engine)
        for at in range(0, len(cases), batch):
            chunk = list(range(at, min(at + batch, len(cases))))
            record: list[str] = []
            results = extractor.extract(engine, [_inputs(cases[i], s) for i in chunk], s, record=record)
            for i, result, text in zip(chunk, results, record, strict=True):
                raw[i] = text
                if isinstance(result, str):
                    failures += 1
                    continue
                llm_only[i] = result
                updates[i] = updates[i].merge(result)
            if progress is not None:
                progress(arm, chunk[-1] + 1, len(cases))
    return ArmResult(arm, updates, llm_only, raw, failures, layout, time.perf_counter() - started)


def _catalog(data: Path, catalog: Path | None) -> tuple[Path, dict[str, Item]]:
    dialogues = data / "dialogues.jsonl" if data.is_dir() else data
    source = catalog or dialogues.parent / "movies.json"
    if not dialogues.is_file():
        raise InputError(
            f"no dialogues file {dialogues}", hint="give ReDial's dialogues.jsonl or the folder holding it"
        )
    if not source.is_file():
        raise InputError(f"no catalog {source} beside the dialogues", hint="give the catalog with --catalog FILE")
    catalog_format, mapping = turn_catalog_format(source)
    read = read_catalog(source, format=catalog_format, mapping=mapping)
    return dialogues, {item.id: item for item in read.items}


def _llm_only(cases: Sequence[Case], res: ArmResult) -> dict[str, Any] | None:
    """The LLM's own checked extraction, without the rules (a diagnostic of the layout): liked / disliked title
    counts, and how many raw answers named any title at all."""
    if res.layout == "rules":
        return None
    scored = [score(c, u or PreferenceUpdate()) for c, u in zip(cases, res.llm_only, strict=True)]
    named = 0
    for text in res.raw:
        try:
            value = json.loads(text)
        except ValueError:
            continue
        if isinstance(value, dict) and (value.get("liked_titles") or value.get("disliked_titles")):
            named += 1
    return {
        "liked": {k: sum(getattr(s[0], k) for s in scored) for k in ("tp", "fp", "fn")},
        "disliked": {k: sum(getattr(s[1], k) for s in scored) for k in ("tp", "fp", "fn")},
        "answers_naming_a_title": named,
    }


def run_extraction_eval(
    settings: Settings,
    data: Path,
    *,
    messages: int,
    seed: int,
    arms: Sequence[str],
    catalog: Path | None = None,
    engine: LLMEngine | None = None,
    batch: int = 16,
    progress: Callable[[str, int, int], None] | None = None,
) -> dict[str, Any]:
    """Sample ``messages`` seeker utterances (``seed``), run every arm, score: the results as a JSON-able dict."""
    meta: dict[str, Any] = {
        "commit": git_commit(),
        "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "loadavg_start": load_average(),
        "cpu": f"{os.cpu_count()} cores",
    }
    if messages < 1:
        raise InputError(f"--messages {messages}: give at least 1", hint="e.g. --messages 150")
    dialogues, items = _catalog(Path(data), catalog)
    cases, labels = read_cases(dialogues, items)
    drawn = sorted(random.Random(seed).sample(range(len(cases)), min(messages, len(cases))))
    cases = [cases[i] for i in drawn]
    index = CatalogIndex(items.values())
    extractor = PreferenceExtractor(index, PromptRegistry())
    own = None
    if engine is None and any(arm != "rules" for arm in arms):
        from agent.llm import create_engine

        engine = own = create_engine(settings)
    try:
        results = [run_arm(a, cases, index, settings, engine, extractor, batch=batch, progress=progress) for a in arms]
    finally:
        if own is not None:
            own.close()
    per_arm: dict[str, Any] = {}
    terms: dict[str, dict[str, tuple[list[float], list[float]]]] = {}
    for res in results:
        scored = [score(c, u) for c, u in zip(cases, res.updates, strict=True)]
        liked, disliked = [s[0] for s in scored], [s[1] for s in scored]
        terms[res.arm] = {"liked": f1_terms(liked), "disliked": f1_terms(disliked)}
        per_arm[res.arm] = {
            "description": ARMS[res.arm],
            "layout": res.layout,
            "liked": _prf(liked, seed),
            "disliked": _prf(disliked, seed),
            "llm_failures": res.failures,
            "llm_only": _llm_only(cases, res),
            "seconds": res.seconds,
            "seconds_per_message": res.seconds / len(cases),
        }
    pairs = []
    for i, a in enumerate(arms):
        for b in arms[:i]:
            for kind in ("liked", "disliked"):
                (na, da), (nb, db) = terms[a][kind], terms[b][kind]
                lo, hi = paired_ratio_diff_ci(na, da, nb, db, seed=seed)
                diff = per_arm[a][kind]["f1"]["value"] - per_arm[b][kind]["f1"]["value"]
                pairs.append({"a": a, "b": b, "kind": kind, "diff": diff, "ci_low": lo, "ci_high": hi})
    samples = []
    for ci, case in enumerate(cases):
        row: dict[str, Any] = {
            "case": case.case_id,
            "message": case.message,
            "gold_liked": sorted(items[m].title for m in case.liked),
            "gold_disliked": sorted(items[m].title for m in case.disliked),
        }
        for res in results:
            got_liked, got_disliked = kept(res.updates[ci])
            row[res.arm] = {"liked": sorted(items[m].title if m in items else m for m in got_liked),
                            "disliked": sorted(items[m].title if m in items else m for m in got_disliked),
                            "raw": res.raw[ci][:400]}  # fmt: skip
        samples.append(row)
    meta["loadavg_end"] = load_average()
    return {
        "meta": meta,
        "data": str(dialogues),
        "messages": len(cases),
        "seed": seed,
        "arms": list(arms),
        "labels": labels.__dict__,
        "gold": {
            "liked": sum(len(c.liked) for c in cases),
            "disliked": sum(len(c.disliked) for c in cases),
            "ignored": sum(len(c.ignored) for c in cases),
            "mentioned": sum(len(c.mentioned) for c in cases),
        },
        "model": engine.model_id if engine is not None else None,
        "engine": engine.describe() if engine is not None else None,
        "prompt_version": PromptRegistry().get("extract_preferences").version_id,
        "per_arm": per_arm,
        "paired": pairs,
        "samples": samples,
    }


# ------------------------------------------------------------------------------------------------ report
def _cell(m: Mapping[str, Any]) -> str:
    return f"{m['value']:.3f} [{m['ci_low']:.3f}, {m['ci_high']:.3f}]"


def _titles(titles: Sequence[str]) -> str:
    return "; ".join(titles) or "-"


def extraction_markdown(results: Mapping[str, Any], *, command: str = "", samples: int = 12) -> str:
    """The report of :func:`run_extraction_eval`'s results (Markdown)."""
    labels, gold = results["labels"], results["gold"]
    lines = [
        "# Preference extraction: liked and disliked titles against ReDial's questionnaires",
        "",
        "How well the chat's preference extraction (what `agent/chat/conversation.py` keeps from a message: the "
        "rules, then the LLM extraction checked against the catalog and the message) finds the titles the seeker "
        "likes and dislikes. Method: `eval/extraction.py` (module doc).",
        "",
    ]
    if command:
        lines += [f"Command: `{command}`", ""]
    meta = results.get("meta", {})
    lines += [
        f"- data: `{results['data']}`; {results['messages']} seeker utterances that mention movies, drawn with seed "
        f"{results['seed']} from {labels['with_mentions']} ({labels['dialogues']} dialogues)",
        f"- gold in the sample: {gold['liked']} liked, {gold['disliked']} disliked, "
        f"{gold['mentioned'] - gold['liked'] - gold['disliked'] - gold['ignored']} mentioned without an opinion, "
        f"{gold['ignored']} left out (the two questionnaires disagree)",
        f"- in all the data: {labels['liked']} liked, {labels['disliked']} disliked, {labels['unsaid']} unsaid, "
        f"{labels['disagreeing']} disagreeing mentions",
        f"- model: {results.get('model') or '-'}; prompt `{results['prompt_version']}`",
    ]
    for key in ("commit", "when", "loadavg_start", "loadavg_end", "cpu"):
        if meta.get(key):
            lines.append(f"- {key}: {meta[key]}")
    lines += [
        "",
        "## Results (micro-averaged over the sample; 95 % bootstrap CIs, resampling utterances)",
        "",
        "| arm | layout | liked P | liked R | liked F1 | disliked P | disliked R | disliked F1 | LLM answers unusable "
        "| s / message |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for arm, row in results["per_arm"].items():
        lines.append(
            f"| {arm} | {row['layout']} | {_cell(row['liked']['precision'])} | {_cell(row['liked']['recall'])} | "
            f"{_cell(row['liked']['f1'])} | {_cell(row['disliked']['precision'])} | "
            f"{_cell(row['disliked']['recall'])} | {_cell(row['disliked']['f1'])} | {row['llm_failures']} | "
            f"{row['seconds_per_message']:.2f} |"
        )
    lines += ["", "Counts (tp / fp / fn):", ""]
    for arm, row in results["per_arm"].items():
        liked, disliked = row["liked"], row["disliked"]
        lines.append(
            f"- {arm}: liked {liked['tp']} / {liked['fp']} / {liked['fn']}; "
            f"disliked {disliked['tp']} / {disliked['fp']} / {disliked['fn']}"
        )
    only = {arm: row["llm_only"] for arm, row in results["per_arm"].items() if row.get("llm_only")}
    if only:
        lines += [
            "",
            "The LLM's own extraction (its checked update alone, without the rules; tp / fp / fn), and how many raw "
            "answers named any title:",
            "",
        ]
        for arm, row in only.items():
            liked, disliked = row["liked"], row["disliked"]
            lines.append(
                f"- {arm}: liked {liked['tp']} / {liked['fp']} / {liked['fn']}; disliked {disliked['tp']} / "
                f"{disliked['fp']} / {disliked['fn']}; answers naming a title: {row['answers_naming_a_title']} of "
                f"{results['messages']}"
            )
    if results["paired"]:
        lines += [
            "",
            "## Paired differences of F1 (a - b, same utterances, 95 % bootstrap CI)",
            "",
            "| a | b | kind | F1 a - b | CI |",
            "| --- | --- | --- | --- | --- |",
        ]
        for p in results["paired"]:
            lines.append(
                f"| {p['a']} | {p['b']} | {p['kind']} | {p['diff']:+.3f} | [{p['ci_low']:+.3f}, {p['ci_high']:+.3f}] |"
            )
    lines += ["", f"## Samples (the first {samples} utterances of the sample, verbatim)", ""]
    for row in results["samples"][:samples]:
        lines += [
            f"**{row['case']}**: {row['message']}",
            "",
            f"- gold liked: {_titles(row['gold_liked'])}; gold disliked: {_titles(row['gold_disliked'])}",
        ]
        for arm in results["per_arm"]:
            got = row[arm]
            raw = f" (LLM: `{' '.join(got['raw'].split())[:300]}`)" if got.get("raw") else ""
            lines.append(f"- {arm}: liked {_titles(got['liked'])}; disliked {_titles(got['disliked'])}{raw}")
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def write_report(results: Mapping[str, Any], out: Path, *, command: str = "") -> Path:
    """``out`` (Markdown) and the results beside it (``out`` with ``.json``)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(extraction_markdown(results, command=command), encoding="utf-8")
    out.with_suffix(".json").write_text(json.dumps(results, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return out
