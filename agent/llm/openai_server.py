"""Backend for any OpenAI-compatible server, in particular ``vllm serve``.

- Plain prompts go to ``/v1/completions``; chat messages to ``/v1/chat/completions`` unless the served model has no
  chat template (vLLM answers 400), in which case they are flattened locally like for the local engines.
- Structured output: ``response_format = {"type": "json_schema", ...}``; the result is validated here too.
- Option scoring: ``max_tokens=1`` with top log-probs; on vLLM the label token ids are looked up with its
  ``/tokenize`` endpoint and sent as ``logprob_token_ids`` so every label comes back exactly. Elsewhere a label
  outside the returned top-k gets the lowest returned value as an upper bound, flagged ``exact=False``.
- Several base URLs (replicas) are used round-robin; a request that fails on one is retried on the next.
"""

from __future__ import annotations

import itertools
import logging
import math
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import httpx
import openai

from agent.errors import EngineError, EngineUnavailableError, ModelError
from agent.llm.base import (
    Generation,
    LLMEngine,
    LLMRequest,
    OptionScores,
    RequestLike,
    Schema,
    SchemaArg,
    check_labels,
    parse_outputs,
    schemas_per_request,
)
from agent.llm.prompting import flatten_messages
from agent.network import redact_url
from agent.settings import Settings

T = TypeVar("T")
log = logging.getLogger(__name__)


