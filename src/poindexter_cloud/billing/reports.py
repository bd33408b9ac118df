"""Usage as people read it: the subscriber's current period (``GET /v1/billing/usage``) and the operators'
aggregates by month, plan and model (``GET /v1/admin/usage``, ``admin usage report``). Read-only; computed
from usage_events (the subscriber's view uses the (user_id, created_at) index) and the sync's records.
"""

from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import Any, Final, Literal

from sqlalchemy import ColumnElement, distinct, func, literal, select
from sqlalchemy.ext.asyncio import AsyncSession

from poindexter_cloud.billing.models import MeterEventRecord, Subscription, UsageEvent, UsageSync
from poindexter_cloud.billing.overage import (
    Units,
    microdollars_to_usd,
    nanodollars_to_cents,
    units_nanodollars,
)
from poindexter_cloud.billing.plans import PLANS
from poindexter_cloud.billing.schemas import (
    AdminUsage,
    DayUsage,
    MessageAggregate,
    MessageCounts,
    ModelUsage,
    OverageAggregate,
    OverageInfo,
    UsageAggregate,
    UsageInfo,
)
from poindexter_cloud.billing.service import COMP_PREFIX
from poindexter_cloud.billing.usage_sync import AI_REQUEST, month_bounds, month_of, read_period

E = UsageEvent
# usage_events.event_type -> MessageCounts field
MESSAGE_FIELDS: Final = {
    "email_sent": "emails_sent",
    "email_received": "emails_received",
    "signal_sent": "signal_sent",
    "signal_received": "signal_received",
    "sms_sent": "sms_sent",
    "sms_received": "sms_received",
}
NO_PLAN: Final = "none"


def _sum(column: Any) -> ColumnElement[Any]:
    return func.coalesce(func.sum(column), 0)


def _ai_totals() -> tuple[ColumnElement[Any], ...]:
    """Requests and each token field, summed: the columns of ModelUsage and DayUsage after their key."""
    return (
        func.count(distinct(E.request_id)),
        _sum(E.input_tokens),
        _sum(E.output_tokens),
        _sum(E.cache_read_tokens),
        _sum(E.cache_write_5m_tokens),
        _sum(E.cache_write_1h_tokens),
    )


# --- the subscriber's period -----------------------------------------------------------------------------


async def subscriber_usage(session: AsyncSession, user_id: uuid.UUID, now: datetime) -> UsageInfo:
    """This period's usage: tokens by model, included tokens used and left, overage units and their price,
    upstream cost, and messages. The period is the Stripe subscription's current one; complimentary plans
    and users without a subscription see the calendar month (UTC)."""
    subscription = (
        await session.execute(select(Subscription).where(Subscription.user_id == user_id))
    ).scalar_one_or_none()
    plan = PLANS.get(subscription.plan) if subscription is not None else None
    complimentary = subscription is not None and subscription.stripe_subscription_id.startswith(COMP_PREFIX)
    kind: Literal["billing_period", "calendar_month"]
    if (
        subscription is not None
        and not complimentary
        and subscription.current_period_start is not None
        and subscription.current_period_end is not None
    ):
        kind = "billing_period"
        start, end = subscription.current_period_start, subscription.current_period_end
    else:
        kind = "calendar_month"
        start, end = month_bounds(month_of(now))
    in_period = [E.user_id == user_id, E.created_at >= start, E.created_at < end]
    model_rows = await session.execute(
        select(E.model, *_ai_totals(), _sum(E.cost_microdollars))
        .where(*in_period, E.event_type == AI_REQUEST)
        .group_by(E.model)
        .order_by(E.model)
    )
    models = [ModelUsage(row[0], *(int(value) for value in row[1:])) for row in model_rows]
    day = func.date(func.timezone("UTC", E.created_at))
    day_rows = await session.execute(
        select(day, *_ai_totals()).where(*in_period, E.event_type == AI_REQUEST).group_by(day).order_by(day)
    )
    days = [DayUsage(row[0], *(int(value) for value in row[1:7])) for row in day_rows]
    message_rows = await session.execute(
        select(E.event_type, func.count())
        .where(*in_period, E.event_type.in_(MESSAGE_FIELDS))
        .group_by(E.event_type)
    )
    messages = MessageCounts(**{MESSAGE_FIELDS[kind_]: int(count) for kind_, count in message_rows})
    tokens = sum(
        m.input_tokens
        + m.output_tokens
        + m.cache_read_tokens
        + m.cache_write_5m_tokens
        + m.cache_write_1h_tokens
        for m in models
    )
    cost = sum(m.upstream_cost_microdollars for m in models)
    if plan is None:
        included, used, units = 0, 0, Units()
        input_nanodollars = output_nanodollars = 0
    else:
        period = await read_period(session, user_id, plan, start, end)
        included, used, units = plan.included_tokens, period.included_used, period.units
        input_nanodollars = units.input * plan.overage_input_nanodollars_per_token
        output_nanodollars = units.output * plan.overage_output_nanodollars_per_token
    return UsageInfo(
        plan=subscription.plan if subscription is not None else None,
        period=kind,
        period_start=start,
        period_end=end,
        models=models,
        days=days,
        tokens=tokens,
        included_tokens=included,
        included_used=used,
        included_remaining=included - used,
        overage=OverageInfo(
            input_units=units.input,
            output_units=units.output,
            input_cents=nanodollars_to_cents(input_nanodollars),
            output_cents=nanodollars_to_cents(output_nanodollars),
            total_cents=nanodollars_to_cents(input_nanodollars + output_nanodollars),
            billed=plan is not None and not complimentary,
        ),
        upstream_cost_microdollars=cost,
        upstream_cost_usd=microdollars_to_usd(cost),
        messages=messages,
    )


