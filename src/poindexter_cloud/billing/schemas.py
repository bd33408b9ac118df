"""The billing API contract."""

from __future__ import annotations

from datetime import datetime
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
