"""Multi-turn conversational recommendations over the one Recommender pipeline.

Per user message (several sessions' messages share each engine call, see :meth:`Conversation.send_many`):

1. **Rules** (:mod:`agent.chat.preferences`): catalog titles, references to the last list ("the second one", "not that
   one"), attribute values ("no horror"), numbers and comparatives ("after 2010", "older") -> a preference update.
2. **LLM extraction** (:mod:`agent.chat.extract`: template ``extract_preferences`` in the layout ``prompt_format``
   picks for the engine, structured output ``preferences_schema``): the same kinds of update; every part must check
   out against the catalog (titles and values exist) and the message (anything that removes items must be grounded
   in the user's words). The rules win where the two disagree. Engine failures never
   raise: the turn goes on with the rules.
3. **State**: the update is folded into the session's preferences, which persist across turns (constraints hold
   until changed; rejected items never come back; shown items are not shown again).
4. Nothing positive to go on (no need, no liked item or value, no range, no user history) -> a clarifying question,
   no items.
5. **Recommend**: a RecommendRequest (need + liked attributes as the query, liked items as seeds, shown / rejected /
   disliked items and items with an excluded value left out, constraints as filters) through
   ``Recommender.recommend_many``.
6. **Reply** (template ``chat_reply``): kept only when :func:`agent.chat.reply.check_reply` passes; otherwise a
   template reply that names every title. :meth:`Conversation.stream` streams it from ``engine.stream`` as it is
   decoded (``delta`` events), and says ``replace`` when the checked reply differs from what was streamed.
7. **Commit**: the user turn, the assistant turn and the new state in one store transaction.

Prompts put the stable parts first so that an engine with prefix caching serves the shared prefix of later turns
from cache. The reply prompt is an append-only transcript (:func:`agent.chat.reply.reply_messages`): the
instructions, then per earlier turn its message, the items shown for it and the reply as sent, then this turn's
message and items; each turn's prompt is the previous one plus its reply plus the new turn - as chat messages for
an instruct model, as few-shot text (:func:`agent.chat.reply.reply_text`: worked turns built from the collection's
items, then the transcript) for a base model (``prompt_format``). After a streamed turn, the next prompt's start up
to the reply as sent is prefilled (:meth:`Conversation.warm_next_reply`, ``chat_reply_warm``). The extraction prompt
shows the instructions, the earlier turns' texts, then the new message. The earlier turns shown are a window that
moves in steps (:func:`stable_window`), not one turn at a time, so that consecutive turns' prompts share it byte
for byte.

Streamed turns (:meth:`Conversation.stream`, ``chat_justify_later``) show the items at once with template reasons,
stream the reply, then fill in the LLM justifications (``justification`` events). Every ChatReply carries the turn's
``timings`` (seconds from the turn's start; ``ttft_s``: the first reply text shown).
"""

from __future__ import annotations

import itertools
import logging
import queue
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, trim_messages
from pydantic import BaseModel, ConfigDict, Field

from agent.chat.avoid import AppliedAvoidance, AvoidancePolicy, demote
from agent.chat.catalog import CatalogIndex
from agent.chat.extract import EXTRACT_TEMPLATE, ExtractInput, PreferenceExtractor
from agent.chat.preferences import PreferenceUpdate, apply_update, parse_message
from agent.chat.reply import (
    REPLY_STOP,
    REPLY_TEMPLATE,
    Exchange,
    ReplyShaper,
    check_reply,
    clarifying_reply,
    clean_reply,
    reply_examples,
    reply_instructions,
    reply_item,
    reply_messages,
    reply_text,
    template_reply,
    which_one_reply,
)
from agent.errors import InputError, RecagentError
from agent.explain_fewshot import resolve_layout
from agent.llm.base import accepts_stop
from agent.llm.batching import CallFailure, call_batch, failure_reason
from agent.pipeline import CandidateRefiner, ExplainWhen, Recommendation, Recommender, RecommendRequest
from agent.sessions import Preferences, SessionState, SessionStore, Turn
from agent.settings import Settings
from retrieval.avoid import ConceptMatcher, background_texts
from retrieval.types import Candidate

