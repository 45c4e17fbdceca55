"""LLM enrichment of thin catalog items (``recagent enrich``): a short description and keywords per item.

    items of a collection -> thin ones (free text shorter than ``enrich_thin_chars``; every item with --all)
    -> per batch: cache lookup (item content hash, prompt version, model, output limits) -> one engine call for
    the misses (``enrich_item`` template, JSON schema) -> pydantic check -> cache -> Chroma: enrichment stored in
    ``rc_enrich_*`` metadata, the document re-embedded as original text + enrichment (original fields unchanged)

Results are written batch by batch (cache first, then the collection), so a killed run continues where it stopped
and a second run generates nothing. Invalid outputs are counted as failed and never stored (they are cached as
failures, so a rerun does not pay for them again; ``--force`` retries); engine errors and timeouts are not cached.
``disable_enrichment`` (``--off``) re-embeds the original documents. See docs/enrichment.md.
"""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from agent.errors import ConfigError, InputError, PromptError
from agent.llm.base import Generation, LLMEngine
from agent.llm.batching import CallFailure, generate_batch, loads_lenient
from agent.llm.cache import GenerationCache, cache_key
from agent.settings import Settings
from prompts import PromptRegistry, clean_data
from retrieval.embed import Embedder, make_embedder
from retrieval.store import ItemCollection, Store
from retrieval.types import Enrichment, EnrichmentInfo, Item

__all__ = [
    "EnrichOutput",
    "EnrichReport",
    "content_key",
    "disable_enrichment",
    "enrich_collection",
    "enrich_command",
    "is_thin",
    "parse_enrichment",
]

CACHE_FILE = "enrich.sqlite"
READ_PAGE = 500
_PLACEHOLDER = re.compile(r"^\W*<[^<>]*>\W*$")  # '<one or two sentences>' copied from the prompt's answer shape
_SPACES = re.compile(r"\s+")


def content_key(item: Item) -> str:
    """Hash of what the enrichment prompt sees of an item: title, free texts and attribute fields (not the id)."""
    return cache_key(item.title, item.texts, item.metadata)[:32]


# ------------------------------------------------------------------------------------------------ output checks
class EnrichOutput(BaseModel):
    """A generated enrichment after cleaning: whitespace collapsed, keywords de-duplicated (case-insensitive)."""

    model_config = ConfigDict(extra="forbid")

    description: str = Field(min_length=1, max_length=2000)
    keywords: list[str] = Field(min_length=1, max_length=20)

    @field_validator("description")
    @classmethod
    def _clean_description(cls, value: str) -> str:
        text = _SPACES.sub(" ", clean_data(value)).strip()
        if _PLACEHOLDER.match(text):
            raise ValueError("the description is the prompt's placeholder")
        return text

    @field_validator("keywords")
    @classmethod
    def _clean_keywords(cls, values: list[str]) -> list[str]:
        out: dict[str, str] = {}
        for value in values:
            word = _SPACES.sub(" ", clean_data(value)).strip().strip(".,;")
            if word and not _PLACEHOLDER.match(word):
                out.setdefault(word.lower(), word)
        return list(out.values())


def parse_enrichment(
    value: Any,
    *,
    max_chars: int,
    max_keywords: int,
    item: Item | None = None,
    min_new_words: int = 3,
    instructions: str = "",
) -> EnrichOutput | None:
    """The checked enrichment in a decoded JSON value (or raw text), or None when it is not usable: not JSON,
    wrong shape, an empty or placeholder description, no keyword left, a description over ``max_chars``.

    Loops are cut (repeated sentences dropped, the text cut where a phrase of three words comes back a third
    time). With ``item``, keywords that add nothing to it are dropped (a prompt field's name, a single character,
    only words of its title, a phrase copied from the prompt's ``instructions``) and the output is refused when
    its description adds fewer than ``min_new_words`` words to the item (see :func:`uninformative`)."""
    if isinstance(value, str):
        try:
            value = loads_lenient(value)
        except ValueError:
            return None
    try:
        out = EnrichOutput.model_validate(value)
    except ValidationError:
        return None
    out.description = _cut_phrase_loop(_unique_sentences(out.description))
    if item is not None:
        names, title_words = _field_names(item), set(_norm(item.title).split())
        said = f" {_norm(instructions)} "
        looped = (_cut_phrase_loop(k, n=2, times=2) for k in out.keywords)
        out.keywords = [
            k
            for k in dict.fromkeys(k for k in looped if k)
            if len(k) > 1
            and _norm(k) not in names
            and not set(_norm(k).split()) <= title_words
            and f" {_norm(k)} " not in said
        ]
    if not out.description or not out.keywords or len(out.description) > max_chars:
        return None
    if item is not None and uninformative(out, item, min_new_words):
        return None
    out.keywords = out.keywords[:max_keywords]
    return out


