"""LLM engine benchmark: same model, same prompts, one run (figures go to docs/benchmarks.md).

    .venv/bin/python bench/llm_engine.py [--prompts 32] [--candidates 20] [--repeats 3] [--model gemma-3-270m]

Measures, on ranking prompts built from MovieLens latest-small (user history + ~20 candidate titles with ids):
  (a) vLLM batched listwise JSON ranking vs transformers sequential generate() of the same work (requests/s ratio)
  (b) score_options (one forward pass, option labels) vs generating the full ranked JSON, both on vLLM (time ratio)
  (c) structured (JSON-schema) vs unconstrained decoding, time per generated token (ratio)
  (d) engine start time and peak memory (RSS of the process tree)
  (e) weights dtype: prefill and decode tokens/s of the same prompts in bfloat16 vs float32 (prefix cache off), the
      dtype ``llm_dtype=auto`` picks here, and the CPU flags that decide it (``--dtype-only`` runs just this part)
Medians over --repeats; every ratio is against a baseline measured in the same run.
"""

from __future__ import annotations

import sys
from pathlib import Path

# bench/retrieval.py would shadow the `retrieval` package: drop this folder from the import path
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import argparse
import contextlib
import csv
import json
import platform
import random
import statistics
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "movielens-latest-small"
LABELS = [chr(ord("A") + i) for i in range(20)]


class PeakRSS:
    """Samples the RSS of this process and its children (vLLM's engine core runs in a child)."""

    def __init__(self) -> None:
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        me = psutil.Process()
        while not self._stop.is_set():
            total = me.memory_info().rss
            for child in me.children(recursive=True):
                with contextlib.suppress(psutil.Error):
                    total += child.memory_info().rss
            self.peak = max(self.peak, total)
            time.sleep(0.2)

    def __enter__(self) -> PeakRSS:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def build_prompts(n: int, n_cand: int, seed: int = 0) -> list[tuple[str, str, list[str]]]:
    """(listwise prompt, option prompt, candidate ids) per sampled user."""
    movies: dict[str, tuple[str, str]] = {}
    with (DATA / "movies.csv").open(encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            movies[row["movieId"]] = (row["title"], row["genres"].replace("|", ", "))
    liked: dict[str, list[str]] = defaultdict(list)
    with (DATA / "ratings.csv").open(encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            if float(row["rating"]) >= 4:
                liked[row["userId"]].append(row["movieId"])
    rng = random.Random(seed)
    users = rng.sample(sorted(u for u, items in liked.items() if len(items) >= 12), n)
    all_ids = sorted(movies)
    out = []
    for u in users:
        history = liked[u][-10:]
        cands = [*rng.sample([m for m in all_ids if m not in set(liked[u])], n_cand - 1), liked[u][-11]]
        rng.shuffle(cands)
        hist_txt = "\n".join(f"- {movies[m][0]} ({movies[m][1]})" for m in history)
        list_txt = "\n".join(f"[{m}] {movies[m][0]} ({movies[m][1]})" for m in cands)
        opt_txt = "\n".join(f"({LABELS[i]}) {movies[m][0]} ({movies[m][1]})" for i, m in enumerate(cands))
        listwise = (
            f"A user liked these items:\n{hist_txt}\n\nCandidates:\n{list_txt}\n\n"
            "Rank the 10 candidates the user will like most. Answer with JSON "
            '{"ranking": [ids]}.\nJSON: '
        )
        option = f"A user liked these items:\n{hist_txt}\n\nCandidates:\n{opt_txt}\n\nThe best candidate is ("
        out.append((listwise, option, cands))
    return out


def ranking_schema(ids: list[str], k: int) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {"ranking": {"type": "array", "items": {"enum": ids}, "minItems": k, "maxItems": k}},
        "required": ["ranking"],
        "additionalProperties": False,
    }


def timed(fn: Any, repeats: int) -> tuple[float, Any]:
    times, result = [], None
    for _ in range(repeats):
        t = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), result


def generate_each(engine: Any, prompts: list[tuple[str, str, list[str]]], k: int, max_tokens: int) -> list[Any]:
    """One schema per request (each has its own candidate enum), handed to the engine in one call: vLLM batches
    them; transformers serves them one after the other."""
    schemas = [ranking_schema(p[2], k) for p in prompts]
    return engine.generate([p[0] for p in prompts], json_schema=schemas, max_tokens=max_tokens)


def tokens_of(results: list[Any]) -> int:
    return sum(r.completion_tokens for r in results)


CPU_FLAGS = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_tile", "bf16", "asimd")


def cpu_flags() -> list[str]:
    """The CPU flags that decide the dtype (from /proc/cpuinfo; empty where it does not exist)."""
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return []
    flags: set[str] = set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            flags.update(value.split())
    return [f for f in CPU_FLAGS if f in flags]


