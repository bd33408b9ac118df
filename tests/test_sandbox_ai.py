"""The AI provider simulators, driven by the official SDKs over real HTTP against the sandbox app."""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import AsyncIterator
from typing import Any

import anthropic
import httpx
import openai
import pytest

from conftest import RunningServer
from poindexter_cloud.sandbox.app import create_sandbox_app

# The SDK warns about models it knows to be near end of life; the sandbox serves them regardless.
pytestmark = pytest.mark.filterwarnings("ignore:The model .* is deprecated:DeprecationWarning")

ANTHROPIC_KEY = "sk-ant-sandbox-test"
OPENAI_KEY = "sk-sandbox-test"
ANTHROPIC_HEADERS = {"x-api-key": ANTHROPIC_KEY, "anthropic-version": "2023-06-01"}

WEATHER_TOOL: dict[str, Any] = {
    "name": "get_weather",
    "description": "Get the current weather for a city",
    "input_schema": {
        "type": "object",
        "properties": {
            "city": {"type": "string", "description": "The city name"},
            "days": {"type": "integer"},
            "metric": {"type": "boolean"},
            "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
        },
        "required": ["city"],
    },
}
WEATHER_ARGS = {"city": "sandbox", "days": 1, "metric": True, "unit": "celsius"}
OPENAI_WEATHER_TOOL: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather for a city",
        "parameters": WEATHER_TOOL["input_schema"],
    },
}


def words(text: str) -> int:
    return len(text.split())


def json_words(value: Any) -> int:
    """The documented rule for tool definitions: words of the compact JSON."""
    return len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).split())


@pytest.fixture(scope="module")
async def sandbox() -> AsyncIterator[str]:
    async with RunningServer(create_sandbox_app()) as server:
        yield server.url


@pytest.fixture
async def http(sandbox: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=sandbox, timeout=10) as client:
        for provider in ("anthropic", "openai"):
            (await client.post(f"/{provider}/_control/reset")).raise_for_status()
        yield client


@pytest.fixture
async def claude(sandbox: str, http: httpx.AsyncClient) -> AsyncIterator[anthropic.AsyncAnthropic]:
    async with anthropic.AsyncAnthropic(
        base_url=f"{sandbox}/anthropic", api_key=ANTHROPIC_KEY, max_retries=0
    ) as client:
        yield client


@pytest.fixture
async def gpt(sandbox: str, http: httpx.AsyncClient) -> AsyncIterator[openai.AsyncOpenAI]:
    async with openai.AsyncOpenAI(
        base_url=f"{sandbox}/openai/v1", api_key=OPENAI_KEY, max_retries=0
    ) as client:
        yield client


async def stats(http: httpx.AsyncClient, provider: str) -> dict[str, int]:
    response = await http.get(f"/{provider}/_control/stats")
    response.raise_for_status()
    result: dict[str, int] = response.json()
    return result


async def logged(http: httpx.AsyncClient, provider: str) -> list[dict[str, Any]]:
    response = await http.get(f"/{provider}/_control/requests")
    response.raise_for_status()
    result: list[dict[str, Any]] = response.json()["requests"]
    return result


# ---------------------------------------------------------------------------------------------- Anthropic

SYSTEM = "You are terse."
QUESTION = "Hello there sandbox, how are you today my friend?"


async def test_anthropic_message_has_exact_usage(claude: anthropic.AsyncAnthropic) -> None:
    message = await claude.messages.create(
        model="claude-sonnet-4-5",
        max_tokens=100,
        system=SYSTEM,
        messages=[{"role": "user", "content": QUESTION}],
    )
    assert message.id.startswith("msg_")
    assert message._request_id is not None and message._request_id.startswith("req_")
    assert message.model == "claude-sonnet-4-5"
    assert [block.type for block in message.content] == ["text"]
    assert message.content[0].type == "text"
    assert message.content[0].text == "Sandbox reply to: Hello there sandbox, how are you today my"
    assert message.stop_reason == "end_turn" and message.stop_sequence is None
    usage = message.usage
    assert usage.input_tokens == words(SYSTEM) + words(QUESTION) == 12
    assert usage.output_tokens == 11
    assert usage.cache_creation_input_tokens == 0 and usage.cache_read_input_tokens == 0
    assert usage.cache_creation is not None and usage.cache_creation.ephemeral_5m_input_tokens == 0
    assert usage.service_tier == "standard"


