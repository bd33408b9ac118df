"""Usage into ``usage_monthly``, and overage into Stripe's meters exactly once (the ``sync_usage`` job).

**Monthly rollup.** Each run recomputes, from usage_events, the current calendar month's row of every user
(and the previous month's during its first days, for late events) and upserts it, writing only rows whose
numbers changed. Recomputing rather than adding makes reruns and late events converge.

**Overage, exactly once.** For each Stripe-billed subscription (not ``comp_``; those have no Stripe
customer and are never billed), per billing period, three steps:

1. *Decide* (one transaction, under a per-user advisory lock and the period's ``usage_syncs`` row lock):
   read the period's events in request order in one statement, apply the rule of ``billing.overage``, and
   compare each meter's total units with what earlier decisions recorded. A positive difference becomes a
   ``meter_event_records`` row (``pending``) with the identifier ``{subscription}:{period start}:{meter}:
   {seq}``; the ``usage_syncs`` row takes the new totals and the watermark (the last event counted) in the
   same transaction. Recomputing the total (rather than adding events after the watermark) is what makes a
   late event, one whose created_at sorts before the watermark, count as soon as it is stored: nothing is
   skipped, and since a recorded unit is never decided again, nothing is billed twice. Totals only grow as
   events arrive; a total that shrinks (a mid-period move to a plan including more) sends nothing.
2. *Send*, after the commit: each pending row as a meter event with its identifier and its recorded
   timestamp. Stripe refuses an identifier it has seen within 24 h; the adapter reports that as a
   duplicate, which we count as delivered.
3. *Mark* each delivered row ``sent`` in a short transaction of its own.

A crash between 1 and 3 leaves pending rows; the next run (every 5 minutes) sends them again with the same
identifiers, so Stripe keeps one of each. That holds only inside Stripe's dedupe window, so a row still
pending ``SEND_WINDOW`` (23 h) after its decision is not resent blindly: it is marked ``stale`` and logged,
``admin usage reconcile`` reports it, and an operator resolves it (``admin usage resolve IDENTIFIER
--mark-sent`` when Stripe's totals show it arrived, ``--resend`` when they show it did not).

Two workers never sync one user at once: the whole per-user sync holds a session-level advisory lock (the
cron skips a user another run holds; a one-user run waits), and the decision transaction takes its own
transaction-level advisory lock, so a direct call of ``decide`` serialises too.

**Timestamps.** A meter event is stamped with the created_at of the period's last counted event, so it
falls inside the period and lands on that period's invoice, clamped to now and to Stripe's 35-day limit.
Once a period has ended more than ``CLOSING_GRACE`` ago (Stripe finalises the period's invoice about an hour
after it ends), late usage of that period is stamped now and billed on the next invoice. Closed periods
keep being checked for late events for ``RESYNC_CLOSED``. A user's periods never overlap: one that a new
subscription replaced before it ended (cancelled, then subscribed again) stops where the new one starts, so
an event is counted in one period only (``disjoint``).
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any, Final

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Date,
    and_,
    cast,
    distinct,
    func,
    literal,
    or_,
    select,
    tuple_,
    union,
    update,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from poindexter_cloud.accounts.service import Accounts
from poindexter_cloud.billing import catalog
from poindexter_cloud.billing.errors import PaymentProviderError, PaymentProviderUnavailable
from poindexter_cloud.billing.models import (
    MeterEventRecord,
    Subscription,
    UsageEvent,
    UsageMonthly,
    UsageSync,
)
from poindexter_cloud.billing.overage import Units, request_overage
from poindexter_cloud.billing.plans import PLANS, Plan
from poindexter_cloud.billing.pricing import TokenUsage
from poindexter_cloud.billing.service import COMP_PREFIX
from poindexter_cloud.billing.stripe_adapter import StripeAdapter
from poindexter_cloud.core.db import Database, advisory_lock_key
from poindexter_cloud.core.metrics import STRIPE_SYNC_LAST_SUCCESS
from poindexter_cloud.core.resources import Resources

log = logging.getLogger(__name__)

AI_REQUEST: Final = "ai_request"
# usage_events.event_type -> usage_monthly column
MESSAGE_COLUMNS: Final = {
    "email_sent": "emails_sent",
    "email_received": "emails_received",
    "signal_sent": "signal_messages_sent",
    "signal_received": "signal_messages_received",
    "sms_sent": "sms_sent",
    "sms_received": "sms_received",
}

SEND_WINDOW: Final = timedelta(hours=23)  # Stripe dedupes an identifier for at least 24 h
CLOSING_GRACE: Final = timedelta(hours=1)  # Stripe finalises a period's invoice about an hour after it ends
RESYNC_CLOSED: Final = timedelta(days=3)  # closed periods are checked for late events this long
METER_EVENT_MAX_AGE: Final = timedelta(days=35)  # Stripe refuses older timestamps
TIMESTAMP_MARGIN: Final = timedelta(hours=1)
MONTH_LATE_DAYS: Final = 3  # the previous month is rolled up again during the first days of a month


def utcnow() -> datetime:
    return datetime.now(UTC)


# --- calendar months ---------------------------------------------------------------------------------------


def month_of(moment: datetime) -> date:
    moment = moment.astimezone(UTC)
    return date(moment.year, moment.month, 1)


def next_month(month: date) -> date:
    return date(month.year + month.month // 12, month.month % 12 + 1, 1)


def previous_month(month: date) -> date:
    return date(month.year - (month.month == 1), (month.month - 2) % 12 + 1, 1)


def month_bounds(month: date) -> tuple[datetime, datetime]:
    """[start, end) of a calendar month in UTC."""
    start = datetime(month.year, month.month, 1, tzinfo=UTC)
    end_month = next_month(month)
    return start, datetime(end_month.year, end_month.month, 1, tzinfo=UTC)


def parse_month(text: str) -> date:
    """``YYYY-MM`` -> the month's first day; ValueError otherwise."""
    try:
        parsed = datetime.strptime(text, "%Y-%m")
    except ValueError:
        raise ValueError(f"expected a month as YYYY-MM, got {text!r}") from None
    return date(parsed.year, parsed.month, 1)


