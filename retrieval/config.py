"""Small, explicit configuration objects for the retrieval layer.

``retrieval`` never reads settings or the environment: the caller (the CLI, the agent, a test) builds these objects
and passes them down. ``agent.settings`` maps its ``RECAGENT_*`` fields onto them.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator

from retrieval.errors import ConfigError

DEFAULT_COLLECTION = "movies"
# Chosen on the validation part of the leave-one-out split of ml-latest-small (bench/tune_learned.py, see
# docs/retrieval.md):
# item2item : transition : ease = 1 : 4 : 1, collab and popularity 0 (they added nothing next to the log-learned
# sources); semantic (no input there: no free-text need) keeps the weight of item2item, as before.
DEFAULT_SOURCE_WEIGHTS: dict[str, float] = {
    "semantic": 1.0,
    "item2item": 1.0,
    "collab": 0.0,  # item-item cosine over the log (retrieval/candidates.py)
    "popularity": 0.0,
    "profile": 0.0,  # LLM-written user profile -> semantic query (agent/profiles.py); 0 = off, no LLM call
    "generated": 0.0,  # LLM-proposed titles grounded to catalog items (agent/ground.py); 0 = off
    "comention": 2.0,  # items recommended with the liked ones in a fitted dialogue log (retrieval/dialogue_sources.py)
    "recommended_popularity": 0.25,  # what a fitted dialogue log's recommenders named most (cold openings)
    # catalog field values named in the conversation (retrieval/attribute_source.py); with comention 2 and
    # recommended_popularity 0.25 chosen on ReDial validation parts (bench/redial_fusion_grid.py,
    # docs/eval/redial-folds.md)
    "attribute": 2.0,
    "transition": 4.0,  # items following the user's recent items in the log (retrieval/transition.py)
    "ease": 1.0,  # EASE linear item-item model of the log (retrieval/ease.py)
    "sequential": 1.0,  # trained next-item model (retrieval/sequential.py); absent when none is trained
}
SOURCE_NAMES: tuple[str, ...] = tuple(DEFAULT_SOURCE_WEIGHTS)
"""The candidate sources recagent knows (fusion weight names)."""


def source_weights_hint() -> str:
    """How to write fusion weights, naming the sources known now (:data:`SOURCE_NAMES`)."""
    return (
        "name each source as SOURCE=WEIGHT (JSON for RECAGENT_FUSION_WEIGHTS, e.g. '{\"semantic\": 1.0}') with "
        f"SOURCE one of {', '.join(SOURCE_NAMES)} and WEIGHT a number >= 0 (0 turns a source off)"
    )


def check_source_weights(weights: Mapping[str, object]) -> dict[str, float]:
    """The one validation of fusion weights (settings, ``--source``, the HTTP API, ``--variant``).

    Returns the weights as floats; raises ValueError naming every unknown source and every weight that is not a
    finite number >= 0 (pydantic validators turn it into a validation error; the CLI adds
    :func:`source_weights_hint`).
    """
    unknown = sorted(str(k) for k in weights if k not in SOURCE_NAMES)
    bad = {}
    out: dict[str, float] = {}
    for name, value in weights.items():
        number = _weight(value)
        if number is None:
            bad[str(name)] = value
        else:
            out[str(name)] = number
    problems = []
    if unknown:
        problems.append(
            f"unknown candidate source(s) {', '.join(map(repr, unknown))} (known: {', '.join(SOURCE_NAMES)})"
        )
    if bad:
        shown = ", ".join(f"{k}={v!r}" for k, v in bad.items())
        problems.append(f"weights must be numbers >= 0 (0 turns a source off), got {shown}")
    if problems:
        raise ValueError("; ".join(problems))
    return out


def _weight(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        number = float(value)
    except ValueError:
        return None
    return number if math.isfinite(number) and number >= 0 else None


EmbedBackend = Literal["auto", "torch", "torch-bf16", "onnx", "onnx-int8"]
_COLLECTION_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9._-]{1,510}[a-zA-Z0-9]$")


class StoreConfig(BaseModel):
    """Where the Chroma collections live: an embedded folder (default) or a ``chroma run`` server."""

    model_config = ConfigDict(extra="forbid")

    path: Path = Field(
        default=Path(".recagent/chroma"), description="Folder of the embedded Chroma store (PersistentClient)."
    )
    url: str | None = Field(
        default=None, description="URL of a Chroma server (e.g. http://127.0.0.1:8000); wins over path."
    )
    collection: str = Field(default=DEFAULT_COLLECTION, description="Default collection name.")
    hnsw_ef_search: int = Field(default=100, ge=1, description="HNSW ef at query time (recall vs latency).")
    hnsw_ef_construction: int = Field(
        default=200, ge=1, description="HNSW ef at build time (used when a collection is made)."
    )
    hnsw_max_neighbors: int = Field(default=16, ge=2, description="HNSW M (used when a collection is made).")
    timeout_s: float = Field(
        default=10.0, gt=0, description="Seconds to wait for a Chroma server to answer its heartbeat."
    )


class EmbedConfig(BaseModel):
    """Which sentence-transformers model embeds item documents and free-text needs."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(
        default="default", description="'default' (bundled all-MiniLM-L6-v2), a model folder or a HF id."
    )
    batch_size: int = Field(default=64, ge=1, description="Texts per encoder batch.")
    device: str | None = Field(
        default=None, description="torch device (cpu, cuda, mps); None lets sentence-transformers pick."
    )
    normalize: bool = Field(default=True, description="L2-normalise embeddings (cosine = dot product).")
    progress: bool = Field(default=True, description="Show a tqdm progress bar while embedding.")
    num_threads: int | None = Field(
        default=None, ge=1, description="torch threads while embedding batches; None keeps torch's setting."
    )
    query_threads: int | None = Field(
        default=1,
        ge=1,
        description="torch threads while embedding small calls (<= 8 texts: queries). 1 by default: on a shared "
        "CPU, two threads made one query 40x slower (see docs/retrieval.md); None keeps torch's setting.",
    )
    backend: EmbedBackend = Field(
        default="torch",
        description="How the model runs: 'torch' (float32, the reference), 'torch-bf16' (bfloat16 weights; fast only "
        "on CPUs with native bf16), 'onnx' (exported locally, run by onnxruntime; same vectors as torch), "
        "'onnx-int8' (int8 dynamic quantisation of that export) or 'auto' (torch-bf16 on a CPU with native bf16, "
        "else torch). The onnx exports need the `onnx` package. Backends whose vectors differ from torch float32 "
        "get their own embedder id, so a collection is never filled by two of them; see docs/benchmarks.md.",
    )
    sort_by_length: bool = Field(
        default=True,
        description="Embed texts sorted by length so each batch pads less; results keep the input order.",
    )
    cache_dir: Path | None = Field(
        default=Path(".recagent/embed-cache"),
        description="Folder for models exported by the onnx backends (a sub-folder per model, keyed by its files "
        "and the library versions); None exports into a temporary folder for this process only.",
    )