class OpenAIServerEngine(LLMEngine):
    backend = "openai"

    def __init__(self, settings: Settings, urls: Sequence[str] | None = None) -> None:
        self.settings = settings
        self.urls = list(urls or settings.server_urls)
        if not self.urls:
            raise EngineUnavailableError(
                "no LLM server URL configured", hint="set RECAGENT_LLM_SERVER_URL=http://HOST:PORT/v1"
            )
        self.clients: list[Any] = [
            openai.OpenAI(
                base_url=u if u.endswith("/v1") else u + "/v1",
                api_key=settings.llm_api_key,
                timeout=settings.llm_timeout_s,
                max_retries=0,
            )
            for u in self.urls
        ]
        self._next = itertools.cycle(range(len(self.clients)))
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=settings.llm_max_concurrency, thread_name_prefix="recagent-llm")
        self._chat_ok: bool | None = None
        self._label_ids: dict[str, int] | None = None
        self.adapter = _local_adapter(settings.llm_adapter)
        self.model_id = settings.llm_served_model_name or self._discover_model()

    # -- plumbing ----------------------------------------------------------------------------------------------
    def _call(self, fn: Callable[[Any], T]) -> T:
        """Run ``fn`` on the next replica, retrying on the others when a replica cannot be reached."""
        with self._lock:
            start = next(self._next)
        last: Exception | None = None
        for attempt in range(len(self.clients)):
            client = self.clients[(start + attempt) % len(self.clients)]
            try:
                return fn(client)
            except (openai.APIConnectionError, openai.APITimeoutError, openai.InternalServerError) as exc:
                last = exc
        raise EngineUnavailableError(
            f"LLM server unreachable at {', '.join(redact_url(u) for u in self.urls)}: {last}",
            hint="start it (`recagent llm serve`) or fix RECAGENT_LLM_SERVER_URL; raise RECAGENT_LLM_TIMEOUT_S "
            "for slow machines",
        ) from last

    def _map(self, fn: Callable[[Any], T], items: Sequence[Any]) -> list[T]:
        return list(self._pool.map(fn, items))

    def _discover_model(self) -> str:
        """The served model to use: the base model (a model without a ``parent``), or, when
        ``RECAGENT_LLM_ADAPTER`` is set, the LoRA module vLLM serves from that folder (its ``root``; the only LoRA
        module when the server names another folder, e.g. on another machine)."""
        try:
            models = self._call(lambda c: c.models.list())
        except openai.APIStatusError as exc:
            raise EngineUnavailableError(f"LLM server answered {exc.status_code} to /v1/models: {exc.message}") from exc
        ids = [m.id for m in models.data]
        if not ids:
            raise ModelError("the LLM server serves no model", hint="start the server with --model")
        loras = [m for m in models.data if getattr(m, "parent", None)]
        wanted = self.settings.llm_adapter
        if not wanted:
            return next((m.id for m in models.data if not getattr(m, "parent", None)), ids[0])
        paths = {str(Path(wanted).expanduser()), str(Path(wanted).expanduser().resolve())}
        same = [m.id for m in loras if str(getattr(m, "root", "")).rstrip("/") in paths]
        if same:
            return same[0]
        if len(loras) == 1:
            log.info("LLM server: using its only LoRA module %r for the adapter %s", loras[0].id, wanted)
            return loras[0].id
        raise ModelError(
            f"the LLM server does not serve the adapter {wanted} (it serves: {', '.join(ids)})",
            hint="start it with the adapter (`RECAGENT_LLM_ADAPTER=... recagent llm serve`, or `vllm serve "
            "--enable-lora --lora-modules NAME=PATH`), or name the served model with RECAGENT_LLM_SERVED_MODEL_NAME",
        )

    def _root(self, url: str) -> str:
        return url[: -len("/v1")] if url.endswith("/v1") else url

    # -- chat or completion ------------------------------------------------------------------------------------
    def _use_chat(self, request: LLMRequest) -> bool:
        return request.messages is not None and self._chat_ok is not False

    def has_chat_template(self) -> bool | None:
        """Known once a chat call was answered (True) or refused for lack of a chat template (False)."""
        return self._chat_ok

    def _completion_prompt(self, request: LLMRequest) -> str:
        return request.prompt if request.prompt is not None else flatten_messages(request.messages or ())

    def _with_chat_fallback(self, request: LLMRequest, chat: Callable[[], T], completion: Callable[[], T]) -> T:
        if not self._use_chat(request):
            return completion()
        try:
            result = chat()
            self._chat_ok = True
            return result
        except openai.BadRequestError as exc:
            if "chat template" not in str(exc).lower():
                raise
            self._chat_ok = False  # a base model: flatten messages from now on
            return completion()

    # -- interface ---------------------------------------------------------------------------------------------
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
        schemas = schemas_per_request(json_schema, len(requests))
        common: dict[str, Any] = {"model": self.model_id, "max_tokens": max_tokens, "temperature": temperature,
                                  "seed": seed}  # fmt: skip
        if stop:
            common["stop"] = list(stop)

        def one(job: tuple[RequestLike, Schema | None]) -> Generation:
            request, schema = LLMRequest.of(job[0]), job[1]
            fmt = (
                {"type": "json_schema", "json_schema": {"name": "output", "schema": schema, "strict": True}}
                if schema is not None
                else None
            )

            def chat() -> Generation:
                msgs = [m.model_dump() for m in request.messages or ()]
                extra = {"response_format": fmt} if fmt else {}
                r = self._call(lambda c: c.chat.completions.create(messages=msgs, **common, **extra))
                ch = r.choices[0]
                return _generation(ch.message.content or "", ch.finish_reason, r.usage)

            def completion() -> Generation:
                prompt = self._completion_prompt(request)
                body = {"response_format": fmt} if fmt else None
                r = self._call(lambda c: c.completions.create(prompt=prompt, **common, extra_body=body))
                ch = r.choices[0]
                return _generation(ch.text, ch.finish_reason, r.usage)

            try:
                gen = self._with_chat_fallback(request, chat, completion)
            except openai.BadRequestError as exc:
                raise EngineError(
                    f"LLM server rejected the request: {exc.message}",
                    hint="shorten the prompt or check the server's --max-model-len",
                ) from exc
            return gen

        return parse_outputs(self._map(one, list(zip(requests, schemas, strict=True))), schemas)

    def _tokenize_labels(self, labels: list[str]) -> dict[str, int] | None:
        """Label token ids via vLLM's /tokenize; None on servers without it."""
        if self._label_ids is not None and all(lab in self._label_ids for lab in labels):
            return self._label_ids
        found: dict[str, int] = dict(self._label_ids or {})
        root = self._root(self.urls[0])
        try:
            with httpx.Client(timeout=self.settings.llm_timeout_s) as http:
                for label in labels:
                    resp = http.post(
                        f"{root}/tokenize",
                        json={"model": self.model_id, "prompt": label, "add_special_tokens": False},
                        headers={"Authorization": f"Bearer {self.settings.llm_api_key}"},
                    )
                    if resp.status_code != 200:
                        return None
                    tokens = resp.json().get("tokens", [])
                    if len(tokens) != 1:
                        raise EngineError(
                            f"label {label!r} is {len(tokens)} tokens for the served model",
                            hint="use single letters or digits as labels",
                        )
                    found[label] = int(tokens[0])
        except httpx.HTTPError:
            return None
        self._label_ids = found
        return found

    def score_options(self, requests: Sequence[RequestLike], labels: Sequence[str]) -> list[OptionScores]:
        labels = check_labels(labels)
        ids = self._tokenize_labels(labels)
        k = len(labels) if ids else min(self.settings.llm_max_logprobs, 20)
        body: dict[str, Any] = {"logprob_token_ids": [ids[lab] for lab in labels]} if ids else {}

        def one(req: RequestLike) -> OptionScores:
            request = LLMRequest.of(req)

            def chat() -> tuple[dict[str, float], int]:
                msgs = [m.model_dump() for m in request.messages or ()]
                r = self._call(
                    lambda c: c.chat.completions.create(
                        model=self.model_id,
                        messages=msgs,
                        max_tokens=1,
                        temperature=0.0,
                        logprobs=True,
                        top_logprobs=min(k, 20),
                        extra_body=body or None,
                    )
                )
                content = (r.choices[0].logprobs.content or []) if r.choices[0].logprobs else []
                top = {t.token: t.logprob for t in content[0].top_logprobs} if content else {}
                return top, r.usage.prompt_tokens if r.usage else 0

            def completion() -> tuple[dict[str, float], int]:
                prompt = self._completion_prompt(request)
                r = self._call(
                    lambda c: c.completions.create(
                        model=self.model_id,
                        prompt=prompt,
                        max_tokens=1,
                        temperature=0.0,
                        logprobs=k,
                        extra_body=body or None,
                    )
                )
                lp = r.choices[0].logprobs
                top = dict(lp.top_logprobs[0]) if lp and lp.top_logprobs else {}
                return top, r.usage.prompt_tokens if r.usage else 0

            top, n_prompt = self._with_chat_fallback(request, chat, completion)
            floor = min(top.values()) if top else -math.inf
            logprobs = {lab: float(top.get(lab, floor)) for lab in labels}
            exact = {lab: lab in top for lab in labels}
            return OptionScores(logprobs=logprobs, prompt_tokens=n_prompt, exact=exact)

        return self._map(one, requests)

    # -- streaming ---------------------------------------------------------------------------------------------
    def stream(
        self,
        request: RequestLike,
        *,
        max_tokens: int = 256,
        temperature: float = 0.0,
        seed: int = 0,
        stop: Sequence[str] | None = None,
    ) -> Iterator[str]:
        """``stream=True`` on the server: text deltas as the server sends them. The stream is opened and read up to
        its first token on one replica; a replica that cannot be reached until then is replaced by the next one
        (as in :meth:`generate`). A connection lost after the first token ends the stream with
        :class:`EngineUnavailableError` (the text cannot be resumed elsewhere)."""
        req = LLMRequest.of(request)
        common: dict[str, Any] = {
            "model": self.model_id,
            "max_tokens": max_tokens,
            "temperature": temperature,
            "seed": seed,
            "stream": True,
        }
        stops = [s for s in stop or () if s]
        if stops:
            common["stop"] = stops

        def chat() -> _OpenStream:
            msgs = [m.model_dump() for m in req.messages or ()]
            return self._call(lambda c: _OpenStream.open(c.chat.completions.create(messages=msgs, **common), True))

        def completion() -> _OpenStream:
            prompt = self._completion_prompt(req)
            return self._call(lambda c: _OpenStream.open(c.completions.create(prompt=prompt, **common), False))

        try:
            opened = self._with_chat_fallback(req, chat, completion)
        except openai.BadRequestError as exc:
            raise EngineError(
                f"LLM server rejected the request: {exc.message}",
                hint="shorten the prompt or check the server's --max-model-len",
            ) from exc
        try:
            yield from opened.deltas()
        except _STREAM_ERRORS as exc:
            raise EngineUnavailableError(
                f"the LLM server's stream broke off: {exc}",
                hint="send the message again; check the server (`GET /health`) if it keeps happening",
            ) from exc
        finally:
            opened.close()

    def describe(self) -> dict[str, Any]:
        out = {"backend": self.backend, "model": self.model_id, "servers": [redact_url(u) for u in self.urls]}
        if self.settings.llm_adapter:
            out["adapter"] = self.adapter["path"] if self.adapter else self.settings.llm_adapter
            if self.adapter:
                out["adapter_sha256"] = self.adapter["sha256"]
        return out

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        for c in self.clients:
            c.close()


