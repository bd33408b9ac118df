"""Billing's rules. Never commits: the caller's unit of work does."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession

from poindexter_cloud.billing.models import Subscription


async def ensure_usage_partitions(session: AsyncSession, months_ahead: int) -> int:
    """Create missing monthly partitions up to ``months_ahead`` (the SQL function is in migration 0001)."""
    result = await session.execute(
        text("SELECT ensure_usage_events_partitions(:ahead)"), {"ahead": months_ahead}
    )
    return int(result.scalar_one())


# Stripe subscription statuses that grant the service, and those that mean "paid before, failing now".
ENTITLED_STATUSES = frozenset({"active", "trialing"})
SUSPENDED_STATUSES = frozenset({"past_due", "unpaid", "incomplete"})


@dataclass(frozen=True, slots=True)
class Entitlement:
    """What a user may use now: their plan if subscribed, or why not."""

    plan: str | None
    state: str  # active, suspended (payment failing), none (no subscription)
    spend_cap_microdollars: int | None = None


NO_SUBSCRIPTION = Entitlement(None, "none")


async def entitlement(session: AsyncSession, user_id: uuid.UUID) -> Entitlement:
    row = (
        await session.execute(
            select(Subscription.plan, Subscription.status).where(Subscription.user_id == user_id)
        )
    ).one_or_none()
    if row is None:
        return NO_SUBSCRIPTION
    plan, status = row
    if status in ENTITLED_STATUSES:
        return Entitlement(plan, "active")
    if status in SUSPENDED_STATUSES:
        return Entitlement(plan, "suspended")
    return Entitlement(plan, "none")
