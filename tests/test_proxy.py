"""The AI proxy, driven by the official anthropic and openai SDKs (and by hand, as Dex does), against the
sandbox upstreams: answers, streams, tools, translation, errors, and exactly one usage event per attempt."""

from __future__ import annotations

import asyncio
import dataclasses
import io
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import anthropic
import httpx
import openai
import pytest
from sqlalchemy import select

from conftest import RunningServer, add_subscription, eventually
from poindexter_cloud.billing.models import UsageEvent
from poindexter_cloud.core.embedded import free_port
from poindexter_cloud.core.http import create_app
from poindexter_cloud.core.resources import Resources
from poindexter_cloud.core.settings import Role, Settings
from test_accounts import bearer, register

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

MODEL = "claude-sonnet-4-5"


async def subscriber(
    web: httpx.AsyncClient, resources: Resources, plan: str = "basic", status: str = "active"
) -> dict[str, Any]:
    """A registered user with an API key and a subscription in the given Stripe status."""
    tokens = await register(web)
    key = (await web.post("/v1/api-keys/", json={"name": "dex"}, headers=bearer(tokens))).json()
    await add_subscription(resources, uuid.UUID(tokens["user_id"]), plan, status)
    return {**tokens, "key": key["key"], "key_id": key["id"]}


@pytest.fixture
async def dex(web: httpx.AsyncClient, resources: Resources) -> dict[str, Any]:
    return await subscriber(web, resources)


def claude(proxy_url: str, key: str) -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(base_url=proxy_url, api_key=key, max_retries=0)


