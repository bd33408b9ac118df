"""What several benchmarks need: the databases they run against, the CPU a server process used, and a
proxy-shaped usage event."""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from uuid import UUID

import psutil

from poindexter_cloud.billing.pricing import PRICE_TABLE_VERSION, TokenUsage, upstream_cost_microdollars
from poindexter_cloud.billing.usage_buffer import UsageRecord, encode
from poindexter_cloud.core import migrations
from poindexter_cloud.core.embedded import EmbeddedPostgres, EmbeddedRedis


@contextlib.contextmanager
def databases() -> Iterator[tuple[str, str]]:
    """(database URL, Redis URL), the database migrated to head: DATABASE_URL and REDIS_URL when both are
    set, otherwise an embedded PostgreSQL (durable=False) and Valkey in a temporary folder, stopped after."""
    database_url, redis_url = os.environ.get("DATABASE_URL"), os.environ.get("REDIS_URL")
    servers: list[EmbeddedPostgres | EmbeddedRedis] = []
    with tempfile.TemporaryDirectory(prefix="pdx-bench-") as tmp:
        try:
            if not (database_url and redis_url):
                postgres = EmbeddedPostgres(Path(tmp) / "pg", durable=False)
                postgres.start()
                servers.append(postgres)
                valkey = EmbeddedRedis(Path(tmp) / "valkey")
                valkey.start()
                servers.append(valkey)
                database_url, redis_url = postgres.url, valkey.url
                print(f"embedded PostgreSQL at {database_url}, Valkey at {redis_url}")
            migrations.upgrade(database_url)
            yield database_url, redis_url
        finally:
            for server in reversed(servers):
                server.stop()


def tree_cpu_seconds(pid: int) -> float:
    """CPU seconds used by a process and its children (PostgreSQL's backends are the postmaster's); 0 if it
    is gone."""
    total = 0.0
    try:
        root = psutil.Process(pid)
        for proc in [root, *root.children(recursive=True)]:
            with contextlib.suppress(psutil.Error):
                times = proc.cpu_times()
                total += times.user + times.system
    except psutil.Error:
        pass
    return total


def usage_event(user_id: UUID, key_id: UUID, model: str, usage: TokenUsage) -> bytes:
    """A proxy-shaped usage event for one answered request, encoded as the proxy sends it to Redis."""
    record = UsageRecord(
        request_id=uuid.uuid4().hex,
        attempt=0,
        user_id=user_id,
        api_key_id=key_id,
        event_type="ai_request",
        model=model,
        provider="anthropic-sandbox",
        usage=usage,
        cost_microdollars=upstream_cost_microdollars(model, usage),
        latency_ms=1,
        status=200,
        estimated=False,
        created_at_us=int(time.time() * 1_000_000),
        price_version=PRICE_TABLE_VERSION,
    )
    return encode(record)
