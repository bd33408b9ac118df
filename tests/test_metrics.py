"""Operators' metrics: what the proxy, the error paths, the jobs and the worker's samplers export at
/metrics, and that no label ever carries a user's, key's or request's id."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from conftest import RunningServer, eventually
from poindexter_cloud.core.resources import Resources
from test_proxy import MODEL, claude, subscriber


async def samples(client: httpx.AsyncClient) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a role's /metrics, keyed by name and sorted labels."""
    response = await client.get("/metrics")
    assert response.status_code == 200
    found: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def value(found: dict[Any, float], name: str, **labels: str) -> float:
    return found.get((name, tuple(sorted(labels.items()))), 0.0)


def grew(before: dict[Any, float], after: dict[Any, float], name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


async def test_a_proxied_request_counts_its_tokens_upstream_time_and_overhead(
    web: httpx.AsyncClient, proxy: httpx.AsyncClient, proxy_server: RunningServer, resources: Resources
) -> None:
    user = await subscriber(web, resources, plan="pro")
    before = await samples(proxy)
    reply = await claude(proxy_server.url, user["key"]).messages.create(
        model=MODEL, max_tokens=20, messages=[{"role": "user", "content": "count me"}]
    )
    after = await samples(proxy)
    for kind, tokens in (("input", reply.usage.input_tokens), ("output", reply.usage.output_tokens)):
        assert grew(before, after, "proxy_tokens_total", model=MODEL, plan="pro", kind=kind) == tokens
    assert grew(before, after, "proxy_upstream_response_seconds_count", provider="anthropic-sandbox") == 1
    assert grew(before, after, "proxy_overhead_seconds_count", family="anthropic") >= 1


async def test_error_answers_are_counted_by_code(web: httpx.AsyncClient, proxy: httpx.AsyncClient) -> None:
    before_web, before_proxy = await samples(web), await samples(proxy)
    assert (await web.get("/v1/no-such-route")).status_code == 404
    refused = await proxy.post("/v1/messages", headers={"x-api-key": "pk_test_wrong"}, json={})
    assert refused.status_code == 401
    assert grew(before_web, await samples(web), "app_errors_total", status="404", code="not_found") == 1
    after_proxy = await samples(proxy)
    assert grew(before_proxy, after_proxy, "app_errors_total", status="401", code="invalid_api_key") == 1


async def test_jobs_and_the_workers_gauges_are_exported(
    web: httpx.AsyncClient, resources: Resources, worker: Any
) -> None:
    async with resources.unit_of_work() as uow:
        await uow.defer_job("ensure_usage_partitions")
        await uow.commit()

    async def counted() -> bool:
        found = await samples(web)
        return value(found, "jobs_total", job="ensure_usage_partitions", outcome="completed") >= 1

    await eventually(counted, within=10)
    found = await samples(web)
    assert value(found, "job_duration_seconds_count", job="ensure_usage_partitions") >= 1
    for gauge in ("job_queue_depth", "usage_buffer_depth", "usage_buffer_lag_seconds"):
        assert (gauge, ()) in found, gauge
    assert ("stripe_meter_events_unsent", (("status", "pending"),)) in found


UUID = re.compile(r"[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}", re.IGNORECASE)
SECRETS = re.compile(r"pk_(live|test)_|sk-|req_|cus_|sub_")


async def test_no_label_carries_an_id(web: httpx.AsyncClient, proxy: httpx.AsyncClient) -> None:
    for client in (web, proxy):
        for name, labels in await samples(client):
            for label, text in labels:
                assert not UUID.search(text) and not SECRETS.search(text), (name, label, text)


async def test_a_client_that_leaves_before_the_answer_is_counted_499_not_500(
    web: httpx.AsyncClient, proxy: httpx.AsyncClient, proxy_server: RunningServer, resources: Resources
) -> None:
    user = await subscriber(web, resources)
    labels = {"role": "proxy", "method": "POST", "route": "/v1/messages"}
    before = await samples(proxy)
    _, writer = await asyncio.open_connection("127.0.0.1", proxy_server.port)
    writer.write(
        b"POST /v1/messages HTTP/1.1\r\nHost: proxy\r\ncontent-type: application/json\r\n"
        b"x-api-key: " + user["key"].encode() + b'\r\ncontent-length: 1000\r\n\r\n{"model": '
    )
    await writer.drain()
    writer.close()  # gone before the body is complete

    async def counted() -> bool:
        return grew(before, await samples(proxy), "http_requests_total", **labels, status="499") == 1

    await eventually(counted, within=5)
    assert grew(before, await samples(proxy), "http_requests_total", **labels, status="500") == 0