async def test_anthropic_max_tokens_and_stop_sequences(claude: anthropic.AsyncAnthropic) -> None:
    messages: Any = [{"role": "user", "content": QUESTION}]
    cut = await claude.messages.create(model="claude-haiku-4-5", max_tokens=5, messages=messages)
    assert cut.content[0].type == "text" and cut.content[0].text == "Sandbox reply to: Hello there"
    assert (cut.stop_reason, cut.usage.output_tokens) == ("max_tokens", 5)

    stopped = await claude.messages.create(
        model="claude-haiku-4-5", max_tokens=100, messages=messages, stop_sequences=["how", "you"]
    )
    assert (
        stopped.content[0].type == "text"
        and stopped.content[0].text == "Sandbox reply to: Hello there sandbox, "
    )
    assert (stopped.stop_reason, stopped.stop_sequence, stopped.usage.output_tokens) == (
        "stop_sequence",
        "how",
        6,
    )


async def test_anthropic_stream_matches_the_plain_answer(claude: anthropic.AsyncAnthropic) -> None:
    request: Any = {
        "model": "claude-opus-4-1",
        "max_tokens": 100,
        "system": SYSTEM,
        "messages": [{"role": "user", "content": QUESTION}],
    }
    plain = await claude.messages.create(**request)
    event_types: list[str] = []
    async with claude.messages.stream(**request) as stream:
        async for event in stream:
            event_types.append(event.type)
        text = await stream.get_final_text()
        final = await stream.get_final_message()
    assert event_types[0] == "message_start" and event_types[-1] == "message_stop"
    assert event_types.count("text") == 11
    assert plain.content[0].type == "text" and text == plain.content[0].text
    assert final.usage.model_dump() == plain.usage.model_dump()
    assert final.stop_reason == "end_turn"


async def test_anthropic_long_stream_from_words_marker(claude: anthropic.AsyncAnthropic) -> None:
    async with claude.messages.stream(
        model="claude-sonnet-4-5", max_tokens=1000, messages=[{"role": "user", "content": "Go words=300"}]
    ) as stream:
        final = await stream.get_final_message()
    assert final.usage.output_tokens == 300
    assert final.content[0].type == "text" and words(final.content[0].text) == 300


async def test_anthropic_tool_use_streams_arguments(claude: anthropic.AsyncAnthropic) -> None:
    question = "What is the weather in Paris? Use a tool."
    request: Any = {
        "model": "claude-sonnet-4-5",
        "max_tokens": 200,
        "tools": [WEATHER_TOOL],
        "messages": [{"role": "user", "content": question}],
    }
    json_deltas = 0
    async with claude.messages.stream(**request) as stream:
        async for event in stream:
            if event.type == "input_json":
                json_deltas += 1
        final = await stream.get_final_message()
    assert json_deltas > 1
    assert [block.type for block in final.content] == ["text", "tool_use"]
    tool_use = final.content[1]
    assert tool_use.type == "tool_use" and tool_use.id.startswith("toolu_")
    assert tool_use.name == "get_weather" and tool_use.input == WEATHER_ARGS
    assert final.stop_reason == "tool_use"
    arguments_words = json_words(WEATHER_ARGS)
    assert final.usage.output_tokens == words("Sandbox calling get_weather.") + 1 + arguments_words
    assert final.usage.input_tokens == json_words(WEATHER_TOOL) + words(question)

    plain = await claude.messages.create(**request)
    assert plain.content[1].type == "tool_use" and plain.content[1].input == WEATHER_ARGS
    assert plain.usage.model_dump() == final.usage.model_dump()

    follow_up = await claude.messages.create(
        model="claude-sonnet-4-5",
        max_tokens=200,
        tools=[WEATHER_TOOL],
        messages=[
            {"role": "user", "content": question},
            {"role": "assistant", "content": [block.model_dump() for block in plain.content]},  # type: ignore[misc]
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": plain.content[1].id, "content": "Sunny, 21C"}
                ],
            },
        ],
    )
    assert follow_up.stop_reason == "end_turn"
    assert follow_up.content[0].type == "text" and follow_up.content[0].text == "Sandbox reply to: Sunny, 21C"

    forced = await claude.messages.create(
        model="claude-sonnet-4-5",
        max_tokens=200,
        tools=[{"name": "noop", "input_schema": {"type": "object"}}, WEATHER_TOOL],
        tool_choice={"type": "tool", "name": "get_weather"},
        messages=[{"role": "user", "content": "Hi"}],
    )
    assert forced.content[-1].type == "tool_use" and forced.content[-1].name == "get_weather"


