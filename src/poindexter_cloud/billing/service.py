"""Billing's rules. Never commits: the caller's unit of work does."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession

from poindexter_cloud.billing.models import Subscription
from poindexter_cloud.core.errors import Conflict, NotFound


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
            select(Subscription.plan, Subscription.status, Subscription.spend_cap_microdollars).where(
                Subscription.user_id == user_id
            )
        )
    ).one_or_none()
    if row is None:
        return NO_SUBSCRIPTION
    plan, status, cap = row
    if status in ENTITLED_STATUSES:
        return Entitlement(plan, "active", cap)
    if status in SUSPENDED_STATUSES:
        return Entitlement(plan, "suspended", cap)
    return Entitlement(plan, "none", cap)


class NoSubscription(NotFound):
    code = "no_subscription"


async def set_spend_cap(session: AsyncSession, user_id: uuid.UUID, cap_microdollars: int | None) -> None:
    subscription = (
        await session.execute(select(Subscription).where(Subscription.user_id == user_id).with_for_update())
    ).scalar_one_or_none()
    if subscription is None:
        raise NoSubscription("There is no subscription to cap yet.")
    subscription.spend_cap_microdollars = cap_microdollars


COMP_PREFIX = "comp_"


async def grant_complimentary(session: AsyncSession, user_id: uuid.UUID, plan: str) -> Subscription:
    """An operator-granted subscription outside Stripe (staff, partners, a newcomer's dev setup).

    Its id starts with ``comp_`` so Stripe synchronisation leaves it alone."""
    from poindexter_cloud.billing.plans import plan_named

    plan_named(plan)  # refuses an unknown plan
    subscription = (
        await session.execute(select(Subscription).where(Subscription.user_id == user_id).with_for_update())
    ).scalar_one_or_none()
    if subscription is None:
        subscription = Subscription(
            user_id=user_id,
            stripe_subscription_id=f"{COMP_PREFIX}{uuid.uuid4().hex}",
            stripe_price_id=f"{COMP_PREFIX}{plan}",
            plan=plan,
            status="active",
        )
        session.add(subscription)
    elif not subscription.stripe_subscription_id.startswith(COMP_PREFIX):
        raise Conflict("This user pays through Stripe; change the plan there.")
    else:
        subscription.plan, subscription.status = plan, "active"
    await session.flush()
    return subscription
