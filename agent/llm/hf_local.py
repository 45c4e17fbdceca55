"""transformers in-process engine: the fallback where vLLM is not installed, and the benchmark baseline.

Requests are served one at a time (no batching: that is vLLM's job), under the engine's lock. Structured output is
constrained with xgrammar's transformers logits processor, the same grammar engine vLLM uses. :meth:`HFEngine.stream`
decodes in a helper thread and hands text over with transformers' ``TextIteratorStreamer``.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator, Sequence
from typing import Any

from agent.errors import EngineError, ModelError
from agent.llm.base import (
    Generation,
    LLMEngine,
    LLMRequest,
    OptionScores,
    RequestLike,
    SchemaArg,
    StopFilter,
    check_labels,
    cut_at_stop,
    parse_outputs,
    schemas_per_request,
)
from agent.llm.dtype import resolve_llm_dtype
from agent.llm.models import adapter_info
from agent.llm.prompting import check_length, encode_request, has_chat_template, label_token_ids
from agent.settings import Settings


class HFEngine(LLMEngine):
    backend = "hf"

    def __init__(self, settings: Settings, model_path: str) -> None:
        import torch
        from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

        self.settings = settings
        self.model_id = model_path
        self._torch = torch
        self.dtype = resolve_llm_dtype(settings.llm_dtype, accelerator=False)  # this backend runs on the CPU
        dtype = getattr(torch, self.dtype, None)
        if not isinstance(dtype, torch.dtype):
            raise ModelError(
                f"unknown dtype {settings.llm_dtype!r}",
                hint="set RECAGENT_LLM_DTYPE to auto, bfloat16, float16 or float32",
            )
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(model_path)
            self.config = AutoConfig.from_pretrained(model_path)
            self.model = AutoModelForCausalLM.from_pretrained(model_path, dtype=dtype)
        except (OSError, ValueError) as exc:
            raise ModelError(
                f"transformers could not load model {model_path!r}: {exc}",
                hint="check RECAGENT_LLM_MODEL points at a complete model folder (config.json, weights, tokenizer)",
            ) from exc
        self.adapter = adapter_info(settings.llm_adapter)
        if self.adapter is not None:
            from peft import PeftModel

            try:
                tuned: Any = PeftModel.from_pretrained(self.model, self.adapter["path"])
                self.model = tuned
            except (OSError, ValueError, RuntimeError, KeyError) as exc:
                raise ModelError(
                    f"LoRA adapter {self.adapter['path']} does not fit model {model_path}: {exc}",
                    hint="use the base model the adapter was trained on (its manifest.json names it)",
                ) from exc
        self.model.eval()
        self._grammar_compiler: Any = None
        self._lock = threading.Lock()  # one generation at a time (a stream's decoding thread included)

    def _ids(self, request: RequestLike) -> list[int]:
        return check_length(encode_request(self.tokenizer, LLMRequest.of(request)), self.settings.llm_max_model_len)

    def _grammar_processor(self, schema: dict[str, Any]) -> Any:
        import xgrammar as xgr

        if self._grammar_compiler is None:
            vocab = getattr(self.config, "vocab_size", None) or len(self.tokenizer)
            info = xgr.TokenizerInfo.from_huggingface(self.tokenizer, vocab_size=vocab)
            self._grammar_compiler = xgr.GrammarCompiler(info)
        compiled = self._grammar_compiler.compile_json_schema(json.dumps(schema), any_whitespace=False)
        return xgr.contrib.hf.LogitsProcessor(compiled)

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
        torch = self._torch
        schemas = schemas_per_request(json_schema, len(requests))
        eos = self.tokenizer.eos_token_id
        results: list[Generation] = []
        for request, schema in zip(requests, schemas, strict=True):
            ids = self._ids(request)
            kwargs = self._sampling(max_tokens, temperature, seed)
            if schema is not None:
                kwargs["logits_processor"] = [self._grammar_processor(schema)]
            with self._lock, torch.inference_mode():
                out = self.model.generate(torch.tensor([ids]), **kwargs)  # type: ignore[operator,misc]
            new = out[0, len(ids) :].tolist()
            stopped = bool(new) and new[-1] in _as_list(eos)
            text = str(self.tokenizer.decode(new, skip_special_tokens=True))
            if stop and cut_at_stop(text, stop) != text:
                text, stopped = cut_at_stop(text, stop), True
            results.append(
                Generation(
                    text=text,
                    prompt_tokens=len(ids),
                    completion_tokens=len(new),
                    finish_reason="stop" if stopped or len(new) < max_tokens else "length",
                )
            )
        return parse_outputs(results, schemas)

    def _sampling(self, max_tokens: int, temperature: float, seed: int) -> dict[str, Any]:
        eos = self.tokenizer.eos_token_id
        kwargs: dict[str, Any] = {"max_new_tokens": max_tokens, "pad_token_id": self.tokenizer.pad_token_id or eos}
        if temperature > 0:
            self._torch.manual_seed(seed)
            kwargs.update(do_sample=True, temperature=temperature)
        else:
            kwargs.update(do_sample=False, top_p=None, top_k=None)
        return kwargs

    def stream(
        self,
        request: RequestLike,
        *,
        max_tokens: int = 256,
        temperature: float = 0.0,
        seed: int = 0,
        stop: Sequence[str] | None = None,
    ) -> Iterator[str]:
        """Text deltas from ``TextIteratorStreamer`` (decoding runs in a helper thread); stop strings are applied
        here, and decoding ends at the next token once one appears or the reader stops early."""
        from transformers import StoppingCriteria, StoppingCriteriaList, TextIteratorStreamer

        torch = self._torch
        ids = self._ids(request)
        kwargs = self._sampling(max_tokens, temperature, seed)
        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True)
        cancel = threading.Event()
        failure: list[BaseException] = []

        class _Cancelled(StoppingCriteria):
            def __call__(self, input_ids: Any, scores: Any, **kw: Any) -> Any:
                return torch.full((input_ids.shape[0],), cancel.is_set(), dtype=torch.bool)

        def decode() -> None:
            try:
                with self._lock, torch.inference_mode():
                    self.model.generate(  # type: ignore[operator,misc]
                        torch.tensor([ids]),
                        streamer=streamer,
                        stopping_criteria=StoppingCriteriaList([_Cancelled()]),
                        **kwargs,
                    )
            except BaseException as exc:  # handed to the reader
                failure.append(exc)
                streamer.on_finalized_text("", stream_end=True)

        threading.Thread(target=decode, name="recagent-hf-stream", daemon=True).start()
        stops = StopFilter(stop)
        try:
            for delta in streamer:
                text = stops.feed(delta)
                if text:
                    yield text
                if stops.stopped:
                    break
            else:
                if failure:
                    raise EngineError(f"transformers failed while streaming: {failure[0]}") from failure[0]
                rest = stops.flush()
                if rest:
                    yield rest
        finally:
            cancel.set()

    def has_chat_template(self) -> bool:
        return has_chat_template(self.tokenizer)

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {"backend": self.backend, "model": self.model_id, "dtype": self.dtype}
        if self.adapter is not None:
            out.update(adapter=self.adapter["path"], adapter_sha256=self.adapter["sha256"])
        return out

    def score_options(self, requests: Sequence[RequestLike], labels: Sequence[str]) -> list[OptionScores]:
        torch = self._torch
        label_ids = label_token_ids(self.tokenizer, check_labels(labels))
        index = torch.tensor(list(label_ids.values()))
        results: list[OptionScores] = []
        for request in requests:
            ids = self._ids(request)
            with self._lock, torch.inference_mode():
                logits = self.model(torch.tensor([ids]), logits_to_keep=1).logits[0, -1].float()
            logprobs = torch.log_softmax(logits, dim=-1)[index].tolist()
            results.append(
                OptionScores(
                    logprobs=dict(zip(label_ids, logprobs, strict=True)),
                    prompt_tokens=len(ids),
                    exact=dict.fromkeys(label_ids, True),
                )
            )
        return results


def _as_list(value: int | list[int] | None) -> list[int]:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]