async def test_anthropic_count_tokens_and_models(claude: anthropic.AsyncAnthropic) -> None:
    messages: Any = [{"role": "user", "content": QUESTION}]
    counted = await claude.messages.count_tokens(
        model="claude-sonnet-4-5", system=SYSTEM, tools=[WEATHER_TOOL], messages=messages
    )
    created = await claude.messages.create(
        model="claude-sonnet-4-5", max_tokens=10, system=SYSTEM, tools=[WEATHER_TOOL], messages=messages
    )
    assert counted.input_tokens == created.usage.input_tokens == 12 + json_words(WEATHER_TOOL)

    ids = [model.id async for model in claude.models.list()]
    assert sorted(ids) == ["claude-haiku-4-5", "claude-opus-4-1", "claude-sonnet-4-5"]
    page = await claude.models.list(limit=2)
    assert len(page.data) == 2 and page.has_more
    assert (await claude.models.retrieve("claude-opus-4-1")).display_name == "Claude Opus 4.1"


async def test_anthropic_errors(
    sandbox: str, claude: anthropic.AsyncAnthropic, http: httpx.AsyncClient
) -> None:
    messages: Any = [{"role": "user", "content": "Hi"}]
    async with anthropic.AsyncAnthropic(
        base_url=f"{sandbox}/anthropic", api_key="sk-ant-wrong", max_retries=0
    ) as wrong:
        with pytest.raises(anthropic.AuthenticationError) as auth:
            await wrong.messages.create(model="claude-sonnet-4-5", max_tokens=10, messages=messages)
    assert isinstance(auth.value.body, dict)
    assert auth.value.body["error"] == {"type": "authentication_error", "message": "invalid x-api-key"}

    with pytest.raises(anthropic.NotFoundError):
        await claude.messages.create(model="claude-nonexistent", max_tokens=10, messages=messages)

    response = await http.post(
        "/anthropic/v1/messages",
        headers=ANTHROPIC_HEADERS,
        json={"model": "claude-sonnet-4-5", "messages": messages},
    )
    assert response.status_code == 400
    assert response.json()["error"] == {
        "type": "invalid_request_error",
        "message": "max_tokens: Field required",
    }
    assert response.headers["request-id"].startswith("req_")

    (await http.post("/anthropic/_control/faults", json={"status": 529, "count": 1})).raise_for_status()
    with pytest.raises(anthropic.APIStatusError) as overloaded:
        await claude.messages.create(model="claude-sonnet-4-5", max_tokens=10, messages=messages)
    assert overloaded.value.status_code == 529
    assert isinstance(overloaded.value.body, dict)
    assert overloaded.value.body["error"] == {"type": "overloaded_error", "message": "Overloaded"}
    await claude.messages.create(model="claude-sonnet-4-5", max_tokens=10, messages=messages)  # count was 1

    (await http.post("/anthropic/_control/faults", json={"status": 429, "retry_after": 2})).raise_for_status()
    with pytest.raises(anthropic.RateLimitError) as limited:
        await claude.messages.create(model="claude-sonnet-4-5", max_tokens=10, messages=messages)
    assert limited.value.response.headers["retry-after"] == "2"

    (await http.post("/anthropic/_control/faults", json={"delay_ms": 150})).raise_for_status()
    started = time.monotonic()
    await claude.messages.create(model="claude-sonnet-4-5", max_tokens=10, messages=messages)
    assert time.monotonic() - started >= 0.15
    assert (await stats(http, "anthropic"))["errors"] == 5


