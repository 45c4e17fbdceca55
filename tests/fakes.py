"""A scripted, recording LLM engine and small generic catalogs for the ranking tests."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from agent.errors import InputError
from agent.llm.base import (
    Generation,
    LLMEngine,
    LLMRequest,
    OptionScores,
    RequestLike,
    SchemaArg,
    check_labels,
    cut_at_stop,
    parse_outputs,
    schemas_per_request,
)
from agent.schemas import CandidateItem, HistoryItem, UserContext
from retrieval.types import Candidate, Item, SourceHit

_OPTION = re.compile(r"^Option \((\w)\)\n<<<ITEM>>>\ntitle: (.*)$", re.MULTILINE)
_ID = re.compile(r"^<<<CANDIDATE>>>\nid: (.*)$", re.MULTILINE)
_CANDIDATE_TITLE = re.compile(r"^<<<CANDIDATE>>>\n(?:id: .*\n)?title: (.*)$", re.MULTILINE)
_ITEM_TITLE = re.compile(r"^<<<ITEM>>>\ntitle: (.*)$", re.MULTILINE)


@dataclass
class Call:
    method: str
    requests: list[LLMRequest]
    schemas: list[dict[str, Any] | None] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)
    max_tokens: int = 0
    temperature: float = 0.0
    seed: int = 0
    stop: list[str] = field(default_factory=list)


def text_of(request: LLMRequest) -> str:
    if request.prompt is not None:
        return request.prompt
    return "\n\n".join(m.content for m in request.messages or ())


def kind_of(request: LLMRequest) -> str:
    text = text_of(request)
    if text.endswith("Answer: ("):
        return "options"
    if text.endswith("Answer (Yes or No):"):
        return "pointwise"
    if "You explain recommendations" in text:
        return "explain"
    if '"ranking"' in text:
        return "listwise"
    return "other"


def option_titles(request: LLMRequest) -> dict[str, str]:
    """label -> title of an option prompt."""
    return dict(_OPTION.findall(text_of(request)))


def listwise_ids(request: LLMRequest) -> list[str]:
    return _ID.findall(text_of(request))


def candidate_title(request: LLMRequest) -> str:
    return _CANDIDATE_TITLE.findall(text_of(request))[0]


def explained_title(request: LLMRequest) -> str:
    return _ITEM_TITLE.findall(text_of(request))[0]


GenerateFn = Callable[[LLMRequest, dict[str, Any] | None], "str | Generation"]
ScoreFn = Callable[[LLMRequest, list[str]], dict[str, float]]


class FakeEngine(LLMEngine):
    """Records every call; answers with ``generate_fn`` / ``score_fn``. Like the real engines, a json_schema
    output that does not parse raises StructuredOutputError for the whole batch (``validate=True``)."""

    backend = "fake"

    def __init__(
        self,
        generate_fn: GenerateFn | None = None,
        score_fn: ScoreFn | None = None,
        *,
        error: Exception | None = None,
        delay_s: float = 0.0,
        single_tokens: set[str] | None = None,
        model_id: str = "fake-model",
        validate: bool = True,
    ) -> None:
        self.generate_fn = generate_fn or (lambda req, schema: "{}")
        self.score_fn = score_fn or (lambda req, labels: dict.fromkeys(labels, -1.0))
        self.error = error
        self.delay_s = delay_s
        self.single_tokens = single_tokens
        self.model_id = model_id
        self.validate = validate
        self.calls: list[Call] = []
        self.active = 0
        self.max_active = 0

    def _wait(self) -> None:
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        time.sleep(self.delay_s)
        self.active -= 1

    def methods(self) -> list[str]:
        return [c.method for c in self.calls]

    def generate(
        self,
        requests: Sequence[RequestLike],
        *,
        json_schema: SchemaArg = None,
        max_tokens: int = 256,
        temperature: float = 0.0,
        seed: int = 0,
        stop: Sequence[str] | None = None,
    ) -> list[Generation]:
        reqs = [LLMRequest.of(r) for r in requests]
        schemas = schemas_per_request(json_schema, len(reqs))
        self.calls.append(Call("generate", reqs, schemas, [], max_tokens, temperature, seed, list(stop or [])))
        self._wait()
        if self.error is not None:
            raise self.error
        out = []
        for req, schema in zip(reqs, schemas, strict=True):
            got = self.generate_fn(req, schema)
            if stop and isinstance(got, str) and cut_at_stop(got, stop) != got:
                got = Generation(text=cut_at_stop(got, stop), prompt_tokens=len(text_of(req)) // 4,
                                 completion_tokens=len(got) // 4 + 1, finish_reason="stop")  # fmt: skip
            gen = (
                got
                if isinstance(got, Generation)
                else Generation(
                    text=got,
                    prompt_tokens=len(text_of(req)) // 4,
                    completion_tokens=len(got) // 4 + 1,
                    finish_reason="stop",
                )
            )
            out.append(gen)
        return parse_outputs(out, schemas) if self.validate else out

    def score_options(self, requests: Sequence[RequestLike], labels: Sequence[str]) -> list[OptionScores]:
        reqs = [LLMRequest.of(r) for r in requests]
        names = check_labels(labels)
        self.calls.append(Call("score_options", reqs, [], names))
        self._wait()
        if self.single_tokens is not None:
            bad = [lab for lab in names if lab not in self.single_tokens]
            if bad:
                raise InputError(
                    f"label {bad[0]!r} is 2 tokens for this model's tokenizer; option scoring needs one-token labels"
                )
        if self.error is not None:
            raise self.error
        out = []
        for req in reqs:
            scores = self.score_fn(req, names)
            out.append(
                OptionScores(
                    logprobs={lab: float(scores[lab]) for lab in names},
                    prompt_tokens=len(text_of(req)) // 4,
                    exact=dict.fromkeys(names, True),
                )
            )
        return out


# ------------------------------------------------------------------------------------------------ a scripted model
class Taste:
    """A fake model with a fixed preference per title (higher = better); unknown titles score 0.

    ``position_bias`` adds ``bias * position`` to option label i's logit (the last option favoured, like the
    default model)."""

    def __init__(self, prefs: dict[str, float], *, position_bias: float = 0.0) -> None:
        self.prefs = prefs
        self.position_bias = position_bias

    def pref(self, title: str) -> float:
        return self.prefs.get(title, 0.0)

    def score(self, req: LLMRequest, labels: list[str]) -> dict[str, float]:
        kind = kind_of(req)
        if kind == "options":
            titles = option_titles(req)
            out = {}
            for i, lab in enumerate(labels):
                content = self.pref(titles[lab]) if lab in titles else -30.0
                out[lab] = content + self.position_bias * i - 10.0
            return out
        if kind == "pointwise":
            p = self.pref(candidate_title(req))
            return {lab: (p if "Yes" in lab else -p) - 5.0 for lab in labels}
        return dict.fromkeys(labels, -5.0)

    def generate(self, req: LLMRequest, schema: dict[str, Any] | None) -> str:
        kind = kind_of(req)
        if kind == "listwise":
            assert schema is not None
            k = schema["properties"]["ranking"]["minItems"]
            ids = listwise_ids(req)
            titles = _CANDIDATE_TITLE.findall(text_of(req))
            ranked = sorted(zip(ids, titles, strict=True), key=lambda p: -self.pref(p[1]))[:k]
            return json.dumps({"ranking": [{"id": i, "justification": f"You may like {t}."} for i, t in ranked]})
        if kind == "explain":
            return grounded_explanation(req, schema)
        return "{}"


def grounded_explanation(req: LLMRequest, schema: dict[str, Any] | None) -> str:
    """An explain answer that cites the item's first attribute line truthfully."""
    text = text_of(req)
    block = text.split("<<<ITEM>>>\n", 1)[1].split("\n<<<END>>>", 1)[0].splitlines()
    title = block[0].removeprefix("title: ")
    field_line = next((line for line in block[1:] if ": " in line), None)
    if field_line is None:
        return json.dumps({"justification": f"{title} suits you.", "cited": [{"field": "title", "value": title}]})
    name, value = field_line.split(": ", 1)
    first = value.split(", ")[0]
    return json.dumps({"justification": f"It has {first}.", "cited": [{"field": name, "value": first}]})