# --- reading a period's events ---------------------------------------------------------------------------

E = UsageEvent
TOKEN_COLUMNS: Final = (
    E.input_tokens,
    E.output_tokens,
    E.cache_read_tokens,
    E.cache_write_5m_tokens,
    E.cache_write_1h_tokens,
)
REQUEST_ORDER: Final = (E.created_at, E.request_id.collate("C"), E.attempt, E.id)


def _raw_tokens() -> ColumnElement[int]:
    total: ColumnElement[Any] = func.coalesce(TOKEN_COLUMNS[0], 0)
    for column in TOKEN_COLUMNS[1:]:
        total = total + func.coalesce(column, 0)
    return cast(total, BigInteger)


def _ai_events(user_id: uuid.UUID, start: datetime, end: datetime) -> list[ColumnElement[bool]]:
    return [E.user_id == user_id, E.event_type == AI_REQUEST, E.created_at >= start, E.created_at < end]


@dataclass(frozen=True, slots=True)
class Watermark:
    created_at: datetime
    request_id: str | None
    attempt: int


@dataclass(frozen=True, slots=True)
class PeriodUsage:
    """The rule applied to a period's events, read in one statement (one snapshot)."""

    events: int
    tokens: int
    included_used: int
    units: Units
    watermark: Watermark | None


def _usage_of(row: Any) -> TokenUsage:
    return TokenUsage(
        input_tokens=row.input_tokens or 0,
        output_tokens=row.output_tokens or 0,
        cache_read_tokens=row.cache_read_tokens or 0,
        cache_write_5m_tokens=row.cache_write_5m_tokens or 0,
        cache_write_1h_tokens=row.cache_write_1h_tokens or 0,
    )


