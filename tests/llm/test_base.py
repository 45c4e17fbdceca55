"""Engine-independent logic: requests, prompt flattening, schema checks, settings, model resolution."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agent.errors import ConfigError, InputError, ModelError, PartialOutputError, SchemaError, StructuredOutputError
from agent.llm.base import (
    ChatMessage,
    Generation,
    LLMRequest,
    OptionScores,
    check_schema,
    log_softmax_subset,
    parse_outputs,
    parse_structured,
)
from agent.llm.models import resolve_model
from agent.llm.prompting import encode_request, flatten_messages, label_token_ids
from agent.settings import load_settings


def test_request_needs_exactly_one_of_prompt_or_messages() -> None:
    with pytest.raises(ValueError, match="exactly one"):
        LLMRequest()
    with pytest.raises(ValueError, match="exactly one"):
        LLMRequest(prompt="x", messages=(ChatMessage(role="user", content="y"),))
    assert LLMRequest.of("hi").prompt == "hi"
    req = LLMRequest.of([{"role": "user", "content": "hi"}])
    assert req.messages == (ChatMessage(role="user", content="hi"),)


def test_flatten_messages_for_base_models() -> None:
    text = flatten_messages(
        [
            ChatMessage(role="system", content="You recommend books."),
            ChatMessage(role="user", content="Something short"),
        ]
    )
    assert text == "You recommend books.\n\nUser: Something short\n\nAssistant:"
    prefilled = flatten_messages([ChatMessage(role="user", content="Q"), ChatMessage(role="assistant", content="(")])
    assert prefilled.endswith("Assistant: (")


def test_check_schema_rejects_invalid_schema() -> None:
    with pytest.raises(SchemaError, match="not a valid JSON schema"):
        check_schema({"type": "no-such-type"})
    with pytest.raises(SchemaError, match="must be a JSON object"):
        check_schema([1, 2])  # type: ignore[arg-type]
    check_schema({"type": "object"})


def test_parse_structured_validates_and_keeps_raw() -> None:
    schema = {"type": "object", "properties": {"id": {"enum": ["a", "b"]}}, "required": ["id"]}
    assert parse_structured('{"id": "a"}', schema) == {"id": "a"}
    with pytest.raises(StructuredOutputError) as err:
        parse_structured('{"id": "zzz"}', schema)
    assert err.value.raw == '{"id": "zzz"}'
    with pytest.raises(StructuredOutputError, match="not valid JSON"):
        parse_structured('{"id": ', schema)


def test_parse_outputs_keeps_the_valid_outputs_of_a_batch() -> None:
    schema = {"type": "object", "properties": {"id": {"enum": ["a", "b"]}}, "required": ["id"]}

    def gen(text: str) -> Generation:
        return Generation(text=text, prompt_tokens=3, completion_tokens=2, finish_reason="stop")

    ok = parse_outputs([gen('{"id": "a"}'), gen("free text")], [schema, None])
    assert [g.parsed for g in ok] == [{"id": "a"}, None]
    with pytest.raises(PartialOutputError) as err:
        parse_outputs([gen('{"id": "b"}'), gen('{"id": '), gen("free")], [schema, schema, None])
    first, bad, free = err.value.outcomes
    assert first.parsed == {"id": "b"} and free.text == "free"
    assert isinstance(bad, StructuredOutputError) and bad.raw == '{"id": '
    assert "1 of 3 outputs" in err.value.message and err.value.raw == '{"id": '
    with pytest.raises(StructuredOutputError) as single:  # one request: its own error, as before
        parse_outputs([gen("{")], [schema])
    assert not isinstance(single.value, PartialOutputError)


def test_option_scores_ranking_and_renormalisation() -> None:
    scores = OptionScores(logprobs={"A": -3.0, "B": -1.0, "C": -3.0}, prompt_tokens=5)
    assert scores.ranked() == ["B", "A", "C"]
    norm = log_softmax_subset(scores.logprobs)
    assert pytest.approx(sum(2.718281828459045**v for v in norm.values()), rel=1e-9) == 1.0


def test_settings_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "recagent.toml"
    cfg.write_text('[recagent]\nllm_model = "/from/file"\nllm_max_model_len = 1024\n')
    s = load_settings(cfg)
    assert s.llm_model == "/from/file" and s.llm_max_model_len == 1024
    monkeypatch.setenv("RECAGENT_LLM_MODEL", "/from/env")
    assert load_settings(cfg).llm_model == "/from/env"
    assert load_settings(cfg, llm_model="/explicit").llm_model == "/explicit"  # explicit beats env
    assert load_settings(cfg, llm_max_model_len=512).llm_max_model_len == 512


def test_settings_errors_are_clear(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RECAGENT_LLM_MAX_MODEL_LEN", "lots")
    with pytest.raises(ConfigError, match="llm_max_model_len"):
        load_settings()
    monkeypatch.delenv("RECAGENT_LLM_MAX_MODEL_LEN")
    bad = tmp_path / "bad.toml"
    bad.write_text("llm_model = ")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(bad)
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "missing.toml")
    unknown = tmp_path / "unknown.toml"
    unknown.write_text('llm_modle = "x"\n')
    with pytest.raises(ConfigError, match="llm_modle"):
        load_settings(unknown)


def test_resolve_model_errors(tmp_path: Path) -> None:
    s = load_settings(home=tmp_path)
    with pytest.raises(ModelError, match="not prepared"):
        resolve_model(s)
    with pytest.raises(ModelError, match="does not exist"):
        resolve_model(s, str(tmp_path / "nope"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelError, match=r"no config\.json"):
        resolve_model(s, str(tmp_path / "empty"))
    assert resolve_model(s, "org/some-model") == "org/some-model"


def test_chat_template_and_flattened_paths(tiny_model_dir: Path, tiny_chat_model_dir: Path) -> None:
    from transformers import AutoTokenizer

    base = AutoTokenizer.from_pretrained(tiny_model_dir)
    chat = AutoTokenizer.from_pretrained(tiny_chat_model_dir)
    req = LLMRequest.of([{"role": "system", "content": "be brief"}, {"role": "user", "content": "a movie"}])
    base_ids = encode_request(base, req)
    chat_ids = encode_request(chat, req)
    assert base.decode(base_ids) == "<s>be brief\n\nUser: a movie\n\nAssistant:"
    assert chat.decode(chat_ids) == "<s><|system|>\nbe brief\n<|user|>\na movie\n<|assistant|>\n"
    assert chat_ids.count(chat.bos_token_id) == 1  # the template's BOS is not doubled


def test_label_tokens_must_be_single_tokens(tiny_model_dir: Path) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    assert len(label_token_ids(tok, ["A", "B", "C"])) == 3
    with pytest.raises(InputError, match="one-token labels"):
        label_token_ids(tok, ["A", "unbelievably-long-label"])


def test_settings_json_roundtrip() -> None:
    s = load_settings(llm_model="x")
    assert json.loads(s.model_dump_json())["llm_model"] == "x"
