"""OpenAI Chat Completions <-> Anthropic Messages translation (proxy/translate.py): pure unit tests, plus
round trips through the official SDKs over an in-memory httpx2 transport (their HTTP client): no network."""

from __future__ import annotations

import itertools
import json
from typing import Any

import anthropic
import httpx2
import openai
import pytest
from anthropic.types import (
    Base64ImageSourceParam,
    ImageBlockParam,
    MetadataParam,
    TextBlockParam,
    ToolChoiceAnyParam,
    ToolChoiceAutoParam,
    ToolChoiceNoneParam,
    ToolChoiceToolParam,
    ToolParam,
    ToolResultBlockParam,
    ToolUseBlockParam,
    URLImageSourceParam,
)
from anthropic.types.message_create_params import MessageCreateParamsNonStreaming
from openai.lib.streaming.chat import ChatCompletionStreamState
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from pydantic import TypeAdapter

from poindexter_cloud.proxy.translate import (
    DEFAULT_MAX_TOKENS,
    StreamTranslator,
    UntranslatableRequest,
    anthropic_error_to_openai,
    anthropic_usage_to_openai,
    chat_to_messages,
    message_to_chat,
)

UPSTREAM = "claude-sonnet-4-5"
REQUESTED = "dex-smart"
CREATED = 1_760_000_000


def translate(**body: Any) -> dict[str, Any]:
    body.setdefault("model", REQUESTED)
    body.setdefault("messages", [{"role": "user", "content": "Hello"}])
    return chat_to_messages(body, UPSTREAM)


def refused(**body: Any) -> UntranslatableRequest:
    with pytest.raises(UntranslatableRequest) as caught:
        translate(**body)
    return caught.value


WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "unit": {"type": "string"}},
            "required": ["city"],
        },
    },
}
TIME_TOOL = {"type": "function", "function": {"name": "get_time"}}


# ---------------------------------------------------------------------------------- SDK shape checks

_BLOCK_TYPES: dict[str, Any] = {
    "text": TextBlockParam,
    "image": ImageBlockParam,
    "tool_use": ToolUseBlockParam,
    "tool_result": ToolResultBlockParam,
}
_SOURCE_TYPES: dict[str, Any] = {"base64": Base64ImageSourceParam, "url": URLImageSourceParam}
_TOOL_CHOICE_TYPES: dict[str, Any] = {
    "auto": ToolChoiceAutoParam,
    "any": ToolChoiceAnyParam,
    "none": ToolChoiceNoneParam,
    "tool": ToolChoiceToolParam,
}


def conforms(value: Any, typed_dict: Any) -> None:
    """value has the TypedDict's required keys, no others, and validates against it."""
    assert isinstance(value, dict)
    allowed = typed_dict.__required_keys__ | typed_dict.__optional_keys__
    assert typed_dict.__required_keys__ <= value.keys(), (typed_dict.__name__, value)
    assert value.keys() <= allowed, (typed_dict.__name__, value.keys() - allowed)
    TypeAdapter(typed_dict).validate_python(value)


def assert_anthropic_request(request: dict[str, Any]) -> None:
    """The shape anthropic.types.MessageCreateParams describes, checked block by block."""
    # temperature/top_p: still wire parameters (anthropic-version 2023-06-01, which the proxy sends), but the
    # SDK removed them from its typed signature in 1.0 (its migration guide: pass them in extra_body)
    allowed = (
        MessageCreateParamsNonStreaming.__required_keys__
        | MessageCreateParamsNonStreaming.__optional_keys__
        | {"stream", "temperature", "top_p"}
    )
    assert {"model", "max_tokens", "messages"} <= request.keys() <= allowed
    assert isinstance(request["max_tokens"], int) and request["max_tokens"] >= 1
    assert request.get("system") is None or isinstance(request["system"], str)
    messages = request["messages"]
    assert messages and messages[0]["role"] == "user"
    for previous, message in itertools.pairwise(messages):
        assert previous["role"] != message["role"], "roles must alternate"
    for message in messages:
        assert message.keys() == {"role", "content"}
        assert message["content"], "no empty turns"
        for block in message["content"]:
            conforms(block, _BLOCK_TYPES[block["type"]])
            if block["type"] == "image":
                conforms(block["source"], _SOURCE_TYPES[block["source"]["type"]])
            if block["type"] == "text":
                assert block["text"], "Anthropic refuses empty text blocks"
        kinds = [block["type"] for block in message["content"]]
        if "tool_result" in kinds:
            assert kinds == sorted(kinds, key=lambda kind: kind != "tool_result"), "tool results first"
    for tool in request.get("tools", ()):
        conforms(tool, ToolParam)
        assert tool["input_schema"]["type"] == "object"
    if "tool_choice" in request:
        conforms(request["tool_choice"], _TOOL_CHOICE_TYPES[request["tool_choice"]["type"]])
    if "metadata" in request:
        conforms(request["metadata"], MetadataParam)


# ---------------------------------------------------------------------------------- requests: basics


def test_minimal_request_gets_default_max_tokens() -> None:
    out = translate()
    assert out == {
        "model": UPSTREAM,
        "max_tokens": DEFAULT_MAX_TOKENS,
        "messages": [{"role": "user", "content": [{"type": "text", "text": "Hello"}]}],
    }
    assert DEFAULT_MAX_TOKENS == 4096
    assert (
        chat_to_messages({"messages": [{"role": "user", "content": "x"}]}, UPSTREAM, default_max_tokens=99)[
            "max_tokens"
        ]
        == 99
    )
    assert_anthropic_request(out)