async def test_anthropic_stream_faults(claude: anthropic.AsyncAnthropic, http: httpx.AsyncClient) -> None:
    request: Any = {
        "model": "claude-sonnet-4-5",
        "max_tokens": 100,
        "messages": [{"role": "user", "content": "Hi"}],
    }
    faults = [{"disconnect_after_events": 3}, {"status": 529, "error_after_events": 4}]
    (await http.post("/anthropic/_control/faults", json=faults)).raise_for_status()

    await claude.messages.create(**request)  # stream-only faults wait for a stream
    assert len((await http.get("/anthropic/_control/faults")).json()["faults"]) == 2

    # The SDK's HTTP client reports the cut connection as its own RemoteProtocolError.
    with pytest.raises(Exception, match="peer closed connection without sending complete message body"):
        async with claude.messages.stream(**request) as stream:
            await stream.get_final_message()

    with pytest.raises(anthropic.APIStatusError) as errored:
        async with claude.messages.stream(**request) as stream:
            await stream.get_final_message()
    assert isinstance(errored.value.body, dict)
    assert errored.value.body["error"] == {"type": "overloaded_error", "message": "Overloaded"}

    counters = await stats(http, "anthropic")
    assert counters["streams_started"] == 2 and counters["streams_completed"] == 0
    assert counters["streams_dropped"] == 1 and counters["streams_errored"] == 1


async def test_anthropic_prompt_caching(sandbox: str, claude: anthropic.AsyncAnthropic) -> None:
    preamble = "You are a careful assistant with a long and stable cached preamble."
    tool = {**WEATHER_TOOL, "cache_control": {"type": "ephemeral", "ttl": "1h"}}
    request: Any = {
        "model": "claude-sonnet-4-5",
        "max_tokens": 50,
        "tools": [tool],
        "system": [{"type": "text", "text": preamble, "cache_control": {"type": "ephemeral"}}],
        "messages": [{"role": "user", "content": "Hello cache"}],
    }
    tool_tokens, system_tokens = json_words(WEATHER_TOOL), words(preamble)

    first = (await claude.messages.create(**request)).usage
    assert first.cache_creation_input_tokens == tool_tokens + system_tokens
    assert first.cache_creation is not None
    assert first.cache_creation.ephemeral_1h_input_tokens == tool_tokens
    assert first.cache_creation.ephemeral_5m_input_tokens == system_tokens
    assert (first.cache_read_input_tokens, first.input_tokens) == (0, 2)

    second = (await claude.messages.create(**request)).usage
    assert second.cache_read_input_tokens == first.cache_creation_input_tokens
    assert (second.cache_creation_input_tokens, second.input_tokens) == (0, 2)

    async with claude.messages.stream(
        **{**request, "messages": [{"role": "user", "content": "Other words"}]}
    ) as s:
        streamed = (await s.get_final_message()).usage
    assert (streamed.cache_read_input_tokens, streamed.cache_creation_input_tokens) == (
        tool_tokens + system_tokens,
        0,
    )

    changed_system: Any = [{"type": "text", "text": "Changed.", "cache_control": {"type": "ephemeral"}}]
    partial = (await claude.messages.create(**{**request, "system": changed_system})).usage
    assert (partial.cache_read_input_tokens, partial.cache_creation_input_tokens) == (tool_tokens, 1)

    async with anthropic.AsyncAnthropic(
        base_url=f"{sandbox}/anthropic", api_key="sk-ant-sandbox-other-key", max_retries=0
    ) as other:
        elsewhere = (await other.messages.create(**request)).usage
    assert (elsewhere.cache_read_input_tokens, elsewhere.cache_creation_input_tokens) == (
        0,
        2 * 0 + first.cache_creation_input_tokens,
    )


