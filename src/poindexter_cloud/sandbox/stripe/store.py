"""The simulator's state (one per sandbox process, in memory): records, ids, clocks and the event log."""

from __future__ import annotations

import base64
import copy
import os
import time
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Final

# The version stripe-python 16 sends (``stripe.api_version``); objects are rendered in its shapes.
API_VERSION: Final = "2026-10-28.endive"

_ALPHANUMERIC: Final = bytes.maketrans(b"+/", b"aZ")


def new_id(prefix: str, length: int = 24) -> str:
    return prefix + base64.b64encode(os.urandom(length)).translate(_ALPHANUMERIC)[:length].decode()


def real_now() -> int:
    return int(time.time())


# Who caused a change: (request id, idempotency key) of the API request, or (None, None) for the hosted pages,
# test clocks and scheduled work (Stripe's ``event.request`` is null then too).
REQUEST: ContextVar[tuple[str | None, str | None]] = ContextVar(
    "stripe_sandbox_request", default=(None, None)
)


@dataclass(slots=True, eq=False)
class Customer:
    id: str
    created: int
    email: str | None = None
    name: str | None = None
    description: str | None = None
    phone: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    test_clock: str | None = None
    invoice_prefix: str = ""
    next_invoice_sequence: int = 1
    default_payment_method: str | None = None
    currency: str | None = None
    delinquent: bool = False
    deleted: bool = False
    offset: int = 0  # seconds added to real time by /_control/advance (customers without a test clock)


@dataclass(slots=True, eq=False)
class PaymentMethod:
    id: str
    created: int
    customer: str | None
    brand: str
    last4: str
    funding: str
    outcome: str  # "ok", or the decline code every charge gets ("card_declined" for ...0341)
    exp_month: int = 12
    exp_year: int = 2034


@dataclass(slots=True, eq=False)
class Product:
    id: str
    created: int
    updated: int
    name: str
    active: bool = True
    description: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    default_price: str | None = None
    unit_label: str | None = None
    url: str | None = None
    images: list[str] = field(default_factory=list)
    statement_descriptor: str | None = None
    tax_code: str | None = None
    deleted: bool = False


@dataclass(slots=True, eq=False)
class Price:
    id: str
    created: int
    product: str
    currency: str
    unit_amount_decimal: Decimal
    interval: str | None = None  # None: a one-time price
    interval_count: int = 1
    usage_type: str = "licensed"
    meter: str | None = None
    lookup_key: str | None = None
    nickname: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    active: bool = True
    tax_behavior: str = "unspecified"

    @property
    def metered(self) -> bool:
        return self.usage_type == "metered"


@dataclass(slots=True, eq=False)
class Meter:
    id: str
    created: int
    updated: int
    display_name: str
    event_name: str
    formula: str
    customer_key: str = "stripe_customer_id"
    value_key: str = "value"
    event_time_window: str | None = None
    status: str = "active"
    deactivated_at: int | None = None


@dataclass(slots=True, eq=False)
class MeterEvent:
    event_name: str
    identifier: str
    payload: dict[str, str]
    timestamp: int
    created: int
    meter: str
    customer: str
    value: Decimal


@dataclass(slots=True, eq=False)
class TestClock:
    id: str
    created: int
    frozen_time: int
    name: str | None = None
    status: str = "ready"
    deleted: bool = False


@dataclass(slots=True, eq=False)
class CheckoutLine:
    id: str
    price: str
    quantity: int | None


@dataclass(slots=True, eq=False)
class CheckoutSession:
    id: str
    created: int
    expires_at: int
    mode: str
    currency: str
    lines: list[CheckoutLine]
    base_url: str
    customer: str | None = None
    customer_email: str | None = None
    success_url: str | None = None
    cancel_url: str | None = None
    return_url: str | None = None
    client_reference_id: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    subscription_metadata: dict[str, str] = field(default_factory=dict)
    subscription_description: str | None = None
    status: str = "open"
    payment_status: str = "unpaid"
    subscription: str | None = None
    invoice: str | None = None
    customer_details: dict[str, Any] | None = None
    locale: str | None = None
    ui_mode: str = "hosted"
    completed_at: int | None = None