def uninformative(out: EnrichOutput, item: Item, min_new_words: int = 3) -> bool:
    """True when the description adds fewer than ``min_new_words`` distinct words to what the item already says
    (its title, field names, attribute values and texts): a small model's usual ways of saying nothing are
    restating the title ("The Karate Bullfighter (1975)"), reordering it, or wrapping it in filler ("This is a X
    item. It is a comedy."). Words are counted when they have at least 4 letters or digits, in any language."""
    known = set(_norm(" ".join([item.title, *item.metadata, *item.texts, *item.texts.values()])).split())
    for value in item.metadata.values():
        known.update(_norm(" ".join(map(str, value)) if isinstance(value, list | tuple) else str(value)).split())
    new = {w for w in _norm(out.description).split() if len(w) >= 4 and w not in known}
    return len(new) < max(min_new_words, 1)


def _cut_phrase_loop(text: str, n: int = 3, times: int = 3) -> str:
    """``text`` cut before the second occurrence of a phrase of ``n`` words that occurs ``times`` times (a loop
    inside one sentence: "very beautiful, very beautiful, very beautiful, ...")."""
    spans = [(m.start(), m.group().lower()) for m in _WORD.finditer(text)]
    grams: dict[tuple[str, ...], list[int]] = {}
    for i in range(len(spans) - n + 1):
        grams.setdefault(tuple(w for _, w in spans[i : i + n]), []).append(i)
    loops = [starts[1] for starts in grams.values() if len(starts) >= times]
    if not loops:
        return text
    return text[: spans[min(loops)][0]].rstrip(" ,;:-")


_WORD = re.compile(r"[^\W_]+")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
_PROMPT_FIELDS = frozenset({"title", "text", "attribute", "attributes", "description", "keyword", "keywords"})


def _norm(text: str) -> str:
    return re.sub(r"[\W_]+", " ", text.lower()).strip()


def _field_names(item: Item) -> frozenset[str]:
    """Names of the fields the prompt showed (and their singulars): a keyword that only names one is dropped."""
    names = set(_PROMPT_FIELDS) | {_norm(k) for k in (*item.metadata, *item.texts)}
    return frozenset(names | {n[:-1] for n in names if n.endswith("s")})


def _unique_sentences(text: str) -> str:
    """``text`` without repeated sentences (a small model often loops on one)."""
    seen: set[str] = set()
    kept = []
    for sentence in _SENTENCE_END.split(text):
        key = _norm(sentence)
        if key and key not in seen:
            seen.add(key)
            kept.append(sentence)
    return " ".join(kept)


def is_thin(item: Item, min_chars: int) -> bool:
    """True when the item has (almost) no free text: its text fields hold fewer than ``min_chars`` characters.
    Title and typed attribute fields (genres, tags, year, price...) do not count, whatever the catalog."""
    return sum(len(v.strip()) for v in item.texts.values()) < min_chars


def item_prompt_vars(item: Item) -> dict[str, Any]:
    """The ``item`` variable of ``enrich_item``: title, attributes and the joined free texts."""
    out: dict[str, Any] = {"title": item.title, "attributes": dict(item.metadata)}
    texts = [(k, v.strip()) for k, v in item.texts.items() if v.strip()]
    if texts:
        out["text"] = texts[0][1] if len(texts) == 1 else "\n".join(f"{k}: {v}" for k, v in texts)
    return out