async def test_anthropic_request_log_redacts_keys(
    claude: anthropic.AsyncAnthropic, http: httpx.AsyncClient
) -> None:
    await claude.messages.create(
        model="claude-sonnet-4-5",
        max_tokens=10,
        messages=[{"role": "user", "content": "Hi"}],
        extra_headers={"anthropic-beta": "prompt-caching-2024-07-31"},
    )
    raw = {"model": "claude-haiku-4-5", "max_tokens": 10, "messages": [{"role": "user", "content": "Hi"}]}
    (await http.post("/anthropic/v1/messages", headers=ANTHROPIC_HEADERS, json=raw)).raise_for_status()
    sdk, direct = await logged(http, "anthropic")
    assert (sdk["method"], sdk["path"]) == ("POST", "/anthropic/v1/messages")
    # This SDK sends its key as a bearer token; others (and proxies) use x-api-key. Both are redacted.
    assert sdk["headers"].get("x-api-key", sdk["headers"].get("authorization")) in (
        "***test",
        "Bearer ***test",
    )
    assert ANTHROPIC_KEY not in json.dumps(sdk)
    assert "anthropic-version" in sdk["headers"]
    assert sdk["headers"]["anthropic-beta"] == "prompt-caching-2024-07-31"
    assert sdk["body"]["messages"] == [{"role": "user", "content": "Hi"}]
    assert direct["headers"]["x-api-key"] == "***test" and direct["body"] == raw


@pytest.mark.parametrize("tokens_per_second", ["200", "0"])
async def test_client_disconnect_cancels_the_stream(http: httpx.AsyncClient, tokens_per_second: str) -> None:
    before = await stats(http, "anthropic")
    body = {
        "model": "claude-sonnet-4-5",
        "max_tokens": 64000,
        "stream": True,
        "messages": [{"role": "user", "content": "words=60000"}],
    }
    headers = {**ANTHROPIC_HEADERS, "x-sandbox-tokens-per-second": tokens_per_second}
    events = 0
    async with http.stream("POST", "/anthropic/v1/messages", json=body, headers=headers) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        async for line in response.aiter_lines():
            if line.startswith("event:"):
                events += 1
                if events == 2:
                    break
    assert events == 2

    async def cancelled() -> dict[str, int] | None:
        now = await stats(http, "anthropic")
        return now if now["streams_cancelled"] == before["streams_cancelled"] + 1 else None

    deadline = time.monotonic() + 3
    while (after := await cancelled()) is None:
        assert time.monotonic() < deadline, await stats(http, "anthropic")
        await asyncio.sleep(0.02)
    assert after["streams_started"] == before["streams_started"] + 1
    assert after["streams_completed"] == before["streams_completed"]
    await asyncio.sleep(0.1)
    assert await stats(http, "anthropic") == after  # nothing more produced or counted


# ---------------------------------------------------------------------------------------------- OpenAI

CHAT_MESSAGES: Any = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Tell me a joke about sandboxes please"},
]


