"""Per-position label priors of option prompts, estimated from content-free prompts and cached.

An option prompt's label distribution carries a position bias (the default model picks the LAST label in 294 of
300 prompts, see docs/runtime-notes). Following "calibrate before use" (Zhao et al., 2021), the prior of label
``i`` among ``m`` options is the mean log-softmax (over the ``m`` labels) of label ``i`` on the same template
rendered with placeholder history and candidates (``N/A``, ``[MASK]``, ``none``). Subtracting it from a real
prompt's log-softmax, then renormalising, removes the part of the score that the position alone explains.

Priors depend on the model, the template file and the number of options, nothing else: they are cached per
``(engine, template version_id, m)`` in memory, and on disk as JSON in ``RerankConfig.cache_dir``.
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from agent.llm.base import LLMEngine, OptionScores, log_softmax_subset
from prompts import PromptRegistry, option_label

__all__ = ["PLACEHOLDERS", "PriorCache", "content_free_requests", "engine_key", "prior_from_scores"]

PLACEHOLDERS = ("N/A", "[MASK]", "none")
CACHE_FILE = "label_priors.json"
PriorKey = tuple[str, str, int]

_MEMORY: dict[PriorKey, list[float]] = {}
_LOCK = threading.Lock()


def engine_key(engine: LLMEngine) -> str:
    """Backend and model, plus the LoRA adapter when the engine has one (it changes the label prior): its folder and
    a hash of its weights, so an adapter retrained into the same folder gets new priors."""
    adapter = getattr(engine, "adapter", None)
    if isinstance(adapter, dict) and adapter.get("path"):
        return f"{engine.backend}:{engine.model_id}+{adapter['path']}@{adapter.get('sha256', '')}"
    path = getattr(getattr(engine, "settings", None), "llm_adapter", None)
    return f"{engine.backend}:{engine.model_id}" + (f"+{path}" if path else "")


def content_free_requests(registry: PromptRegistry, template: str, m: int) -> list[list[dict[str, str]]]:
    """The template rendered with ``m`` placeholder options, once per placeholder string."""
    out = []
    for p in PLACEHOLDERS:
        variables = {
            "history": [{"title": p}],
            "need": "",
            "candidates": [{"id": str(i), "title": p} for i in range(m)],
        }
        out.append(registry.render(template, variables, allow_extra=True).chat_messages())
    return out


def prior_from_scores(scores: Sequence[OptionScores], m: int) -> list[float]:
    """Mean log-softmax over the first ``m`` labels, per position."""
    labels = [option_label(i) for i in range(m)]
    total = [0.0] * m
    for s in scores:
        sub = log_softmax_subset({lab: s.logprobs[lab] for lab in labels})
        for i, lab in enumerate(labels):
            total[i] += sub[lab]
    return [t / len(scores) for t in total]


class PriorCache:
    """Label priors in memory (process-wide) and, when ``folder`` is set, in ``folder/label_priors.json``."""

    def __init__(self, folder: Path | None) -> None:
        self.path = Path(folder).expanduser() / CACHE_FILE if folder is not None else None

    @staticmethod
    def _disk_key(key: PriorKey) -> str:
        return f"{key[0]}|{key[1]}|{key[2]}"

    def _read(self) -> dict[str, Any]:
        if self.path is None or not self.path.is_file():
            return {}
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}  # a damaged cache is recomputed, never fatal
        entries = data.get("entries") if isinstance(data, dict) else None
        return entries if isinstance(entries, dict) else {}

    def get(self, key: PriorKey) -> list[float] | None:
        with _LOCK:
            if key in _MEMORY:
                return list(_MEMORY[key])
            entry = self._read().get(self._disk_key(key))
            prior = entry.get("prior") if isinstance(entry, dict) else None
            if isinstance(prior, list) and len(prior) == key[2] and all(isinstance(v, int | float) for v in prior):
                _MEMORY[key] = [float(v) for v in prior]
                return list(_MEMORY[key])
            return None

    def put(self, key: PriorKey, prior: list[float]) -> None:
        with _LOCK:
            _MEMORY[key] = list(prior)
            if self.path is None:
                return
            entries = self._read()
            entries[self._disk_key(key)] = {
                "engine": key[0],
                "template": key[1],
                "n_labels": key[2],
                "placeholders": list(PLACEHOLDERS),
                "prior": prior,
            }
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".label_priors.", suffix=".json")
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump({"version": 1, "entries": entries}, fh, indent=1, sort_keys=True)
            os.replace(tmp, self.path)

    @staticmethod
    def clear_memory() -> None:
        with _LOCK:
            _MEMORY.clear()
