"""What draining the usage buffer costs per event: the worker's CPU, PostgreSQL's and Redis's.

    python bench/usage_drain.py [--events 50000] [--batch 500]

Uses DATABASE_URL and REDIS_URL when both are set (the database is migrated to head; the stream is one of
its own, removed at the end), otherwise starts an embedded PostgreSQL (durable=False) and Valkey in a
temporary folder. Fills a stream with proxy-shaped usage events (as the settle script XADDs them), then
drains it with `drain_once` as the worker does, and prints per event the CPU of this process (the
worker's part), of PostgreSQL's backends and of Redis, and events drained per second.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import time
import uuid

import psutil
from redis.asyncio import Redis

from bench_common import databases, tree_cpu_seconds
from poindexter_cloud.billing.pricing import TokenUsage
from poindexter_cloud.billing.usage_buffer import FIELD, UsageRecord, drain_once, encode
from poindexter_cloud.core.db import Database

USERS = 200


def events(count: int) -> list[bytes]:
    users = [(uuid.uuid4(), uuid.uuid4()) for _ in range(USERS)]
    now_us = int(time.time() * 1_000_000)
    made = []
    for i in range(count):
        user, key = users[i % USERS]
        made.append(
            encode(
                UsageRecord(
                    request_id=uuid.uuid4().hex,
                    attempt=0,
                    user_id=user,
                    api_key_id=key,
                    event_type="ai_request",
                    model="claude-sonnet-4-5",
                    provider="anthropic",
                    usage=TokenUsage(input_tokens=1200, output_tokens=300, cache_read_tokens=4000),
                    cost_microdollars=9_600,
                    latency_ms=3,
                    status=200,
                    estimated=False,
                    created_at_us=now_us + i,
                    price_version="2026-11-01",
                )
            )
        )
    return made


def server_pid(port: int) -> int:
    for connection in psutil.net_connections("tcp"):
        if connection.status == psutil.CONN_LISTEN and connection.laddr.port == port and connection.pid:
            return connection.pid
    raise SystemExit(f"no process listens on port {port} (run as the user owning it, or as root)")


def self_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def measure(database_url: str, redis_url: str, count: int, batch: int) -> None:
    redis = Redis.from_url(redis_url)
    db = Database.from_url(database_url)
    stream = f"bench-drain-{uuid.uuid4().hex[:8]}:usage-events"
    try:
        made = events(count)
        for start in range(0, count, 1000):
            async with redis.pipeline(transaction=False) as pipe:
                for value in made[start : start + 1000]:
                    pipe.xadd(stream, {FIELD: value})
                await pipe.execute()
        pg_pid = server_pid(db.engine.url.port or 5432)
        redis_pid = server_pid(redis.connection_pool.connection_kwargs.get("port", 6379))
        await drain_once(redis, db, "bench", batch=1, stream=stream)  # group made, connections warm
        before = (self_cpu(), tree_cpu_seconds(pg_pid), tree_cpu_seconds(redis_pid), time.perf_counter())
        drained = 1
        while drained < count:
            done = await drain_once(redis, db, "bench", batch=batch, stream=stream, recover=False)
            if not done.entries:
                break
            drained += done.entries
        after = (self_cpu(), tree_cpu_seconds(pg_pid), tree_cpu_seconds(redis_pid), time.perf_counter())
        measured = drained - 1
        worker, postgres, redis_cpu, wall = (b - a for a, b in zip(before, after, strict=True))
        print(f"events drained: {measured:,} in batches of {batch}, {measured / wall:,.0f} events/s")
        per_event = {"worker": worker, "PostgreSQL": postgres, "Redis": redis_cpu}
        print("CPU µs per event: " + ", ".join(f"{k} {v / measured * 1e6:.1f}" for k, v in per_event.items()))
    finally:
        await redis.delete(stream)
        await redis.aclose()
        await db.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--batch", type=int, default=500)
    args = parser.parse_args()
    with databases() as (database_url, redis_url):
        asyncio.run(measure(database_url, redis_url, args.events, args.batch))


if __name__ == "__main__":
    main()
