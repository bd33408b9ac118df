"""Tables owned by billing: subscriptions and the usage they are billed on."""

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
    __tablename__ = "usage_monthly"
    __table_args__ = (UniqueConstraint("user_id", "month"),)

    id: Mapped[uuid.UUID] = uuid_pk()
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id"))
    month: Mapped[date]
    ai_input_tokens: Mapped[int] = mapped_column(BigInteger, server_default="0")
    ai_output_tokens: Mapped[int] = mapped_column(BigInteger, server_default="0")
    ai_cost_microdollars: Mapped[int] = mapped_column(BigInteger, server_default="0")
    emails_sent: Mapped[int] = mapped_column(server_default="0")
    emails_received: Mapped[int] = mapped_column(server_default="0")
    signal_messages_sent: Mapped[int] = mapped_column(server_default="0")
    signal_messages_received: Mapped[int] = mapped_column(server_default="0")
    sms_sent: Mapped[int] = mapped_column(server_default="0")
    sms_received: Mapped[int] = mapped_column(server_default="0")
    synced_to_stripe: Mapped[bool] = mapped_column(server_default="false")
    synced_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = created_at()
    updated_at: Mapped[datetime] = updated_at()
