"""Every Prometheus metric the service exports, in one place: the map that deploy/prometheus/alerts.yml and
the Grafana dashboard read.

Names and labels follow Prometheus conventions (base units, ``_total`` counters, ``_seconds`` durations).
Every label has a bounded set of values: roles, route templates, models and providers from configuration,
plans, job and event types, outcome words. Never a user, key, request or identity id.

Hot paths look a label set's child up once and keep it (``labels()`` costs more than the update itself):
see ``cached``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Hashable
from typing import Any, Final

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client import multiprocess as prometheus_multiprocess

MULTIPROCESS_ENV: Final = "PROMETHEUS_MULTIPROC_DIR"
FAST: Final = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
SLOW: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900)

# --- HTTP, every role -------------------------------------------------------------------------------------

HTTP_REQUESTS: Final = Counter(
    "http_requests_total", "HTTP requests served", ["role", "method", "route", "status"]
)
HTTP_LATENCY: Final = Histogram(
    "http_request_duration_seconds",
    "Time from request start to the end of the response body",
    ["role", "method", "route", "status"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
)
ERRORS: Final = Counter(
    "app_errors_total", "Error answers by status and stable error code", ["status", "code"]
)

# --- the AI proxy -----------------------------------------------------------------------------------------

PROXY_TOKENS: Final = Counter(
    "proxy_tokens_total",
    "Tokens metered by the proxy, by model, plan and kind (input, output, cache_read, cache_write)",
    ["model", "plan", "kind"],
)
PROXY_OVERHEAD: Final = Histogram(
    "proxy_overhead_seconds",
    "Time the proxy itself adds to a request (its Server-Timing proxy duration)",
    ["family"],
    buckets=FAST,
)
UPSTREAM_LATENCY: Final = Histogram(
    "proxy_upstream_response_seconds",
    "Time from sending a request upstream to its response head, by provider",
    ["provider"],
    buckets=SLOW,
)
UPSTREAM_ERRORS: Final = Counter(
    "proxy_upstream_errors_total",
    "Upstream attempts that failed, by provider and reason (connect, http_429, http_5xx, auth)",
    ["provider", "reason"],
)

# --- usage buffer and billing ------------------------------------------------------------------------------

USAGE_BUFFER_DEPTH: Final = Gauge(
    "usage_buffer_depth", "Usage events in the Redis buffer not yet stored in PostgreSQL"
)
USAGE_BUFFER_LAG: Final = Gauge(
    "usage_buffer_lag_seconds", "Age of the oldest usage event not yet stored in PostgreSQL (0 when none)"
)
USAGE_EVENTS_DRAINED: Final = Counter(
    "usage_events_drained_total", "Usage events moved from the buffer into PostgreSQL"
)
STRIPE_SYNC_LAST_SUCCESS: Final = Gauge(
    "stripe_usage_sync_last_success_timestamp_seconds",
    "When sync_usage last finished with every user's overage sent to Stripe (Unix time)",
)
STRIPE_METER_EVENTS_UNSENT: Final = Gauge(
    "stripe_meter_events_unsent",
    "Overage meter events decided but not yet accepted by Stripe, by status (pending, stale)",
    ["status"],
)

# --- jobs, webhooks, provisioning ---------------------------------------------------------------------------

JOBS: Final = Counter(
    "jobs_total", "Job runs by type and outcome (completed, retrying, failed)", ["job", "outcome"]
)
JOB_DURATION: Final = Histogram("job_duration_seconds", "Job run time by type", ["job"], buckets=SLOW)
QUEUE_DEPTH: Final = Gauge("job_queue_depth", "Jobs waiting in the SAQ queue")
WEBHOOK_EVENTS_RECEIVED: Final = Counter(
    "webhook_events_received_total",
    "Provider webhook events stored, by provider and event type (duplicates counted apart)",
    ["provider", "type", "duplicate"],
)
WEBHOOK_EVENTS_PROCESSED: Final = Counter(
    "webhook_events_processed_total",
    "Provider webhook events processed by the worker, by provider, event type and outcome",
    ["provider", "type", "outcome"],
)
PROVISIONING_STEPS: Final = Counter(
    "provisioning_steps_total",
    "Identity provisioning steps by step and outcome (done, failed, retrying)",
    ["step", "outcome"],
)


def cached(metric: Any) -> Callable[..., Any]:
    """``metric.labels(*values)``, each label set's child resolved once and then reused."""
    children: dict[tuple[Hashable, ...], Any] = {}

    def child(*values: Hashable) -> Any:
        found = children.get(values)
        if found is None:
            found = children[values] = metric.labels(*values)
        return found

    return child


def exposition() -> tuple[bytes, str]:
    """The /metrics body and content type: this process's metrics, or every process's of a multi-process
    server (``serve --workers N`` sets PROMETHEUS_MULTIPROC_DIR for its processes)."""
    if os.environ.get(MULTIPROCESS_ENV):
        registry = CollectorRegistry()
        prometheus_multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