__all__ = [
    "EXTRACT_TEMPLATE",
    "ChatEvent",
    "ChatReply",
    "Conversation",
    "history_messages",
    "stable_window",
    "turn_vars",
]

log = logging.getLogger(__name__)


class ChatReply(BaseModel):
    model_config = ConfigDict(extra="forbid")

    session_id: str
    turn_id: int = Field(description="Id of the assistant turn.")
    reply: str
    clarifying: bool = Field(description="True when the reply is a question and no items are recommended.")
    recommendation: Recommendation | None = None
    preferences: Preferences
    request_id: str
    avoidances: list[AppliedAvoidance] = Field(
        default_factory=list, description="How the session's avoidances were applied to this turn's candidates."
    )
    timings: dict[str, float] = Field(
        default_factory=dict,
        description="Seconds from the turn's start: items_s (items ready), ttft_s (first reply text shown; streamed "
        "turns), reply_s, justified_s (later justifications written), total_s; reply_ttft_s: from the reply's "
        "engine call to its first token.",
    )


class ChatEvent(BaseModel):
    """One step of a streamed turn: ``preferences``, ``items``, ``delta`` (``text``: reply text to append),
    ``replace`` (``text``: the reply to show instead of the deltas so far, ``reason``), ``justification`` (one
    item's LLM justification written after the reply, :class:`agent.later.JustificationEvent`), then ``done`` (the
    :class:`ChatReply`) or ``error``."""

    model_config = ConfigDict(extra="forbid")

    event: Literal["preferences", "items", "delta", "replace", "justification", "done", "error"]
    data: dict[str, Any] = Field(default_factory=dict)


def history_messages(turns: Sequence[Turn], max_turns: int | None = None) -> list[BaseMessage]:
    """The turns as LangChain messages (HumanMessage / AIMessage), the last ``max_turns`` of them, starting with a
    user turn."""
    messages: list[BaseMessage] = [
        HumanMessage(content=t.content, id=str(t.turn_id))
        if t.role == "user"
        else AIMessage(content=t.content, id=str(t.turn_id))
        for t in turns
    ]
    if max_turns is None:
        return messages
    if max_turns <= 0:
        return []
    return list(trim_messages(messages, max_tokens=max_turns, token_counter=len, strategy="last", start_on="human"))