# --- operators' aggregates -------------------------------------------------------------------------------


def _month_label(column: Any) -> ColumnElement[str]:
    return func.to_char(func.timezone("UTC", column), "YYYY-MM")


def _in_month(query: Any, column: Any, month: date | None) -> Any:
    if month is None:
        return query
    start, end = month_bounds(month)
    return query.where(column >= start, column < end)


def _plan_of_user() -> ColumnElement[str]:
    return func.coalesce(Subscription.plan, literal(NO_PLAN))


async def usage_aggregates(session: AsyncSession, month: date | None = None) -> list[UsageAggregate]:
    """AI usage by month, plan and model (all months, or one)."""
    month_label, plan = _month_label(E.created_at), _plan_of_user()
    query = (
        select(
            month_label,
            plan,
            E.model,
            func.count(distinct(E.user_id)),
            *_ai_totals(),
            _sum(E.cost_microdollars),
        )
        .select_from(E)
        .outerjoin(Subscription, Subscription.user_id == E.user_id)
        .where(E.event_type == AI_REQUEST)
        .group_by(month_label, plan, E.model)
        .order_by(month_label, plan, E.model)
    )
    rows = await session.execute(_in_month(query, E.created_at, month))
    result: list[UsageAggregate] = []
    for row in rows:
        numbers = [int(value) for value in row[3:]]
        result.append(
            UsageAggregate(
                month=row[0],
                plan=row[1],
                model=row[2],
                users=numbers[0],
                requests=numbers[1],
                input_tokens=numbers[2],
                output_tokens=numbers[3],
                cache_read_tokens=numbers[4],
                cache_write_5m_tokens=numbers[5],
                cache_write_1h_tokens=numbers[6],
                upstream_cost_microdollars=numbers[7],
                upstream_cost_usd=microdollars_to_usd(numbers[7]),
            )
        )
    return result


async def message_aggregates(session: AsyncSession, month: date | None = None) -> list[MessageAggregate]:
    month_label, plan = _month_label(E.created_at), _plan_of_user()
    query = (
        select(
            month_label,
            plan,
            func.count(distinct(E.user_id)),
            *(func.count().filter(E.event_type == kind) for kind in MESSAGE_FIELDS),
        )
        .select_from(E)
        .outerjoin(Subscription, Subscription.user_id == E.user_id)
        .where(E.event_type.in_(MESSAGE_FIELDS))
        .group_by(month_label, plan)
        .order_by(month_label, plan)
    )
    rows = await session.execute(_in_month(query, E.created_at, month))
    result: list[MessageAggregate] = []
    for row in rows:
        counts = {field: int(row[3 + index]) for index, field in enumerate(MESSAGE_FIELDS.values())}
        result.append(MessageAggregate(month=row[0], plan=row[1], users=int(row[2]), **counts))
    return result


async def overage_aggregates(session: AsyncSession, month: date | None = None) -> list[OverageAggregate]:
    R = MeterEventRecord
    month_label = _month_label(R.timestamp)

    def units(meter: str, sent: bool) -> ColumnElement[Any]:
        status = R.status == "sent" if sent else R.status != "sent"
        return func.coalesce(func.sum(R.units).filter(R.meter == meter, status), 0)

    query = (
        select(
            month_label,
            UsageSync.plan,
            units("input", True),
            units("output", True),
            units("input", False),
            units("output", False),
        )
        .select_from(R)
        .join(UsageSync, UsageSync.id == R.usage_sync_id)
        .group_by(month_label, UsageSync.plan)
        .order_by(month_label, UsageSync.plan)
    )
    rows = await session.execute(_in_month(query, R.timestamp, month))
    result: list[OverageAggregate] = []
    for label, plan_name, in_sent, out_sent, in_unsent, out_unsent in rows:
        plan = PLANS.get(plan_name)
        nanodollars = units_nanodollars(plan, Units(int(in_sent), int(out_sent))) if plan else 0
        result.append(
            OverageAggregate(
                label,
                plan_name,
                int(in_sent),
                int(out_sent),
                int(in_unsent),
                int(out_unsent),
                nanodollars_to_cents(nanodollars),
            )
        )
    return result


async def admin_usage(session: AsyncSession, month: date | None = None) -> AdminUsage:
    return AdminUsage(
        month=f"{month:%Y-%m}" if month else None,
        models=await usage_aggregates(session, month),
        messages=await message_aggregates(session, month),
        overage=await overage_aggregates(session, month),
    )