# ------------------------------------------------------------------------------------------------ report
class EnrichReport(BaseModel):
    """What an enrichment run did. ``selected == generated + cached + prompt failures``; items whose enrichment
    is usable are ``enriched``; ``failed`` counts the others by reason (cached failures included)."""

    model_config = ConfigDict(extra="forbid")

    collection: str
    copied_from: str | None = Field(default=None, description="Source collection when --into made a copy.")
    items_seen: int = 0
    thin: int = Field(default=0, description="Items with (almost) no free text.")
    skipped: int = Field(default=0, description="Items not enriched because they have free text (use --all).")
    beyond_limit: int = Field(default=0, description="Items left out by --limit.")
    selected: int = Field(default=0, description="Items this run enriched or tried to.")
    generated: int = Field(default=0, description="Items sent to the LLM in this run.")
    cached: int = Field(default=0, description="Items answered from the cache (successes and failures).")
    enriched: int = Field(default=0, description="Selected items with a usable enrichment.")
    failed: dict[str, int] = Field(default_factory=dict, description="Selected items without one, by reason.")
    failed_examples: list[str] = Field(default_factory=list, description="A few ids that failed.")
    embedded: int = Field(default=0, description="Documents re-embedded (unchanged ones are not).")
    restored: int = Field(default=0, description="--off: items whose original document was restored.")
    withdrawn: int = Field(
        default=0, description="Items whose enrichment from an earlier run was removed: its output is now refused."
    )
    enriched_total: int = Field(default=0, description="Items of the collection carrying an enrichment now.")
    on: bool = Field(default=True, description="Whether the collection now embeds its enrichment.")
    prompt_version: str = ""
    model: str = ""
    engine_calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0

    def fail(self, reason: str, item_id: str) -> None:
        self.failed[reason] = self.failed.get(reason, 0) + 1
        if len(self.failed_examples) < 5:
            self.failed_examples.append(item_id)


# ------------------------------------------------------------------------------------------------ progress
@contextlib.contextmanager
def _progress(enabled: bool, total: int, description: str) -> Iterator[Callable[[int], None]]:
    if not enabled or total == 0:
        yield lambda n: None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task(description, total=total)
        yield lambda n: bar.advance(task, n)


def _chunks(values: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(values), size):
        yield values[start : start + size]


def _read_items(collection: ItemCollection, ids: Sequence[str]) -> Iterator[Item]:
    for chunk in _chunks(list(ids), READ_PAGE):
        items = collection.get_items(chunk)
        yield from (items[i] for i in chunk if i in items)


def _stored_enrichment_count(collection: ItemCollection, ids: Sequence[str]) -> int:
    return sum(len(collection.get_enrichments(chunk)) for chunk in _chunks(list(ids), READ_PAGE))


# ------------------------------------------------------------------------------------------------ main
def enrich_collection(
    collection: ItemCollection,
    engine: LLMEngine,
    registry: PromptRegistry,
    settings: Settings,
    *,
    embedder: Embedder | None = None,
    limit: int | None = None,
    force: bool = False,
    all_items: bool = False,
    progress: bool = True,
    cache: GenerationCache | None = None,
) -> EnrichReport:
    """Enrich the thin items of ``collection`` (every item with ``all_items``; the first ``limit`` of them) and
    re-embed their documents; record the run on the collection (see the module doc)."""
    started = time.perf_counter()
    template = registry.get(settings.enrich_template)
    if template.task != "enrich_item":
        raise ConfigError(
            f"template {template.name!r} has task {template.task!r}, not enrich_item",
            hint="set RECAGENT_ENRICH_TEMPLATE to an enrich_item template (`recagent prompts list`)",
        )
    if limit is not None and limit < 1:
        raise InputError(f"--limit must be at least 1, got {limit}", hint="drop --limit to enrich every thin item")
    embedder = embedder or make_embedder(settings.embed_config(progress=False))
    collection.check_embedder(embedder)
    own_cache = cache is None
    cache = cache or GenerationCache(settings.home / "cache" / CACHE_FILE)
    ids = collection.ids()
    report = EnrichReport(
        collection=collection.name, items_seen=len(ids), prompt_version=template.version_id, model=engine.model_id
    )
    selected: list[Item] = []
    for item in _read_items(collection, ids):
        thin = is_thin(item, settings.enrich_thin_chars)
        report.thin += thin
        if thin or all_items:
            selected.append(item)
        else:
            report.skipped += 1
    if limit is not None and len(selected) > limit:
        report.beyond_limit = len(selected) - limit
        selected = selected[:limit]
    report.selected = len(selected)
    max_chars, max_keywords = settings.enrich_description_max_chars, settings.enrich_max_keywords
    schema = template.output_schema(max_keywords=max_keywords, description_max_length=max_chars)
    params = [settings.enrich_max_tokens, max_chars, max_keywords]
    checks: dict[str, Any] = {  # the output checks of parse_enrichment, the same for every batch
        "max_chars": max_chars,
        "max_keywords": max_keywords,
        "min_new_words": settings.enrich_min_new_words,
        "instructions": _instructions(template),
    }
    try:
        with _progress(progress, len(selected), f"enriching {collection.name}") as advance:
            for batch in _chunks(selected, settings.enrich_batch_size):
                found = _enrich_batch(batch, collection, engine, template, schema, params, checks, settings, cache,
                                      force, report)  # fmt: skip
                report.embedded += collection.set_enrichments(dict(found), embedder, progress=False)
                advance(len(batch))
    finally:
        if own_cache:
            cache.close()
    report.enriched_total = _stored_enrichment_count(collection, ids)
    at = datetime.now(UTC).isoformat(timespec="seconds")
    collection.set_enrichment_info(
        EnrichmentInfo(
            on=True, prompt_version=template.version_id, model=engine.model_id, items=report.enriched_total, at=at
        )
    )
    report.seconds = round(time.perf_counter() - started, 3)
    return report