def stable_window(turns: Sequence[Turn], max_turns: int, step: int | None = None) -> list[Turn]:
    """The earlier turns a prompt shows: all while they fit in ``max_turns``; then a window that starts at a
    multiple of ``step`` turns (whole user/assistant pairs; default about half the window) and grows until it is
    full, so that consecutive turns' prompts share the shown history byte for byte (an engine's prefix cache
    serves it) except when the window moves. Starts on a user turn; never more than ``max_turns`` turns."""
    if max_turns <= 0:
        return []
    n = len(turns)
    if n <= max_turns:
        start = 0
    else:
        pairs = (max_turns // 2 + 1) // 2 if step is None else min(step, max_turns) // 2
        step = 2 * max(1, pairs)
        start = -(-(n - max_turns) // step) * step
    while start < n and turns[start].role != "user":
        start += 1
    return list(turns[start:])


def turn_vars(turns: Sequence[Turn], max_turns: int) -> list[dict[str, str]]:
    """Earlier turns as the extraction prompt's ``conversation`` variable: ``{role, content}``, oldest first, in the
    :func:`stable_window` of ``max_turns``."""
    return [
        {"role": "user" if isinstance(m, HumanMessage) else "assistant", "content": str(m.content)}
        for m in history_messages(stable_window(turns, max_turns))
    ]


@dataclass
class _Work:
    """One message on its way through the stages."""

    session_id: str
    message: str
    request_id: str
    state: SessionState | None = None
    error: RecagentError | None = None
    shown: list[str] = field(default_factory=list)
    update: PreferenceUpdate = field(default_factory=PreferenceUpdate)
    clarifying: bool = False
    request: RecommendRequest | None = None
    recommendation: Recommendation | None = None
    avoidances: list[AppliedAvoidance] = field(default_factory=list)
    reply: str = ""
    reply_source: str = "template"
    result: ChatReply | None = None
    started: float = field(default_factory=time.perf_counter)
    timings: dict[str, float] = field(default_factory=dict)

    def mark(self, name: str) -> None:
        """Record ``name`` (seconds since the turn started) once."""
        self.timings.setdefault(name, round(time.perf_counter() - self.started, 3))

    @property
    def alive(self) -> bool:
        return self.error is None and self.state is not None


class Conversation:
    """Chat sessions over a :class:`Recommender` and a :class:`SessionStore` (see the module docstring)."""

    def __init__(self, recommender: Recommender, store: SessionStore, settings: Settings) -> None:
        self.recommender = recommender
        self.store = store
        self.settings = settings
        self._index: CatalogIndex | None = None
        self._index_lock = threading.Lock()
        self._policy: AvoidancePolicy | None = None
        self._extractor: PreferenceExtractor | None = None
        self._reply_examples: list[Exchange] | None = None

    # -- catalog words -------------------------------------------------------------------------------------
    @property
    def index(self) -> CatalogIndex:
        """Titles and attribute values of the collection (read once, on first use)."""
        with self._index_lock:
            if self._index is None:
                started = time.perf_counter()
                self._index = CatalogIndex.from_collection(self.recommender.collection)
                log.info("chat catalog index: %d items in %.1fs", self._index.size, time.perf_counter() - started)
            return self._index

    @property
    def extractor(self) -> PreferenceExtractor:
        """The LLM preference extraction over the catalog index (:mod:`agent.chat.extract`)."""
        index = self.index
        with self._index_lock:
            if self._extractor is None:
                self._extractor = PreferenceExtractor(index, self.recommender.registry)
            return self._extractor

    @property
    def policy(self) -> AvoidancePolicy:
        """The avoidance policy over the collection's embedder, centred on the catalog's common values."""
        index = self.index
        with self._index_lock:
            if self._policy is None:
                background = background_texts(index.metadata.values())
                matcher = ConceptMatcher(
                    self.recommender.embedder, self.settings.chat_avoid_threshold, background=background
                )
                self._policy = AvoidancePolicy(matcher)
            return self._policy

    # -- sessions ------------------------------------------------------------------------------------------
    def start(self, user_id: str | None = None) -> SessionState:
        if user_id is not None and not user_id.strip():
            raise InputError("the user id is empty", hint="give a user id or leave it out")
        return self.store.create(user_id)

    def get(self, session_id: str) -> SessionState:
        return self.store.get(session_id)

    # -- turns ---------------------------------------------------------------------------------------------
    def send(self, session_id: str, message: str, *, request_id: str | None = None) -> ChatReply:
        out = self.send_many([(session_id, message)], request_ids=[request_id])[0]
        if isinstance(out, RecagentError):
            raise out
        return out

    def send_many(
        self, messages: Sequence[tuple[str, str]], *, request_ids: Sequence[str | None] | None = None
    ) -> list[ChatReply | RecagentError]:
        """Several sessions' messages; each stage's LLM work goes to the engine in one call. Messages for the same
        session are answered in order (one per round), each seeing the turns before it."""
        ids = list(request_ids) if request_ids is not None else [None] * len(messages)
        if len(ids) != len(messages):
            raise InputError(f"got {len(ids)} request ids for {len(messages)} messages", hint="pass one per message")
        works = [_Work(s, m, r or uuid.uuid4().hex) for (s, m), r in zip(messages, ids, strict=True)]
        pending = list(range(len(works)))
        while pending:
            this_round: list[int] = []
            later: list[int] = []
            seen: set[str] = set()
            for i in pending:
                (later if works[i].session_id in seen else this_round).append(i)
                seen.add(works[i].session_id)
            batch = [works[i] for i in this_round]
            for _ in self._stages(batch):
                pass
            pending = later
        return [w.result if w.result is not None else w.error or _lost(w) for w in works]

    def stream(
        self, session_id: str, message: str, *, request_id: str | None = None, raise_errors: bool = False
    ) -> Iterator[ChatEvent]:
        """The work of :meth:`send` for one message, yielding an event after each stage. The LLM reply streams from
        ``engine.stream`` as "delta" events while it is decoded (whitespace collapsed, cut where
        :func:`~agent.chat.reply.clean_reply` cuts); when the checked reply is not what was streamed (the check
        failed and the template reply is used, the engine failed, or cleaning changed it), a "replace" event
        carries the reply to show. A template reply comes as one "delta". Then "done" with the :class:`ChatReply`
        (its ``reply`` is always the text to keep), or "error" (with ``raise_errors``: the error is raised instead,
        as :meth:`send` does)."""
        work = _Work(session_id, message, request_id or uuid.uuid4().hex)
        for stage, data in self._stages([work], stream=True):
            if not work.alive:
                break
            if stage in ("delta", "replace", "justification"):
                yield ChatEvent(event=stage, data=data)  # type: ignore[arg-type]
            elif stage == "preferences" and work.state is not None:
                yield ChatEvent(
                    event="preferences",
                    data={
                        "preferences": work.state.preferences.model_dump(mode="json"),
                        "clarifying": work.clarifying,
                        "notes": work.update.notes,
                    },
                )
            elif stage == "items" and work.recommendation is not None:
                yield ChatEvent(
                    event="items",
                    data={
                        "items": [i.model_dump(mode="json") for i in work.recommendation.items],
                        "avoidances": [a.model_dump(mode="json") for a in work.avoidances],
                    },
                )
        if work.result is not None:
            yield ChatEvent(event="done", data=work.result.model_dump(mode="json"))
            self.warm_next_reply(work)
        else:
            err = work.error or _lost(work)
            if raise_errors:
                raise err
            yield ChatEvent(event="error", data={"type": type(err).__name__, "message": err.message, "hint": err.hint})

    # -- the stages ----------------------------------------------------------------------------------------
    def _stages(self, works: list[_Work], *, stream: bool = False) -> Iterator[tuple[str, dict[str, Any]]]:
        """Run the stages, yielding ``(stage, {})`` after each; with ``stream`` (one work) the reply stage also
        yields its ``("delta", ...)`` / ``("replace", ...)`` events."""
        self._prepare(works)
        self._extract([w for w in works if w.alive])
        self._decide([w for w in works if w.alive])
        yield "preferences", {}
        later = stream and self.settings.chat_justify_later
        self._recommend([w for w in works if w.alive and not w.clarifying], later=later)
        for w in works:
            w.mark("items_s")
        yield "items", {}
        if stream:
            for w in works:
                if w.alive:
                    yield from self._stream_reply(w)
        else:
            self._write_replies([w for w in works if w.alive])
        for w in works:
            w.mark("reply_s")
        yield "reply", {}
        if later:
            for w in works:
                if w.alive and w.recommendation is not None:
                    yield from self._fill_justifications(w)
        self._commit([w for w in works if w.alive])
        yield "done", {}

    def _fill_justifications(self, w: _Work) -> Iterator[tuple[str, dict[str, Any]]]:
        """The LLM justifications of a turn whose items went out with template reasons, one event per item."""
        assert w.recommendation is not None
        if not w.recommendation.justifications_pending:
            return
        for event in self.recommender.justify_events(w.recommendation):
            yield "justification", event.model_dump(mode="json")
        w.mark("justified_s")

    def _check_message(self, message: str) -> str:
        if not isinstance(message, str) or not message.strip():
            raise InputError("the message is empty", hint="type what you are looking for")
        limit = self.settings.max_message_chars
        if len(message) > limit:
            raise InputError(
                f"the message is {len(message)} characters long; the limit is {limit}",
                hint="send a shorter message (or raise RECAGENT_MAX_MESSAGE_CHARS)",
            )
        return message.strip()

    def _prepare(self, works: list[_Work]) -> None:
        for w in works:
            try:
                w.message = self._check_message(w.message)
                w.state = self.store.get(w.session_id)
                w.shown = w.state.last_shown()
                w.update = parse_message(w.message, self.index, w.shown)
            except RecagentError as exc:
                w.error = exc

    def _extract(self, works: list[_Work]) -> None:
        if not works or self.settings.chat_extract != "llm":
            return
        engine = self.recommender.engine()
        if engine is None:
            return
        inputs = []
        for w in works:
            assert w.state is not None
            inputs.append(self.extract_input(w.state, w.message, w.shown))
        for w, result in zip(works, self.extractor.extract(engine, inputs, self.settings), strict=True):
            if isinstance(result, str):
                if result != "llm_extract_unusable":
                    w.update.notes.append(result)
                continue
            w.update = w.update.merge(result)

    def extract_input(self, state: SessionState, message: str, shown: Sequence[str]) -> ExtractInput:
        """What the extraction prompt of ``message`` shows: the session's earlier turns (:meth:`history_vars`) and
        the items shown last; the last four turns' words may ground the ``need``."""
        return ExtractInput(
            message=message,
            conversation=self.history_vars(state),
            shown=list(shown),
            recent=[turn.content for turn in state.turns[-4:]],
        )

    def _decide(self, works: list[_Work]) -> None:
        for w in works:
            assert w.state is not None
            apply_update(w.state, w.update, self.index)
            try:
                w.request = self._request(w.state)
            except RecagentError as exc:
                w.error = exc
                continue
            w.clarifying = w.request is None or bool(w.update.ambiguous)

    def _has_history(self, user_id: str | None) -> bool:
        if user_id is None:
            return False
        interactions = self.recommender.interactions
        return interactions is not None and bool(interactions.history(user_id))

    def _request(self, state: SessionState) -> RecommendRequest | None:
        """The recommendation request for the session's state, or None when there is nothing to go on."""
        prefs = state.preferences
        c = prefs.constraints
        parts = [prefs.need] if prefs.need else []
        said = " ".join(parts).casefold()
        parts += [p.value for p in prefs.liked_attributes if p.value.casefold() not in said]
        parts += list(c.include_genres) + [str(v) for v in c.equals.values()]
        query = "; ".join(p for p in parts if p)[:1000] or None
        ranged = c.year_min is not None or c.year_max is not None or bool(c.ranges)
        history = self._has_history(state.user_id)
        if not (query or prefs.liked_ids or history or ranged):
            return None
        exclude = list(dict.fromkeys([*state.shown, *self._excluded_by_value(prefs)]))
        return RecommendRequest(
            user_id=state.user_id if history else None,
            query=query,
            liked=prefs.liked_ids[-5:],
            disliked=list(dict.fromkeys([*prefs.disliked_ids, *state.rejected])),
            constraints=c,
            exclude=exclude,
            k=self.settings.chat_k,
            turn=sum(1 for t in state.turns if t.role == "assistant" and t.item_ids),
        )

    def _excluded_by_value(self, prefs: Preferences) -> list[str]:
        """Items holding a value the user turned down, on fields the Chroma filter does not cover."""
        out: list[str] = []
        genre_field = prefs.constraints.genre_field
        for p in prefs.disliked_attributes:
            if p.field == genre_field:
                continue  # already a filter (Constraints.exclude_genres)
            info = self.index.fields.get(p.field)
            op = "$contains" if info is not None and info.is_list else "$eq"
            out += self.recommender.collection.ids(where={p.field: {op: p.value}})
        return out

    def _refiner(self, w: _Work) -> CandidateRefiner | None:
        """The candidate refiner applying the session's avoidances (None without any); it records what it did."""
        assert w.state is not None and w.request is not None
        avoid = list(w.state.preferences.avoid)
        if not avoid:
            return None
        policy, k = self.policy, w.request.k

        def refine(candidates: list[Candidate]) -> list[Candidate]:
            items = self.recommender.collection.get_items([c.item_id for c in candidates])
            kept, w.avoidances = policy.apply(avoid, candidates, items, k)
            return kept

        return refine

    def _recommend(self, works: list[_Work], *, later: bool = False) -> None:
        if not works:
            return
        asked = [w for w in works if w.request is not None]
        explain: ExplainWhen = "later" if later else "now"
        try:
            requests = [w.request for w in asked if w.request is not None]
            refiners = [self._refiner(w) for w in asked]
            if any(r is not None for r in refiners):
                results = self.recommender.recommend_many(requests, refiners=refiners, explain=explain)
            else:  # the plain call (a Recommender subclass may not take refiners)
                results = self.recommender.recommend_many(requests, explain=explain)
        except RecagentError as exc:
            for w in works:
                w.error = exc
            return
        for w, rec in zip(asked, results, strict=True):
            w.recommendation = rec.model_copy(update={"items": demote(rec.items, w.avoidances)})

    def _template_replies(self, works: list[_Work]) -> list[_Work]:
        """Give every work its template (or clarifying) reply; return those an LLM reply may replace."""
        for w in works:
            assert w.state is not None
            if w.update.ambiguous:
                w.reply = which_one_reply(w.update.ambiguous, self.index)
            elif w.clarifying:
                w.reply = clarifying_reply(w.state.preferences, self.index)
            else:
                assert w.recommendation is not None
                w.reply = template_reply(w.recommendation.items, w.state.preferences, self.index)
                w.reply = _with_notes(w.reply, w.avoidances)
            if w.update.understood:
                w.reply = f"(I took {'; '.join(w.update.understood)}.) {w.reply}"
        if self.settings.chat_reply != "llm":
            return []
        return [w for w in works if not w.clarifying and w.recommendation and w.recommendation.items]

    def _write_replies(self, works: list[_Work]) -> None:
        todo = self._template_replies(works)
        if not todo:
            return
        engine = self.recommender.engine()
        if engine is None:
            return
        prompts = [self._reply_prompt(w) for w in todo]
        # a few-shot prompt is plain text: the model would write the next "User:" turn without the stop strings
        stop: dict[str, Any] = {"stop": REPLY_STOP} if any(isinstance(p, str) for p in prompts) else {}
        stop = stop if accepts_stop(engine) else {}
        outcome = call_batch(
            engine,
            len(todo),
            lambda idx: engine.generate(
                [prompts[i] for i in idx],
                max_tokens=self.settings.chat_reply_max_tokens,
                temperature=0.0,
                seed=self.settings.seed,
                **stop,
            ),
            timeout=self.settings.rerank_timeout_s,
        )
        for w, prompt, res in zip(todo, prompts, outcome.results, strict=True):
            assert w.recommendation is not None
            if isinstance(res, CallFailure):
                w.reply_source = f"template ({res.reason})"
                continue
            text = clean_reply(res.text)
            ok, why = check_reply(text, w.recommendation.items, self.index, w.message, self._reply_instructions(prompt))
            if ok:
                w.reply, w.reply_source = _with_notes(text, w.avoidances), "llm"
            else:
                w.reply_source = f"template (LLM reply {why})"

    def _stream_reply(self, w: _Work) -> Iterator[tuple[str, dict[str, Any]]]:
        """The reply of one work, streamed: ``("delta", {"text"})`` as the engine decodes, then
        ``("replace", {"text", "reason"})`` when the reply kept is not the text streamed."""
        todo = self._template_replies([w])
        engine = self.recommender.engine() if todo else None
        if engine is None:
            w.mark("ttft_s")
            yield "delta", {"text": w.reply}
            return
        assert w.recommendation is not None
        shaper = ReplyShaper()
        failure: str | None = None
        deltas: Iterator[str] | None = None
        prompt = self._reply_prompt(w)
        asked = time.perf_counter()
        try:
            deltas = _with_deadline(
                engine.stream(
                    prompt,
                    max_tokens=self.settings.chat_reply_max_tokens,
                    temperature=0.0,
                    seed=self.settings.seed,
                    stop=REPLY_STOP,
                ),
                self.settings.rerank_timeout_s,
            )
            for delta in deltas:
                if "reply_ttft_s" not in w.timings:
                    w.timings["reply_ttft_s"] = round(time.perf_counter() - asked, 3)
                shown = shaper.feed(delta)
                if shown:
                    w.mark("ttft_s")
                    yield "delta", {"text": shown}
                if shaper.complete:
                    break  # the rest would be cut: stop decoding
        except Exception as exc:  # engine errors and timeouts: the template reply stands
            failure = failure_reason(exc)
            log.info("streamed reply failed (%s); using the template reply", failure)
        finally:
            close = getattr(deltas, "close", None)
            if callable(close):
                close()  # cancels what the engine still decodes
        shown = shaper.shown
        if failure is None:
            text = shaper.text
            ok, why = check_reply(text, w.recommendation.items, self.index, w.message, self._reply_instructions(prompt))
            if ok:
                w.reply, w.reply_source = _with_notes(text, w.avoidances), "llm"
                if text == shown and w.reply != shown:  # the avoidance notes follow the streamed text
                    yield "delta", {"text": w.reply[len(shown) :]}
                    shown = w.reply
            else:
                failure = f"LLM reply {why}"
        if failure is not None:
            w.reply_source = f"template ({failure})"
        if w.reply != shown:
            w.mark("ttft_s")  # nothing was streamed: the first text shown is this one
            yield "replace", {"text": w.reply, "reason": failure or "cleaned"}

    def reply_layout(self) -> str:
        """``chat`` or ``fewshot``: the reply prompt's layout for the engine's model (``prompt_format``; auto: the
        few-shot layout for a base model, the chat template for an instruct model)."""
        engine = self.recommender.engine()
        return resolve_layout(self.settings.prompt_format, engine, self.recommender.registry, REPLY_TEMPLATE)

    def reply_examples(self) -> list[Exchange]:
        """The few-shot layout's worked turns, built once from the collection's own items
        (:func:`agent.chat.reply.reply_examples`)."""
        if self._reply_examples is None:
            spec = self.recommender.registry.get(REPLY_TEMPLATE).fewshot
            self._reply_examples = reply_examples(self.index, spec.examples if spec is not None else 0)
        return self._reply_examples

    def _reply_prompt(self, w: _Work) -> str | list[dict[str, str]]:
        """The reply prompt: an append-only transcript of the window's earlier turns, then this turn's message and
        items - chat messages (:func:`agent.chat.reply.reply_messages`) or, for a base model, the few-shot text
        (:func:`agent.chat.reply.reply_text`)."""
        assert w.state is not None and w.recommendation is not None
        items = [reply_item(it.title, it.metadata) for it in w.recommendation.items]
        registry = self.recommender.registry
        if self.reply_layout() == "fewshot":
            return reply_text(registry, self.reply_examples(), self.exchanges(w.state), w.message, items)
        return reply_messages(registry, self.exchanges(w.state), w.message, items)

    def next_reply_prefix(self, state: SessionState) -> str | list[dict[str, str]]:
        """The start of the session's next reply prompt, up to and including its last reply as sent: the
        transcript of the current window with no open turn (few-shot text cut before the next "User:"; chat
        messages ending with the last reply, which the engine continues as a prefill). A prefix of the next turn's
        prompt, whatever its message, since every part renders from stored turns alone."""
        registry = self.recommender.registry
        exchanges = self.exchanges(state)
        if self.reply_layout() == "fewshot":
            text = reply_text(registry, self.reply_examples(), exchanges, "", [])
            return text[: text.rindex(_FEWSHOT_TURN)] if _FEWSHOT_TURN in text else text
        return reply_messages(registry, exchanges, "", [])

    def warm_next_reply(self, w: _Work) -> None:
        """With ``chat_reply_warm`` (and LLM replies): send the next reply prompt's start
        (:meth:`next_reply_prefix`) to the engine with ``max_tokens=1``, so its prefix cache holds the transcript
        up to this turn's reply as it was sent. The reply kept is often not what the engine decoded (a template
        reply replaces one that fails the check), and the next prompt must show what the user saw: without this,
        the next turn would prefill that reply on the user's clock. Failures are logged and ignored."""
        if not self.settings.chat_reply_warm or self.settings.chat_reply != "llm" or w.state is None:
            return
        engine = self.recommender.engine()
        if engine is None or not self.exchanges(w.state):
            return
        try:
            engine.generate([self.next_reply_prefix(w.state)], max_tokens=1, temperature=0.0)
        except Exception as exc:  # a cache warm-up must never fail a finished turn
            log.info("reply prefix warm-up failed: %s", failure_reason(exc))

    def _reply_instructions(self, prompt: str | list[dict[str, str]]) -> str:
        return reply_instructions(prompt)

    def reply_window(self, state: SessionState) -> list[Turn]:
        """The earlier turns the reply prompt shows: at most ``chat_history_turns``, in a window that moves by its
        whole size (:func:`stable_window` with ``step=chat_history_turns``). Each earlier turn brings its items,
        so a move costs the whole shown history: moving by the whole window keeps moves rare (after a move the
        transcript holds the latest pair, then grows by one pair per message until it is full)."""
        limit = self.settings.chat_history_turns
        return stable_window(state.turns, limit, step=limit)

    def exchanges(self, state: SessionState) -> list[Exchange]:
        """The session's earlier turns in the reply window (:meth:`reply_window`) as the reply prompt shows them:
        each user message with the items shown for it (read from the catalog by id) and the reply sent."""
        window = self.reply_window(state)
        ids = list(dict.fromkeys(i for t in window if t.role == "assistant" for i in t.item_ids))
        found = self.recommender.collection.get_items(ids) if ids else {}
        out: list[Exchange] = []
        for user, answer in itertools.pairwise(window):
            if user.role == "user" and answer.role == "assistant":
                items = [reply_item(found[i].title, found[i].metadata) for i in answer.item_ids if i in found]
                out.append(Exchange(user.content, items, answer.content))
        return out

    def history_vars(self, state: SessionState) -> list[dict[str, str]]:
        """The session's earlier turns as prompt variables (oldest first, the last ``chat_history_turns``)."""
        return turn_vars(state.turns, self.settings.chat_history_turns)

    def _commit(self, works: list[_Work]) -> None:
        for w in works:
            state = w.state
            assert state is not None
            ids = [i.item_id for i in w.recommendation.items] if w.recommendation is not None else []
            state.shown = list(dict.fromkeys([*state.shown, *ids]))
            n = state.last_turn_id
            user = Turn(turn_id=n + 1, role="user", content=w.message, request_id=w.request_id)
            assistant = Turn(turn_id=n + 2, role="assistant", content=w.reply, item_ids=ids, request_id=w.request_id)
            try:
                self.store.commit_turn(state, user, assistant)
            except RecagentError as exc:
                w.error = exc
                continue
            log.debug("session %s turn %d: reply from %s", state.session_id, n + 2, w.reply_source)
            w.mark("total_s")
            w.result = ChatReply(
                session_id=state.session_id,
                turn_id=n + 2,
                reply=w.reply,
                clarifying=w.clarifying,
                recommendation=w.recommendation,
                preferences=state.preferences,
                request_id=w.request_id,
                avoidances=w.avoidances,
                timings=dict(w.timings),
            )


_FEWSHOT_TURN = "\n\nUser:"
"""What opens a turn in the few-shot reply layout (``chat_reply.j2``, block ``fewshot``)."""


def _with_notes(reply: str, applied: Sequence[AppliedAvoidance]) -> str:
    """The reply followed by how each avoidance was applied ("Avoiding "gore": left out 3 items (tagged gore).")."""
    notes = " ".join(a.note for a in applied)
    return f"{reply} {notes}" if notes else reply


def _with_deadline(deltas: Iterator[str], timeout: float | None) -> Iterator[str]:
    """``deltas`` read in a helper thread, raising TimeoutError when the whole stream takes longer than
    ``timeout`` seconds (None: no limit, read directly). Closing this iterator closes ``deltas`` (in the helper
    thread, after its current ``next``), which cancels the generation."""
    if timeout is None:
        try:
            yield from deltas
        finally:
            close = getattr(deltas, "close", None)
            if callable(close):
                close()
        return
    box: queue.Queue[tuple[str, Any]] = queue.Queue()
    stop = threading.Event()

    def pump() -> None:
        try:
            for delta in deltas:
                if stop.is_set():
                    break
                box.put(("delta", delta))
            box.put(("end", None))
        except BaseException as exc:  # handed to the reader
            box.put(("error", exc))
        finally:
            close = getattr(deltas, "close", None)
            if callable(close):
                close()

    threading.Thread(target=pump, name="recagent-reply-stream", daemon=True).start()
    deadline = time.monotonic() + timeout
    try:
        while True:
            try:
                kind, value = box.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise TimeoutError(f"the streamed reply took longer than {timeout:g} s") from None
            if kind == "delta":
                yield value
            elif kind == "error":
                raise value
            else:
                return
    finally:
        stop.set()


def _lost(w: _Work) -> RecagentError:
    return RecagentError(f"the message for session {w.session_id!r} got no answer", hint="send it again")
