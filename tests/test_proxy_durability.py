"""Metering survives failures: a proxy killed mid-burst, and PostgreSQL going away for a while."""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from sqlalchemy import select

from conftest import QUEUE_NAME, RunningServer, eventually, make_settings
from poindexter_cloud.billing.models import UsageEvent
from poindexter_cloud.core import migrations
from poindexter_cloud.core.embedded import EmbeddedPostgres, free_port
from poindexter_cloud.core.http import create_app
from poindexter_cloud.core.resources import Resources
from poindexter_cloud.core.settings import Role, Settings
from poindexter_cloud.proxy import limits
from test_proxy import MODEL, proxy_with, subscriber

pytestmark = pytest.mark.slow

HEADERS = {"anthropic-version": "2023-06-01", "x-sandbox-latency-ms": "30"}
BODY = {"model": MODEL, "max_tokens": 10, "messages": [{"role": "user", "content": "count this request"}]}


async def events_by_request(resources: Resources, user_id: str) -> Counter[str]:
    async with resources.db.sessions() as session:
        rows = await session.execute(
            select(UsageEvent.request_id).where(
                UsageEvent.user_id == uuid.UUID(user_id), UsageEvent.status == 200
            )
        )
    return Counter(rows.scalars())


def start_proxy(settings: Settings) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": settings.database_url.replace("+psycopg", ""),
        "REDIS_URL": settings.redis_url,
        "QUEUE_NAME": QUEUE_NAME,
        "SANDBOX_URL": settings.sandbox_url,
        "ACCESS_LOG": "false",
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "poindexter_cloud", "serve", "--role", "proxy", "--port", str(port)],
        env=env,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                return process, url
        except httpx.TransportError:
            time.sleep(0.1)
    process.kill()
    raise AssertionError("the proxy did not start")


async def test_sigkill_during_a_burst_loses_no_completed_request(
    web: httpx.AsyncClient, resources: Resources, settings: Settings, worker: Any
) -> None:
    dex = await subscriber(web, resources, plan="pro")
    process, url = start_proxy(settings)
    completed: list[str] = []

    async def client_loop(client: httpx.AsyncClient) -> None:
        for _ in range(200):  # bounded; the kill ends it much sooner
            try:
                response = await client.post(
                    f"{url}/v1/messages", json=BODY, headers={**HEADERS, "x-api-key": dex["key"]}
                )
            except httpx.TransportError:
                return
            if response.status_code == 200 and response.json()["content"]:
                completed.append(response.headers["request-id"])

    async with httpx.AsyncClient(timeout=10) as client:
        burst = asyncio.gather(*(client_loop(client) for _ in range(8)))
        await asyncio.sleep(1.0)
        process.send_signal(signal.SIGKILL)
        await burst
    process.wait(10)
    assert len(completed) > 10, "the burst should have completed requests before the kill"

    async def all_metered() -> Counter[str] | None:
        seen = await events_by_request(resources, dex["user_id"])
        return seen if all(seen[request_id] for request_id in completed) else None

    seen = await eventually(all_metered, within=15)
    assert all(seen[request_id] == 1 for request_id in completed)  # each exactly once


@pytest.fixture
async def own_postgres(
    tmp_path: Path, redis_url: str, sandbox_server: RunningServer, smtp_sandbox: Any
) -> AsyncIterator[tuple[EmbeddedPostgres, Settings]]:
    postgres = EmbeddedPostgres(tmp_path / "pg", port=free_port(), durable=False)
    postgres.start()
    await asyncio.to_thread(migrations.upgrade, postgres.url)  # alembic runs its own event loop
    settings = make_settings(
        postgres.url,
        redis_url,
        SANDBOX_URL=sandbox_server.url,
        QUEUE_NAME=f"outage-{uuid.uuid4().hex[:6]}",
        SMTP_PORT=str(smtp_sandbox.controller.port),
    )
    yield postgres, settings
    postgres.stop()


