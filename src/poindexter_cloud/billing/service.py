"""Billing's rules. Never commits: the caller's unit of work does."""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession


async def ensure_usage_partitions(session: AsyncSession, months_ahead: int) -> int:
    """Create missing monthly partitions up to ``months_ahead`` (the SQL function is in migration 0001)."""
    result = await session.execute(
        text("SELECT ensure_usage_events_partitions(:ahead)"), {"ahead": months_ahead}
    )
    return int(result.scalar_one())