async def read_period(
    session: AsyncSession, user_id: uuid.UUID, plan: Plan, start: datetime, end: datetime
) -> PeriodUsage:
    """The period's totals, included tokens used and overage units. One query returns only the events at or
    past the included line (plus the last event, the watermark), each with the tokens consumed before it;
    a window over the events in request order computes that, so nothing before the line is sent here."""
    raw = _raw_tokens()
    ordered = (
        select(
            E.model,
            *TOKEN_COLUMNS,
            E.cost_microdollars,
            E.created_at,
            E.request_id,
            E.attempt,
            E.id,
            raw.label("raw"),
            func.sum(raw).over(order_by=REQUEST_ORDER).label("running"),
            func.row_number().over(order_by=[c.desc() for c in REQUEST_ORDER]).label("from_last"),
            func.count().over().label("events"),
            func.sum(raw).over().label("tokens"),
        )
        .where(*_ai_events(user_id, start, end))
        .subquery()
    )
    included = plan.included_tokens
    rows = (
        await session.execute(
            select(ordered)
            .where(
                or_(
                    ordered.c.running > included,
                    and_(ordered.c.raw == 0, ordered.c.running >= included),
                    ordered.c.from_last == 1,
                )
            )
            .order_by(
                ordered.c.created_at, ordered.c.request_id.collate("C"), ordered.c.attempt, ordered.c.id
            )
        )
    ).all()
    if not rows:
        return PeriodUsage(0, 0, 0, Units(), None)
    units = Units()
    for row in rows:
        usage = _usage_of(row)
        before = int(row.running) - int(row.raw)
        units += request_overage(plan, row.model, usage, row.cost_microdollars or 0, before).units
    last = rows[-1]
    tokens = int(last.tokens)
    return PeriodUsage(
        events=int(last.events),
        tokens=tokens,
        included_used=min(tokens, included),
        units=units,
        watermark=Watermark(last.created_at, last.request_id, last.attempt),
    )


# --- the monthly rollup ----------------------------------------------------------------------------------


def months_to_roll(now: datetime) -> list[date]:
    current = month_of(now)
    if now.astimezone(UTC).day <= MONTH_LATE_DAYS:
        return [previous_month(current), current]
    return [current]


async def rollup_monthly(session: AsyncSession, month: date, user_id: uuid.UUID | None = None) -> int:
    """Recompute usage_monthly for ``month`` (every user with events then, or one) from usage_events;
    returns how many rows were created or changed. Never commits."""
    start, end = month_bounds(month)
    ai = E.event_type == AI_REQUEST

    def ai_sum(column: Any) -> ColumnElement[Any]:
        return func.coalesce(func.sum(column).filter(ai), 0)

    values: dict[str, Any] = {
        "user_id": E.user_id,
        "month": literal(month, Date),
        "ai_input_tokens": ai_sum(E.input_tokens),
        "ai_output_tokens": ai_sum(E.output_tokens),
        "ai_cache_read_tokens": ai_sum(E.cache_read_tokens),
        "ai_cache_write_5m_tokens": ai_sum(E.cache_write_5m_tokens),
        "ai_cache_write_1h_tokens": ai_sum(E.cache_write_1h_tokens),
        "ai_requests": func.count(distinct(E.request_id)).filter(ai),
        "ai_cost_microdollars": ai_sum(E.cost_microdollars),
        **{column: func.count().filter(E.event_type == kind) for kind, column in MESSAGE_COLUMNS.items()},
    }
    query = (
        select(*(value.label(name) for name, value in values.items()))
        .where(
            E.created_at >= start,
            E.created_at < end,
            E.event_type.in_([AI_REQUEST, *MESSAGE_COLUMNS]),
        )
        .group_by(E.user_id)
    )
    if user_id is not None:
        query = query.where(E.user_id == user_id)
    names = list(values)
    counted = [name for name in names if name not in ("user_id", "month")]
    insert = pg_insert(UsageMonthly).from_select(names, query)
    table = UsageMonthly.__table__.c
    statement = insert.on_conflict_do_update(
        index_elements=["user_id", "month"],
        set_={
            **{name: insert.excluded[name] for name in counted},
            "synced_at": func.now(),
            "updated_at": func.now(),
        },
        where=tuple_(*(table[name] for name in counted)).is_distinct_from(
            tuple_(*(insert.excluded[name] for name in counted))
        ),
    )
    result = await session.execute(statement)
    return int(getattr(result, "rowcount", 0) or 0)


