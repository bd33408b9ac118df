"""How much an API key verification costs on the AI proxy's hot path.

    python bench/key_verification.py

Uses DATABASE_URL and REDIS_URL when both are set (the database is migrated to head first); otherwise
starts an embedded PostgreSQL and Valkey in a temporary folder and stops them at the end. Creates a user and
a key in the database, starts an ApiKeyVerifier and times:

* a cached key (the steady state: no I/O);
* a cache miss (the cache is cleared before each call, so each one is a PostgreSQL round trip);
* an unknown but well-formed key (answered from the negative cache);
* a malformed key (mistyped checksum: rejected before any I/O).
"""

from __future__ import annotations

import asyncio
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from redis.asyncio import Redis
from sqlalchemy import event, text

from bench_common import databases
from poindexter_cloud.accounts.api_keys import ApiKeyVerifier, create_key, generate_key
from poindexter_cloud.accounts.errors import InvalidApiKey
from poindexter_cloud.core.db import Database
from poindexter_cloud.core.settings import Role, Settings, load_or_raise

IP = "203.0.113.7"


async def timed(iterations: int, call: Callable[[], Awaitable[Any]]) -> float:
    """Mean seconds per call."""
    started = time.perf_counter()
    for _ in range(iterations):
        await call()
    return (time.perf_counter() - started) / iterations


async def rejected(verifier: ApiKeyVerifier, key: str) -> None:
    try:
        await verifier.verify(key, IP)
    except InvalidApiKey:
        return
    raise AssertionError("the key was accepted")


async def run(settings: Settings) -> None:
    db = Database.from_url(settings.database_url, pool_size=4)
    redis = Redis.from_url(
        settings.redis_url, socket_connect_timeout=2, socket_timeout=5, health_check_interval=30
    )
    verifier = ApiKeyVerifier(db, redis, settings)
    statements = 0

    def count(*_: Any) -> None:
        nonlocal statements
        statements += 1

    try:
        async with db.unit_of_work() as uow:
            user_id = (
                await uow.session.execute(
                    text("INSERT INTO users (email, password_hash) VALUES (:e, 'x') RETURNING id"),
                    {"e": f"bench-{uuid.uuid4().hex[:8]}@example.com"},
                )
            ).scalar_one()
            issued = await create_key(uow.session, settings, user_id, "bench")
            await uow.commit()
        key = issued.secret
        mistyped = key[:-1] + ("A" if key[-1] != "A" else "B")
        unknown = generate_key(settings.api_key_prefix)

        await verifier.start()
        event.listen(db.engine.sync_engine, "before_cursor_execute", count)

        async def miss() -> None:
            verifier._clear()  # benchmark only: forget every cached entry, as after a resubscription
            await verifier.verify(key, IP)

        cases: list[tuple[str, int, Callable[[], Awaitable[Any]]]] = [
            ("cached key (hit)", 200_000, lambda: verifier.verify(key, IP)),
            ("cache miss (1 query)", 2_000, miss),
            ("unknown key (negative cache)", 200_000, lambda: rejected(verifier, unknown)),
            ("malformed key (bad checksum)", 200_000, lambda: rejected(verifier, mistyped)),
        ]
        rows = []
        for name, iterations, call in cases:
            for _ in range(min(iterations // 10, 200)):  # warm up (and fill the caches)
                await call()
            statements = 0
            mean = await timed(iterations, call)
            rows.append((name, iterations, 1 / mean, mean * 1e6, statements / iterations))

        print(f"\nAPI key verification (Python {sys.version.split()[0]}, one process, one event loop)\n")
        print(f"{'case':<30} {'iterations':>10} {'verifications/s':>16} {'mean µs':>9} {'SQL/verify':>11}")
        print("-" * 80)
        for name, iterations, rate, micros, per in rows:
            print(f"{name:<30} {iterations:>10,} {rate:>16,.0f} {micros:>9.2f} {per:>11.2f}")
        print()
    finally:
        await verifier.stop()
        await redis.aclose()
        await db.dispose()


def main() -> None:
    with databases() as (database_url, redis_url):
        settings = load_or_raise(
            Role.ALL, {"ENVIRONMENT": "development", "DATABASE_URL": database_url, "REDIS_URL": redis_url}
        )
        asyncio.run(run(settings))


if __name__ == "__main__":
    main()