def gpt(proxy_url: str, key: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{proxy_url}/v1", api_key=key, max_retries=0)


async def events_of(resources: Resources, user_id: str, count: int = 1) -> list[UsageEvent]:
    """The user's usage events once the worker has drained at least ``count`` of them."""

    async def drained() -> list[UsageEvent] | None:
        async with resources.db.sessions() as session:
            rows = (
                (
                    await session.execute(
                        select(UsageEvent)
                        .where(UsageEvent.user_id == uuid.UUID(user_id))
                        .order_by(UsageEvent.created_at, UsageEvent.attempt)
                    )
                )
                .scalars()
                .all()
            )
        return list(rows) if len(rows) >= count else None

    result: list[UsageEvent] = await eventually(drained)
    return result


async def test_a_message_is_answered_and_metered_exactly(
    proxy_server: RunningServer, dex: dict[str, Any], resources: Resources, worker: Any
) -> None:
    message = await claude(proxy_server.url, dex["key"]).messages.create(
        model=MODEL,
        max_tokens=100,
        system="You are terse.",
        messages=[{"role": "user", "content": "Hello there sandbox, how are you today my friend?"}],
    )
    assert message.content[0].type == "text" and message.content[0].text.startswith("Sandbox reply to:")
    (event,) = await events_of(resources, dex["user_id"])
    assert (event.input_tokens, event.output_tokens) == (
        message.usage.input_tokens,
        message.usage.output_tokens,
    )
    assert (event.model, event.status, event.estimated, event.attempt) == (MODEL, 200, False, 0)
    assert str(event.api_key_id) == dex["key_id"] and event.cost_microdollars > 0


async def test_a_streamed_message_with_a_tool_call(
    proxy_server: RunningServer, dex: dict[str, Any], resources: Resources, worker: Any
) -> None:
    tools = [
        {
            "name": "get_weather",
            "description": "Weather in a city",
            "input_schema": {
                "type": "object",
                "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
            },
        }
    ]
    async with claude(proxy_server.url, dex["key"]).messages.stream(
        model=MODEL,
        max_tokens=200,
        tools=tools,
        messages=[{"role": "user", "content": "Use the tool for the weather in Paris"}],
    ) as stream:
        deltas = [event async for event in stream if event.type == "content_block_delta"]
        final = await stream.get_final_message()
    assert any(d.delta.type == "input_json_delta" for d in deltas)
    tool_use = next(block for block in final.content if block.type == "tool_use")
    assert tool_use.name == "get_weather" and tool_use.input == {"city": "sandbox", "days": 1}
    assert final.stop_reason == "tool_use"
    (event,) = await events_of(resources, dex["user_id"])
    assert (event.input_tokens, event.output_tokens) == (final.usage.input_tokens, final.usage.output_tokens)
    assert event.estimated is False


async def test_dex_raw_client_with_only_x_api_key(proxy_server: RunningServer, dex: dict[str, Any]) -> None:
    """Dex's own client: x-api-key and anthropic-version only, SSE parsed line by line."""
    events: list[tuple[str, dict[str, Any]]] = []
    async with (
        httpx.AsyncClient(timeout=10) as client,
        client.stream(
            "POST",
            f"{proxy_server.url}/v1/messages",
            headers={
                "x-api-key": dex["key"],
                "anthropic-version": "2023-06-01",
                "content-type": "application/json",
            },
            json={
                "model": MODEL,
                "max_tokens": 50,
                "stream": True,
                "messages": [{"role": "user", "content": "say hi"}],
            },
        ) as response,
    ):
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        assert "proxy;dur=" in response.headers["server-timing"]
        name = ""
        async for line in response.aiter_lines():
            if line.startswith("event:"):
                name = line[6:].strip()
            elif line.startswith("data:"):
                events.append((name, json.loads(line[5:])))
    names = [name for name, _ in events]
    assert names[0] == "message_start" and names[-1] == "message_stop"
    text = "".join(d["delta"].get("text", "") for n, d in events if n == "content_block_delta")
    assert text.startswith("Sandbox reply to: say hi")


async def test_openai_chat_is_translated_for_an_anthropic_model(
    proxy_server: RunningServer, dex: dict[str, Any], resources: Resources, worker: Any
) -> None:
    client = gpt(proxy_server.url, dex["key"])
    completion = await client.chat.completions.create(
        model=MODEL,
        max_tokens=60,
        messages=[
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "hello from openai"},
        ],
    )
    assert completion.choices[0].message.content.startswith("Sandbox reply to: hello from openai")
    assert completion.choices[0].finish_reason == "stop"
    chunks = [
        chunk
        async for chunk in await client.chat.completions.create(
            model=MODEL,
            max_tokens=60,
            stream=True,
            stream_options={"include_usage": True},
            messages=[{"role": "user", "content": "hello from openai"}],
        )
    ]
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert streamed == completion.choices[0].message.content
    assert (
        chunks[-1].usage is not None
        and chunks[-1].usage.completion_tokens == completion.usage.completion_tokens
    )
    events = await events_of(resources, dex["user_id"], 2)
    assert [e.output_tokens for e in events] == [completion.usage.completion_tokens] * 2


async def test_unsupported_parameter_is_a_clear_400(proxy_server: RunningServer, dex: dict[str, Any]) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        await gpt(proxy_server.url, dex["key"]).chat.completions.create(
            model=MODEL, n=2, messages=[{"role": "user", "content": "two answers please"}]
        )
    assert "n" in str(caught.value)


async def test_openai_model_passthrough_strips_the_usage_chunk_unless_asked(
    proxy_server: RunningServer, dex: dict[str, Any], resources: Resources, worker: Any
) -> None:
    client = gpt(proxy_server.url, dex["key"])
    plain = [
        c
        async for c in await client.chat.completions.create(
            model="gpt-4o", stream=True, messages=[{"role": "user", "content": "count me"}]
        )
    ]
    assert all(c.choices for c in plain)  # no usage-only chunk the client did not ask for
    (event,) = await events_of(resources, dex["user_id"])
    assert event.output_tokens > 0 and event.estimated is False and event.provider == "openai-sandbox"