# --- deciding overage ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BillablePeriod:
    user_id: uuid.UUID
    stripe_subscription_id: str
    stripe_customer_id: str
    plan: Plan
    start: datetime
    end: datetime


def identifier_of(subscription: str, period_start: datetime, meter: str, seq: int) -> str:
    return f"{subscription}:{int(period_start.timestamp())}:{meter}:{seq}"


def meter_timestamp(period: BillablePeriod, watermark: Watermark | None, now: datetime) -> datetime:
    """When the meter event says the usage happened: the last counted event's time (inside the period),
    or now once the period's invoice is final; never in the future nor past Stripe's 35 days."""
    final = now >= period.end + CLOSING_GRACE
    at = now if final or watermark is None else min(watermark.created_at, now)
    at = max(at, now - METER_EVENT_MAX_AGE + TIMESTAMP_MARGIN)
    return at.replace(microsecond=0)


def _is_comp(subscription_id: str) -> bool:
    return subscription_id.startswith(COMP_PREFIX)


async def billable_periods(
    session: AsyncSession, accounts: Accounts, user_id: uuid.UUID, now: datetime
) -> list[BillablePeriod]:
    """The user's periods to sync: the subscription's current one (from our row; none for ``comp_``), and
    earlier ones that closed recently, for their late events."""
    periods: list[BillablePeriod] = []
    subscription = (
        await session.execute(select(Subscription).where(Subscription.user_id == user_id))
    ).scalar_one_or_none()
    current: tuple[str, datetime] | None = None
    if (
        subscription is not None
        and not _is_comp(subscription.stripe_subscription_id)
        and subscription.plan in PLANS
        and subscription.current_period_start is not None
        and subscription.current_period_end is not None
        and subscription.current_period_end > now - RESYNC_CLOSED
    ):
        customer = await accounts.stripe_customer_id(session, user_id)
        if customer is not None:
            current = (subscription.stripe_subscription_id, subscription.current_period_start)
            periods.append(
                BillablePeriod(
                    user_id,
                    subscription.stripe_subscription_id,
                    customer,
                    PLANS[subscription.plan],
                    subscription.current_period_start,
                    subscription.current_period_end,
                )
            )
    closed = (
        (
            await session.execute(
                select(UsageSync)
                .where(UsageSync.user_id == user_id, UsageSync.period_end > now - RESYNC_CLOSED)
                .order_by(UsageSync.period_start)
            )
        )
        .scalars()
        .all()
    )
    for row in closed:
        if (row.stripe_subscription_id, row.period_start) == current or row.plan not in PLANS:
            continue
        periods.append(
            BillablePeriod(
                user_id,
                row.stripe_subscription_id,
                row.stripe_customer_id,
                PLANS[row.plan],
                row.period_start,
                row.period_end,
            )
        )
    return disjoint(periods)


def disjoint(periods: list[BillablePeriod]) -> list[BillablePeriod]:
    """The periods in order of start, each ending no later than the next begins, so no event is counted in
    two: a subscription replaced before its period ended (cancelled, then subscribed again) keeps only
    what came before the new one, whose tokens its own period includes."""
    ordered = sorted(periods, key=lambda period: period.start)
    for index in range(len(ordered) - 1):
        if ordered[index].end > ordered[index + 1].start:
            ordered[index] = replace(ordered[index], end=ordered[index + 1].start)
    return ordered


