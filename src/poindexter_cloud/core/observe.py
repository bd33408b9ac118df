"""The outermost ASGI layer of every role: request id, access log, Prometheus metrics and tracing.

It wraps the whole Litestar app (not a route middleware) so that unrouted 404s and errors raised before
routing are observed too. It is on the proxy's hot path, so it does the minimum per request: no body
parsing, one contextvar set, one histogram observation, one log line.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from poindexter_cloud.core.logs import request_id_var
from poindexter_cloud.core.metrics import HTTP_LATENCY, HTTP_REQUESTS

ASGIApp = Any
Scope = dict[str, Any]

log = logging.getLogger("poindexter_cloud.access")

REQUEST_ID_HEADER = b"x-request-id"
_VALID_REQUEST_ID = re.compile(rb"^[A-Za-z0-9._:\-]{1,128}$")

UNROUTED = "unrouted"
CLIENT_CLOSED = 499  # nginx's status for a request whose client left before any answer

# The metric children of each label set, looked up once: ``labels()`` costs more than the update itself.
_SERIES: dict[tuple[str, str, str, int], tuple[Any, Any]] = {}


def incoming_request_id(scope: Scope) -> str:
    """The caller's X-Request-ID if it is sane, else a fresh one."""
    for name, value in scope.get("headers", ()):
        if name == REQUEST_ID_HEADER:
            if _VALID_REQUEST_ID.match(value):
                return str(value.decode())
            break
    return uuid.uuid4().hex


class Observed:
    """Wraps an ASGI app; ``role`` labels its metrics."""

    def __init__(self, app: ASGIApp, role: str, *, access_log: bool = True) -> None:
        self.app = app
        self.role = role
        self.access_log = access_log
        self.tracer = trace.get_tracer("poindexter_cloud")

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = incoming_request_id(scope)
        token = request_id_var.set(request_id)
        scope.setdefault("state", {})["request_id"] = request_id
        header = (REQUEST_ID_HEADER, request_id.encode())
        status = 500
        started = time.perf_counter()

        answered = False

        async def send_with_id(message: dict[str, Any]) -> None:
            nonlocal status, answered
            if message["type"] == "http.response.start":
                status, answered = message["status"], True
                message["headers"] = [*message.get("headers", ()), header]
            await send(message)

        span_cm = (
            self.tracer.start_as_current_span(
                f"{scope['method']} {scope['path']}",
                context=incoming_trace_context(scope),
                kind=trace.SpanKind.SERVER,
            )
            if tracing_enabled()
            else None
        )
        span = span_cm.__enter__() if span_cm is not None else None
        try:
            await self.app(scope, receive, send_with_id)
            if not answered:  # the app gave up without a word: the client went away first
                status = CLIENT_CLOSED
        finally:
            elapsed = time.perf_counter() - started
            route = scope.get("path_template") or UNROUTED
            labels = (self.role, scope["method"], route, status)
            series = _SERIES.get(labels)
            if series is None:
                series = _SERIES[labels] = (HTTP_REQUESTS.labels(*labels), HTTP_LATENCY.labels(*labels))
            series[0].inc()
            series[1].observe(elapsed)
            if span is not None and span_cm is not None:
                span.set_attribute("http.route", route)
                span.set_attribute("http.response.status_code", status)
                span.set_attribute("request_id", request_id)
                span_cm.__exit__(None, None, None)
            if self.access_log:
                log.info(
                    "request",
                    extra={
                        "method": scope["method"],
                        "route": route,
                        "path": scope["path"],
                        "status": status,
                        "duration_ms": round(elapsed * 1000, 3),
                    },
                )
            request_id_var.reset(token)


_tracing = False
_propagator = TraceContextTextMapPropagator()


def incoming_trace_context(scope: Scope) -> Context:
    """The caller's W3C ``traceparent`` (and ``tracestate``), so our span continues their trace."""
    carrier = {
        name.decode("latin-1"): value.decode("latin-1")
        for name, value in scope.get("headers", ())
        if name in (b"traceparent", b"tracestate")
    }
    return _propagator.extract(carrier)


def job_origin() -> dict[str, str]:
    """What a deferred job carries of the request (or job) that asked for it: its request id, and the
    current trace context when tracing is on, so the job's logs and span join the request's."""
    origin: dict[str, str] = {}
    request_id = request_id_var.get()
    if request_id is not None:
        origin["request_id"] = request_id
    if _tracing:
        _propagator.inject(origin)
    return origin


class JobTrace:
    """The request id and span of one job run, begun before the job and ended after it (SAQ's hooks)."""

    def __init__(self, function: str, origin: dict[str, str], fallback_request_id: str) -> None:
        self._request_id = request_id_var.set(origin.get("request_id") or fallback_request_id)
        self._span: trace.Span | None = None
        self._attached: object | None = None
        if _tracing:
            tracer = trace.get_tracer("poindexter_cloud")
            self._span = tracer.start_span(
                f"job {function}", context=_propagator.extract(origin), kind=trace.SpanKind.CONSUMER
            )
            self._span.set_attribute("job.function", function)
            self._span.set_attribute("request_id", request_id_var.get() or "")
            self._attached = otel_context.attach(trace.set_span_in_context(self._span))

    def end(self, outcome: str) -> None:
        if self._span is not None:
            self._span.set_attribute("job.outcome", outcome)
            self._span.end()
        if self._attached is not None:
            otel_context.detach(self._attached)  # type: ignore[arg-type]
        request_id_var.reset(self._request_id)


def tracing_enabled() -> bool:
    return _tracing


def configure_tracing(exporter: str, endpoint: str | None = None) -> None:
    """Install a tracer provider with the exporter chosen by settings; ``none`` leaves tracing off."""
    global _tracing
    if exporter == "none":
        return
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter

    span_exporter: SpanExporter
    if exporter == "otlp":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        span_exporter = OTLPSpanExporter(endpoint=endpoint) if endpoint else OTLPSpanExporter()
    else:
        span_exporter = ConsoleSpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(span_exporter))
    trace.set_tracer_provider(provider)
    _tracing = True