async def test_a_postgresql_outage_loses_no_usage_event(
    own_postgres: tuple[EmbeddedPostgres, Settings],
) -> None:
    from poindexter_cloud.core.worker import build_worker

    postgres, settings = own_postgres
    resources = await Resources.open(settings)
    worker = build_worker(settings, resources, timers={"schedule": 1, "sweep": 5})
    worker.SIGNALS = []
    worker_task = asyncio.create_task(worker.start())
    try:
        async with (
            RunningServer(create_app(Role.WEB, settings, resources)) as web_server,
            RunningServer(create_app(Role.PROXY, settings, resources)) as proxy_server,
            httpx.AsyncClient(base_url=web_server.url, timeout=10) as web,
            httpx.AsyncClient(base_url=proxy_server.url, timeout=10) as proxy,
        ):
            dex = await subscriber(web, resources)
            headers = {**HEADERS, "x-api-key": dex["key"]}
            assert (
                await proxy.post("/v1/messages", json=BODY, headers=headers)
            ).status_code == 200  # warm caches
            postgres.stop()
            during = [await proxy.post("/v1/messages", json=BODY, headers=headers) for _ in range(10)]
            assert [r.status_code for r in during] == [200] * 10  # the request path needs no database
            await asyncio.sleep(3)  # the drainer fails meanwhile and keeps the events in Redis
            postgres.start()
            expected = {r.headers["request-id"] for r in during}

            async def stored() -> Counter[str] | None:
                try:
                    seen = await events_by_request(resources, dex["user_id"])
                except Exception:
                    return None
                return seen if expected <= set(seen) else None

            seen = await eventually(stored, within=20)
            assert all(seen[request_id] == 1 for request_id in expected)
            assert len(seen) == 11
    finally:
        await worker.stop()
        await asyncio.gather(worker_task, return_exceptions=True)
        await resources.close()


class CuttingRelay:
    """A TCP relay in front of Redis that, once armed, cuts the connection carrying a given script call
    before Redis's reply gets back: after passing the call on (Redis runs it, the caller never hears), or
    without (as if Redis had gone away first)."""

    def __init__(self, redis_url: str) -> None:
        self.target = urlsplit(redis_url)
        self.marker: bytes | None = None
        self.forward = True
        self.cut = asyncio.Event()

    async def __aenter__(self) -> CuttingRelay:
        self.server = await asyncio.start_server(self.serve, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        self.url = self.target._replace(netloc=f"127.0.0.1:{port}").geturl()
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.server.close()

    def arm(self, marker: bytes, *, forward: bool) -> None:
        self.marker, self.forward = marker, forward

    async def serve(self, client: asyncio.StreamReader, to_client: asyncio.StreamWriter) -> None:
        redis, to_redis = await asyncio.open_connection(self.target.hostname, self.target.port)

        async def up() -> None:
            while data := await client.read(65536):
                if self.marker is not None and self.marker in data:
                    self.marker = None
                    if self.forward:
                        to_redis.write(data)
                    to_client.transport.abort()  # the caller's connection breaks before any reply
                    self.cut.set()
                    return
                to_redis.write(data)
            to_redis.close()

        async def down() -> None:
            while (data := await redis.read(65536)) and not to_client.is_closing():
                to_client.write(data)
            to_client.close()
            to_redis.close()

        await asyncio.gather(up(), down(), return_exceptions=True)


@pytest.mark.parametrize("forward", [True, False], ids=["redis-ran-it", "redis-never-got-it"])
async def test_a_settle_redis_fails_after_the_answer_left_is_sent_again_and_counted_once(
    forward: bool, web: httpx.AsyncClient, resources: Resources, settings: Settings, worker: Any
) -> None:
    dex = await subscriber(web, resources)
    headers = {**HEADERS, "x-api-key": dex["key"]}
    settle_sha = hashlib.sha1(limits._SETTLE_LUA.encode()).hexdigest().encode()
    async with (
        CuttingRelay(settings.redis_url) as relay,
        proxy_with(settings, redis_url=relay.url) as server,
        httpx.AsyncClient(base_url=server.url, timeout=10) as proxy,
    ):
        assert (await proxy.post("/v1/messages", json=BODY, headers=headers)).status_code == 200
        relay.arm(settle_sha, forward=forward)
        answer = await proxy.post("/v1/messages", json=BODY, headers=headers)
        assert relay.cut.is_set()
        # The whole answer reached the client though Redis never answered its settle.
        assert answer.status_code == 200 and answer.json()["content"]
        request_id = answer.headers["request-id"]

        async def metered() -> Counter[str] | None:
            seen = await events_by_request(resources, dex["user_id"])
            return seen if seen[request_id] else None

        await eventually(metered, within=15)
        await asyncio.sleep(1.5)  # a second settle of it, had there been one, would have been drained
        seen = await events_by_request(resources, dex["user_id"])
    assert seen[request_id] == 1 and len(seen) == 2