async def decide_period(
    session: AsyncSession, period: BillablePeriod, now: datetime
) -> list[MeterEventRecord]:
    """Record, pending, the meter events that bring Stripe's totals for this period up to the rule's, and
    move the period's watermark, in the caller's transaction. Never commits."""
    await session.execute(
        pg_insert(UsageSync)
        .values(
            user_id=period.user_id,
            stripe_subscription_id=period.stripe_subscription_id,
            stripe_customer_id=period.stripe_customer_id,
            plan=period.plan.name,
            period_start=period.start,
            period_end=period.end,
        )
        .on_conflict_do_nothing(index_elements=["stripe_subscription_id", "period_start"])
    )
    row = (
        await session.execute(
            select(UsageSync)
            .where(
                UsageSync.stripe_subscription_id == period.stripe_subscription_id,
                UsageSync.period_start == period.start,
            )
            .with_for_update()
        )
    ).scalar_one()
    usage = await read_period(session, period.user_id, period.plan, period.start, period.end)
    deltas = {
        "input": usage.units.input - row.input_units,
        "output": usage.units.output - row.output_units,
    }
    records: list[MeterEventRecord] = []
    timestamp = meter_timestamp(period, usage.watermark, now)
    for meter in catalog.TOKEN_KINDS:
        if deltas[meter] <= 0:
            continue
        seq = 1 + int(
            await session.scalar(
                select(func.count())
                .select_from(MeterEventRecord)
                .where(MeterEventRecord.usage_sync_id == row.id, MeterEventRecord.meter == meter)
            )
            or 0
        )
        record = MeterEventRecord(
            usage_sync_id=row.id,
            user_id=period.user_id,
            stripe_customer_id=period.stripe_customer_id,
            meter=meter,
            event_name=catalog.METER_EVENT_NAMES[meter],
            seq=seq,
            units=deltas[meter],
            identifier=identifier_of(period.stripe_subscription_id, period.start, meter, seq),
            timestamp=timestamp,
            watermark_created_at=usage.watermark.created_at if usage.watermark else None,
            watermark_request_id=usage.watermark.request_id if usage.watermark else None,
            watermark_attempt=usage.watermark.attempt if usage.watermark else None,
            status="pending",
            attempts=0,
        )
        session.add(record)
        records.append(record)
    watermark = usage.watermark
    changed = records or (
        (row.events, row.tokens, row.plan, row.stripe_customer_id, row.period_end)
        != (usage.events, usage.tokens, period.plan.name, period.stripe_customer_id, period.end)
    )
    if changed or row.decided_at is None:
        row.plan = period.plan.name
        row.stripe_customer_id = period.stripe_customer_id
        row.period_end = period.end
        row.events, row.tokens, row.included_used = usage.events, usage.tokens, usage.included_used
        row.input_units = max(row.input_units, usage.units.input)
        row.output_units = max(row.output_units, usage.units.output)
        row.watermark_created_at = watermark.created_at if watermark else None
        row.watermark_request_id = watermark.request_id if watermark else None
        row.watermark_attempt = watermark.attempt if watermark else None
        row.decided_at = now
    await session.flush()
    return records


async def decide_user(
    session: AsyncSession, accounts: Accounts, user_id: uuid.UUID, now: datetime
) -> list[MeterEventRecord]:
    """Step 1 for one user, in the caller's transaction (never commits): every billable period decided."""
    await session.execute(select(func.pg_advisory_xact_lock(advisory_lock_key(f"usage-decide:{user_id}"))))
    records: list[MeterEventRecord] = []
    for period in await billable_periods(session, accounts, user_id, now):
        records += await decide_period(session, period, now)
    return records


async def decide(resources: Resources, user_id: uuid.UUID, now: datetime | None = None) -> list[uuid.UUID]:
    """Step 1 as its own transaction; the ids of the meter event records it added (pending)."""
    accounts = Accounts(resources.settings)
    async with resources.unit_of_work() as uow:
        records = await decide_user(uow.session, accounts, user_id, now or utcnow())
        await uow.commit()
    return [record.id for record in records]


# --- sending ---------------------------------------------------------------------------------------------