async def test_openai_chat_completion(gpt: openai.AsyncOpenAI) -> None:
    completion = await gpt.chat.completions.create(model="gpt-4o", messages=CHAT_MESSAGES)
    assert completion.object == "chat.completion" and completion.id.startswith("chatcmpl-")
    choice = completion.choices[0]
    assert choice.message.content == "Sandbox reply to: Tell me a joke about sandboxes please"
    assert choice.finish_reason == "stop" and choice.message.tool_calls is None
    assert completion.usage is not None
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (9, 10)
    assert completion.usage.total_tokens == 19
    assert completion.usage.prompt_tokens_details is not None
    assert completion.usage.prompt_tokens_details.cached_tokens == 0
    assert completion.usage.completion_tokens_details is not None
    assert completion.usage.completion_tokens_details.reasoning_tokens == 0

    short = await gpt.chat.completions.create(
        model="gpt-4o-mini", messages=CHAT_MESSAGES, max_completion_tokens=4
    )
    assert (
        short.choices[0].finish_reason == "length"
        and short.choices[0].message.content == "Sandbox reply to: Tell"
    )


async def test_openai_chat_stream_usage_chunk(gpt: openai.AsyncOpenAI, http: httpx.AsyncClient) -> None:
    stream = await gpt.chat.completions.create(
        model="gpt-4o", messages=CHAT_MESSAGES, stream=True, stream_options={"include_usage": True}
    )
    chunks = [chunk async for chunk in stream]
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert (chunks[-1].usage.prompt_tokens, chunks[-1].usage.completion_tokens) == (9, 10)
    assert all(chunk.usage is None for chunk in chunks[:-1])
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(chunk.choices[0].delta.content or "" for chunk in chunks[:-1])
    assert text == "Sandbox reply to: Tell me a joke about sandboxes please"
    assert chunks[-2].choices[0].finish_reason == "stop"

    plain = await gpt.chat.completions.create(model="gpt-4o", messages=CHAT_MESSAGES, stream=True)
    chunks = [chunk async for chunk in plain]
    assert all(chunk.usage is None and chunk.choices for chunk in chunks)

    entries = await logged(http, "openai")
    assert entries[0]["body"]["stream_options"] == {"include_usage": True}
    assert "stream_options" not in entries[1]["body"]
    assert entries[0]["headers"]["authorization"] == "Bearer ***test"
    counters = await stats(http, "openai")
    assert (counters["streams_started"], counters["streams_completed"]) == (2, 2)


async def test_openai_tool_calls(gpt: openai.AsyncOpenAI) -> None:
    messages: Any = [{"role": "user", "content": "Check the weather with a tool"}]
    completion = await gpt.chat.completions.create(
        model="gpt-4o", messages=messages, tools=[OPENAI_WEATHER_TOOL]
    )
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    assert choice.message.tool_calls is not None
    [call] = choice.message.tool_calls
    assert call.type == "function" and call.id.startswith("call_")
    assert call.function.name == "get_weather" and json.loads(call.function.arguments) == WEATHER_ARGS
    assert completion.usage is not None
    assert completion.usage.completion_tokens == 1 + json_words(WEATHER_ARGS)
    assert completion.usage.prompt_tokens == words("Check the weather with a tool") + json_words(
        OPENAI_WEATHER_TOOL
    )

    stream = await gpt.chat.completions.create(
        model="gpt-4o", messages=messages, tools=[OPENAI_WEATHER_TOOL], stream=True
    )
    arguments, names, finish = "", [], None
    async for chunk in stream:
        delta = chunk.choices[0].delta
        for tool_call in delta.tool_calls or ():
            if tool_call.function and tool_call.function.name:
                names.append(tool_call.function.name)
            arguments += (tool_call.function.arguments if tool_call.function else None) or ""
        finish = chunk.choices[0].finish_reason or finish
    assert names == ["get_weather"] and json.loads(arguments) == WEATHER_ARGS and finish == "tool_calls"

    answered = await gpt.chat.completions.create(
        model="gpt-4o",
        tools=[OPENAI_WEATHER_TOOL],
        messages=[
            *messages,
            choice.message.model_dump(exclude_none=True),
            {"role": "tool", "tool_call_id": call.id, "content": "Sunny"},
        ],
    )
    assert answered.choices[0].finish_reason == "stop"


