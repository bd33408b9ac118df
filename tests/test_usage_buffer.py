"""The usage buffer end to end on real Redis and PostgreSQL: nothing lost, nothing counted twice.

Every test uses a stream and consumer group of its own (the Redis database is shared with other tests).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from conftest import eventually
from poindexter_cloud.billing.pricing import PRICE_TABLE_VERSION, TokenUsage, upstream_cost_microdollars
from poindexter_cloud.billing.usage_buffer import (
    UsageBuffer,
    UsageDrainer,
    UsageRecord,
    dead_letter_stream,
    decode,
    drain_once,
    encode,
)
from poindexter_cloud.core.db import Database
from poindexter_cloud.core.resources import Resources


class Names:
    def __init__(self) -> None:
        tag = uuid.uuid4().hex[:12]
        self.stream = f"test:usage-events:{tag}"
        self.group = f"test-drain-{tag}"
        self.request_prefix = f"req_{tag}_"


@pytest.fixture
async def names(resources: Resources) -> AsyncIterator[Names]:
    created = Names()
    yield created
    await resources.redis.delete(created.stream, dead_letter_stream(created.stream))


def now_us() -> int:
    return time.time_ns() // 1000


def make_record(names: Names, n: int, **overrides: Any) -> UsageRecord:
    usage = TokenUsage(
        input_tokens=100 + n,
        output_tokens=20 + n,
        cache_read_tokens=1000 * n,
        cache_write_5m_tokens=7 * n,
        cache_write_1h_tokens=3 * n,
    )
    fields: dict[str, Any] = {
        "request_id": f"{names.request_prefix}{n}",
        "attempt": n % 3,
        "user_id": uuid.uuid4(),
        "api_key_id": uuid.uuid4() if n % 2 else None,
        "event_type": "ai_request",
        "model": "claude-sonnet-4-5",
        "provider": "anthropic",
        "usage": usage,
        "cost_microdollars": upstream_cost_microdollars("claude-sonnet-4-5", usage),
        "latency_ms": 50 + n,
        "status": 200 if n % 4 else 499,
        "estimated": n % 4 == 0,
        "created_at_us": now_us() - n,
        "price_version": PRICE_TABLE_VERSION,
    }
    fields.update(overrides)
    return UsageRecord(**fields)


async def rows(db: Database, names: Names) -> list[dict[str, Any]]:
    async with db.engine.connect() as connection:
        result = await connection.execute(
            text(
                "SELECT *, tableoid::regclass::text AS partition FROM usage_events"
                " WHERE request_id LIKE :prefix ORDER BY request_id, attempt"
            ),
            {"prefix": names.request_prefix + "%"},
        )
        return [dict(row) for row in result.mappings()]


async def pending(resources: Resources, names: Names) -> int:
    return int((await resources.redis.xpending(names.stream, names.group))["pending"])


async def drain_all(resources: Resources, names: Names, consumer: str = "tester", **kwargs: Any) -> int:
    """drain_once until a pass finds nothing; the total inserted."""
    total = 0
    for _ in range(50):
        before = await UsageBuffer(resources.redis, names.stream).depth()
        inserted = (
            await drain_once(
                resources.redis, resources.db, consumer, stream=names.stream, group=names.group, **kwargs
            )
        ).inserted
        total += inserted
        if before == 0 or (inserted == 0 and await UsageBuffer(resources.redis, names.stream).depth() == 0):
            return total
    raise AssertionError("the stream did not drain")


def expected_row(record: UsageRecord) -> dict[str, Any]:
    return {
        "request_id": record.request_id,
        "attempt": record.attempt,
        "user_id": record.user_id,
        "api_key_id": record.api_key_id,
        "event_type": record.event_type,
        "model": record.model,
        "provider": record.provider,
        "input_tokens": record.usage.input_tokens,
        "output_tokens": record.usage.output_tokens,
        "cache_read_tokens": record.usage.cache_read_tokens,
        "cache_write_5m_tokens": record.usage.cache_write_5m_tokens,
        "cache_write_1h_tokens": record.usage.cache_write_1h_tokens,
        "cost_microdollars": record.cost_microdollars,
        "latency_ms": record.latency_ms,
        "status": record.status,
        "estimated": record.estimated,
        "created_at": datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=record.created_at_us),
        "price_version": record.price_version,
    }


def assert_stored(stored: Sequence[dict[str, Any]], records: Sequence[UsageRecord]) -> None:
    by_key = {(row["request_id"], row["attempt"]): row for row in stored}
    assert len(stored) == len(records) == len(by_key)
    for record in records:
        row = by_key[(record.request_id, record.attempt)]
        assert {key: row[key] for key in expected_row(record)} == expected_row(record)


def test_the_wire_format_is_json_with_the_record_keys() -> None:
    names = Names()
    record = make_record(names, 1)
    data = encode(record)
    assert data.startswith(b'{"request_id":')
    assert decode(data) == record
    # Keys a newer producer adds are ignored by an older drain.
    assert decode(data[:-1] + b',"new_field":1}') == record


async def test_pushed_records_are_inserted_with_every_field(resources: Resources, names: Names) -> None:
    buffer = UsageBuffer(resources.redis, names.stream)
    records = [make_record(names, n) for n in range(25)]
    records.append(
        make_record(
            names,
            99,
            event_type="email_sent",
            model=None,
            provider=None,
            usage=TokenUsage(),
            cost_microdollars=0,
        )
    )
    assert await buffer.oldest_pending_age_seconds() is None
    for record in records:
        await buffer.push(record)
    assert await buffer.depth() == len(records)
    age = await buffer.oldest_pending_age_seconds()
    assert age is not None and 0 <= age < 60

    drained = await drain_once(
        resources.redis, resources.db, "tester", stream=names.stream, group=names.group
    )

    assert drained == (len(records), len(records))
    assert_stored(await rows(resources.db, names), records)
    assert await buffer.depth() == 0
    assert await pending(resources, names) == 0
    assert await buffer.oldest_pending_age_seconds() is None


async def test_the_same_event_twice_is_stored_once(resources: Resources, names: Names) -> None:
    buffer = UsageBuffer(resources.redis, names.stream)
    record = make_record(names, 1)
    retry = make_record(names, 1, attempt=record.attempt + 1, created_at_us=record.created_at_us + 10)
    await buffer.push(record)
    await buffer.push(record)  # same batch
    await buffer.push(retry)  # another attempt of the same request is its own event

    assert await drain_all(resources, names) == 2
    await buffer.push(record)  # a later batch, e.g. a re-delivery after a crash between commit and ack
    assert await drain_all(resources, names) == 0

    assert_stored(await rows(resources.db, names), [record, retry])
    assert await buffer.depth() == 0


async def test_a_postgres_outage_loses_nothing(resources: Resources, names: Names) -> None:
    buffer = UsageBuffer(resources.redis, names.stream)
    records = [make_record(names, n) for n in range(7)]
    for record in records:
        await buffer.push(record)
    unreachable = Database.from_url("postgresql+psycopg://postgres@127.0.0.1:1/x")
    try:
        for _ in range(3):  # repeated attempts during the outage change nothing
            with pytest.raises(OperationalError):
                await drain_once(
                    resources.redis, unreachable, "tester", batch=5, stream=names.stream, group=names.group
                )
    finally:
        await unreachable.dispose()
    assert await pending(resources, names) == 5  # read, not acknowledged
    assert await buffer.depth() == 7
    assert await rows(resources.db, names) == []

    assert await drain_all(resources, names, batch=5) == 7

    assert_stored(await rows(resources.db, names), records)
    assert await buffer.depth() == 0
    assert await pending(resources, names) == 0


async def test_entries_of_a_dead_consumer_are_reclaimed_once(resources: Resources, names: Names) -> None:
    buffer = UsageBuffer(resources.redis, names.stream)
    records = [make_record(names, n) for n in range(4)]
    for record in records:
        await buffer.push(record)
    await resources.redis.xgroup_create(names.stream, names.group, id="0", mkstream=True)
    read: Any = await resources.redis.xreadgroup(names.group, "dead", {names.stream: ">"}, count=100)
    assert len(read[0][1]) == 4  # "dead" read them all, then died before acknowledging

    # A live consumer finds nothing new, so it reclaims what "dead" left (idle > 0 ms here).
    drained = await drain_once(
        resources.redis, resources.db, "alive", claim_idle_ms=0, stream=names.stream, group=names.group
    )
    assert drained.inserted == 4
    assert await drain_all(resources, names, consumer="alive", claim_idle_ms=0) == 0
    # "dead" coming back finds nothing of its own left to redo.
    assert await drain_all(resources, names, consumer="dead") == 0

    assert_stored(await rows(resources.db, names), records)
    assert await pending(resources, names) == 0


async def test_entries_of_a_live_consumer_are_not_reclaimed_early(resources: Resources, names: Names) -> None:
    buffer = UsageBuffer(resources.redis, names.stream)
    await buffer.push(make_record(names, 1))
    await resources.redis.xgroup_create(names.stream, names.group, id="0", mkstream=True)
    await resources.redis.xreadgroup(names.group, "busy", {names.stream: ">"}, count=100)

    drained = await drain_once(
        resources.redis, resources.db, "other", claim_idle_ms=60_000, stream=names.stream, group=names.group
    )

    assert drained.inserted == 0
    assert await pending(resources, names) == 1


async def test_a_record_years_ahead_lands_in_the_default_partition(
    resources: Resources, names: Names
) -> None:
    # 36 months rather than 24: test_migrations creates partitions 25 months ahead in this same database.
    far = datetime.now(UTC) + timedelta(days=36 * 31)
    record = make_record(names, 1, created_at_us=int(far.timestamp()) * 1_000_000 + 123_456)
    await UsageBuffer(resources.redis, names.stream).push(record)

    assert await drain_all(resources, names) == 1

    stored = await rows(resources.db, names)
    assert_stored(stored, [record])
    assert stored[0]["partition"] == "usage_events_default"


async def test_bad_entries_go_to_the_dead_letter_stream(resources: Resources, names: Names) -> None:
    buffer = UsageBuffer(resources.redis, names.stream)
    good = [make_record(names, 1), make_record(names, 2)]
    await buffer.push(good[0])
    await resources.redis.xadd(names.stream, {b"e": b"not json"})
    await resources.redis.xadd(names.stream, {b"other": b"field"})
    await resources.redis.xadd(names.stream, {b"e": encode(good[0])[:-10] + b',"attempt":-1}'})
    await buffer.push(make_record(names, 3, model="nul\x00byte"))  # PostgreSQL refuses it as data
    await buffer.push(make_record(names, 4, usage=TokenUsage(input_tokens=2**40)))  # integer out of range
    await buffer.push(good[1])

    assert await drain_all(resources, names) == 2

    assert_stored(await rows(resources.db, names), good)
    assert await buffer.depth() == 0
    assert await pending(resources, names) == 0
    dead: Any = await resources.redis.xrange(dead_letter_stream(names.stream))
    assert len(dead) == 5
    errors = [fields[b"error"].decode() for _id, fields in dead]
    assert sum("undecodable" in error for error in errors) == 2
    assert sum("no 'e' field" in error for error in errors) == 1
    assert sum("refused by PostgreSQL" in error for error in errors) == 2
    assert dead[0][1][b"e"] == b"not json"


async def test_the_drainer_stores_pushed_records_within_a_second(resources: Resources, names: Names) -> None:
    drainer = UsageDrainer(resources.redis, resources.db, "drainer", stream=names.stream, group=names.group)
    task = asyncio.create_task(drainer.run())
    await asyncio.sleep(0.2)  # let it block on the empty stream
    buffer = UsageBuffer(resources.redis, names.stream)
    records = [make_record(names, n) for n in range(3)]
    for record in records:
        await buffer.push(record)

    async def stored() -> bool:
        return len(await rows(resources.db, names)) == len(records)

    await eventually(stored, within=1.0)
    started = asyncio.get_running_loop().time()
    await drainer.stop()
    assert asyncio.get_running_loop().time() - started < 2.0
    assert task.done() and not task.cancelled() and task.exception() is None
    assert_stored(await rows(resources.db, names), records)
    assert drainer.inserted_total == len(records)


async def test_the_drainer_rides_out_an_outage(resources: Resources, names: Names) -> None:
    unreachable = Database.from_url("postgresql+psycopg://postgres@127.0.0.1:1/x")
    drainer = UsageDrainer(resources.redis, unreachable, "drainer", stream=names.stream, group=names.group)
    task = asyncio.create_task(drainer.run())
    buffer = UsageBuffer(resources.redis, names.stream)
    records = [make_record(names, n) for n in range(3)]
    for record in records:
        await buffer.push(record)
    await asyncio.sleep(0.5)  # several failed passes
    assert not task.done()
    await drainer.stop()
    await unreachable.dispose()
    assert task.done() and task.exception() is None
    assert await buffer.depth() == 3

    recovered = UsageDrainer(resources.redis, resources.db, "drainer", stream=names.stream, group=names.group)
    task = asyncio.create_task(recovered.run())

    async def stored() -> bool:
        return len(await rows(resources.db, names)) == len(records)

    await eventually(stored, within=2.0)
    await recovered.stop()
    assert_stored(await rows(resources.db, names), records)
    assert await buffer.depth() == 0