@pytest.mark.parametrize("key", ["max_tokens", "max_completion_tokens"])
def test_max_tokens_either_name(key: str) -> None:
    assert translate(**{key: 321})["max_tokens"] == 321


def test_max_tokens_conflict_and_invalid() -> None:
    assert translate(max_tokens=50, max_completion_tokens=50)["max_tokens"] == 50
    assert refused(max_tokens=50, max_completion_tokens=60).param == "max_tokens"
    assert refused(max_tokens=0).param == "max_tokens"
    assert refused(max_completion_tokens="10").param == "max_completion_tokens"
    assert refused(max_tokens=True).param == "max_tokens"


def test_sampling_stop_stream_user() -> None:
    out = translate(temperature=0.7, top_p=0.9, stop="END", stream=True, user="user-42")
    assert out["temperature"] == 0.7
    assert out["top_p"] == 0.9
    assert out["stop_sequences"] == ["END"]
    assert out["stream"] is True
    assert out["metadata"] == {"user_id": "user-42"}
    assert translate(stop=["a", "b"])["stop_sequences"] == ["a", "b"]
    assert "stop_sequences" not in translate(stop=[])
    assert translate(temperature=1)["temperature"] == 1
    assert translate(temperature=0)["temperature"] == 0
    assert refused(stop=["a", 1]).param == "stop"
    assert refused(top_p=1.5).param == "top_p"


def test_user_from_metadata_or_safety_identifier() -> None:
    assert translate(metadata={"user": "u1"})["metadata"] == {"user_id": "u1"}
    assert translate(safety_identifier="h1")["metadata"] == {"user_id": "h1"}
    assert translate(user="u1", metadata={"user": "u1"})["metadata"] == {"user_id": "u1"}
    assert refused(user="u1", metadata={"user": "u2"}).param == "metadata.user"
    error = refused(metadata={"user": "u1", "project": "x"})
    assert error.param == "metadata.project"
    assert "metadata" not in translate(user=None)


@pytest.mark.parametrize("temperature", [1.01, 1.5, 2])
def test_temperature_above_one_refused(temperature: float) -> None:
    error = refused(temperature=temperature)
    assert error.param == "temperature"
    assert "temperature" in error.message
    assert error.to_openai()["error"]["type"] == "invalid_request_error"
    assert error.to_openai()["error"]["param"] == "temperature"


def test_temperature_out_of_openai_range_refused() -> None:
    assert refused(temperature=-0.1).param == "temperature"
    assert refused(temperature=2.5).param == "temperature"
    assert refused(temperature="hot").param == "temperature"


def test_stream_options_accepted_and_model_ignored() -> None:
    out = translate(stream=True, stream_options={"include_usage": True})
    assert out["stream"] is True
    assert "stream_options" not in out
    assert out["model"] == UPSTREAM


UNSUPPORTED: list[tuple[str, Any]] = [
    ("n", 2),
    ("logprobs", True),
    ("top_logprobs", 3),
    ("presence_penalty", 0.5),
    ("frequency_penalty", -1),
    ("logit_bias", {"50256": -100}),
    ("response_format", {"type": "json_object"}),
    ("response_format", {"type": "json_schema", "json_schema": {"name": "x", "schema": {}}}),
    ("seed", 7),
    ("audio", {"voice": "alloy", "format": "wav"}),
    ("modalities", ["text", "audio"]),
    ("prediction", {"type": "content", "content": "x"}),
    ("functions", [{"name": "f", "parameters": {}}]),
    ("function_call", "auto"),
    ("web_search_options", {}),
    ("service_tier", "flex"),
    ("store", True),
    ("reasoning_effort", "high"),
    ("verbosity", "low"),
    ("prompt_cache_key", "k"),
    ("prompt_cache_retention", "24h"),
]


@pytest.mark.parametrize(("key", "value"), UNSUPPORTED, ids=[f"{k}={v!r}"[:40] for k, v in UNSUPPORTED])
def test_unsupported_parameter_refused_with_its_name(key: str, value: Any) -> None:
    error = refused(**{key: value})
    assert error.param == key
    assert f"'{key}'" in error.message
    assert error.code == "unsupported_parameter"


def test_legacy_functions_refusal_points_to_tools() -> None:
    assert "use 'tools'" in refused(functions=[{"name": "f"}]).message
    assert "use 'tool_choice'" in refused(function_call="none").message


NEUTRAL: list[tuple[str, Any]] = [
    ("n", 1),
    ("logprobs", False),
    ("top_logprobs", 0),
    ("presence_penalty", 0),
    ("frequency_penalty", 0.0),
    ("logit_bias", {}),
    ("response_format", {"type": "text"}),
    ("modalities", ["text"]),
    ("store", False),
    ("service_tier", "auto"),
    ("service_tier", "default"),
    ("reasoning_effort", "none"),
    ("verbosity", "medium"),
    ("seed", None),
    ("functions", None),
]


@pytest.mark.parametrize(("key", "value"), NEUTRAL, ids=[f"{k}={v!r}" for k, v in NEUTRAL])
def test_neutral_values_accepted(key: str, value: Any) -> None:
    out = translate(**{key: value})
    assert key not in out