async def test_models_in_both_formats_embeddings_and_count_tokens(
    proxy_server: RunningServer, dex: dict[str, Any]
) -> None:
    openai_models = [m.id async for m in gpt(proxy_server.url, dex["key"]).models.list()]
    assert MODEL in openai_models and "gpt-4o" in openai_models
    async with httpx.AsyncClient() as client:
        listed = (
            await client.get(
                f"{proxy_server.url}/v1/models",
                headers={"x-api-key": dex["key"], "anthropic-version": "2023-06-01"},
            )
        ).json()
    assert listed["data"][0]["type"] == "model" and "has_more" in listed
    embedding = await gpt(proxy_server.url, dex["key"]).embeddings.create(
        model="text-embedding-3-small", input=["one", "two"]
    )
    assert len(embedding.data) == 2 and len(embedding.data[0].embedding) == 8
    counted = await claude(proxy_server.url, dex["key"]).messages.count_tokens(
        model=MODEL, messages=[{"role": "user", "content": "four words right here"}]
    )
    assert counted.input_tokens == 4


async def test_auth_and_entitlement_errors_in_each_family(
    proxy_server: RunningServer, web: httpx.AsyncClient, resources: Resources
) -> None:
    with pytest.raises(anthropic.AuthenticationError):
        await claude(proxy_server.url, "pk_test_" + "x" * 49).messages.create(
            model=MODEL, max_tokens=5, messages=[{"role": "user", "content": "hi"}]
        )
    with pytest.raises(openai.AuthenticationError):
        await gpt(proxy_server.url, "nonsense").chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "hi"}]
        )
    unsubscribed = await register(web)
    key = (await web.post("/v1/api-keys/", headers=bearer(unsubscribed))).json()["key"]
    with pytest.raises(anthropic.APIStatusError) as caught:
        await claude(proxy_server.url, key).messages.create(
            model=MODEL, max_tokens=5, messages=[{"role": "user", "content": "hi"}]
        )
    assert caught.value.status_code == 402 and "subscribe" in caught.value.message.lower()
    past_due = await subscriber(web, resources, status="past_due")
    with pytest.raises(anthropic.PermissionDeniedError):
        await claude(proxy_server.url, past_due["key"]).messages.create(
            model=MODEL, max_tokens=5, messages=[{"role": "user", "content": "hi"}]
        )
    active = await subscriber(web, resources)
    with pytest.raises(anthropic.NotFoundError):
        await claude(proxy_server.url, active["key"]).messages.create(
            model="claude-nonexistent", max_tokens=5, messages=[{"role": "user", "content": "hi"}]
        )


@asynccontextmanager
async def proxy_with(settings: Settings, **changes: Any) -> AsyncIterator[RunningServer]:
    """A proxy of its own, on the settings changed as given (its resources opened from them)."""
    changed = dataclasses.replace(settings, **changes)
    opened = await Resources.open(changed)
    try:
        async with RunningServer(create_app(Role.PROXY, changed, opened)) as server:
            yield server
    finally:
        await opened.close()


RawUpstream = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@asynccontextmanager
async def proxy_before(
    settings: Settings, serve: RawUpstream, name: str, *, then_sandbox: bool = False
) -> AsyncIterator[RunningServer]:
    """A proxy of its own whose first provider, ``name``, is ``serve`` speaking raw TCP (the sandbox's
    Anthropic after it with ``then_sandbox``)."""
    upstream = await asyncio.start_server(serve, "127.0.0.1", 0)
    sandbox = json.loads(settings.upstreams_json)[0]
    port = upstream.sockets[0].getsockname()[1]
    raw = {**sandbox, "name": name, "base_url": f"http://127.0.0.1:{port}", "api_keys": ["sk-ant-x"]}
    upstreams = [raw, sandbox] if then_sandbox else [raw]
    try:
        async with proxy_with(settings, proxy_upstreams=json.dumps(upstreams)) as server:
            yield server
    finally:
        upstream.close()


