"""Billing's service for usage events: storing what the usage buffer drains. Never commits.

Inserts are idempotent: ``ON CONFLICT DO NOTHING`` against ``uq_usage_events_request_attempt`` (request_id,
attempt, created_at). created_at is taken from the producer's ``created_at_us``, never from the database
clock, so an event delivered twice carries the same key, lands in the same partition and is stored once.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Final

from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from poindexter_cloud.billing.models import UsageEvent

if TYPE_CHECKING:
    from poindexter_cloud.billing.usage_buffer import UsageRecord

EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
ROWS_PER_STATEMENT: Final = 1000  # 19 parameters a row stays well under PostgreSQL's 65535 per statement


def created_at_of(created_at_us: int) -> datetime:
    """The exact instant of epoch microseconds (PostgreSQL keeps microseconds, so it round-trips).

    Raises ``OverflowError`` outside the years datetime can hold.
    """
    return EPOCH + timedelta(microseconds=created_at_us)


def _row(record: UsageRecord) -> dict[str, Any]:
    usage = record.usage
    return {
        "created_at": created_at_of(record.created_at_us),
        "user_id": record.user_id,
        "api_key_id": record.api_key_id,
        "event_type": record.event_type,
        "model": record.model,
        "provider": record.provider,
        "input_tokens": usage.input_tokens,
        "output_tokens": usage.output_tokens,
        "cache_read_tokens": usage.cache_read_tokens,
        "cache_write_5m_tokens": usage.cache_write_5m_tokens,
        "cache_write_1h_tokens": usage.cache_write_1h_tokens,
        "cost_microdollars": record.cost_microdollars,
        "price_version": record.price_version,
        "request_id": record.request_id,
        "attempt": record.attempt,
        "status": record.status,
        "estimated": record.estimated,
        "latency_ms": record.latency_ms,
    }


async def insert_usage_records(session: AsyncSession, records: Sequence[UsageRecord]) -> int:
    """Add ``records`` to usage_events in the caller's transaction; returns how many were new.

    A record whose (request_id, attempt, created_at) is already stored, or repeated within ``records``, is
    skipped, so the caller may retry a whole batch after any failure.
    """
    unique: dict[tuple[str, int, int], UsageRecord] = {}
    for record in records:
        unique.setdefault((record.request_id, record.attempt, record.created_at_us), record)
    rows = [_row(record) for record in unique.values()]
    inserted = 0
    for start in range(0, len(rows), ROWS_PER_STATEMENT):
        statement = (
            pg_insert(UsageEvent)
            .values(rows[start : start + ROWS_PER_STATEMENT])
            .on_conflict_do_nothing(index_elements=["request_id", "attempt", "created_at"])
            .returning(UsageEvent.id)
        )
        result = await session.execute(statement)
        inserted += len(result.scalars().all())
    return inserted