def test_bool_is_not_an_int() -> None:
    assert refused(n=True).param == "n"
    assert refused(presence_penalty=False).param == "presence_penalty"


@pytest.mark.parametrize("key", ["top_k", "temprature", "thinking", "moderation", "prompt_cache_options"])
def test_unknown_key_refused(key: str) -> None:
    error = refused(**{key: 1})
    assert error.param == key
    assert error.message == f"Unrecognized request argument supplied: {key}"
    assert refused(**{key: None}).param == key  # even null: a typo is reported, never dropped


def test_messages_required_and_non_empty() -> None:
    with pytest.raises(UntranslatableRequest) as caught:
        chat_to_messages({"model": "m"}, UPSTREAM)
    assert caught.value.param == "messages"
    assert refused(messages=[{"role": "system", "content": "only a system prompt"}]).param == "messages"
    assert refused(messages="hi").param == "messages"
    assert refused(messages=[{"role": "narrator", "content": "x"}]).param == "messages[0].role"
    assert refused(messages=[{"role": "function", "name": "f", "content": "x"}]).param == "messages[0].role"


# ---------------------------------------------------------------------------------- requests: messages


def test_system_and_developer_hoisted_and_joined() -> None:
    out = translate(
        messages=[
            {"role": "system", "content": "You are Dex."},
            {"role": "user", "content": "Hi"},
            {"role": "developer", "content": [{"type": "text", "text": "Be brief."}]},
            {"role": "assistant", "content": "Hello!"},
            {"role": "system", "content": [{"type": "text", "text": "A"}, {"type": "text", "text": "B"}]},
            {"role": "user", "content": "Weather?"},
        ]
    )
    assert out["system"] == "You are Dex.\n\nBe brief.\n\nA\n\nB"
    assert [m["role"] for m in out["messages"]] == ["user", "assistant", "user"]
    assert_anthropic_request(out)


def test_system_message_with_image_refused() -> None:
    error = refused(
        messages=[
            {"role": "system", "content": [{"type": "image_url", "image_url": {"url": "https://x/a.png"}}]},
            {"role": "user", "content": "x"},
        ]
    )
    assert error.param == "messages[0].content[0].type"


def test_consecutive_same_role_messages_merged() -> None:
    out = translate(
        messages=[
            {"role": "user", "content": "one"},
            {"role": "user", "content": [{"type": "text", "text": "two"}, {"type": "text", "text": "three"}]},
            {"role": "assistant", "content": "four"},
            {"role": "assistant", "content": [{"type": "text", "text": "five"}]},
            {"role": "user", "content": "six"},
        ]
    )
    assert out["messages"] == [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "one"},
                {"type": "text", "text": "two"},
                {"type": "text", "text": "three"},
            ],
        },
        {
            "role": "assistant",
            "content": [{"type": "text", "text": "four"}, {"type": "text", "text": "five"}],
        },
        {"role": "user", "content": [{"type": "text", "text": "six"}]},
    ]
    assert_anthropic_request(out)


def test_empty_messages_skipped_so_turns_still_alternate() -> None:
    out = translate(
        messages=[
            {"role": "user", "content": "a"},
            {"role": "assistant", "content": ""},
            {"role": "user", "content": "b"},
        ]
    )
    assert out["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}
    ]


def test_assistant_refusal_kept_as_text() -> None:
    out = translate(
        messages=[
            {"role": "user", "content": "a"},
            {"role": "assistant", "content": None, "refusal": "I can't help with that."},
            {"role": "user", "content": [{"type": "text", "text": "b"}]},
        ]
    )
    assert out["messages"][1]["content"] == [{"type": "text", "text": "I can't help with that."}]


def test_message_name_and_unknown_message_keys_refused() -> None:
    assert refused(messages=[{"role": "user", "content": "x", "name": "bob"}]).param == "messages[0].name"
    assert refused(messages=[{"role": "user", "content": "x", "cache": 1}]).param == "messages[0].cache"
    assert (
        refused(
            messages=[{"role": "user", "content": [{"type": "text", "text": "x", "cache_control": {}}]}]
        ).param
        == "messages[0].content[0].cache_control"
    )
    assistant_audio = [{"role": "user", "content": "x"}, {"role": "assistant", "audio": {"id": "a1"}}]
    assert refused(messages=assistant_audio).param == "messages[1].audio"


def test_image_data_url_becomes_base64_source() -> None:
    out = translate(
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is this?"},
                    {
                        "type": "image_url",
                        "image_url": {"url": "data:image/png;base64,iVBORw0KGgo=", "detail": "high"},
                    },
                    {"type": "image_url", "image_url": {"url": "data:image/jpg;base64,/9j/4AAQ"}},
                ],
            }
        ]
    )
    blocks = out["messages"][0]["content"]
    assert blocks[1] == {
        "type": "image",
        "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="},
    }
    assert blocks[2]["source"]["media_type"] == "image/jpeg"
    assert_anthropic_request(out)


def test_image_url_becomes_url_source() -> None:
    url = "https://example.com/cat.jpg?size=large"
    out = translate(
        messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}}]}]
    )
    assert out["messages"][0]["content"] == [{"type": "image", "source": {"type": "url", "url": url}}]
    assert_anthropic_request(out)