class FusionConfig(BaseModel):
    """How candidate sources are combined (weighted reciprocal-rank fusion)."""

    model_config = ConfigDict(extra="forbid")

    weights: dict[str, float] = Field(
        default_factory=lambda: dict(DEFAULT_SOURCE_WEIGHTS), description="Per-source RRF weight; 0 disables."
    )
    k: int = Field(default=100, ge=1, description="Candidates asked from each source.")
    rrf_k: int = Field(default=60, ge=0, description="RRF constant: score = sum(weight / (rrf_k + rank)).")
    n: int = Field(default=50, ge=1, description="Candidates returned after fusion.")

    @field_validator("weights", mode="before")
    @classmethod
    def _known_sources(cls, value: object) -> object:
        return check_source_weights(value) if isinstance(value, Mapping) else value


class CleanConfig(BaseModel):
    """Limits applied while cleaning a catalog."""

    model_config = ConfigDict(extra="forbid")

    max_field_chars: int = Field(default=10_000, ge=16, description="Longer text fields are truncated (and counted).")
    max_title_chars: int = Field(default=500, ge=8, description="Longer titles are truncated (and counted).")
    max_list_items: int = Field(default=50, ge=1, description="Longer list fields (tags) keep their first N values.")
    max_tags: int = Field(default=20, ge=0, description="MovieLens tags kept per movie (most frequent first).")


def validate_collection_name(name: str) -> str:
    """Return ``name`` if Chroma accepts it as a collection name, else raise :class:`ConfigError`."""
    if not isinstance(name, str) or not _COLLECTION_RE.match(name) or ".." in name:
        raise ConfigError(
            f"invalid collection name {name!r}",
            hint="use 3-512 characters from [a-zA-Z0-9._-], starting and ending with a letter or digit "
            "(e.g. movies, books-2024)",
        )
    return name


def parse_chroma_url(url: str) -> tuple[str, int, bool]:
    """Split ``http(s)://host[:port]`` (or ``host:port``) into host, port, ssl."""
    text = url.strip()
    if "://" not in text:
        text = "http://" + text
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError as exc:
        raise ConfigError(
            f"invalid Chroma server URL {url!r}: {exc}", hint="write it as http://HOST:PORT, e.g. http://127.0.0.1:8000"
        ) from exc
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(
            f"invalid Chroma server URL {url!r}", hint="write it as http://HOST:PORT, e.g. http://127.0.0.1:8000"
        )
    ssl = parts.scheme == "https"
    return parts.hostname, port or (443 if ssl else 8000), ssl