def long_question(stream: bool) -> tuple[bytes, dict[str, str]]:
    """A Messages request of 90 words, and its headers but for the API key."""
    body = {
        "model": MODEL,
        "max_tokens": 100,
        "stream": stream,
        "messages": [{"role": "user", "content": "hi " * 90}],
    }
    return json.dumps(body).encode(), {"anthropic-version": "2023-06-01", "content-type": "application/json"}


@pytest.mark.parametrize(
    ("fault", "changes", "failed_status"),
    [
        ({"status": 529, "count": 1}, {}, 529),
        # past the proxy's read timeout: the delayed answer would have been a 200
        ({"delay_ms": 3000, "count": 1}, {"proxy_read_timeout_seconds": 0.5}, 502),
    ],
    ids=["upstream-overloaded", "upstream-hangs"],
)
async def test_retry_before_the_first_byte_and_each_attempt_metered(
    fault: dict[str, Any],
    changes: dict[str, Any],
    failed_status: int,
    settings: Settings,
    sandbox_server: RunningServer,
    dex: dict[str, Any],
    resources: Resources,
    worker: Any,
) -> None:
    async with httpx.AsyncClient(base_url=sandbox_server.url) as sandbox:
        await sandbox.post("/anthropic/_control/faults", json=fault)
    async with proxy_with(settings, **changes) as proxy:
        message = await claude(proxy.url, dex["key"]).messages.create(
            model=MODEL, max_tokens=20, messages=[{"role": "user", "content": "retry me please"}]
        )
    assert message.content[0].text.startswith("Sandbox reply")
    failed, succeeded = await events_of(resources, dex["user_id"], 2)
    assert (failed.attempt, failed.status, failed.input_tokens) == (0, failed_status, 0)
    assert (succeeded.attempt, succeeded.status) == (1, 200)
    assert succeeded.output_tokens == message.usage.output_tokens
    assert succeeded.request_id == failed.request_id


async def test_no_retry_after_the_first_byte(
    proxy_server: RunningServer,
    sandbox_server: RunningServer,
    dex: dict[str, Any],
    resources: Resources,
    worker: Any,
    json_logs: io.StringIO,
) -> None:
    async with httpx.AsyncClient(base_url=sandbox_server.url) as sandbox:
        await sandbox.post("/anthropic/_control/faults", json={"disconnect_after_events": 4, "count": 1})
        before = (await sandbox.get("/anthropic/_control/stats")).json()["requests"]
    with pytest.raises(Exception, match=r"incomplete|closed|ended"):  # the SDK's transport error
        async with claude(proxy_server.url, dex["key"]).messages.stream(
            model=MODEL, max_tokens=50, messages=[{"role": "user", "content": "words=40 please"}]
        ) as stream:
            async for _ in stream:
                pass
            await stream.get_final_message()
    async with httpx.AsyncClient(base_url=sandbox_server.url) as sandbox:
        assert (await sandbox.get("/anthropic/_control/stats")).json()["requests"] == before + 1
    (event,) = await events_of(resources, dex["user_id"])
    assert event.estimated is True and event.input_tokens > 0
    [failed] = [json.loads(line) for line in json_logs.getvalue().splitlines() if "stream relay" in line]
    assert (failed["level"], failed["upstream"]) == ("warning", "anthropic-sandbox")


