"""Turn an :class:`LLMRequest` into the exact text and token ids a local engine sees.

Both local backends (vLLM and transformers) tokenize through these helpers, so the same request gives the same
token ids on both: that is what makes their scores comparable.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from agent.errors import EngineError, InputError
from agent.llm.base import ChatMessage, LLMRequest


def has_chat_template(tokenizer: Any) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def flatten_messages(messages: Sequence[ChatMessage]) -> str:
    """Plain-text rendering of a conversation for base models (no chat template).

    The system message opens the text; turns follow as ``User:`` / ``Assistant:`` lines; the text ends with
    ``Assistant:`` so that the model continues as the assistant. A trailing assistant message is treated as
    the beginning of the answer (prefill) and left open.
    """
    parts: list[str] = []
    msgs = list(messages)
    prefill = msgs.pop().content if msgs and msgs[-1].role == "assistant" else None
    for m in msgs:
        if m.role == "system":
            parts.append(m.content.strip())
        elif m.role == "user":
            parts.append(f"User: {m.content.strip()}")
        else:
            parts.append(f"Assistant: {m.content.strip()}")
    text = "\n\n".join(parts) + "\n\nAssistant:"
    return text + (" " + prefill if prefill else "")


def render_text(tokenizer: Any, request: LLMRequest) -> tuple[str, bool]:
    """Return ``(text, special_tokens_included)`` for ``request``."""
    if request.prompt is not None:
        return request.prompt, False
    assert request.messages is not None
    if has_chat_template(tokenizer):
        msgs = [m.model_dump() for m in request.messages]
        prefill = msgs[-1]["role"] == "assistant"
        text = tokenizer.apply_chat_template(
            msgs,
            tokenize=False,
            add_generation_prompt=not prefill,
            continue_final_message=prefill,
        )
        return str(text), True
    return flatten_messages(request.messages), False


def encode_request(tokenizer: Any, request: LLMRequest) -> list[int]:
    """Token ids of ``request``: chat template when the model has one, else the flattened text with the
    tokenizer's own special tokens (``<bos>`` for Gemma)."""
    text, specials_in_text = render_text(tokenizer, request)
    ids = tokenizer.encode(text, add_special_tokens=not specials_in_text)
    return [int(i) for i in ids]


def check_length(ids: list[int], max_model_len: int) -> list[int]:
    """Reject a prompt that leaves no room for output in the context window."""
    if len(ids) >= max_model_len:
        raise EngineError(
            f"prompt of {len(ids)} tokens does not fit the context length {max_model_len}",
            hint="shorten the prompt (fewer candidates or shorter item texts) or raise RECAGENT_LLM_MAX_MODEL_LEN",
        )
    return ids


def label_token_ids(tokenizer: Any, labels: Sequence[str]) -> dict[str, int]:
    """The single token id of each label; labels that are not one token are an error."""
    out: dict[str, int] = {}
    for label in labels:
        ids = tokenizer.encode(label, add_special_tokens=False)
        if len(ids) != 1:
            raise InputError(
                f"label {label!r} is {len(ids)} tokens for this model's tokenizer; "
                "option scoring needs one-token labels",
                hint="use single letters or digits as labels (A, B, C ... or 1, 2, 3)",
            )
        out[label] = int(ids[0])
    if len(set(out.values())) != len(out):
        raise InputError("two labels map to the same token", hint="use distinct single-character labels")
    return out