@dataclass
class SyncStats:
    users: int = 0
    skipped: int = 0  # another run held the user
    monthly_rows: int = 0
    decided: int = 0
    sent: int = 0
    duplicates: int = 0
    stale: int = 0
    failed: int = 0
    errors: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, int]:
        return {
            "users": self.users,
            "skipped": self.skipped,
            "monthly_rows": self.monthly_rows,
            "decided": self.decided,
            "sent": self.sent,
            "duplicates": self.duplicates,
            "stale": self.stale,
            "failed": self.failed,
        }


def meter_payload(customer: str, units: int) -> dict[str, str]:
    return {catalog.METER_CUSTOMER_KEY: customer, catalog.METER_VALUE_KEY: str(units)}


async def _mark(db: Database, record_id: uuid.UUID, **values: Any) -> bool:
    """Change a still-pending record in a short transaction of its own; False if it no longer is."""
    async with db.sessions() as session:
        result = await session.execute(
            update(MeterEventRecord)
            .where(MeterEventRecord.id == record_id, MeterEventRecord.status == "pending")
            .values(**values)
        )
        await session.commit()
    return bool(getattr(result, "rowcount", 0))


async def _note_failure(db: Database, record_id: uuid.UUID, error: str) -> None:
    async with db.sessions() as session:
        await session.execute(
            update(MeterEventRecord)
            .where(MeterEventRecord.id == record_id)
            .values(attempts=MeterEventRecord.attempts + 1, last_error=error[:2000])
        )
        await session.commit()


async def send_pending(
    db: Database, stripe: StripeAdapter, user_id: uuid.UUID, stats: SyncStats, now: datetime | None = None
) -> None:
    """Steps 2 and 3 for one user: send each pending record, oldest first, and mark it sent. Records
    decided more than ``SEND_WINDOW`` ago are marked stale instead (see the module docstring)."""
    async with db.sessions() as session:
        records = (
            (
                await session.execute(
                    select(MeterEventRecord)
                    .where(MeterEventRecord.user_id == user_id, MeterEventRecord.status == "pending")
                    .order_by(MeterEventRecord.created_at, MeterEventRecord.meter, MeterEventRecord.seq)
                )
            )
            .scalars()
            .all()
        )
    for record in records:
        moment = now or utcnow()
        if record.created_at < moment - SEND_WINDOW:
            if await _mark(db, record.id, status="stale", last_error="still pending past the dedupe window"):
                stats.stale += 1
                log.error(
                    "meter event left pending past Stripe's dedupe window: reconcile, then resolve it",
                    extra={"identifier": record.identifier, "units": record.units},
                )
            continue
        try:
            sent = await stripe.create_meter_event(
                event_name=record.event_name,
                payload=meter_payload(record.stripe_customer_id, record.units),
                identifier=record.identifier,
                timestamp=record.timestamp,
            )
        except PaymentProviderUnavailable as exc:
            await _note_failure(db, record.id, exc.message)
            stats.failed += 1
            stats.errors.append(f"{record.identifier}: {exc.message}")
            return  # Stripe is not answering: the next run tries again
        except PaymentProviderError as exc:
            await _note_failure(db, record.id, exc.message)
            stats.failed += 1
            stats.errors.append(f"{record.identifier}: {exc.message}")
            continue
        await _mark(db, record.id, status="sent", sent_at=utcnow())
        if sent.duplicate:
            stats.duplicates += 1
        else:
            stats.sent += 1


# --- the whole sync ----------------------------------------------------------------------------------------


@asynccontextmanager
async def user_lock(db: Database, user_id: uuid.UUID, wait: bool) -> AsyncIterator[bool]:
    """A session-level advisory lock on one user's sync, held on a connection of its own (autocommit, so
    no transaction stays open while Stripe is called); yields whether it is held. A process that dies
    drops its connection and so the lock."""
    key = advisory_lock_key(f"usage-sync:{user_id}")
    async with db.engine.connect() as raw:
        connection = await raw.execution_options(isolation_level="AUTOCOMMIT")
        if wait:
            await connection.execute(select(func.pg_advisory_lock(key)))
            held = True
        else:
            held = bool(await connection.scalar(select(func.pg_try_advisory_lock(key))))
        try:
            yield held
        finally:
            if held:
                try:
                    await connection.execute(select(func.pg_advisory_unlock(key)))
                except BaseException:
                    await raw.invalidate()  # closing the connection releases the lock
                    raise


