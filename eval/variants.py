"""Variant specs: ``NAME:strategy=options,weight=0.2,prompt=rank_options,model=...`` -> settings overrides.

Keys: ``strategy`` (retrieval | listwise | options | pointwise | learned), ``weight`` (LLM share of the blend),
``orders`` (candidate permutations), ``prompt`` (ranking template of the strategy), ``explain`` (llm | template | none),
``model``, ``adapter`` (LoRA adapter folder), ``backend``, ``server``, ``candidates`` (fused candidates), any
other :class:`~agent.settings.Settings` field by name, and any :class:`~agent.schemas.RerankConfig` field by name
(``mmr_lambda``, ``calibrate``, ``history_limit``, ...). ``fusion.SOURCE=W`` sets one candidate source's fusion
weight over the configured ones (sources: semantic, item2item, collab, popularity, the log-learned transition and
ease, and the LLM sources profile and generated, 0 by default), e.g. ``prof:strategy=retrieval,fusion.profile=1.0``.
Everything is validated before any LLM time is spent.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from pydantic import Field, ValidationError

from agent.errors import ConfigError
from agent.schemas import STRATEGIES, RerankConfig
from agent.settings import Settings
from prompts import PromptRegistry
from retrieval.config import check_source_weights, source_weights_hint

__all__ = ["BASELINES", "LOG_BASELINES", "EvalSettings", "Variant", "parse_variant", "variant_settings"]

BASELINES = ("random", "popularity", "itemknn", "ease", "transition", "embedding", "retrieval")
"""Baselines: random, most popular (train), item-kNN (item-item cosine over train interactions), the log-learned
sources alone (EASE, item transitions; fitted on the train log), embedding similarity (semantic + item-to-item
sources only, retrieval order) and the fused retrieval order."""
LOG_BASELINES = ("popularity", "itemknn", "ease", "transition")
"""Baselines that need an interaction log."""

_ALIASES = {
    "strategy": "rerank_strategy",
    "weight": "rerank_llm_weight",
    "orders": "rerank_n_orders",
    "explain": "explain_mode",
    "model": "llm_model",
    "backend": "llm_backend",
    "server": "llm_server_url",
    "candidates": "fusion_n",
    "adapter": "llm_adapter",  # a LoRA adapter folder (`recagent train ranker --out`): base vs tuned
}
_TEMPLATE_TASK = {"listwise": "listwise_template", "options": "options_template", "pointwise": "pointwise_template"}
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")


class EvalSettings(Settings):
    """Settings plus ranking-config overrides the plain settings do not expose (templates, MMR, calibration)."""

    rerank_overrides: dict[str, Any] = Field(default_factory=dict)

    def rerank_config(self, **overrides: Any) -> RerankConfig:
        return super().rerank_config(**{**self.rerank_overrides, **overrides})


@dataclass
class Variant:
    """A named arm: a pipeline configuration, or a baseline."""

    name: str
    settings: dict[str, Any] = field(default_factory=dict)
    rerank: dict[str, Any] = field(default_factory=dict)
    fusion: dict[str, float] = field(default_factory=dict)
    baseline: str | None = None
    spec: str = ""

    @property
    def kind(self) -> str:
        return "baseline" if self.baseline else "pipeline"

    def describe(self) -> dict[str, Any]:
        out = {"name": self.name, "kind": self.kind, "spec": self.spec, "settings": self.settings,
               "rerank": self.rerank, "baseline": self.baseline}  # fmt: skip
        if self.fusion:
            out["fusion"] = dict(self.fusion)
        return out


def _value(text: str) -> Any:
    low = text.strip().lower()
    if low in ("true", "yes", "on"):
        return True
    if low in ("false", "no", "off"):
        return False
    if low == "null":
        return None
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text.strip()


def parse_variant(spec: str, registry: PromptRegistry | None = None) -> Variant:
    """Parse ``NAME:key=value,...`` (``NAME:`` with nothing after the colon: the configured settings). ConfigError
    names the problem; a spec without a colon is refused (``garbage`` is a typo far more often than a variant)."""
    name, colon, body = spec.partition(":")
    name = name.strip()
    if not colon:
        raise ConfigError(
            f"variant {spec!r} has no ':'",
            hint="write NAME:key=value,... e.g. opt:strategy=options,weight=0.2 (NAME: alone runs the configured "
            "settings; baselines go to --baseline or --baselines)",
        )
    if not _NAME.match(name):
        raise ConfigError(
            f"variant {spec!r}: bad name {name!r}",
            hint="write NAME:strategy=options,weight=0.2 (NAME of letters, digits, _ . -)",
        )
    if name in BASELINES:
        raise ConfigError(f"variant name {name!r} is a baseline name", hint="pick another name, or use --baselines")
    variant = Variant(name=name, spec=spec)
    settings_fields = set(Settings.model_fields)
    rerank_fields = set(RerankConfig.model_fields) - {"strategy", "cache_dir", "seed"}
    prompt: str | None = None
    for part in filter(None, (p.strip() for p in body.split(","))):
        key, eq, raw = part.partition("=")
        key = key.strip()
        if not eq or not key:
            raise ConfigError(f"variant {name}: cannot read {part!r}", hint="use key=value pairs separated by commas")
        value = _value(raw)
        if key.startswith("fusion."):
            source = key.removeprefix("fusion.")
            try:
                variant.fusion.update(check_source_weights({source: value}))
            except ValueError as exc:
                raise ConfigError(
                    f"variant {name}: {key}={raw.strip()}: {exc}",
                    hint=f"write fusion.SOURCE=WEIGHT, e.g. fusion.profile=1.0; {source_weights_hint()}",
                ) from exc
        elif key == "prompt":
            prompt = str(value)
        elif key in _ALIASES:
            variant.settings[_ALIASES[key]] = value
        elif key in settings_fields:
            variant.settings[key] = value
        elif key in rerank_fields:
            variant.rerank[key] = value
        else:
            known = ", ".join(sorted([*_ALIASES, "prompt", "fusion.SOURCE"]))
            raise ConfigError(
                f"variant {name}: unknown key {key!r}",
                hint=f"use {known}, a setting name (`recagent config`) or a ranking option "
                f"({', '.join(sorted(rerank_fields))})",
            )
    strategy = variant.settings.get("rerank_strategy")
    if strategy is not None and strategy not in STRATEGIES:
        raise ConfigError(f"variant {name}: unknown strategy {strategy!r}", hint=f"use one of {', '.join(STRATEGIES)}")
    if prompt is not None:
        registry = registry or PromptRegistry()
        if prompt not in registry:
            raise ConfigError(
                f"variant {name}: unknown prompt template {prompt!r}",
                hint=f"known templates: {', '.join(registry.names())} (`recagent prompts list`)",
            )
        task = registry.get(prompt).task
        target = _TEMPLATE_TASK.get(task.removeprefix("rank_")) or _TEMPLATE_TASK.get(str(strategy))
        if task == "explain":
            target = "explain_template"
        if target is None:
            raise ConfigError(
                f"variant {name}: template {prompt!r} has task {task!r}, which no ranking strategy uses",
                hint="give a rank_* or explain template",
            )
        variant.rerank[target] = prompt
    try:
        RerankConfig(**variant.rerank)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"variant {name}: {problems}", hint="fix the ranking option values") from exc
    return variant


def variant_settings(base: Settings, variant: Variant) -> EvalSettings:
    """``base`` with the variant's overrides, validated (ConfigError on a bad value)."""
    values = base.model_dump()
    values.update(variant.settings)
    if variant.fusion:
        values["fusion_weights"] = {**values["fusion_weights"], **variant.fusion}
    try:
        return EvalSettings(**values, rerank_overrides=dict(variant.rerank))
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"variant {variant.name}: invalid settings: {problems}", hint="fix the variant spec") from exc
