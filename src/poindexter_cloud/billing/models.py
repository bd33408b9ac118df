"""Tables owned by billing: subscriptions, the usage they are billed on, and its sync to Stripe."""

from __future__ import annotations

import uuid
from datetime import date, datetime

from sqlalchemy import BigInteger, ForeignKey, Index, Text, UniqueConstraint, func
from sqlalchemy.orm import Mapped, mapped_column

from poindexter_cloud.core.db import Base, created_at, updated_at, uuid_pk


class Subscription(Base):
    __tablename__ = "subscriptions"

    id: Mapped[uuid.UUID] = uuid_pk()
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), unique=True)
    stripe_subscription_id: Mapped[str] = mapped_column(Text, unique=True)
    stripe_price_id: Mapped[str] = mapped_column(Text)
    plan: Mapped[str] = mapped_column(Text)  # basic, pro
    status: Mapped[str] = mapped_column(Text)  # Stripe's: active, past_due, canceled, ...
    current_period_start: Mapped[datetime | None]
    current_period_end: Mapped[datetime | None]
    # Optional monthly cap on AI spend (upstream cost), set by the subscriber; None = no cap.
    spend_cap_microdollars: Mapped[int | None] = mapped_column(BigInteger)
    # Mirrored from Stripe by the webhook processing (billing.service.apply_stripe_subscription).
    cancel_at_period_end: Mapped[bool] = mapped_column(server_default="false")
    canceled_at: Mapped[datetime | None]
    # Why the service is suspended while the status says payment is failing (shown to the subscriber).
    suspended_reason: Mapped[str | None] = mapped_column(Text)
    # The first time this subscription granted the service: where provisioning starts.
    activated_at: Mapped[datetime | None]
    # Once the subscription has ended: when its identity is to be deprovisioned (provisioning acts on it).
    deprovision_after: Mapped[datetime | None]
    created_at: Mapped[datetime] = created_at()
    updated_at: Mapped[datetime] = updated_at()


class UsageEvent(Base):
    """Append-only and high volume: partitioned by month on created_at, no foreign keys.

    One row per upstream attempt of a proxied request (``event_type`` "ai_request"), or per metered action of
    another module. Rows arrive through the Redis usage buffer (``billing.usage_buffer``); the unique index
    on (request_id, attempt, created_at) makes a re-delivered event a no-op (the partition key must be part
    of any unique index, and the producer fixes created_at, so a repeat always lands in the same partition).
    """

    __tablename__ = "usage_events"
    __table_args__ = (
        Index("ix_usage_events_user_id_created_at", "user_id", "created_at"),
        Index("uq_usage_events_request_attempt", "request_id", "attempt", "created_at", unique=True),
        {"postgresql_partition_by": "RANGE (created_at)"},
    )

    id: Mapped[uuid.UUID] = uuid_pk()
    created_at: Mapped[datetime] = mapped_column(primary_key=True, server_default=func.now())
    user_id: Mapped[uuid.UUID]
    api_key_id: Mapped[uuid.UUID | None]
    event_type: Mapped[str] = mapped_column(Text)
    model: Mapped[str | None] = mapped_column(Text)
    provider: Mapped[str | None] = mapped_column(Text)
    input_tokens: Mapped[int | None]
    output_tokens: Mapped[int | None]
    cache_read_tokens: Mapped[int | None]
    cache_write_5m_tokens: Mapped[int | None]
    cache_write_1h_tokens: Mapped[int | None]
    cost_microdollars: Mapped[int | None] = mapped_column(BigInteger)
    price_version: Mapped[str | None] = mapped_column(Text)
    request_id: Mapped[str | None] = mapped_column(Text)
    attempt: Mapped[int] = mapped_column(server_default="0")  # 0 for the first upstream attempt
    status: Mapped[int | None]  # the HTTP status the client got
    estimated: Mapped[bool] = mapped_column(server_default="false")  # output counted by us: stream was cut
    latency_ms: Mapped[int | None]


