"""Tracing across the roles, with OpenTelemetry's in-memory exporter: a request's trace continues the
caller's, the jobs it defers join it (their spans and their log lines carry its request id), and a proxied
request's id is the one on its usage row."""

from __future__ import annotations

import io
import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from sqlalchemy import select, update

from conftest import RunningServer, eventually
from poindexter_cloud.billing.models import UsageEvent
from poindexter_cloud.core import observe
from poindexter_cloud.core.logs import request_id_var
from poindexter_cloud.core.models import JobHistory
from poindexter_cloud.core.queue import enqueue_stranded
from poindexter_cloud.core.resources import Resources
from test_accounts import new_email, register
from test_proxy import MODEL, claude, subscriber

EXPORTER = InMemorySpanExporter()
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER = f"00-{TRACE_ID}-00f067aa0ba902b7-01"


@pytest.fixture
def spans(monkeypatch: pytest.MonkeyPatch) -> Iterator[InMemorySpanExporter]:
    """Tracing on, into memory (the global provider can be set once per process: the first test does)."""
    if not isinstance(trace.get_tracer_provider(), TracerProvider):
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(EXPORTER))
        trace.set_tracer_provider(provider)
    monkeypatch.setattr(observe, "_tracing", True)
    EXPORTER.clear()
    yield EXPORTER
    EXPORTER.clear()


def finished(exporter: InMemorySpanExporter, name: str) -> list[ReadableSpan]:
    return [span for span in exporter.get_finished_spans() if span.name == name]


async def of_request(exporter: InMemorySpanExporter, name: str, request_id: str) -> list[ReadableSpan]:
    """The finished spans named ``name`` of the request ``request_id`` (a job's: of the request asking)."""
    return [
        span
        for span in finished(exporter, name)
        if span.attributes is not None and span.attributes["request_id"] == request_id
    ]


async def test_a_deferred_job_joins_the_trace_and_the_request_id_of_its_request(
    web: httpx.AsyncClient, worker: Any, spans: InMemorySpanExporter, json_logs: io.StringIO
) -> None:
    email = new_email()
    await register(web, email)
    response = await web.post(
        "/v1/auth/password-reset",
        json={"email": email},
        headers={"traceparent": CALLER, "X-Request-ID": "reset-trace-1"},
    )
    assert response.status_code == 202

    [job] = await eventually(lambda: of_request(spans, "job send_account_email", "reset-trace-1"), within=10)
    [server] = finished(spans, "POST /v1/auth/password-reset")
    assert server.context is not None and job.context is not None
    assert f"{server.context.trace_id:032x}" == TRACE_ID  # continues the caller's trace
    assert job.context.trace_id == server.context.trace_id
    assert job.parent is not None and job.parent.span_id == server.context.span_id
    assert job.attributes is not None and job.attributes["job.outcome"] == "completed"
    lines = [json.loads(line) for line in json_logs.getvalue().splitlines()]
    mailed = [line for line in lines if line.get("logger") == "poindexter_cloud.core.mailer"]
    reset = [line for line in mailed if line["msg"] == "mail sent" and "Reset" in line["subject"]]
    assert [line["request_id"] for line in reset] == ["reset-trace-1"]


async def test_a_job_the_outbox_sweep_enqueues_still_joins_its_requests_trace(
    resources: Resources, worker: Any, spans: InMemorySpanExporter
) -> None:
    asked = request_id_var.set("stranded-trace-1")
    try:
        with trace.get_tracer(__name__).start_as_current_span("the asking request") as request:
            # A unit of work with no queue: the process died between the commit and the enqueue.
            async with resources.db.unit_of_work(queue=None) as uow:
                job_id = await uow.defer_job("send_account_email", email_token_id=str(uuid.uuid4()))
                await uow.commit()
    finally:
        request_id_var.reset(asked)
    async with resources.db.sessions() as session:
        await session.execute(
            update(JobHistory)
            .where(JobHistory.id == job_id)
            .values(created_at=datetime.now(UTC) - timedelta(minutes=5))
        )
        assert await enqueue_stranded(session, resources.queue) >= 1
        await session.commit()

    [job] = await eventually(
        lambda: of_request(spans, "job send_account_email", "stranded-trace-1"), within=10
    )
    assert job.context is not None and job.context.trace_id == request.get_span_context().trace_id


async def test_a_proxied_requests_span_and_usage_row_share_its_request_id(
    web: httpx.AsyncClient,
    proxy_server: RunningServer,
    resources: Resources,
    worker: Any,
    spans: InMemorySpanExporter,
) -> None:
    user = await subscriber(web, resources)
    raw = await claude(proxy_server.url, user["key"]).messages.with_raw_response.create(
        model=MODEL, max_tokens=10, messages=[{"role": "user", "content": "trace me"}]
    )
    request_id = raw.headers["request-id"]

    # (the span ends once Redis has answered the usage event, which may be after the client has its answer)
    [server] = await eventually(lambda: of_request(spans, "POST /v1/messages", request_id), within=10)
    assert server.attributes is not None and server.attributes["http.response.status_code"] == 200

    async def stored() -> list[UsageEvent]:
        async with resources.db.sessions() as session:
            rows = await session.execute(
                select(UsageEvent).where(UsageEvent.user_id == uuid.UUID(user["user_id"]))
            )
            return list(rows.scalars())

    [event] = await eventually(stored, within=10)
    assert event.request_id == request_id
