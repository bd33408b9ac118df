"""Billing's service for usage events: storing what the usage buffer drains. Never commits.

Inserts are idempotent: ``ON CONFLICT DO NOTHING`` against ``uq_usage_events_request_attempt`` (request_id,
attempt, created_at). created_at is taken from the producer's ``created_at_us``, never from the database
clock, so an event delivered twice carries the same key, lands in the same partition and is stored once.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Final, cast

import msgspec
from sqlalchemy import CursorResult, text
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


# One parameter, the batch as a JSON array of records (msgspec encodes it in C), unpacked by PostgreSQL:
# binding a list per column cost the drain more CPU than everything else it does (psycopg dumps arrays in
# Python). The statement's text is the same for every batch. created_at is built from whole seconds and
# the microseconds apart, so it is exact (a double of the whole microsecond count is not, past 2^53).
_INSERT: Final = text(
    f"""
    INSERT INTO {UsageEvent.__tablename__} (
        created_at, user_id, api_key_id, event_type, model, provider,
        input_tokens, output_tokens, cache_read_tokens, cache_write_5m_tokens, cache_write_1h_tokens,
        cost_microdollars, price_version, request_id, attempt, status, estimated, latency_ms)
    SELECT
        to_timestamp(e.created_at_us / 1000000) + (e.created_at_us % 1000000) * interval '1 microsecond',
        e.user_id, e.api_key_id, e.event_type, e.model, e.provider,
        CAST(e.usage ->> 'input_tokens' AS integer),
        CAST(e.usage ->> 'output_tokens' AS integer),
        CAST(e.usage ->> 'cache_read_tokens' AS integer),
        CAST(e.usage ->> 'cache_write_5m_tokens' AS integer),
        CAST(e.usage ->> 'cache_write_1h_tokens' AS integer),
        e.cost_microdollars, e.price_version, e.request_id, e.attempt, e.status, e.estimated, e.latency_ms
    FROM jsonb_to_recordset(CAST(:records AS jsonb)) AS e(
        created_at_us bigint, user_id uuid, api_key_id uuid, event_type text, model text, provider text,
        usage jsonb, cost_microdollars bigint, price_version text, request_id text, attempt integer,
        status integer, estimated boolean, latency_ms integer)
    ON CONFLICT (request_id, attempt, created_at) DO NOTHING
    """
)


async def insert_usage_records(session: AsyncSession, records: Sequence[UsageRecord]) -> int:
    """Add ``records`` to usage_events in the caller's transaction; returns how many were new.

    A record whose (request_id, attempt, created_at) is already stored, or repeated within ``records``, is
    skipped, so the caller may retry a whole batch after any failure. One statement per
    ``ROWS_PER_STATEMENT`` records, whatever their number: ``INSERT ... SELECT FROM jsonb_to_recordset``.
    """
    unique: dict[tuple[str, int, int], UsageRecord] = {}
    for record in records:
        unique.setdefault((record.request_id, record.attempt, record.created_at_us), record)
    rows = list(unique.values())
    inserted = 0
    for start in range(0, len(rows), ROWS_PER_STATEMENT):
        chunk = rows[start : start + ROWS_PER_STATEMENT]
        result = await session.execute(_INSERT, {"records": msgspec.json.encode(chunk).decode()})
        inserted += cast(CursorResult[Any], result).rowcount
    return inserted