@dataclass(slots=True, eq=False)
class PortalSession:
    id: str
    created: int
    customer: str
    return_url: str | None
    base_url: str
    locale: str | None = None


@dataclass(slots=True, eq=False)
class SubscriptionItem:
    id: str
    created: int
    price: str
    quantity: int | None
    metadata: dict[str, str] = field(default_factory=dict)


@dataclass(slots=True, eq=False)
class Subscription:
    id: str
    created: int
    customer: str
    currency: str
    items: list[SubscriptionItem]
    anchor: int  # billing_cycle_anchor: periods are anchor + k intervals
    period_index: int = 0
    period_start: int = 0
    period_end: int = 0
    interval: str = "month"
    interval_count: int = 1
    status: str = "active"
    start_date: int = 0
    cancel_at_period_end: bool = False
    cancel_at: int | None = None
    canceled_at: int | None = None
    ended_at: int | None = None
    cancellation_reason: str | None = None
    cancellation_comment: str | None = None
    cancellation_feedback: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    description: str | None = None
    latest_invoice: str | None = None
    default_payment_method: str | None = None
    test_clock: str | None = None


@dataclass(slots=True, eq=False)
class InvoiceLine:
    id: str
    amount: int
    currency: str
    description: str
    period_start: int
    period_end: int
    price: str
    quantity: Decimal
    subscription: str | None
    subscription_item: str | None


@dataclass(slots=True, eq=False)
class Invoice:
    id: str
    created: int
    customer: str
    currency: str
    lines: list[InvoiceLine]
    billing_reason: str
    period_start: int
    period_end: int
    subscription: str | None = None
    subscription_metadata: dict[str, str] | None = None
    status: str = "draft"
    number: str | None = None
    attempt_count: int = 0
    attempted: bool = False
    next_payment_attempt: int | None = None
    amount_paid: int = 0
    finalized_at: int | None = None
    paid_at: int | None = None
    voided_at: int | None = None
    marked_uncollectible_at: int | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    test_clock: str | None = None
    customer_email: str | None = None
    customer_name: str | None = None
    last_decline: str | None = None

    @property
    def total(self) -> int:
        return sum(line.amount for line in self.lines)


@dataclass(slots=True, eq=False)
class Event:
    id: str
    type: str
    created: int
    data: dict[str, Any]
    request_id: str | None
    idempotency_key: str | None
    pending_webhooks: int = 0


@dataclass(slots=True, eq=False)
class WebhookEndpoint:
    id: str
    created: int
    url: str
    enabled_events: list[str]
    secret: str
    description: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    status: str = "enabled"
    api_version: str | None = None
    listed: bool = True  # False for the one configured from the environment (like `stripe listen`)

    def wants(self, event_type: str) -> bool:
        return self.status == "enabled" and ("*" in self.enabled_events or event_type in self.enabled_events)


@dataclass(slots=True, eq=False)
class MeterEventSession:
    id: str
    token: str
    created: int
    expires_at: int


@dataclass(slots=True)
class Replay:
    """A saved answer for an ``Idempotency-Key``."""

    fingerprint: tuple[str, str, bytes]
    status: int
    body: bytes
    saved_at: float


EventListener = Callable[[Event], None]

# How long Stripe keeps things that the simulator also expires.
IDEMPOTENCY_TTL: Final = 24 * 3600
IDENTIFIER_TTL: Final = 24 * 3600


