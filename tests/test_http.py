"""HTTP behaviour every role shares: health, request ids in responses and logs, metrics, errors, roles."""

from __future__ import annotations

import asyncio
import io
import json
import os
import re
import subprocess
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from conftest import RunningServer, make_settings
from poindexter_cloud.core.embedded import EmbeddedRedis, free_port
from poindexter_cloud.core.http import create_app
from poindexter_cloud.core.settings import Role
from test_accounts import PASSWORD, new_email


async def test_request_id_round_trips_and_is_in_the_access_log(
    web: httpx.AsyncClient, json_logs: io.StringIO
) -> None:
    response = await web.get("/healthz", headers={"X-Request-ID": "trace-me-42"})
    assert response.status_code == 200
    assert response.headers["x-request-id"] == "trace-me-42"
    lines = [json.loads(line) for line in json_logs.getvalue().splitlines()]
    access = [
        line for line in lines if line.get("route") == "/healthz" and line.get("request_id") == "trace-me-42"
    ]
    assert access and access[0]["status"] == 200
    # UTC to the millisecond, ISO 8601 as datetime writes it
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00", access[0]["ts"])
    assert abs(datetime.fromisoformat(access[0]["ts"]) - datetime.now(UTC)) < timedelta(seconds=30)


async def test_pipelined_requests_then_a_closing_one_each_get_a_whole_answer(
    web: httpx.AsyncClient, web_server: RunningServer
) -> None:
    body = (await web.get("/healthz")).content
    reader, writer = await asyncio.open_connection("127.0.0.1", web_server.port)
    request = b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n"
    writer.write(request + b"\r\n" + request + b"\r\n" + request + b"Connection: close\r\n\r\n")
    received = await asyncio.wait_for(reader.read(), 10)  # everything, until the server closes
    writer.close()
    answers = received.split(b"HTTP/1.1 200 OK\r\n")
    assert len(answers) == 4 and answers[0] == b""
    assert all(answer.endswith(b"\r\n\r\n" + body) for answer in answers[1:])


async def test_a_request_without_an_id_gets_a_fresh_one(web: httpx.AsyncClient) -> None:
    first = await web.get("/healthz")
    second = await web.get("/healthz", headers={"X-Request-ID": "bad id with spaces"})
    assert len(first.headers["x-request-id"]) == 32
    assert second.headers["x-request-id"] not in {"bad id with spaces", first.headers["x-request-id"]}


async def test_errors_share_one_json_shape_with_the_request_id(web: httpx.AsyncClient) -> None:
    response = await web.get("/no/such/route", headers={"X-Request-ID": "err-1"})
    assert response.status_code == 404
    assert response.json() == {"error": {"code": "not_found", "message": "Not Found", "request_id": "err-1"}}


async def test_metrics_count_requests_by_route_and_status(web: httpx.AsyncClient) -> None:
    def count(text: str) -> float:
        prefix = 'http_requests_total{method="GET",role="web",route="/readyz",status="200"} '
        return next(
            (float(line[len(prefix) :]) for line in text.splitlines() if line.startswith(prefix)), 0.0
        )

    before = count((await web.get("/metrics")).text)
    for _ in range(3):
        assert (await web.get("/readyz")).status_code == 200
    metrics = (await web.get("/metrics")).text
    assert count(metrics) == before + 3
    assert (
        'http_request_duration_seconds_bucket{le="0.005",method="GET",role="web",route="/readyz"' in metrics
    )


@pytest.fixture
async def stoppable_redis(tmp_path: os.PathLike[str]) -> AsyncIterator[EmbeddedRedis]:
    redis = EmbeddedRedis(tmp_path, port=free_port())
    redis.start()
    yield redis
    redis.stop()


async def test_readyz_names_redis_while_it_is_down_and_recovers(
    database_url: str, stoppable_redis: EmbeddedRedis
) -> None:
    settings = make_settings(database_url, stoppable_redis.url)
    async with (
        RunningServer(create_app(Role.WEB, settings)) as server,
        httpx.AsyncClient(base_url=server.url, timeout=10) as client,
    ):
        assert (await client.get("/readyz")).status_code == 200
        stoppable_redis.stop()
        down = await client.get("/readyz")
        assert down.status_code == 503
        assert down.json()["down"] == ["redis"]
        assert down.json()["checks"]["postgres"] == "ok"
        stoppable_redis.start()
        assert (await client.get("/readyz")).status_code == 200


async def test_while_redis_is_down_sign_ups_succeed_and_logins_get_a_503_to_retry(
    database_url: str, stoppable_redis: EmbeddedRedis
) -> None:
    settings = make_settings(database_url, stoppable_redis.url)
    account = {"email": new_email(), "password": PASSWORD}
    async with (
        RunningServer(create_app(Role.WEB, settings)) as server,
        httpx.AsyncClient(base_url=server.url, timeout=10) as client,
    ):
        stoppable_redis.stop()
        try:
            # Stored, so done: its verification email waits in the job outbox, not in a 500.
            assert (await client.post("/v1/auth/register", json=account)).status_code == 201
            login = await client.post("/v1/auth/login", json=account)  # its throttle lives in Redis
            assert login.status_code == 503
            assert login.headers["retry-after"] == "5"
            assert login.json()["error"]["code"] == "unavailable"
        finally:
            stoppable_redis.start()
        assert (await client.post("/v1/auth/login", json=account)).status_code == 200


def serve(role: str, database_url: str, redis_url: str) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = {**os.environ, "DATABASE_URL": database_url, "REDIS_URL": redis_url, "ENVIRONMENT": "test"}
    process = subprocess.Popen(
        [sys.executable, "-m", "poindexter_cloud", "serve", "--role", role, "--port", str(port)],
        env=env,
        stderr=subprocess.DEVNULL,
    )
    return process, f"http://127.0.0.1:{port}"


def wait_ready(url: str, process: subprocess.Popen[bytes]) -> None:
    import time

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert process.poll() is None, "the server exited"
        try:
            if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.1)
    raise AssertionError("not ready in 30 s")


def test_each_role_serves_only_its_own_routes(database_url: str, redis_url: str) -> None:
    web, web_url = serve("web", database_url, redis_url)
    proxy, proxy_url = serve("proxy", database_url, redis_url)
    try:
        wait_ready(web_url, web)
        wait_ready(proxy_url, proxy)
        web_paths = set(httpx.get(f"{web_url}/docs/openapi.json").json()["paths"])
        assert httpx.get(f"{proxy_url}/docs/openapi.json").status_code == 404
        for path in web_paths:
            assert httpx.get(f"{proxy_url}{path}").status_code in {404, 405}, path
        assert httpx.post(f"{web_url}/v1/messages", json={}).status_code in {404, 405}
    finally:
        for process in (web, proxy):
            process.terminate()
            process.wait(10)
