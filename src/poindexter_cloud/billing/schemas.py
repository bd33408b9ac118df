"""The billing API contract."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Annotated, Literal

import msgspec


class SpendCap(msgspec.Struct, forbid_unknown_fields=True):
    """A monthly cap on AI spend in US dollars; null removes it."""

    monthly_cap_usd: Annotated[float, msgspec.Meta(ge=0, le=1_000_000)] | None


class SubscribeRequest(msgspec.Struct, forbid_unknown_fields=True):
    """The plan to subscribe to; payment happens on Stripe's Checkout page."""

    plan: Literal["basic", "pro"]


class CheckoutStarted(msgspec.Struct):
    """Send the subscriber's browser to ``url`` (Stripe Checkout)."""

    url: str
    session_id: str


class PortalSession(msgspec.Struct):
    """Send the subscriber's browser to ``url`` (Stripe's Customer Portal): plan, card, invoices, cancel."""

    url: str


class SubscriptionInfo(msgspec.Struct):
    """The caller's subscription. ``status`` is ``active``, ``suspended`` (``reason`` says why, e.g. the last
    payment failed), ``canceled`` or ``none``."""

    plan: str | None
    status: str
    reason: str | None
    current_period_start: datetime | None
    current_period_end: datetime | None
    cancel_at_period_end: bool
    monthly_cap_usd: float | None
    complimentary: bool


# --- usage ------------------------------------------------------------------------------------------------


class ModelUsage(msgspec.Struct):
    """One model's tokens in the period, each field as the upstream counted it."""

    model: str | None
    requests: int
    input_tokens: int
    output_tokens: int
    cache_read_tokens: int
    cache_write_5m_tokens: int
    cache_write_1h_tokens: int
    upstream_cost_microdollars: int


class DayUsage(msgspec.Struct):
    """One UTC day's AI tokens in the period, every model together (days without requests are left out)."""

    day: date
    requests: int
    input_tokens: int
    output_tokens: int
    cache_read_tokens: int
    cache_write_5m_tokens: int
    cache_write_1h_tokens: int


class MessageCounts(msgspec.Struct):
    emails_sent: int = 0
    emails_received: int = 0
    signal_sent: int = 0
    signal_received: int = 0
    sms_sent: int = 0
    sms_received: int = 0


class OverageInfo(msgspec.Struct):
    """Billable units past the included tokens (see billing/overage.py for the rule) and their price at the
    plan's overage rates, in cents, exact (decimal strings). ``billed`` is false for complimentary plans."""

    input_units: int
    output_units: int
    input_cents: Decimal
    output_cents: Decimal
    total_cents: Decimal
    billed: bool


class UsageInfo(msgspec.Struct):
    """The caller's usage in the current billing period (the calendar month, UTC, without a Stripe
    period), computed from the usage events recorded so far."""

    plan: str | None
    period: Literal["billing_period", "calendar_month"]
    period_start: datetime
    period_end: datetime
    models: list[ModelUsage]
    days: list[DayUsage]
    tokens: int
    included_tokens: int
    included_used: int
    included_remaining: int
    overage: OverageInfo
    upstream_cost_microdollars: int
    upstream_cost_usd: Decimal
    messages: MessageCounts


class UsageAggregate(msgspec.Struct):
    """AI usage of one month, plan (the users' plan now; "none" without a subscription) and model."""

    month: str
    plan: str
    model: str | None
    users: int
    requests: int
    input_tokens: int
    output_tokens: int
    cache_read_tokens: int
    cache_write_5m_tokens: int
    cache_write_1h_tokens: int
    upstream_cost_microdollars: int
    upstream_cost_usd: Decimal


class MessageAggregate(msgspec.Struct):
    month: str
    plan: str
    users: int
    emails_sent: int
    emails_received: int
    signal_sent: int
    signal_received: int
    sms_sent: int
    sms_received: int


class OverageAggregate(msgspec.Struct):
    """Overage units recorded for Stripe, by month of the meter event and the period's plan."""

    month: str
    plan: str
    input_units_sent: int
    output_units_sent: int
    input_units_unsent: int  # pending or stale
    output_units_unsent: int
    sent_cents: Decimal


class AdminUsage(msgspec.Struct):
    month: str | None
    models: list[UsageAggregate]
    messages: list[MessageAggregate]
    overage: list[OverageAggregate]