async def test_a_client_disconnect_stops_the_upstream_and_meters_what_was_relayed(
    proxy_server: RunningServer,
    sandbox_server: RunningServer,
    dex: dict[str, Any],
    resources: Resources,
    worker: Any,
) -> None:
    async with httpx.AsyncClient(base_url=sandbox_server.url) as sandbox:
        cancelled_before = (await sandbox.get("/anthropic/_control/stats")).json()["streams_cancelled"]
    async with (
        httpx.AsyncClient(timeout=10) as client,
        client.stream(
            "POST",
            f"{proxy_server.url}/v1/messages",
            headers={
                "x-api-key": dex["key"],
                "anthropic-version": "2023-06-01",
                "x-sandbox-tokens-per-second": "200",
            },
            json={
                "model": MODEL,
                "max_tokens": 5000,
                "stream": True,
                "messages": [{"role": "user", "content": "words=2000 go"}],
            },
        ) as response,
    ):
        seen = 0
        async for line in response.aiter_lines():
            seen += line.startswith("event: content_block_delta")
            if seen >= 5:
                break
    async with httpx.AsyncClient(base_url=sandbox_server.url) as sandbox:

        async def cancelled() -> bool:
            stats = (await sandbox.get("/anthropic/_control/stats")).json()
            return bool(stats["streams_cancelled"] > cancelled_before)

        await eventually(cancelled, within=5)
    (event,) = await events_of(resources, dex["user_id"])
    assert event.estimated is True and event.status == 499
    assert event.input_tokens == 2  # from message_start: the sandbox counts "words=2000" and "go"
    assert 1 <= event.output_tokens < 1000  # what was relayed (4 characters a token), not 2000 words