def test_percent_encoded_data_url_is_base64_encoded() -> None:
    out = translate(
        messages=[
            {
                "role": "user",
                "content": [{"type": "image_url", "image_url": {"url": "data:image/gif,GIF89a"}}],
            }
        ]
    )
    assert out["messages"][0]["content"][0]["source"] == {
        "type": "base64",
        "media_type": "image/gif",
        "data": "R0lGODlh",
    }


@pytest.mark.parametrize(
    ("image_url", "param"),
    [
        ({"url": "data:image/svg+xml;base64,PHN2Zz4="}, "messages[0].content[0].image_url.url"),
        ({"url": "ftp://example.com/a.png"}, "messages[0].content[0].image_url.url"),
        ({"url": "data:image/png;base64"}, "messages[0].content[0].image_url.url"),
        ({"url": "https://example.com/a.png", "detail": "low"}, "messages[0].content[0].image_url.detail"),
        ({"url": 5}, "messages[0].content[0].image_url.url"),
    ],
)
def test_bad_images_refused(image_url: dict[str, Any], param: str) -> None:
    error = refused(messages=[{"role": "user", "content": [{"type": "image_url", "image_url": image_url}]}])
    assert error.param == param


@pytest.mark.parametrize(
    "part",
    [
        {"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}},
        {"type": "file", "file": {"file_id": "file-1"}},
    ],
)
def test_audio_and_file_parts_refused(part: dict[str, Any]) -> None:
    error = refused(messages=[{"role": "user", "content": [{"type": "text", "text": "x"}, part]}])
    assert error.param == "messages[0].content[1].type"
    assert part["type"] in error.message


# ---------------------------------------------------------------------------------- requests: tools


def test_tools_translated() -> None:
    strict_tool = {
        "type": "function",
        "function": {"name": "lookup", "parameters": {"type": "object", "properties": {}}, "strict": True},
    }
    out = translate(tools=[WEATHER_TOOL, TIME_TOOL, strict_tool])
    assert out["tools"] == [
        {
            "name": "get_weather",
            "description": "Current weather for a city",
            "input_schema": WEATHER_TOOL["function"]["parameters"],  # type: ignore[index]
        },
        {"name": "get_time", "input_schema": {"type": "object", "properties": {}}},
        {"name": "lookup", "input_schema": {"type": "object", "properties": {}}, "strict": True},
    ]
    assert "tool_choice" not in out
    assert_anthropic_request(out)


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        ("auto", {"type": "auto"}),
        ("required", {"type": "any"}),
        ("none", {"type": "none"}),
        ({"type": "function", "function": {"name": "get_time"}}, {"type": "tool", "name": "get_time"}),
    ],
)
def test_tool_choice(choice: Any, expected: dict[str, Any]) -> None:
    out = translate(tools=[WEATHER_TOOL, TIME_TOOL], tool_choice=choice)
    assert out["tool_choice"] == expected
    assert_anthropic_request(out)


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        (None, {"type": "auto", "disable_parallel_tool_use": True}),
        ("auto", {"type": "auto", "disable_parallel_tool_use": True}),
        ("required", {"type": "any", "disable_parallel_tool_use": True}),
        (
            {"type": "function", "function": {"name": "get_weather"}},
            {"type": "tool", "name": "get_weather", "disable_parallel_tool_use": True},
        ),
        ("none", {"type": "none"}),  # Anthropic's "none" takes no such flag, and calls no tool anyway
    ],
)
def test_parallel_tool_calls_false(choice: Any, expected: dict[str, Any]) -> None:
    out = translate(tools=[WEATHER_TOOL], tool_choice=choice, parallel_tool_calls=False)
    assert out["tool_choice"] == expected
    assert_anthropic_request(out)


def test_parallel_tool_calls_true_changes_nothing() -> None:
    assert "tool_choice" not in translate(tools=[WEATHER_TOOL], parallel_tool_calls=True)


def test_tool_choice_without_tools() -> None:
    assert "tool_choice" not in translate(tool_choice="auto")
    assert "tool_choice" not in translate(tool_choice="none", parallel_tool_calls=False)
    assert refused(tool_choice="required").param == "tool_choice"
    error = refused(tools=[WEATHER_TOOL], tool_choice={"type": "function", "function": {"name": "nope"}})
    assert error.param == "tool_choice.function.name"
    assert refused(tools=[WEATHER_TOOL], tool_choice="sometimes").param == "tool_choice"
    allowed = {"type": "allowed_tools", "allowed_tools": {"mode": "auto", "tools": []}}
    assert refused(tools=[WEATHER_TOOL], tool_choice=allowed).param == "tool_choice"


def test_non_function_tools_refused() -> None:
    assert refused(tools=[{"type": "custom", "custom": {"name": "x"}}]).param == "tools[0].type"
    bad = {"type": "function", "function": {"name": "f", "parameters": {}, "examples": []}}
    assert refused(tools=[bad]).param == "tools[0].function.examples"


def tool_conversation(arguments: str = '{"city": "Paris"}') -> list[dict[str, Any]]:
    return [
        {"role": "system", "content": "You are Dex."},
        {"role": "user", "content": "Weather in Paris and the time?"},
        {
            "role": "assistant",
            "content": "Let me check.",
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": arguments},
                },
                {"id": "call_2", "type": "function", "function": {"name": "get_time", "arguments": ""}},
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "18C, sunny"},
        {"role": "tool", "tool_call_id": "call_2", "content": [{"type": "text", "text": "14:05"}]},
        {"role": "user", "content": "Thanks! And tomorrow?"},
    ]


