"""Billing's service for usage events: storing what the usage buffer drains. Never commits.

Inserts are idempotent: ``ON CONFLICT DO NOTHING`` against ``uq_usage_events_request_attempt`` (request_id,
attempt, created_at). created_at is taken from the producer's ``created_at_us``, never from the database
clock, so an event delivered twice carries the same key, lands in the same partition and is stored once.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Final

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from poindexter_cloud.billing.models import UsageEvent

if TYPE_CHECKING:
    from poindexter_cloud.billing.usage_buffer import UsageRecord

EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
ROWS_PER_STATEMENT: Final = 5000  # bounds one statement's arrays (and memory), not a parameter count


def created_at_of(created_at_us: int) -> datetime:
    """The exact instant of epoch microseconds (PostgreSQL keeps microseconds, so it round-trips).

    Raises ``OverflowError`` outside the years datetime can hold.
    """
    return EPOCH + timedelta(microseconds=created_at_us)


# What an insert fills: each column, its PostgreSQL type and how to read it off a record. One array
# parameter per column, so the statement's text is the same for every batch (prepared once, never
# recompiled) and a row costs one list append per column.
COLUMNS: Final[tuple[tuple[str, str, Callable[[UsageRecord], Any]], ...]] = (
    ("created_at", "timestamptz", lambda r: created_at_of(r.created_at_us)),
    ("user_id", "uuid", lambda r: r.user_id),
    ("api_key_id", "uuid", lambda r: r.api_key_id),
    ("event_type", "text", lambda r: r.event_type),
    ("model", "text", lambda r: r.model),
    ("provider", "text", lambda r: r.provider),
    ("input_tokens", "integer", lambda r: r.usage.input_tokens),
    ("output_tokens", "integer", lambda r: r.usage.output_tokens),
    ("cache_read_tokens", "integer", lambda r: r.usage.cache_read_tokens),
    ("cache_write_5m_tokens", "integer", lambda r: r.usage.cache_write_5m_tokens),
    ("cache_write_1h_tokens", "integer", lambda r: r.usage.cache_write_1h_tokens),
    ("cost_microdollars", "bigint", lambda r: r.cost_microdollars),
    ("price_version", "text", lambda r: r.price_version),
    ("request_id", "text", lambda r: r.request_id),
    ("attempt", "integer", lambda r: r.attempt),
    ("status", "integer", lambda r: r.status),
    ("estimated", "boolean", lambda r: r.estimated),
    ("latency_ms", "integer", lambda r: r.latency_ms),
)
_INSERT: Final = text(
    f"INSERT INTO {UsageEvent.__tablename__} ({', '.join(name for name, _, _ in COLUMNS)}) "
    f"SELECT * FROM unnest({', '.join(f'CAST(:{name} AS {kind}[])' for name, kind, _ in COLUMNS)}) "
    "ON CONFLICT (request_id, attempt, created_at) DO NOTHING RETURNING id"
)


async def insert_usage_records(session: AsyncSession, records: Sequence[UsageRecord]) -> int:
    """Add ``records`` to usage_events in the caller's transaction; returns how many were new.

    A record whose (request_id, attempt, created_at) is already stored, or repeated within ``records``, is
    skipped, so the caller may retry a whole batch after any failure. One statement per
    ``ROWS_PER_STATEMENT`` records, whatever their number: ``INSERT ... SELECT FROM unnest(arrays)``.
    """
    unique: dict[tuple[str, int, int], UsageRecord] = {}
    for record in records:
        unique.setdefault((record.request_id, record.attempt, record.created_at_us), record)
    rows = list(unique.values())
    inserted = 0
    for start in range(0, len(rows), ROWS_PER_STATEMENT):
        chunk = rows[start : start + ROWS_PER_STATEMENT]
        result = await session.execute(_INSERT, {name: [get(r) for r in chunk] for name, _, get in COLUMNS})
        inserted += len(result.scalars().all())
    return inserted