async def test_prompt_cache_reads_and_writes_are_priced_field_by_field(
    proxy_server: RunningServer, dex: dict[str, Any], resources: Resources, worker: Any
) -> None:
    words = [uuid.uuid4().hex, *(f"rule{i}" for i in range(999))]  # unique, so never cached before
    system = [{"type": "text", "text": " ".join(words), "cache_control": {"type": "ephemeral"}}]
    client = claude(proxy_server.url, dex["key"])
    for _ in range(2):
        await client.messages.create(
            model=MODEL,
            max_tokens=10,
            system=system,
            messages=[{"role": "user", "content": "short question"}],
        )
    write, read = await events_of(resources, dex["user_id"], 2)
    assert (write.cache_write_5m_tokens, write.cache_read_tokens) == (1000, 0)
    assert (read.cache_write_5m_tokens, read.cache_read_tokens) == (0, 1000)
    # claude-sonnet-4-5: $3/M input, $15/M output, $0.30/M cache read, $3.75/M 5-minute cache write.
    for event in (write, read):
        expected = (
            event.input_tokens * 3
            + event.output_tokens * 15
            + event.cache_read_tokens * 0.3
            + event.cache_write_5m_tokens * 3.75
        )
        assert event.cost_microdollars == -(-expected // 1)


async def test_rate_limit_holds_across_two_proxies_under_concurrency(
    proxy_server: RunningServer, settings: Any, resources: Resources, dex: dict[str, Any]
) -> None:
    from poindexter_cloud.billing.plans import plan_named
    from poindexter_cloud.core.http import create_app
    from poindexter_cloud.core.settings import Role

    limit = plan_named("basic").requests_per_minute_per_key
    async with RunningServer(create_app(Role.PROXY, settings)) as second:

        async def one(url: str) -> int:
            async with httpx.AsyncClient(timeout=30) as client:
                response = await client.post(
                    f"{url}/v1/messages",
                    headers={"x-api-key": dex["key"], "anthropic-version": "2023-06-01"},
                    json={"model": MODEL, "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]},
                )
                if response.status_code == 429:
                    assert response.headers["anthropic-ratelimit-requests-remaining"] == "0"
                    assert int(response.headers["retry-after"]) >= 1
                    assert response.json()["error"]["type"] == "rate_limit_error"
                return response.status_code

        statuses = await asyncio.gather(
            *(one(proxy_server.url if i % 2 else second.url) for i in range(limit + 15))
        )
    assert statuses.count(200) in (limit, limit + 1)
    assert statuses.count(429) == len(statuses) - statuses.count(200)


async def test_a_spending_cap_refuses_requests_past_it(
    proxy_server: RunningServer, web: httpx.AsyncClient, dex: dict[str, Any]
) -> None:
    client = claude(proxy_server.url, dex["key"])
    await client.messages.create(model=MODEL, max_tokens=5, messages=[{"role": "user", "content": "hi"}])
    capped = await web.put("/v1/billing/spend-cap", json={"monthly_cap_usd": 0.0001}, headers=bearer(dex))
    assert capped.status_code == 200
    with pytest.raises(anthropic.APIStatusError) as caught:
        await client.messages.create(model=MODEL, max_tokens=5, messages=[{"role": "user", "content": "hi"}])
    assert caught.value.status_code == 402 and "spending cap" in caught.value.message
    await web.put("/v1/billing/spend-cap", json={"monthly_cap_usd": None}, headers=bearer(dex))
    await client.messages.create(model=MODEL, max_tokens=5, messages=[{"role": "user", "content": "hi"}])


async def test_an_operator_can_grant_a_complimentary_plan(
    proxy_server: RunningServer, web: httpx.AsyncClient, settings: Any
) -> None:
    from test_admin import admin_cli

    user = await register(web)
    key = (await web.post("/v1/api-keys/", headers=bearer(user))).json()["key"]
    account = (await web.get("/v1/account/", headers=bearer(user))).json()
    granted = admin_cli(settings, "billing", "comp", account["email"], "--plan", "pro")
    assert granted.returncode == 0, granted.stderr
    message = await claude(proxy_server.url, key).messages.create(
        model=MODEL, max_tokens=5, messages=[{"role": "user", "content": "hi"}]
    )
    assert message.content[0].text


async def test_beta_headers_and_cache_fields_pass_through_untouched(
    proxy_server: RunningServer, sandbox_server: RunningServer, dex: dict[str, Any]
) -> None:
    marker = uuid.uuid4().hex
    body = {
        "model": MODEL,
        "max_tokens": 5,
        "messages": [
            {
                "role": "user",
                "content": [
                    {
                        "type": "text",
                        "text": f"cached {marker}",
                        "cache_control": {"type": "ephemeral", "ttl": "1h"},
                    }
                ],
            }
        ],
    }
    async with httpx.AsyncClient() as client:
        response = await client.post(
            f"{proxy_server.url}/v1/messages",
            json=body,
            headers={
                "x-api-key": dex["key"],
                "anthropic-version": "2023-06-01",
                "anthropic-beta": "extended-cache-ttl",
            },
        )
        assert response.status_code == 200
        assert response.json()["usage"]["cache_creation"]["ephemeral_1h_input_tokens"] == 2
        forwarded = (await client.get(f"{sandbox_server.url}/anthropic/_control/requests")).json()["requests"]
    seen = next(r for r in reversed(forwarded) if marker in json.dumps(r["body"]))
    assert seen["headers"]["anthropic-beta"] == "extended-cache-ttl"
    assert seen["body"] == body
    assert dex["key"] not in json.dumps(seen)  # our key stays with us; the upstream sees its own


async def test_legacy_completions_and_wrong_endpoints(
    proxy_server: RunningServer, dex: dict[str, Any]
) -> None:
    client = gpt(proxy_server.url, dex["key"])
    completion = await client.completions.create(
        model="gpt-3.5-turbo-instruct", prompt="once upon", max_tokens=5
    )
    assert completion.choices[0].text and completion.usage is not None
    with pytest.raises(openai.BadRequestError) as caught:
        await client.completions.create(model=MODEL, prompt="legacy on claude", max_tokens=5)
    assert "not available on this endpoint" in str(caught.value)
    with pytest.raises(openai.BadRequestError):
        await client.embeddings.create(model=MODEL, input="embed on claude")


def test_an_upstream_key_that_keeps_failing_is_tried_last() -> None:
    from poindexter_cloud.proxy.breaker import Breakers

    breakers = Breakers(failures_to_open=2, open_seconds=60)
    candidates = [("a", "key-1"), ("a", "key-2")]
    breakers.failure("key-1")
    assert breakers.order(candidates) == candidates  # one failure is not a pattern
    breakers.failure("key-1")
    assert breakers.order(candidates) == [("a", "key-2"), ("a", "key-1")]
    breakers.success("key-1")
    assert breakers.order(candidates) == candidates


async def test_while_redis_is_unreachable_the_proxy_answers_503_and_forwards_nothing(
    web: httpx.AsyncClient, resources: Resources, settings: Settings, sandbox_server: RunningServer
) -> None:
    """The limits live in Redis: without them nothing is forwarded, and the client is told to retry."""
    user = await subscriber(web, resources)
    async with httpx.AsyncClient(base_url=sandbox_server.url) as sandbox:
        upstream_before = {
            family: (await sandbox.get(f"/{family}/_control/stats")).json()["requests"]
            for family in ("anthropic", "openai")
        }
        async with proxy_with(settings, redis_url=f"redis://127.0.0.1:{free_port()}/0") as server:
            with pytest.raises(anthropic.InternalServerError) as raised:
                await claude(server.url, user["key"]).messages.create(
                    model=MODEL, max_tokens=16, messages=[{"role": "user", "content": "Hello"}]
                )
            async with httpx.AsyncClient(base_url=server.url) as raw:
                answer = await raw.post(
                    "/v1/chat/completions",
                    headers={"authorization": f"Bearer {user['key']}"},
                    json={"model": MODEL, "messages": [{"role": "user", "content": "Hello"}]},
                )
        upstream_after = {
            family: (await sandbox.get(f"/{family}/_control/stats")).json()["requests"]
            for family in ("anthropic", "openai")
        }
    assert raised.value.status_code == 503
    assert raised.value.response.headers["retry-after"] == "1"
    assert raised.value.body["error"]["type"] == "overloaded_error"  # type: ignore[index]
    assert answer.status_code == 503
    assert answer.json()["error"]["code"] == "limits_unavailable"
    assert upstream_after == upstream_before  # no upstream call, so no cost nobody is billed for


async def test_while_postgresql_is_unreachable_a_key_no_cache_holds_gets_a_503_to_retry(
    web: httpx.AsyncClient, resources: Resources, settings: Settings
) -> None:
    """A fresh proxy has no key cached, so it must ask PostgreSQL, which is away: a retryable 503 in the
    caller's error format, not a 500."""
    user = await subscriber(web, resources)
    unreachable = f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/nowhere"
    async with proxy_with(settings, database_url=unreachable) as server:
        with pytest.raises(anthropic.InternalServerError) as raised:
            await claude(server.url, user["key"]).messages.create(
                model=MODEL, max_tokens=16, messages=[{"role": "user", "content": "Hello"}]
            )
    assert raised.value.status_code == 503
    assert raised.value.response.headers["retry-after"] == "5"
    assert raised.value.body["error"]["type"] == "overloaded_error"  # type: ignore[index]


async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.close()  # accepts, then drops the connection without a word


async def break_off(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.readuntil(b"\r\n\r\n")
    writer.write(b'HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 500\r\n\r\n{"id":')
    await writer.drain()
    writer.close()  # an answer cut off a few bytes into its body


async def test_a_client_gone_before_the_upstream_gave_its_input_pays_the_estimate(
    settings: Settings, dex: dict[str, Any], resources: Resources, worker: Any
) -> None:
    async def slow_to_start(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
        )
        await writer.drain()
        await reader.read()  # still thinking, no message_start yet, when the proxy hangs up
        writer.close()

    body, headers = long_question(stream=True)
    async with (
        proxy_before(settings, slow_to_start, "slow") as server,
        httpx.AsyncClient() as client,
        client.stream(
            "POST", f"{server.url}/v1/messages", headers={**headers, "x-api-key": dex["key"]}, content=body
        ) as response,
    ):
        assert response.status_code == 200  # the stream began; Dex gives up before any event
    (event,) = await events_of(resources, dex["user_id"])
    assert (event.provider, event.status, event.estimated, event.output_tokens) == ("slow", 499, True, 0)
    # The upstream had the whole request, so its input is billed: the proxy's estimate, never zero.
    assert event.input_tokens == len(body) // 3 + 1


@pytest.mark.parametrize(("events", "billed_input"), [(4, True), (0, False)], ids=["mid-answer", "at-once"])
async def test_an_openai_stream_the_upstream_breaks_pays_input_only_if_it_was_answering(
    events: int,
    billed_input: bool,
    proxy_server: RunningServer,
    sandbox_server: RunningServer,
    dex: dict[str, Any],
    resources: Resources,
    worker: Any,
) -> None:
    async with httpx.AsyncClient(base_url=sandbox_server.url) as sandbox:
        drop = await sandbox.post("/openai/_control/faults", json={"disconnect_after_events": events})
        drop.raise_for_status()
    question = {"role": "user", "content": "words=50 " + "please " * 40}
    body = json.dumps({"model": "gpt-4o", "stream": True, "messages": [question]}).encode()
    headers = {"authorization": f"Bearer {dex['key']}", "content-type": "application/json"}
    async with httpx.AsyncClient(timeout=10) as client:
        with pytest.raises(httpx.RemoteProtocolError):  # the stream the proxy relays ends unfinished
            async with client.stream(
                "POST", f"{proxy_server.url}/v1/chat/completions", headers=headers, content=body
            ) as response:
                assert response.status_code == 200
                await response.aread()
    (event,) = await events_of(resources, dex["user_id"])
    assert (event.provider, event.status, event.estimated) == ("openai-sandbox", 502, True)
    # The usage chunk comes last, so the input is ours to estimate: billed once the upstream was answering
    # (output had been relayed), not when it failed before its first token.
    assert (event.output_tokens > 0, event.input_tokens) == (
        billed_input,
        len(body) // 3 + 1 if billed_input else 0,
    )


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
async def test_a_client_gone_while_the_upstream_thinks_stops_the_upstream_and_pays_the_estimate(
    stream: bool, settings: Settings, dex: dict[str, Any], resources: Resources, worker: Any
) -> None:
    asked, hung_up = asyncio.Event(), asyncio.Event()

    async def thinking(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
        await reader.readexactly(length)
        asked.set()
        await reader.read()  # no answer yet, not even its head, when the proxy hangs up
        hung_up.set()
        writer.close()

    body, headers = long_question(stream)
    async with proxy_before(settings, thinking, "slow") as server, httpx.AsyncClient() as client:
        request = asyncio.create_task(
            client.post(
                f"{server.url}/v1/messages", headers={**headers, "x-api-key": dex["key"]}, content=body
            )
        )
        await asyncio.wait_for(asked.wait(), 10)
        request.cancel()  # Dex gives up: its connection closes
        await asyncio.gather(request, return_exceptions=True)
        await asyncio.wait_for(hung_up.wait(), 5)  # and the proxy drops the upstream's at once
    (event,) = await events_of(resources, dex["user_id"])
    assert (event.provider, event.status, event.estimated, event.output_tokens) == ("slow", 499, True, 0)
    assert event.input_tokens == len(body) // 3 + 1  # the upstream had the request: our estimate


@pytest.mark.parametrize("misbehave", [hang_up, break_off], ids=["hangs-up", "breaks-off-mid-body"])
async def test_an_upstream_that_drops_connections_is_passed_over_for_the_next_provider(
    misbehave: RawUpstream,
    settings: Settings,
    sandbox_server: RunningServer,
    dex: dict[str, Any],
    resources: Resources,
    worker: Any,
) -> None:
    async with proxy_before(settings, misbehave, "dropping", then_sandbox=True) as server:
        message = await claude(server.url, dex["key"]).messages.create(
            model=MODEL, max_tokens=20, messages=[{"role": "user", "content": "anyone home"}]
        )
    sandbox = json.loads(settings.upstreams_json)[0]
    assert message.content[0].text.startswith("Sandbox reply")
    dropped, answered = await events_of(resources, dex["user_id"], 2)
    assert (dropped.provider, dropped.status, dropped.input_tokens) == ("dropping", 502, 0)
    assert (answered.provider, answered.status) == (sandbox["name"], 200)