async def test_openai_completions_embeddings_models(gpt: openai.AsyncOpenAI) -> None:
    completion = await gpt.completions.create(model="gpt-3.5-turbo-instruct", prompt="Say this is a test")
    assert completion.object == "text_completion"
    assert completion.choices[0].text == "Sandbox reply to: Say this is a test"
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None and (
        completion.usage.prompt_tokens,
        completion.usage.completion_tokens,
    ) == (5, 8)

    embedded = await gpt.embeddings.create(model="text-embedding-3-small", input=["alpha beta", "gamma"])
    assert [len(item.embedding) for item in embedded.data] == [8, 8]
    assert embedded.usage.prompt_tokens == embedded.usage.total_tokens == 3
    assert math.isclose(math.fsum(v * v for v in embedded.data[0].embedding), 1.0, rel_tol=1e-5)
    as_floats = await gpt.embeddings.create(
        model="text-embedding-3-small", input=["alpha beta", "gamma"], encoding_format="float"
    )
    assert [item.embedding for item in as_floats.data] == [item.embedding for item in embedded.data]
    assert embedded.data[0].embedding != embedded.data[1].embedding
    narrow = await gpt.embeddings.create(model="text-embedding-3-small", input="alpha beta", dimensions=4)
    assert len(narrow.data[0].embedding) == 4

    ids = sorted([model.id async for model in gpt.models.list()])
    assert ids == ["gpt-3.5-turbo-instruct", "gpt-4o", "gpt-4o-mini", "text-embedding-3-small"]


async def test_openai_errors(sandbox: str, gpt: openai.AsyncOpenAI, http: httpx.AsyncClient) -> None:
    async with openai.AsyncOpenAI(
        base_url=f"{sandbox}/openai/v1", api_key="sk-wrong-key", max_retries=0
    ) as wrong:
        with pytest.raises(openai.AuthenticationError) as auth:
            await wrong.chat.completions.create(model="gpt-4o", messages=CHAT_MESSAGES)
    assert auth.value.code == "invalid_api_key"

    with pytest.raises(openai.NotFoundError) as missing:
        await gpt.chat.completions.create(model="gpt-9", messages=CHAT_MESSAGES)
    assert missing.value.code == "model_not_found"

    with pytest.raises(openai.BadRequestError) as bad:
        await gpt.chat.completions.create(
            model="gpt-4o", messages=CHAT_MESSAGES, stream_options={"include_usage": True}
        )
    assert bad.value.param == "stream_options"

    (await http.post("/openai/_control/faults", json={"status": 503, "count": 1})).raise_for_status()
    with pytest.raises(openai.InternalServerError) as unavailable:
        await gpt.chat.completions.create(model="gpt-4o", messages=CHAT_MESSAGES)
    assert unavailable.value.status_code == 503 and unavailable.value.type == "server_error"

    faults = [{"disconnect_after_events": 2}, {"status": 500, "error_after_events": 2}]
    (await http.post("/openai/_control/faults", json=faults)).raise_for_status()
    with pytest.raises(openai.APIConnectionError):
        async for _ in await gpt.chat.completions.create(model="gpt-4o", messages=CHAT_MESSAGES, stream=True):
            pass
    with pytest.raises(openai.APIError, match="The server had an error"):
        async for _ in await gpt.chat.completions.create(model="gpt-4o", messages=CHAT_MESSAGES, stream=True):
            pass
    counters = await stats(http, "openai")
    assert (counters["streams_dropped"], counters["streams_errored"], counters["streams_completed"]) == (
        1,
        1,
        0,
    )


async def test_control_config_latency(gpt: openai.AsyncOpenAI, http: httpx.AsyncClient) -> None:
    config = (await http.post("/openai/_control/config", json={"latency_ms": 120})).json()
    assert config["latency_ms"] == 120
    started = time.monotonic()
    await gpt.models.list()
    assert time.monotonic() - started >= 0.12
    (await http.post("/openai/_control/reset")).raise_for_status()
    assert (await http.get("/openai/_control/config")).json()["latency_ms"] == 0