async def sync_user(
    resources: Resources, stripe: StripeAdapter, user_id: uuid.UUID, stats: SyncStats, *, wait: bool
) -> None:
    async with user_lock(resources.db, user_id, wait) as held:
        if not held:
            stats.skipped += 1
            return
        stats.users += 1
        stats.decided += len(await decide(resources, user_id))
        await send_pending(resources.db, stripe, user_id, stats)


async def users_to_sync(session: AsyncSession, now: datetime) -> list[uuid.UUID]:
    """Users with a Stripe subscription whose period is current or recently closed, or with a period row
    still in its resync window, or with records waiting to be sent."""
    since = now - RESYNC_CLOSED
    query = union(
        select(Subscription.user_id).where(
            ~Subscription.stripe_subscription_id.startswith(COMP_PREFIX, autoescape=True),
            Subscription.current_period_end > since,
        ),
        select(UsageSync.user_id).where(UsageSync.period_end > since),
        select(MeterEventRecord.user_id).where(MeterEventRecord.status == "pending"),
    )
    return sorted((await session.execute(query)).scalars().all())


class UsageSyncFailed(RuntimeError):
    """Some users' sync failed; the others were done. The job retries (every step is idempotent)."""


async def run(
    resources: Resources, user_id: uuid.UUID | None = None, now: datetime | None = None
) -> SyncStats:
    """The ``sync_usage`` job: the monthly rollup, then overage to Stripe per user (all, or one)."""
    moment = now or utcnow()
    stats = SyncStats()
    async with resources.unit_of_work() as uow:
        for month in months_to_roll(moment):
            stats.monthly_rows += await rollup_monthly(uow.session, month, user_id)
        await uow.commit()
    if not resources.settings.stripe_secret_key:
        log.warning("usage not sent to Stripe: STRIPE_SECRET_KEY is not set")
        return stats
    async with resources.db.sessions() as session:
        users = [user_id] if user_id is not None else await users_to_sync(session, moment)
    async with StripeAdapter.from_settings(resources.settings) as stripe:
        for user in users:
            try:
                await sync_user(resources, stripe, user, stats, wait=user_id is not None)
            except Exception as exc:  # one user's failure must not hold up the others
                log.exception("usage sync failed for a user", extra={"user_id": str(user)})
                stats.failed += 1
                stats.errors.append(f"{user}: {type(exc).__name__}: {exc}")
    if stats.errors:
        raise UsageSyncFailed("; ".join(stats.errors[:10]))
    if user_id is None:
        STRIPE_SYNC_LAST_SUCCESS.set(time.time())
    return stats


# --- reconciliation and operator fixes ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Reconciled:
    """One customer's meter for one month: what we recorded sending, what waits, and what Stripe has."""

    customer: str
    meter: str
    sent: int
    pending: int
    stale: int
    stripe: Decimal

    @property
    def difference(self) -> Decimal:
        return self.stripe - self.sent

    @property
    def agrees(self) -> bool:
        return self.difference == 0 and self.stale == 0


async def _billed_customers(session: AsyncSession, accounts: Accounts) -> set[str]:
    users = (
        (
            await session.execute(
                select(Subscription.user_id).where(
                    ~Subscription.stripe_subscription_id.startswith(COMP_PREFIX, autoescape=True)
                )
            )
        )
        .scalars()
        .all()
    )
    customers: set[str] = set()
    for user in users:
        customer = await accounts.stripe_customer_id(session, user)
        if customer is not None:
            customers.add(customer)
    return customers