def dtype_section(settings: Any, model_path: str, prompts: list[str], repeats: int, decode: int) -> dict[str, Any]:
    """(e) prefill tok/s (max_tokens=1) and decode tok/s (extra time of ``decode`` tokens) per dtype, same prompts."""
    from agent.llm.dtype import resolve_llm_dtype
    from agent.llm.vllm_local import VLLMEngine

    out: dict[str, Any] = {"e_auto_dtype": resolve_llm_dtype("auto"), "e_prompts": len(prompts)}
    for dtype in ("bfloat16", "float32"):
        engine = VLLMEngine(settings.model_copy(update={"llm_dtype": dtype, "llm_prefix_caching": False}), model_path)
        engine.generate(prompts[:2], max_tokens=4)  # warm-up
        t_pre, pre = timed(lambda e=engine: e.generate(prompts, max_tokens=1, temperature=0.0), repeats)
        t_all, full = timed(lambda e=engine: e.generate(prompts, max_tokens=decode, temperature=0.0), repeats)
        prompt_tokens = sum(g.prompt_tokens for g in pre)
        out[f"e_{dtype}_prompt_tokens"] = prompt_tokens
        out[f"e_{dtype}_prefill_tok_per_s"] = round(prompt_tokens / t_pre, 1)
        out[f"e_{dtype}_decode_tok_per_s"] = round(max(1, tokens_of(full) - len(prompts)) / max(t_all - t_pre, 1e-9), 1)
        engine.close()
    out["e_ratio_prefill_float32_over_bfloat16"] = round(
        out["e_float32_prefill_tok_per_s"] / out["e_bfloat16_prefill_tok_per_s"], 2
    )
    out["e_ratio_decode_float32_over_bfloat16"] = round(
        out["e_float32_decode_tok_per_s"] / out["e_bfloat16_decode_tok_per_s"], 2
    )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prompts", type=int, default=32)
    ap.add_argument("--candidates", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--model", default="gemma-3-270m")
    ap.add_argument("--hf-repeats", type=int, default=1, help="repeats of the (slow, sequential) transformers baseline")
    ap.add_argument("--k", type=int, default=10, help="ranked ids in the listwise JSON")
    ap.add_argument("--out", type=Path, default=None, help="also write the figures as JSON here")
    ap.add_argument("--dtype-only", action="store_true", help="run only (e), the bfloat16 vs float32 comparison")
    ap.add_argument("--decode-tokens", type=int, default=32, help="(e) tokens decoded per prompt")
    args = ap.parse_args()

    from agent.llm.hf_local import HFEngine
    from agent.llm.models import resolve_model
    from agent.llm.vllm_local import VLLMEngine
    from agent.settings import load_settings

    settings = load_settings(llm_model=args.model)
    model_path = resolve_model(settings)
    prompts = build_prompts(args.prompts, args.candidates)
    max_tokens = 8 * args.k + 20
    fig: dict[str, Any] = {
        "model": args.model,
        "prompts": args.prompts,
        "candidates": args.candidates,
        "repeats": args.repeats,
        "hf_repeats": args.hf_repeats,
        "machine": f"{platform.machine()}, {psutil.cpu_count()} cores",
        "cpu_flags": cpu_flags(),
        "llm_dtype_setting": settings.llm_dtype,
    }
    fig.update(dtype_section(settings, model_path, [p[1] for p in prompts], args.repeats, args.decode_tokens))
    print(json.dumps(fig, indent=2), flush=True)
    if args.dtype_only:
        if args.out:
            args.out.write_text(json.dumps(fig, indent=2))
        return

    # (d) start time and peak memory
    with PeakRSS() as mem:
        t = time.perf_counter()
        engine = VLLMEngine(settings, model_path)
        fig["vllm_start_s"] = round(time.perf_counter() - t, 1)
        engine.generate(["warm-up"], max_tokens=4)
        engine.score_options(["warm-up ("], LABELS)
        generate_each(engine, prompts[:2], args.k, max_tokens)

        # (a) vLLM batched listwise JSON ranking
        t_vllm, res = timed(lambda: generate_each(engine, prompts, args.k, max_tokens), args.repeats)
        fig["a_vllm_listwise_s"] = round(t_vllm, 2)
        fig["a_vllm_req_per_s"] = round(len(prompts) / t_vllm, 2)
        fig["a_vllm_tokens"] = tokens_of(res)

        # (b) option scoring vs full ranked JSON (both vLLM, same prompts)
        t_opts, _ = timed(
            lambda: engine.score_options([p[1] for p in prompts], LABELS[: args.candidates]), args.repeats
        )
        fig["b_vllm_score_options_s"] = round(t_opts, 2)
        fig["b_ratio_listwise_over_options"] = round(t_vllm / t_opts, 2)

        # (c) structured vs unconstrained decoding, per generated token
        avg_len = max(1, fig["a_vllm_tokens"] // len(prompts))
        t_free, free = timed(
            lambda: engine.generate([p[0] for p in prompts], max_tokens=avg_len, temperature=0.0), args.repeats
        )
        per_tok_free = t_free / tokens_of(free)
        per_tok_struct = t_vllm / fig["a_vllm_tokens"]
        fig["c_unconstrained_tokens"] = tokens_of(free)
        fig["c_ms_per_token_structured"] = round(1000 * per_tok_struct, 2)
        fig["c_ms_per_token_unconstrained"] = round(1000 * per_tok_free, 2)
        fig["c_ratio_structured_over_unconstrained"] = round(per_tok_struct / per_tok_free, 3)
        engine.close()
    print(json.dumps(fig, indent=2), flush=True)
    fig["d_vllm_peak_rss_gb"] = round(mem.peak / 1e9, 2)

    with PeakRSS() as mem_hf:
        t = time.perf_counter()
        hf = HFEngine(settings, model_path)
        fig["hf_start_s"] = round(time.perf_counter() - t, 1)
        generate_each(hf, prompts[:1], args.k, max_tokens)  # warm-up
        t_hf, res_hf = timed(lambda: generate_each(hf, prompts, args.k, max_tokens), args.hf_repeats)
    fig["a_hf_sequential_s"] = round(t_hf, 2)
    fig["a_hf_req_per_s"] = round(len(prompts) / t_hf, 3)
    fig["a_hf_tokens"] = tokens_of(res_hf)
    fig["a_ratio_vllm_over_hf_req_per_s"] = round(t_hf / t_vllm, 2)
    fig["d_hf_peak_rss_gb"] = round(mem_hf.peak / 1e9, 2)

    print(json.dumps(fig, indent=2))
    if args.out:
        args.out.write_text(json.dumps(fig, indent=2))


if __name__ == "__main__":
    main()