def _enrich_batch(
    batch: Sequence[Item],
    collection: ItemCollection,
    engine: LLMEngine,
    template: Any,
    schema: dict[str, Any] | None,
    params: list[int],
    checks: dict[str, Any],
    settings: Settings,
    cache: GenerationCache,
    force: bool,
    report: EnrichReport,
) -> list[tuple[str, Enrichment | None]]:
    """Enrichments of one batch (cache, then one engine call for the misses), and None for refused items that
    carry an enrichment from an earlier run; updates ``report``."""
    max_chars, max_keywords = params[1], params[2]
    keys = [cache_key(content_key(item), template.version_id, engine.model_id, params) for item in batch]
    hits = {} if force else cache.get_many(keys)
    records: dict[int, dict[str, Any]] = {}
    todo: list[int] = []
    messages: list[list[dict[str, str]]] = []
    for i, (item, key) in enumerate(zip(batch, keys, strict=True)):
        if key in hits:
            records[i] = hits[key]
            report.cached += 1
            continue
        try:
            rendered = template.render({"item": item_prompt_vars(item)})
        except PromptError as exc:
            report.fail(f"prompt_error: {exc.message}"[:120], item.id)
            continue
        todo.append(i)
        messages.append(rendered.chat_messages())
    if todo:
        outcome = generate_batch(engine, messages, json_schema=schema, max_tokens=settings.enrich_max_tokens,
                                 seed=settings.seed, timeout=settings.rerank_timeout_s)  # fmt: skip
        report.generated += len(todo)
        report.engine_calls += outcome.engine_calls
        fresh: list[tuple[str, dict[str, Any]]] = []
        for i, result in zip(todo, outcome.results, strict=True):
            record = _record_of(result)
            report.prompt_tokens += int(record.get("prompt_tokens", 0))
            report.completion_tokens += int(record.get("completion_tokens", 0))
            records[i] = record
            if record.get("reason") in (None, "invalid_output"):  # deterministic outcomes only
                fresh.append((keys[i], record))
        cache.put_many(fresh)
    out: list[tuple[str, Enrichment | None]] = []
    refused: list[str] = []
    for i, record in sorted(records.items()):
        item = batch[i]
        reason = record.get("reason")
        parsed = None
        if reason is None or (reason == "invalid_output" and record.get("text")):
            parsed = parse_enrichment(record.get("value", record.get("text", "")), item=item, **checks)
        if parsed is None:
            value = record.get("value", record.get("text", ""))
            loose = reason is None and parse_enrichment(value, max_chars=max_chars, max_keywords=max_keywords)
            report.fail("uninformative" if loose else str(reason or "invalid_output"), item.id)
            refused.append(item.id)
            continue
        report.enriched += 1
        enrichment = Enrichment(
            description=parsed.description,
            keywords=parsed.keywords,
            prompt_version=template.version_id,
            model=engine.model_id,
        )
        out.append((item.id, enrichment))
    if refused:  # an enrichment stored by an earlier run (older checks, or before --force) is withdrawn
        stale = list(collection.get_enrichments(refused))
        report.withdrawn += len(stale)
        out.extend((item_id, None) for item_id in stale)
    return out