def _local_adapter(path: str | None) -> dict[str, Any] | None:
    """The adapter folder's identity when it is on this machine (the server may read it from another one)."""
    if not path or not (Path(path).expanduser() / "adapter_config.json").is_file():
        return None
    from agent.llm.models import adapter_info

    return adapter_info(path)


class _OpenStream:
    """A server stream read up to its first token (so that a failure before it can go to another replica)."""

    def __init__(self, stream: Any, iterator: Iterator[Any], head: list[str], chat: bool) -> None:
        self.stream = stream
        self.iterator = iterator
        self.head = head
        self.chat = chat

    @staticmethod
    def text(chunk: Any, chat: bool) -> str:
        if not getattr(chunk, "choices", None):
            return ""  # e.g. a usage-only chunk
        choice = chunk.choices[0]
        if chat:
            return (choice.delta.content if choice.delta is not None else None) or ""
        return getattr(choice, "text", None) or ""

    @classmethod
    def open(cls, stream: Any, chat: bool) -> _OpenStream:
        iterator = iter(stream)
        head: list[str] = []
        try:
            for chunk in iterator:
                text = cls.text(chunk, chat)
                if text:
                    head.append(text)
                    break
        except _TRANSPORT_ERRORS as exc:  # lost before the first token: let the caller try another replica
            stream.close()
            raise openai.APIConnectionError(message=str(exc), request=stream.response.request) from exc
        return cls(stream, iterator, head, chat)

    def deltas(self) -> Iterator[str]:
        yield from self.head
        for chunk in self.iterator:
            text = self.text(chunk, self.chat)
            if text:
                yield text

    def close(self) -> None:
        close = getattr(self.stream, "close", None)
        if callable(close):
            close()


def _transport_errors() -> tuple[type[Exception], ...]:
    """Connection errors raised while a stream is read: the openai SDK's HTTP client (``httpx2`` in openai 3.x),
    and ``httpx``."""
    found: list[type[Exception]] = [httpx.TransportError]
    try:
        import httpx2

        found.append(httpx2.TransportError)
    except ImportError:
        pass
    return tuple(found)


_TRANSPORT_ERRORS = _transport_errors()
_STREAM_ERRORS: tuple[type[Exception], ...] = (*_TRANSPORT_ERRORS, openai.APIError)


def _generation(text: str, finish_reason: str | None, usage: Any) -> Generation:
    return Generation(
        text=text,
        prompt_tokens=int(getattr(usage, "prompt_tokens", 0) or 0),
        completion_tokens=int(getattr(usage, "completion_tokens", 0) or 0),
        finish_reason=finish_reason,
        parsed=None,
    )
