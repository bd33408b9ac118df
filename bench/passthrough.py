"""The thinnest AI passthrough: the baseline `bench/proxy.py` compares the real proxy with.

    python bench/passthrough.py --port 8011 --upstream http://127.0.0.1:8002/anthropic

One bare ASGI function, no framework, no auth, no limits, no metering: it reads the request body, POSTs the
bytes to ``<upstream><request path>`` with one pooled ``aiohttp.ClientSession`` (configured like the proxy's:
no connection limit, no decompression, no automatic headers) and answers the upstream's status,
content type and bytes. A ``text/event-stream`` answer is relayed chunk by chunk as it arrives
(``iter_any``), anything else is read whole and sent in one body message. The upstream key is fixed
(``--upstream-key``); only ``anthropic-version`` is taken from the request.

With ``--client proxy`` it forwards with the proxy's own upstream client (``proxy/upstream_http.py``)
instead of aiohttp's: the baseline (b') that shows how much of the proxy's cost is not the HTTP client.

With ``--limits REDIS_URL`` it also does, and only does, the Redis work issue 5 prescribes for every
request, with the proxy's own `Limiter` on the proxy's script client: one reserve script before forwarding
(the caller's ``x-api-key`` stands for a key of its own user, Pro limits) and, once the answer is read, one
settle script that also appends a proxy-sized usage event to a stream (``FLOOR_STREAM``, which nobody
drains); the answer leaves once the settle is in the kernel, as the proxy's does. No auth, no parsing, no
metering otherwise: the floor (f) under any proxy built to that design.

It runs under uvicorn with the options every role of ours uses (``core/runner.py: uvicorn_config``:
httptools with a whole answer's head and body in one write, no access log, no server header; uvloop when
installed, uvicorn's ``loop="auto"``).
"""

from __future__ import annotations

import argparse
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import uvicorn
from redis.asyncio import Redis

from bench_common import usage_event
from poindexter_cloud.billing.plans import plan_named
from poindexter_cloud.billing.pricing import TokenUsage, upstream_cost_microdollars
from poindexter_cloud.core.redis_scripts import ScriptClient, Sent
from poindexter_cloud.core.runner import uvicorn_config
from poindexter_cloud.proxy.limits import Limiter, Reservation, limits_for
from poindexter_cloud.proxy.upstream_http import Target, UpstreamClient

DEFAULT_UPSTREAM_KEY = "sk-ant-sandbox-1"
SSE = "text/event-stream"

upstream = "http://127.0.0.1:8002/anthropic"
upstream_key = DEFAULT_UPSTREAM_KEY
session: aiohttp.ClientSession | None = None
thin: UpstreamClient | None = None  # --client proxy
limiter: Limiter | None = None  # --limits

FLOOR_STREAM = "bench:passthrough-usage"
FLOOR_LIMITS = limits_for(plan_named("pro"), None)
FLOOR_MODEL = "claude-sonnet-4-5"
FLOOR_USAGE = TokenUsage(input_tokens=12, output_tokens=16)
_principals: dict[bytes, tuple[uuid.UUID, uuid.UUID]] = {}  # x-api-key -> (key id, user id)


def _principal(api_key: bytes) -> tuple[uuid.UUID, uuid.UUID]:
    ids = _principals.get(api_key)
    if ids is None:
        key_id = uuid.uuid5(uuid.NAMESPACE_OID, api_key.decode("latin-1"))
        ids = _principals[api_key] = (key_id, uuid.uuid5(key_id, "user"))
    return ids


Held = tuple[Reservation, tuple[uuid.UUID, uuid.UUID]]  # a reservation, and its (key id, user id)