def test_tool_calls_and_results() -> None:
    out = translate(messages=tool_conversation(), tools=[WEATHER_TOOL, TIME_TOOL])
    assert out["system"] == "You are Dex."
    assert out["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "Weather in Paris and the time?"}]},
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "Let me check."},
                {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"city": "Paris"}},
                {"type": "tool_use", "id": "call_2", "name": "get_time", "input": {}},
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "call_1", "content": "18C, sunny"},
                {
                    "type": "tool_result",
                    "tool_use_id": "call_2",
                    "content": [{"type": "text", "text": "14:05"}],
                },
                {"type": "text", "text": "Thanks! And tomorrow?"},
            ],
        },
    ]
    assert_anthropic_request(out)


def test_assistant_with_only_tool_calls_and_null_content() -> None:
    messages = tool_conversation()
    messages[2]["content"] = None
    out = translate(messages=messages, tools=[WEATHER_TOOL, TIME_TOOL])
    assert [b["type"] for b in out["messages"][1]["content"]] == ["tool_use", "tool_use"]


def test_tool_results_moved_before_user_text() -> None:
    messages = tool_conversation()
    messages.insert(3, {"role": "user", "content": "(also, be quick)"})  # user text before the results
    out = translate(messages=messages, tools=[WEATHER_TOOL, TIME_TOOL])
    assert [b["type"] for b in out["messages"][2]["content"]] == [
        "tool_result",
        "tool_result",
        "text",
        "text",
    ]
    assert_anthropic_request(out)


@pytest.mark.parametrize("arguments", ['{"city": "Par', "[1, 2]", "not json"])
def test_bad_tool_call_arguments_refused(arguments: str) -> None:
    error = refused(messages=tool_conversation(arguments), tools=[WEATHER_TOOL, TIME_TOOL])
    assert error.param == "messages[2].tool_calls[0].function.arguments"


def test_tool_message_without_id_refused() -> None:
    messages = tool_conversation()
    del messages[3]["tool_call_id"]
    assert refused(messages=messages).param == "messages[3].tool_call_id"


# ---------------------------------------------------------------------------------- responses

ANTHROPIC_USAGE = {
    "input_tokens": 25,
    "cache_creation_input_tokens": 100,
    "cache_read_input_tokens": 2000,
    "output_tokens": 40,
    "service_tier": "standard",
}


def anthropic_message(content: list[dict[str, Any]], stop_reason: str = "end_turn") -> dict[str, Any]:
    return {
        "id": "msg_01XFDUDYJgAACzvnptvVoYEL",
        "type": "message",
        "role": "assistant",
        "model": UPSTREAM,
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": dict(ANTHROPIC_USAGE),
    }


def test_text_response() -> None:
    chat = message_to_chat(
        anthropic_message([{"type": "text", "text": "Hello"}, {"type": "text", "text": " world"}]),
        REQUESTED,
        CREATED,
    )
    assert chat == {
        "id": "chatcmpl-msg_01XFDUDYJgAACzvnptvVoYEL",
        "object": "chat.completion",
        "created": CREATED,
        "model": REQUESTED,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Hello world", "refusal": None},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": {
            "prompt_tokens": 2125,
            "completion_tokens": 40,
            "total_tokens": 2165,
            "prompt_tokens_details": {"cached_tokens": 2000},
        },
    }
    parsed = ChatCompletion.model_validate(chat)
    assert parsed.choices[0].message.content == "Hello world"
    assert parsed.usage is not None and parsed.usage.prompt_tokens_details is not None
    assert parsed.usage.prompt_tokens_details.cached_tokens == 2000


def test_tool_call_response() -> None:
    message = anthropic_message(
        [
            {
                "type": "tool_use",
                "id": "toolu_01A",
                "name": "get_weather",
                "input": {"city": "Paris", "days": [1, 2]},
            },
            {"type": "tool_use", "id": "toolu_01B", "name": "get_time", "input": {}},
        ],
        "tool_use",
    )
    chat = message_to_chat(message, REQUESTED, CREATED)
    reply = chat["choices"][0]["message"]
    assert reply["content"] is None
    assert reply["tool_calls"] == [
        {
            "id": "toolu_01A",
            "type": "function",
            "function": {"name": "get_weather", "arguments": '{"city":"Paris","days":[1,2]}'},
        },
        {"id": "toolu_01B", "type": "function", "function": {"name": "get_time", "arguments": "{}"}},
    ]
    assert chat["choices"][0]["finish_reason"] == "tool_calls"
    parsed = ChatCompletion.model_validate(chat)
    assert parsed.choices[0].message.tool_calls is not None


def test_text_and_tool_call_response() -> None:
    message = anthropic_message(
        [
            {"type": "text", "text": "Checking."},
            {"type": "tool_use", "id": "toolu_01A", "name": "get_time", "input": {}},
        ],
        "tool_use",
    )
    reply = message_to_chat(message, REQUESTED, CREATED)["choices"][0]["message"]
    assert reply["content"] == "Checking."
    assert len(reply["tool_calls"]) == 1