async def reconcile(
    session: AsyncSession, accounts: Accounts, stripe: StripeAdapter, month: date
) -> list[Reconciled]:
    """Our records of ``month`` (by meter event timestamp) beside Stripe's meter event summaries for the
    same customers and month: every customer with records then or a Stripe subscription now."""
    start, end = month_bounds(month)
    ours: dict[tuple[str, str], dict[str, int]] = {}
    rows = await session.execute(
        select(
            MeterEventRecord.stripe_customer_id,
            MeterEventRecord.meter,
            MeterEventRecord.status,
            func.sum(MeterEventRecord.units),
        )
        .where(MeterEventRecord.timestamp >= start, MeterEventRecord.timestamp < end)
        .group_by(MeterEventRecord.stripe_customer_id, MeterEventRecord.meter, MeterEventRecord.status)
    )
    for customer, meter, status, units in rows:
        ours.setdefault((customer, meter), {})[status] = int(units)
    customers = {customer for customer, _ in ours} | await _billed_customers(session, accounts)
    meters: dict[str, list[str]] = {kind: [] for kind in catalog.TOKEN_KINDS}
    for found in await stripe.list_meters():
        for kind in catalog.TOKEN_KINDS:
            if found.event_name == catalog.METER_EVENT_NAMES[kind]:
                meters[kind].append(found.id)
    result: list[Reconciled] = []
    for customer in sorted(customers):
        for kind in catalog.TOKEN_KINDS:
            theirs = Decimal(0)
            for meter_id in meters[kind]:
                theirs += await stripe.meter_event_total(meter_id, customer, start, end)
            counted = ours.get((customer, kind), {})
            result.append(
                Reconciled(
                    customer,
                    kind,
                    counted.get("sent", 0),
                    counted.get("pending", 0),
                    counted.get("stale", 0),
                    theirs,
                )
            )
    return result


async def unsent_counts(session: AsyncSession) -> dict[str, int]:
    """How many meter event records are pending and stale (not accepted by Stripe yet)."""
    rows = await session.execute(
        select(MeterEventRecord.status, func.count())
        .where(MeterEventRecord.status != "sent")
        .group_by(MeterEventRecord.status)
    )
    return {status: int(count) for status, count in rows}


async def stale_records(session: AsyncSession, month: date) -> list[MeterEventRecord]:
    """The meter events of ``month`` (by timestamp) left pending past the dedupe window, for an operator."""
    start, end = month_bounds(month)
    return list(
        (
            await session.execute(
                select(MeterEventRecord)
                .where(
                    MeterEventRecord.status == "stale",
                    MeterEventRecord.timestamp >= start,
                    MeterEventRecord.timestamp < end,
                )
                .order_by(MeterEventRecord.created_at)
            )
        )
        .scalars()
        .all()
    )


async def resolve(db: Database, stripe: StripeAdapter, identifier: str, action: str) -> MeterEventRecord:
    """An operator's decision on a stale (or pending) record after reconciling: ``mark-sent`` when Stripe's
    totals show it arrived, ``resend`` when they show it did not (past the dedupe window Stripe takes the
    identifier as new). A resend keeps the recorded timestamp while Stripe accepts it, else uses now."""
    async with db.sessions() as session:
        record = (
            await session.execute(select(MeterEventRecord).where(MeterEventRecord.identifier == identifier))
        ).scalar_one_or_none()
    if record is None:
        raise LookupError(f"no meter event record {identifier!r}")
    if record.status == "sent":
        raise ValueError(f"{identifier} is already sent")
    now = utcnow()
    timestamp = record.timestamp
    if action == "resend":
        if timestamp < now - METER_EVENT_MAX_AGE + TIMESTAMP_MARGIN:
            timestamp = now.replace(microsecond=0)
        await stripe.create_meter_event(
            event_name=record.event_name,
            payload=meter_payload(record.stripe_customer_id, record.units),
            identifier=record.identifier,
            timestamp=timestamp,
        )
    elif action != "mark-sent":
        raise ValueError(f"unknown action {action!r}")
    async with db.sessions() as session:
        await session.execute(
            update(MeterEventRecord)
            .where(MeterEventRecord.id == record.id)
            .values(status="sent", sent_at=now, timestamp=timestamp, last_error=None)
        )
        await session.commit()
        refreshed = await session.get(MeterEventRecord, record.id)
    assert refreshed is not None
    return refreshed