def _instructions(template: Any) -> str:
    """The template's own words (rendered for an empty item): a keyword copied from them is dropped."""
    try:
        rendered = template.render({"item": {"title": ""}})
    except PromptError:
        return ""
    return " ".join(m["content"] for m in rendered.chat_messages())


def _record_of(result: Generation | CallFailure) -> dict[str, Any]:
    """What the cache keeps of one engine result: the output (decoded JSON or raw text) and its token counts;
    for a failure its reason (and the raw text of an output that did not validate)."""
    if isinstance(result, CallFailure):
        raw = getattr(result.error, "raw", None)
        out: dict[str, Any] = {"reason": result.reason}
        if isinstance(raw, str):
            out["text"] = raw[:4000]
        return out
    record: dict[str, Any] = {
        "reason": None,
        "text": result.text[:4000],
        "prompt_tokens": result.prompt_tokens,
        "completion_tokens": result.completion_tokens,
    }
    if result.parsed is not None:
        record["value"] = result.parsed
    return record


def disable_enrichment(
    collection: ItemCollection, embedder: Embedder, *, progress: bool = True, batch_size: int = 256
) -> EnrichReport:
    """``--off``: remove the stored enrichments and re-embed the original documents; the collection records that
    enrichment is off (the generation cache is kept, so switching it on again costs no LLM call)."""
    started = time.perf_counter()
    collection.check_embedder(embedder)
    ids = collection.ids()
    enriched = [i for chunk in _chunks(ids, READ_PAGE) for i in collection.get_enrichments(chunk)]
    info = collection.enrichment_info()
    report = EnrichReport(
        collection=collection.name,
        items_seen=len(ids),
        on=False,
        prompt_version=info.prompt_version if info else "",
        model=info.model if info else "",
    )
    with _progress(progress, len(enriched), f"restoring {collection.name}") as advance:
        for chunk in _chunks(enriched, batch_size):
            report.embedded += collection.set_enrichments(dict.fromkeys(chunk), embedder, progress=False)
            report.restored += len(chunk)
            advance(len(chunk))
    base = info or EnrichmentInfo(on=False)
    collection.set_enrichment_info(
        base.model_copy(update={"on": False, "items": 0, "at": datetime.now(UTC).isoformat(timespec="seconds")})
    )
    report.seconds = round(time.perf_counter() - started, 3)
    return report


def enrich_command(
    settings: Settings,
    *,
    collection: str | None = None,
    into: str | None = None,
    limit: int | None = None,
    all_items: bool = False,
    force: bool = False,
    off: bool = False,
    progress: bool = True,
    engine: LLMEngine | None = None,
    embedder: Embedder | None = None,
    store: Store | None = None,
    registry: PromptRegistry | None = None,
) -> EnrichReport:
    """What ``recagent enrich`` runs: check the options, copy the collection when ``into`` is given, then enrich
    (starting the configured engine if none is given) or, with ``off``, restore the original embeddings."""
    if off and (limit is not None or all_items or force):
        raise InputError("--off restores the original documents; it takes no --limit, --all or --force",
                         hint="run `recagent enrich --collection NAME --off` on its own")  # fmt: skip
    name = collection or settings.collection
    store = store or Store(settings.store_config())
    if not store.has_collection(name):
        existing = ", ".join(store.collection_names()) or "none"
        raise InputError(
            f"collection {name!r} does not exist in {store.location} (existing: {existing})",
            hint=f"ingest a catalog first (`recagent ingest PATH --collection {name}`) or pick an existing one",
        )
    embedder = embedder or make_embedder(settings.embed_config(progress=False))
    copied_from = None
    if into is not None:
        store.copy_collection(name, into)
        copied_from, name = name, into
    target = store.open_for(embedder, name)
    if off:
        report = disable_enrichment(target, embedder, progress=progress)
    else:
        if engine is None:
            from agent.llm import create_engine

            engine = create_engine(settings)
        report = enrich_collection(target, engine, registry or PromptRegistry(), settings, embedder=embedder,
                                   limit=limit, force=force, all_items=all_items, progress=progress)  # fmt: skip
    report.copied_from = copied_from
    return report