@pytest.mark.parametrize(
    ("stop_reason", "finish_reason"),
    [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("max_tokens", "length"),
        ("tool_use", "tool_calls"),
        ("refusal", "content_filter"),
        ("model_context_window_exceeded", "length"),
        ("pause_turn", "stop"),
    ],
)
def test_finish_reasons(stop_reason: str, finish_reason: str) -> None:
    chat = message_to_chat(
        anthropic_message([{"type": "text", "text": "x"}], stop_reason), REQUESTED, CREATED
    )
    assert chat["choices"][0]["finish_reason"] == finish_reason
    ChatCompletion.model_validate(chat)


def test_empty_response_has_empty_string_content() -> None:
    chat = message_to_chat(anthropic_message([], "max_tokens"), REQUESTED, CREATED)
    assert chat["choices"][0]["message"]["content"] == ""


def test_usage_mapping() -> None:
    assert anthropic_usage_to_openai(ANTHROPIC_USAGE) == {
        "prompt_tokens": 2125,
        "completion_tokens": 40,
        "total_tokens": 2165,
        "prompt_tokens_details": {"cached_tokens": 2000},
    }
    # cache fields absent or null count zero
    assert anthropic_usage_to_openai(
        {"input_tokens": 10, "output_tokens": 5, "cache_read_input_tokens": None}
    ) == {
        "prompt_tokens": 10,
        "completion_tokens": 5,
        "total_tokens": 15,
        "prompt_tokens_details": {"cached_tokens": 0},
    }


def test_error_mapping() -> None:
    body = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    assert anthropic_error_to_openai(body) == {
        "error": {"message": "Overloaded", "type": "server_error", "param": None, "code": "overloaded_error"}
    }
    assert anthropic_error_to_openai({"type": "rate_limit_error", "message": "slow down"})["error"][
        "type"
    ] == ("rate_limit_error")


# ---------------------------------------------------------------------------------- streaming

MESSAGE_ID = "msg_014p7gG3wDgGV9EUtLvnow3U"
ARGUMENTS_PIECES = ["", '{"city', '": "San Fra', 'ncisco, CA"', ', "unit": "fah', 'renheit"}']
TEXT_PIECES = ["Okay", ", let me", " check the weather", " for you."]