async def _reserve(scope: dict[str, Any], body: bytes) -> Held:
    """The request's reservation, and the (key id, user id) its ``x-api-key`` stands for."""
    assert limiter is not None
    api_key = next((value for name, value in scope["headers"] if name == b"x-api-key"), b"")
    ids = _principal(api_key)
    return await limiter.reserve(*ids, FLOOR_LIMITS, len(body) // 4 + 16, 100), ids


async def _settle(held: Held | None) -> Sent | None:
    """Settle with a proxy-sized usage event; returns once the settle is in the kernel (or Redis replied),
    as the proxy's answer waits for no more than that. Await the result, after answering, for the reply."""
    if held is None:
        return None
    assert limiter is not None
    reservation, ids = held
    key_id, user_id = ids
    event = usage_event(user_id, key_id, FLOOR_MODEL, FLOOR_USAGE)
    tokens = FLOOR_USAGE.input_tokens + FLOOR_USAGE.output_tokens
    spend = upstream_cost_microdollars(FLOOR_MODEL, FLOOR_USAGE)
    sent = limiter.settle(reservation, tokens, spend, stream=FLOOR_STREAM, stream_fields={"e": event})
    if not await sent.delivered():
        await sent
    return sent


async def _lifespan(receive: Any, send: Any) -> None:
    global session
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            if thin is not None:
                await send({"type": "lifespan.startup.complete"})
                continue
            session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0, ttl_dns_cache=300),
                timeout=aiohttp.ClientTimeout(total=None, connect=5, sock_read=600),
                auto_decompress=False,
                skip_auto_headers=("User-Agent", "Accept-Encoding"),
            )
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            if session is not None:
                await session.close()
            await send({"type": "lifespan.shutdown.complete"})
            return


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        await _lifespan(receive, send)
        return
    if scope["type"] != "http":
        return
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return  # the client went away
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    version = b"2023-06-01"
    for name, value in scope["headers"]:
        if name == b"anthropic-version":
            version = value
    body = b"".join(chunks)
    held = await _reserve(scope, body) if limiter is not None else None
    headers = {
        "content-type": "application/json",
        "x-api-key": upstream_key,
        "anthropic-version": version.decode("latin-1"),
    }
    if thin is not None:
        await _forward_thin(thin, scope, body, version, send, held)
        return
    assert session is not None, "lifespan did not start"
    async with session.post(upstream + scope["path"], data=body, headers=headers) as response:
        content_type = response.headers.get("content-type", "application/json")
        await _relay(send, response.status, content_type, response.content.iter_any(), response.read, held)


async def _forward_thin(
    client: UpstreamClient,
    scope: dict[str, Any],
    body: bytes,
    version: bytes,
    send: Any,
    held: Held | None,
) -> None:
    headers = [
        (b"content-type", b"application/json"),
        (b"x-api-key", upstream_key.encode()),
        (b"anthropic-version", version),
    ]
    response = await client.post(Target.of(upstream + scope["path"]), headers, body)
    try:
        content_type = response.headers.get("content-type", "application/json")
        await _relay(send, response.status, content_type, response.iter_chunks(), response.read, held)
    finally:
        response.release()


async def _relay(
    send: Any,
    status: int,
    content_type: str,
    chunks: AsyncIterator[bytes],
    read: Callable[[], Awaitable[bytes]],
    held: Held | None,
) -> None:
    """The upstream's status and content type; an event stream chunk by chunk as it arrives, else whole.
    With ``--limits`` the answer's last bytes leave once its settle is in the kernel."""
    start = {
        "type": "http.response.start",
        "status": status,
        "headers": [(b"content-type", content_type.encode("latin-1"))],
    }
    if content_type.startswith(SSE):
        await send(start)
        async for chunk in chunks:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        last = b""
    else:
        last = await read()
    sent = await _settle(held)
    if not content_type.startswith(SSE):
        await send(start)
    await send({"type": "http.response.body", "body": last})
    if sent is not None:
        await sent


def main() -> None:
    global upstream, upstream_key, thin, limiter
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8011)
    parser.add_argument("--upstream", default=upstream, help="base URL the request path is appended to")
    parser.add_argument("--upstream-key", default=DEFAULT_UPSTREAM_KEY, help="x-api-key sent upstream")
    parser.add_argument(
        "--client", choices=("aiohttp", "proxy"), default="aiohttp", help="upstream HTTP client"
    )
    parser.add_argument("--limits", metavar="REDIS_URL", help="reserve and settle each request (the floor)")
    args = parser.parse_args()
    upstream, upstream_key = args.upstream.rstrip("/"), args.upstream_key
    if args.client == "proxy":
        thin = UpstreamClient(connect_timeout=5, read_timeout=600)
    if args.limits:
        limiter = Limiter(Redis.from_url(args.limits), scripts=ScriptClient(args.limits))
    uvicorn.Server(uvicorn_config(app, args.host, args.port)).run()


if __name__ == "__main__":
    main()
