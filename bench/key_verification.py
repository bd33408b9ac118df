"""How much an API key verification, and the plan lookup after it, cost on the AI proxy's hot path.

    python bench/key_verification.py

Uses DATABASE_URL and REDIS_URL when both are set (the database is migrated to head first); otherwise
starts an embedded PostgreSQL and Valkey in a temporary folder and stops them at the end. Creates a user and
a key in the database, starts an ApiKeyVerifier and times:

* a cached key (the steady state: no I/O);
* a cache miss (the cache is cleared before each call, so each one is a PostgreSQL round trip);
* an unknown but well-formed key (answered from the negative cache);
* a malformed key (mistyped checksum: rejected before any I/O);
* a plan lookup (``proxy/entitlements.py``), cached and missed;

and then, for REFRESHED keys of as many users, the background refreshes the two caches make for entries
still in use in their last quarter of life (all marked due, used once more, the process's CPU counted
until every entry is fresh again), and every key and plan missing at once, as after a restart under load.
Wall time includes PostgreSQL's; CPU µs is this process's only.
"""

from __future__ import annotations

import asyncio
import math
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
from poindexter_cloud.proxy.entitlements import Entitlements

IP = "203.0.113.7"
REFRESHED = 1000


async def timed(iterations: int, call: Callable[[], Awaitable[Any]]) -> tuple[float, float]:
    """Mean seconds per call: wall, and this process's CPU."""
    started, cpu = time.perf_counter(), time.process_time()
    for _ in range(iterations):
        await call()
    return (time.perf_counter() - started) / iterations, (time.process_time() - cpu) / iterations


async def new_user(db: Database) -> uuid.UUID:
    async with db.unit_of_work() as uow:
        user_id: uuid.UUID = (
            await uow.session.execute(
                text("INSERT INTO users (email, password_hash) VALUES (:e, 'x') RETURNING id"),
                {"e": f"bench-{uuid.uuid4().hex}@example.com"},
            )
        ).scalar_one()
        await uow.commit()
    return user_id


async def new_keys(db: Database, settings: Settings, count: int) -> list[tuple[uuid.UUID, str]]:
    """``count`` users with one key each: (user id, key)."""
    made = []
    for _ in range(count):
        user_id = await new_user(db)
        async with db.unit_of_work() as uow:
            issued = await create_key(uow.session, settings, user_id, "bench")
            await uow.commit()
        made.append((user_id, issued.secret))
    return made


async def refresh_cost(
    verifier: ApiKeyVerifier,
    entitlements: Entitlements,
    keys: list[tuple[uuid.UUID, str]],
    statements: Callable[[], int],
) -> list[tuple[float, float]]:
    """(CPU µs, SQL statements) per entry for the keys' and the plans' background refreshes (benchmark
    only: the entries are marked due by hand, as time marks them in the last quarter of their life)."""
    for user_id, key in keys:
        await verifier.verify(key, IP)
        await entitlements.of(user_id)
    results = []
    for cache, use in (
        (verifier._positive, lambda user_id, key: verifier.verify(key, IP)),
        (entitlements._cache, lambda user_id, key: entitlements.of(user_id)),
    ):
        for name, entry in cache.items():
            cache[name] = (*entry[:-1], 0.0)  # type: ignore[index]
        cpu, before = time.process_time(), statements()
        for user_id, key in keys:
            await use(user_id, key)
        # polled, not awaited: what is measured is the caches' own work, whatever tasks it takes
        while any(entry[-1] == math.inf for entry in cache.values()):  # type: ignore[attr-defined]  # noqa: ASYNC110
            await asyncio.sleep(0.001)
        results.append(((time.process_time() - cpu) / len(keys) * 1e6, (statements() - before) / len(keys)))
    return results


async def burst_cost(
    verifier: ApiKeyVerifier,
    entitlements: Entitlements,
    keys: list[tuple[uuid.UUID, str]],
    statements: Callable[[], int],
) -> list[tuple[float, float]]:
    """(CPU µs, SQL statements) per entry when every key, then every plan, misses at once, as after a
    restart under load (benchmark only: the caches are cleared by hand)."""
    results = []
    for clear, use in (
        (verifier._clear, lambda user_id, key: verifier.verify(key, IP)),
        (lambda: entitlements._forget(None), lambda user_id, key: entitlements.of(user_id)),
    ):
        clear()
        cpu, before = time.process_time(), statements()
        await asyncio.gather(*(use(user_id, key) for user_id, key in keys))
        results.append(((time.process_time() - cpu) / len(keys) * 1e6, (statements() - before) / len(keys)))
    return results


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
    entitlements = Entitlements(db, verifier)
    statements = 0

    def count(*_: Any) -> None:
        nonlocal statements
        statements += 1

    try:
        [(user_id, key)] = await new_keys(db, settings, 1)
        mistyped = key[:-1] + ("A" if key[-1] != "A" else "B")
        unknown = generate_key(settings.api_key_prefix)

        await verifier.start()
        event.listen(db.engine.sync_engine, "before_cursor_execute", count)

        async def miss() -> None:
            verifier._clear()  # benchmark only: forget every cached entry, as after a resubscription
            await verifier.verify(key, IP)

        async def plan_miss() -> None:
            entitlements._forget(None)  # benchmark only: forget every cached plan
            await entitlements.of(user_id)

        cases: list[tuple[str, int, Callable[[], Awaitable[Any]]]] = [
            ("cached key (hit)", 200_000, lambda: verifier.verify(key, IP)),
            ("cache miss (1 query)", 2_000, miss),
            ("unknown key (negative cache)", 200_000, lambda: rejected(verifier, unknown)),
            ("malformed key (bad checksum)", 200_000, lambda: rejected(verifier, mistyped)),
            ("plan lookup (hit)", 200_000, lambda: entitlements.of(user_id)),
            ("plan lookup miss", 2_000, plan_miss),
        ]
        rows = []
        for name, iterations, call in cases:
            for _ in range(min(iterations // 10, 200)):  # warm up (and fill the caches)
                await call()
            statements = 0
            mean, cpu = await timed(iterations, call)
            rows.append((name, iterations, 1 / mean, mean * 1e6, cpu * 1e6, statements / iterations))
        many = await new_keys(db, settings, REFRESHED)
        refreshes = await refresh_cost(verifier, entitlements, many, lambda: statements)
        bursts = await burst_cost(verifier, entitlements, many, lambda: statements)

        print(f"\nAPI key verification (Python {sys.version.split()[0]}, one process, one event loop)\n")
        print(f"{'case':<30} {'iterations':>10} {'calls/s':>10} {'mean µs':>9} {'CPU µs':>8} {'SQL/call':>9}")
        print("-" * 81)
        for name, iterations, rate, micros, cpu_micros, per in rows:
            print(
                f"{name:<30} {iterations:>10,} {rate:>10,.0f} {micros:>9.2f} {cpu_micros:>8.2f} {per:>9.2f}"
            )
        print(f"\n{REFRESHED:,} entries in use, per entry:")
        for case, figures in (("background refresh", refreshes), ("all missing at once", bursts)):
            for name, (cpu_micros, per) in zip(("key", "plan"), figures, strict=True):
                print(f"  {case:<20} {name:<5} CPU µs {cpu_micros:>8.1f}   SQL statements {per:.3f}")
        print()
    finally:
        await entitlements.stop()
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