class State:
    """Every record, keyed by id, in creation order. Handlers run on the event loop, so no locks."""

    def __init__(self) -> None:
        self.listeners: list[EventListener] = []
        self.reset()

    def reset(self) -> None:
        self.customers: dict[str, Customer] = {}
        self.payment_methods: dict[str, PaymentMethod] = {}
        self.products: dict[str, Product] = {}
        self.prices: dict[str, Price] = {}
        self.meters: dict[str, Meter] = {}
        self.meter_events: list[MeterEvent] = []
        self.identifiers: dict[str, float] = {}
        self.test_clocks: dict[str, TestClock] = {}
        self.checkout_sessions: dict[str, CheckoutSession] = {}
        self.portal_sessions: dict[str, PortalSession] = {}
        self.subscriptions: dict[str, Subscription] = {}
        self.invoices: dict[str, Invoice] = {}
        self.events: dict[str, Event] = {}
        self.webhook_endpoints: dict[str, WebhookEndpoint] = {}
        self.meter_event_sessions: dict[str, MeterEventSession] = {}
        self.idempotency: dict[str, Replay] = {}

    # -- time

    def clock_of(self, customer: Customer | None) -> TestClock | None:
        if customer is None or customer.test_clock is None:
            return None
        return self.test_clocks.get(customer.test_clock)

    def now(self, customer: Customer | None = None) -> int:
        """The customer's present: its test clock's frozen time, else real time (plus any control offset)."""
        clock = self.clock_of(customer)
        if clock is not None:
            return clock.frozen_time
        return real_now() + (customer.offset if customer is not None else 0)

    # -- lookups

    def customer(self, customer_id: str) -> Customer | None:
        found = self.customers.get(customer_id)
        return found if found is not None and not found.deleted else None

    def find(self, object_id: str) -> object | None:
        """Any record by id (for ``expand[]``)."""
        for table in (
            self.customers,
            self.products,
            self.prices,
            self.subscriptions,
            self.invoices,
            self.payment_methods,
            self.meters,
            self.test_clocks,
            self.checkout_sessions,
            self.events,
        ):
            found = table.get(object_id)
            if found is not None:
                return found
        return None

    def price_by_lookup_key(self, lookup_key: str) -> Price | None:
        for price in self.prices.values():
            if price.active and price.lookup_key == lookup_key:
                return price
        return None

    # -- events

    def emit(self, kind: str, obj: dict[str, Any], *, at: int | None = None, previous: Any = None) -> Event:
        request_id, idempotency_key = REQUEST.get()
        data: dict[str, Any] = {"object": copy.deepcopy(obj)}  # a snapshot: later changes must not leak in
        if previous:
            data["previous_attributes"] = copy.deepcopy(previous)
        event = Event(
            new_id("evt_"), kind, at if at is not None else real_now(), data, request_id, idempotency_key
        )
        self.events[event.id] = event
        for listener in self.listeners:
            listener(event)
        return event

    # -- idempotency

    def replay(self, key: str) -> Replay | None:
        saved = self.idempotency.get(key)
        if saved is not None and time.time() - saved.saved_at > IDEMPOTENCY_TTL:
            del self.idempotency[key]
            return None
        return saved

    def save_replay(self, key: str, replay: Replay) -> None:
        self.idempotency[key] = replay

    def identifier_seen(self, identifier: str) -> bool:
        seen = self.identifiers.get(identifier)
        return seen is not None and time.time() - seen < IDENTIFIER_TTL

    def counts(self) -> dict[str, Any]:
        def by_status(records: Any) -> dict[str, int]:
            out: dict[str, int] = {}
            for record in records:
                out[record.status] = out.get(record.status, 0) + 1
            return out

        return {
            "customers": sum(1 for c in self.customers.values() if not c.deleted),
            "payment_methods": len(self.payment_methods),
            "products": sum(1 for p in self.products.values() if not p.deleted),
            "prices": len(self.prices),
            "meters": len(self.meters),
            "meter_events": len(self.meter_events),
            "test_clocks": sum(1 for c in self.test_clocks.values() if not c.deleted),
            "checkout_sessions": by_status(self.checkout_sessions.values()),
            "portal_sessions": len(self.portal_sessions),
            "subscriptions": by_status(self.subscriptions.values()),
            "invoices": by_status(self.invoices.values()),
            "events": len(self.events),
            "webhook_endpoints": len(self.webhook_endpoints),
            "idempotency_keys": len(self.idempotency),
        }


STATE: Final = State()