class UsageMonthly(Base):
    """Per user per calendar month (UTC), rolled up from usage_events by the ``sync_usage`` job: recomputed
    from the events each time, so a rerun or a late event just converges. ``synced_at`` is when the rollup
    last changed the row. Overage reaches Stripe per billing period, not per calendar month: see
    ``usage_syncs``."""

    __tablename__ = "usage_monthly"
    __table_args__ = (UniqueConstraint("user_id", "month"),)

    id: Mapped[uuid.UUID] = uuid_pk()
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id"))
    month: Mapped[date]
    ai_input_tokens: Mapped[int] = mapped_column(BigInteger, server_default="0")
    ai_output_tokens: Mapped[int] = mapped_column(BigInteger, server_default="0")
    ai_cache_read_tokens: Mapped[int] = mapped_column(BigInteger, server_default="0")
    ai_cache_write_5m_tokens: Mapped[int] = mapped_column(BigInteger, server_default="0")
    ai_cache_write_1h_tokens: Mapped[int] = mapped_column(BigInteger, server_default="0")
    ai_requests: Mapped[int] = mapped_column(BigInteger, server_default="0")  # distinct request ids
    ai_cost_microdollars: Mapped[int] = mapped_column(BigInteger, server_default="0")
    emails_sent: Mapped[int] = mapped_column(server_default="0")
    emails_received: Mapped[int] = mapped_column(server_default="0")
    signal_messages_sent: Mapped[int] = mapped_column(server_default="0")
    signal_messages_received: Mapped[int] = mapped_column(server_default="0")
    sms_sent: Mapped[int] = mapped_column(server_default="0")
    sms_received: Mapped[int] = mapped_column(server_default="0")
    synced_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = created_at()
    updated_at: Mapped[datetime] = updated_at()


class UsageSync(Base):
    """Where the Stripe sync of one subscription's billing period stands: one row per (Stripe subscription,
    period), created the first time ``sync_usage`` looks at the period, updated (under the row's lock) in the
    same transaction that records the period's new meter events (``billing.usage_sync``).

    ``input_units`` / ``output_units`` are the units decided so far (the sum of the period's
    ``meter_event_records``, pending or sent). The watermark is the last usage event (in request order) the
    latest decision counted; ``events`` and ``tokens`` are what it counted, so a late event shows up as a
    change even when it sorts before the watermark."""

    __tablename__ = "usage_syncs"
    __table_args__ = (
        UniqueConstraint("stripe_subscription_id", "period_start"),
        Index("ix_usage_syncs_user_id_period_end", "user_id", "period_end"),
    )

    id: Mapped[uuid.UUID] = uuid_pk()
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id"))
    stripe_subscription_id: Mapped[str] = mapped_column(Text)
    stripe_customer_id: Mapped[str] = mapped_column(Text)
    plan: Mapped[str] = mapped_column(Text)
    period_start: Mapped[datetime]
    period_end: Mapped[datetime]
    events: Mapped[int] = mapped_column(BigInteger, server_default="0")
    tokens: Mapped[int] = mapped_column(BigInteger, server_default="0")
    included_used: Mapped[int] = mapped_column(BigInteger, server_default="0")
    input_units: Mapped[int] = mapped_column(BigInteger, server_default="0")
    output_units: Mapped[int] = mapped_column(BigInteger, server_default="0")
    watermark_created_at: Mapped[datetime | None]
    watermark_request_id: Mapped[str | None] = mapped_column(Text)
    watermark_attempt: Mapped[int | None]
    decided_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = created_at()
    updated_at: Mapped[datetime] = updated_at()


class MeterEventRecord(Base):
    """One meter event we decided to send to Stripe: recorded ``pending`` in the decision's transaction,
    sent after it commits with its deterministic ``identifier``, then marked ``sent``. A row still pending
    when Stripe's 24 h identifier dedupe may have lapsed is marked ``stale`` instead of being resent: the
    reconcile command shows it, and an operator resolves it (``admin usage resolve``)."""

    __tablename__ = "meter_event_records"
    __table_args__ = (
        UniqueConstraint("usage_sync_id", "meter", "seq"),
        Index("ix_meter_event_records_status_user_id", "status", "user_id"),
        Index("ix_meter_event_records_stripe_customer_id_timestamp", "stripe_customer_id", "timestamp"),
    )

    id: Mapped[uuid.UUID] = uuid_pk()
    usage_sync_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("usage_syncs.id"))
    user_id: Mapped[uuid.UUID]
    stripe_customer_id: Mapped[str] = mapped_column(Text)
    meter: Mapped[str] = mapped_column(Text)  # input, output
    event_name: Mapped[str] = mapped_column(Text)
    seq: Mapped[int]  # 1, 2, ... per period and meter
    units: Mapped[int] = mapped_column(BigInteger)
    identifier: Mapped[str] = mapped_column(Text, unique=True)  # {subscription}:{period start}:{meter}:{seq}
    timestamp: Mapped[datetime]  # the meter event's timestamp (whole seconds)
    watermark_created_at: Mapped[datetime | None]
    watermark_request_id: Mapped[str | None] = mapped_column(Text)
    watermark_attempt: Mapped[int | None]
    status: Mapped[str] = mapped_column(Text, server_default="pending")  # pending, sent, stale
    attempts: Mapped[int] = mapped_column(server_default="0")
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = created_at()
    sent_at: Mapped[datetime | None]