# ------------------------------------------------------------------------------------------------ data
GENRES = ["Comedy", "Drama", "Thriller", "Romance", "Horror", "Fantasy", "Mystery", "Science"]


def make_candidates(n: int, *, prefix: str = "b") -> list[CandidateItem]:
    """Generic books: ids b0..b{n-1}, titles 'Book 0'.., retrieval order = list order."""
    out = []
    for i in range(n):
        item = Item(
            id=f"{prefix}{i}",
            title=f"Book {i}",
            texts={"description": f"A story numbered {i} about people and places."},
            metadata={
                "genres": [GENRES[i % len(GENRES)], GENRES[(i + 3) % len(GENRES)]],
                "year": 1980 + i,
                "author": f"Author {i % 3}",
            },
        )
        cand = Candidate(
            item_id=item.id, score=1.0 / (i + 1), sources={"semantic": SourceHit(rank=i + 1, score=0.9 - i / 100)}
        )
        out.append(CandidateItem(item=item, candidate=cand))
    return out


def make_user(**kw: Any) -> UserContext:
    history = [
        HistoryItem(title="Earlier Book", attributes={"genres": ["Comedy", "Romance"], "year": 1995}, rating=5),
        HistoryItem(title="Another Read", attributes={"genres": ["Comedy"], "author": "Author 1"}, rating=4),
    ]
    return UserContext(user_id=kw.pop("user_id", "u1"), history=kw.pop("history", history), **kw)