def anthropic_events(message_delta_usage: dict[str, Any] | None = None) -> list[tuple[str, dict[str, Any]]]:
    """A realistic Anthropic stream: text, then two tool_use blocks with several input_json_delta."""
    events: list[tuple[str, dict[str, Any]]] = [
        (
            "message_start",
            {
                "type": "message_start",
                "message": {
                    "id": MESSAGE_ID,
                    "type": "message",
                    "role": "assistant",
                    "model": UPSTREAM,
                    "content": [],
                    "stop_reason": None,
                    "stop_sequence": None,
                    "usage": {
                        "input_tokens": 472,
                        "cache_creation_input_tokens": 100,
                        "cache_read_input_tokens": 2000,
                        "output_tokens": 2,
                        "service_tier": "standard",
                    },
                },
            },
        ),
        (
            "content_block_start",
            {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        ),
        ("ping", {"type": "ping"}),
    ]
    for piece in TEXT_PIECES:
        events.append(
            (
                "content_block_delta",
                {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": piece}},
            )
        )
    events.append(("content_block_stop", {"type": "content_block_stop", "index": 0}))
    for index, (tool_id, name, pieces) in enumerate(
        [
            ("toolu_01T1x1fJ34qAmk2tNTrN7Up6", "get_weather", ARGUMENTS_PIECES),
            ("toolu_01Q2", "get_time", ["", "{}"]),
        ],
        start=1,
    ):
        block = {"type": "tool_use", "id": tool_id, "name": name, "input": {}}
        events.append(
            ("content_block_start", {"type": "content_block_start", "index": index, "content_block": block})
        )
        for piece in pieces:
            delta = {"type": "input_json_delta", "partial_json": piece}
            events.append(
                ("content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta})
            )
        events.append(("content_block_stop", {"type": "content_block_stop", "index": index}))
    events.append(
        (
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": "tool_use", "stop_sequence": None},
                "usage": message_delta_usage if message_delta_usage is not None else {"output_tokens": 89},
            },
        )
    )
    events.append(("message_stop", {"type": "message_stop"}))
    return events


def run_stream(include_usage: bool, events: list[tuple[str, dict[str, Any]]] | None = None) -> bytes:
    translator = StreamTranslator(REQUESTED, CREATED, include_usage)
    out = b"".join(translator.feed(event, data) for event, data in events or anthropic_events())
    return out + translator.finish()


def frames(stream: bytes) -> list[str]:
    assert stream.endswith(b"\n\n")
    parts = stream.decode().split("\n\n")[:-1]
    assert all(part.startswith("data: ") and "\n" not in part for part in parts)
    return [part.removeprefix("data: ") for part in parts]


def reassemble(chunks: list[dict[str, Any]]) -> tuple[str, dict[int, dict[str, str]], list[str]]:
    text = ""
    calls: dict[int, dict[str, str]] = {}
    finish: list[str] = []
    for chunk in chunks:
        for choice in chunk["choices"]:
            delta = choice["delta"]
            text += delta.get("content") or ""
            for call in delta.get("tool_calls") or ():
                slot = calls.setdefault(call["index"], {"id": "", "name": "", "arguments": ""})
                slot["id"] += call.get("id") or ""
                slot["name"] += (call.get("function") or {}).get("name") or ""
                slot["arguments"] += (call.get("function") or {}).get("arguments") or ""
            if choice["finish_reason"] is not None:
                finish.append(choice["finish_reason"])
    return text, calls, finish


@pytest.mark.parametrize("include_usage", [True, False])
def test_stream_reassembles(include_usage: bool) -> None:
    data = frames(run_stream(include_usage))
    assert data[-1] == "[DONE]"
    chunks = [json.loads(frame) for frame in data[:-1]]
    for chunk in chunks:
        assert chunk["id"] == f"chatcmpl-{MESSAGE_ID}"
        assert chunk["object"] == "chat.completion.chunk"
        assert chunk["created"] == CREATED
        assert chunk["model"] == REQUESTED
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    text, calls, finish = reassemble(chunks)
    assert text == "".join(TEXT_PIECES)
    assert calls == {
        0: {
            "id": "toolu_01T1x1fJ34qAmk2tNTrN7Up6",
            "name": "get_weather",
            "arguments": '{"city": "San Francisco, CA", "unit": "fahrenheit"}',
        },
        1: {"id": "toolu_01Q2", "name": "get_time", "arguments": "{}"},
    }
    assert json.loads(calls[0]["arguments"]) == {"city": "San Francisco, CA", "unit": "fahrenheit"}
    assert finish == ["tool_calls"]
    finish_chunk = next(c for c in chunks if c["choices"] and c["choices"][0]["finish_reason"])
    assert finish_chunk["choices"][0]["delta"] == {}
    # the first tool-call chunk carries id, type, name and empty arguments
    first_call = next(c for c in chunks if c["choices"] and c["choices"][0]["delta"].get("tool_calls"))
    assert first_call["choices"][0]["delta"]["tool_calls"] == [
        {
            "index": 0,
            "id": "toolu_01T1x1fJ34qAmk2tNTrN7Up6",
            "type": "function",
            "function": {"name": "get_weather", "arguments": ""},
        }
    ]
    if include_usage:
        usage_chunk = chunks[-1]
        assert usage_chunk["choices"] == []
        assert usage_chunk["usage"] == {
            "prompt_tokens": 2572,
            "completion_tokens": 89,
            "total_tokens": 2661,
            "prompt_tokens_details": {"cached_tokens": 2000},
        }
        assert all("usage" in c and c["usage"] is None for c in chunks[:-1])
        assert chunks[-2] is finish_chunk
    else:
        assert all("usage" not in c for c in chunks)
        assert all(c["choices"] for c in chunks)
        assert chunks[-1] is finish_chunk


def test_stream_usage_cumulative_replacement() -> None:
    # message_delta repeats some fields: present ones replace, missing ones keep the message_start value
    events = anthropic_events({"input_tokens": 500, "cache_read_input_tokens": None, "output_tokens": 120})
    translator = StreamTranslator(REQUESTED, CREATED, True)
    for event, data in events:
        translator.feed(event, data)
    assert translator.anthropic_usage == {
        "input_tokens": 500,
        "cache_creation_input_tokens": 100,
        "cache_read_input_tokens": 2000,
        "output_tokens": 120,
    }
    assert translator.usage["prompt_tokens"] == 2600
    assert translator.finish_reason == "tool_calls"
    assert translator.message_id == MESSAGE_ID


def test_stream_output_tokens_never_zeroed_by_missing_field() -> None:
    events = anthropic_events({"input_tokens": 472})  # a message_delta without output_tokens
    translator = StreamTranslator(REQUESTED, CREATED, True)
    for event, data in events:
        translator.feed(event, data)
    assert translator.usage["completion_tokens"] == 2  # message_start's count stands


def test_ping_and_stops_produce_nothing() -> None:
    translator = StreamTranslator(REQUESTED, CREATED, True)
    translator.feed(*anthropic_events()[0])
    assert translator.feed("ping", {"type": "ping"}) == b""
    assert translator.feed("content_block_stop", {"type": "content_block_stop", "index": 0}) == b""
    assert translator.feed("message_stop", {"type": "message_stop"}) == b""
    delta = {
        "type": "content_block_delta",
        "index": 0,
        "delta": {"type": "thinking_delta", "thinking": "hmm"},
    }
    assert translator.feed("content_block_delta", delta) == b""


@pytest.mark.parametrize("stop_reason", ["end_turn", "max_tokens", "stop_sequence", "refusal"])
def test_stream_finish_reasons(stop_reason: str) -> None:
    events = anthropic_events()
    events[-2][1]["delta"]["stop_reason"] = stop_reason
    _, _, finish = reassemble([json.loads(f) for f in frames(run_stream(False, events))[:-1]])
    assert finish == [
        {"end_turn": "stop", "stop_sequence": "stop", "max_tokens": "length"}.get(
            stop_reason, "content_filter"
        )
    ]


def test_stream_error_event_then_stop() -> None:
    translator = StreamTranslator(REQUESTED, CREATED, True)
    events = anthropic_events()
    out = b"".join(translator.feed(event, data) for event, data in events[:5])
    error = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    error_frame = translator.feed("error", error)
    assert json.loads(frames(error_frame)[0]) == {
        "error": {"message": "Overloaded", "type": "server_error", "param": None, "code": "overloaded_error"}
    }
    assert translator.errored
    assert b"".join(translator.feed(event, data) for event, data in events[5:]) == b""
    assert translator.finish() == b""
    assert len(frames(out)) == 3  # role chunk + two text deltas


def test_finish_is_idempotent_and_json_escaping() -> None:
    translator = StreamTranslator('model "quoted"', CREATED, False)
    translator.feed("message_start", {"type": "message_start", "message": {"id": "msg_1", "usage": {}}})
    frame = translator.feed(
        "content_block_delta",
        {
            "type": "content_block_delta",
            "index": 0,
            "delta": {"type": "text_delta", "text": 'a "b"\n\u00e9\u2028'},
        },
    )
    assert json.loads(frames(frame)[0])["choices"][0]["delta"]["content"] == 'a "b"\n\u00e9\u2028'
    assert json.loads(frames(frame)[0])["model"] == 'model "quoted"'
    assert translator.finish() == b"data: [DONE]\n\n"
    assert translator.finish() == b""


# ---------------------------------------------------------------------------------- SDK round trips


def test_chunks_validate_with_openai_sdk() -> None:
    data = frames(run_stream(True))
    assert data[-1] == "[DONE]"
    chunks = [ChatCompletionChunk.model_validate_json(frame) for frame in data[:-1]]
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.total_tokens == 2661
    state: ChatCompletionStreamState[Any] = ChatCompletionStreamState()
    for chunk in chunks:
        state.handle_chunk(chunk)
    final = state.get_final_completion()
    message = final.choices[0].message
    assert message.content == "".join(TEXT_PIECES)
    assert message.tool_calls is not None
    assert [(c.function.name, c.function.arguments) for c in message.tool_calls] == [
        ("get_weather", '{"city": "San Francisco, CA", "unit": "fahrenheit"}'),
        ("get_time", "{}"),
    ]
    assert final.choices[0].finish_reason == "tool_calls"


def openai_client(body: bytes, content_type: str) -> openai.OpenAI:
    def handler(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(200, headers={"content-type": content_type}, content=body)

    http_client = httpx2.Client(transport=httpx2.MockTransport(handler))
    return openai.OpenAI(api_key="pk_test_x", base_url="http://proxy.test/v1", http_client=http_client)


def test_openai_sdk_reads_translated_stream() -> None:
    client = openai_client(run_stream(True), "text/event-stream")
    stream = client.chat.completions.create(
        model=REQUESTED,
        messages=[{"role": "user", "content": "Weather?"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "".join(TEXT_PIECES)
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 89


def test_openai_sdk_raises_on_translated_error() -> None:
    translator = StreamTranslator(REQUESTED, CREATED, False)
    body = translator.feed(*anthropic_events()[0]) + translator.feed(
        "error", {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    )
    client = openai_client(body + translator.finish(), "text/event-stream")
    stream = client.chat.completions.create(
        model=REQUESTED, messages=[{"role": "user", "content": "x"}], stream=True
    )
    with pytest.raises(openai.APIError, match="Overloaded"):
        list(stream)


def test_anthropic_sdk_round_trip() -> None:
    """chat_to_messages output is accepted by the anthropic SDK as create() arguments, and the Message it
    parses translates into a ChatCompletion the openai SDK accepts."""
    sent: list[dict[str, Any]] = []
    reply = anthropic_message(
        [
            {"type": "text", "text": "Tomorrow looks rainy."},
            {"type": "tool_use", "id": "toolu_01C", "name": "get_weather", "input": {"city": "Paris"}},
        ],
        "tool_use",
    )

    def handler(request: httpx2.Request) -> httpx2.Response:
        assert request.url.path == "/v1/messages"
        sent.append(json.loads(request.content))
        return httpx2.Response(200, json=reply)

    client = anthropic.Anthropic(
        api_key="sk-ant-sandbox-x",
        base_url="http://upstream.test",
        http_client=httpx2.Client(transport=httpx2.MockTransport(handler)),
    )
    request = chat_to_messages(
        {
            "model": REQUESTED,
            "messages": [
                *tool_conversation(),
                {
                    "role": "user",
                    "content": [{"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}],
                },
            ],
            "tools": [WEATHER_TOOL, TIME_TOOL],
            "tool_choice": "auto",
            "parallel_tool_calls": False,
            "temperature": 0.5,
            "stop": ["\n\nHuman:"],
            "user": "user-1",
            "max_completion_tokens": 1024,
        },
        "claude-proxy-test",  # a model id the SDK has no deprecation warning for
    )
    assert_anthropic_request(request)
    sampling: dict[str, Any] = {key: request.pop(key) for key in ("temperature", "top_p") if key in request}
    assert sampling == {"temperature": 0.5}
    message = client.messages.create(**request, extra_body=sampling)  # unknown kwargs would raise TypeError
    wire: dict[str, Any] = {**request, **sampling}
    assert sent == [wire]
    chat = message_to_chat(message.model_dump(), REQUESTED, CREATED)
    parsed = ChatCompletion.model_validate(chat)
    assert parsed.choices[0].message.content == "Tomorrow looks rainy."
    assert parsed.choices[0].message.tool_calls is not None
    assert parsed.choices[0].finish_reason == "tool_calls"
    assert parsed.usage is not None and parsed.usage.prompt_tokens == 2125
