"""Metering survives failures: a proxy killed mid-burst, and PostgreSQL going away for a while."""

from __future__ import annotations

import asyncio
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
from test_proxy import MODEL, subscriber

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
