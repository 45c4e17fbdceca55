"""Listwise strategy: the model writes ``{"ranking": [{"id", "justification"}]}`` under a per-request JSON schema
whose ``id`` enum is that request's candidates.

Repeated ids are dropped (``duplicates``), ids outside the candidate set (servers without grammar support) are
dropped (``off_candidate``), and candidates the model left out are ranked after the ones it listed, in
retrieval order (``appended_missing``). Orders are aggregated with Borda counts: in a list of ``n`` candidates
the item at position ``j`` (0-based) of the model's ``L`` items gets ``n - j`` points, the unlisted ones share
the remaining points equally; the LLM score is the mean over orders of ``points / n``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from agent.explain import instruction_text, quotes_prompt
from agent.llm.base import Generation, LLMEngine
from agent.llm.batching import CallFailure, call_batch, json_value
from agent.rerank.job import Job
from agent.rerank.strategy import PromptStrategy, RankRequest
from prompts import PromptRegistry, listwise_schema

__all__ = ["ListwiseStrategy", "borda_vector", "listwise_max_tokens", "parse_ranking"]

ENTRY_TOKENS = 90  # '{"id":"..","justification":"<= 200 chars"}' on a ~4 chars/token tokenizer, with slack


class _Entry(BaseModel):
    model_config = ConfigDict(extra="ignore")
    id: str
    justification: str = ""


class _Ranking(BaseModel):
    model_config = ConfigDict(extra="ignore")
    ranking: list[_Entry]


def listwise_max_tokens(k: int, ids: Sequence[str]) -> int:
    longest = max((len(i) for i in ids), default=8)
    return 16 + k * (ENTRY_TOKENS + longest)


def parse_ranking(gen: Generation | str) -> list[tuple[str, str]] | None:
    """``[(id, justification)]`` as the model wrote it, or None when the output is not a ranking. A string is
    the raw text of an output the engine's strict JSON parser refused (raw control characters are accepted)."""
    value = json_value(gen)
    if value is None:
        return None
    if isinstance(value, dict) and isinstance(value.get("ranking"), list):
        # accept bare id strings too (a looser schema variant)
        value = {"ranking": [{"id": e} if isinstance(e, str) else e for e in value["ranking"]]}
    try:
        return [(e.id, e.justification) for e in _Ranking.model_validate(value).ranking]
    except ValidationError:
        return None


def borda_vector(n: int, listed: Sequence[int]) -> list[float]:
    """Borda share per candidate position (see module doc)."""
    rest = (n - len(listed) + 1) / 2
    points = [rest] * n
    for j, i in enumerate(listed):
        points[i] = float(n - j)
    return [p / n for p in points]


class ListwiseStrategy(PromptStrategy):
    """One generate call for every order of every job; each request's ``unit`` is its order (a permutation)."""

    name = "listwise"
    lists_items = True

    def __init__(self) -> None:
        self.borda: dict[int, list[list[float]]] = {}  # job index -> one Borda vector per usable order

    def render(self, registry: PromptRegistry, job: Job) -> list[RankRequest]:
        cfg = job.config
        mine = []
        for perm in job.orders():
            shown = [job.cands[i] for i in perm]
            rendered = registry.render(
                cfg.listwise_template,
                {
                    "history": job.ctx.user.prompt_history(cfg.history_limit),
                    "need": job.ctx.user.prompt_need(),
                    "candidates": [c.prompt_vars(include_text=cfg.include_text) for c in shown],
                    "k": job.k,
                },
                allow_extra=True,
            )
            job.add_version(rendered.version_id)
            mine.append(RankRequest(job, perm, rendered.chat_messages(), listwise_schema([c.id for c in shown], job.k)))
        return mine

    def call(self, engine: LLMEngine, requests: Sequence[RankRequest], timeout: float | None) -> Sequence[Any]:
        first = requests[0].job.config
        max_tokens = max(
            r.job.config.max_tokens or listwise_max_tokens(r.job.k, [c.id for c in r.job.cands]) for r in requests
        )
        outcome = call_batch(
            engine,
            len(requests),
            lambda idx: engine.generate(
                [requests[i].messages for i in idx],
                json_schema=[requests[i].schema for i in idx],
                max_tokens=max_tokens,
                temperature=first.temperature,
                seed=first.seed,
            ),
            timeout=timeout,
        )
        return outcome.results

    def parse(self, request: RankRequest, result: Generation | CallFailure) -> None:
        job, perm = request.job, request.unit
        parsed = _read_result(job, result)
        if parsed is None:
            return
        position = {job.cands[i].id: i for i in perm}
        instructions = instruction_text(request.messages)
        listed: list[int] = []
        for item_id, justification in parsed:
            i = position.get(item_id)
            if i is None:
                job.off_candidate += 1
            elif i in listed:
                job.duplicates += 1
            else:
                listed.append(i)
                # a justification that recites the prompt is no draft: the item is explained again
                if justification.strip() and i not in job.drafts and not quotes_prompt(justification, instructions):
                    job.drafts[i] = justification.strip()
        if not listed:
            job.reasons.append("empty")
            return
        job.listed.update(listed)
        self.borda.setdefault(job.index, []).append(borda_vector(job.n, listed))

    def vectors(self, job: Job) -> list[list[float]]:
        return self.borda.get(job.index, [])


def _read_result(job: Job, result: Generation | CallFailure) -> list[tuple[str, str]] | None:
    """Account one result on the job and read its ranking; None when there is nothing to rank by."""
    raw = getattr(result.error, "raw", None) if isinstance(result, CallFailure) else None
    if isinstance(result, CallFailure) and result.reason == "invalid_output" and isinstance(raw, str):
        parsed = parse_ranking(raw)  # complete JSON the strict parser refused: usable
        if parsed is None:
            job.took(result)
            return None
        job.llm_calls += 1
        job.raw.append(raw)
    elif isinstance(result, CallFailure):
        job.took(result)
        return None
    else:
        job.took(result)
        parsed = parse_ranking(result)
    if parsed is None:
        job.parse_failures += 1
        job.reasons.append("invalid_output")
    return parsed
