"""What Stripe Billing does on its own: cards, subscriptions and their periods, invoices, payment attempts and
retries, meter aggregation, and moving time forward (test clocks, the advance control, real time).

Periods: a subscription's billing cycle anchor is its start; period k runs from anchor + k intervals to anchor
+ k + 1 intervals (months keep the anchor's day, clamped to the month's last day, as Stripe does).

Invoices: the first one (``subscription_create``) bills the licensed prices for the first period. When a
period ends, one ``subscription_cycle`` invoice bills the licensed prices for the new period (in advance) and
the metered prices for the period that ended (in arrears: the meter's aggregate over [start, end) times the
price's ``unit_amount_decimal``, each line rounded to the nearest cent, halves up). Its
``period_start``/``period_end`` are the period that ended. It is created, finalized and charged at once
(Stripe waits about an hour between creation and finalization; the events come in the same order).

Payment: the subscription's default payment method, else the customer's. A failed attempt leaves the invoice
``open`` with ``next_payment_attempt`` 3, then 5, then 7 days later (a fixed schedule like Stripe's custom
retry schedule; Stripe's Smart Retries choose their own times), the subscription ``past_due``; a later
success makes it ``active`` again. After the fourth failure the subscription is canceled (the "cancel the
subscription" setting for exhausted retries).
"""

from __future__ import annotations

import calendar
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Final

from . import render
from .errors import StripeError
from .store import (
    CheckoutSession,
    Customer,
    Invoice,
    InvoiceLine,
    PaymentMethod,
    Price,
    State,
    Subscription,
    SubscriptionItem,
    new_id,
)

DAY: Final = 86400
RETRY_DAYS: Final = (3, 5, 7)
_MAX_STEPS: Final = 10_000

# ---------------------------------------------------------------------------------------------- cards


@dataclass(frozen=True, slots=True)
class TestCard:
    brand: str
    funding: str
    attach_decline: str | None = None  # refused when entered (and nothing is saved)
    charge_decline: str | None = None  # saved, but every charge is declined


TEST_CARDS: Final = {
    "4242424242424242": TestCard("visa", "credit"),
    "4000056655665556": TestCard("visa", "debit"),
    "5555555555554444": TestCard("mastercard", "credit"),
    "378282246310005": TestCard("amex", "credit"),
    "4000000000000341": TestCard("visa", "credit", charge_decline="generic_decline"),
    "4000000000000002": TestCard("visa", "credit", attach_decline="generic_decline"),
    "4000000000009995": TestCard("visa", "credit", attach_decline="insufficient_funds"),
}
_DECLINE_MESSAGES: Final = {
    "generic_decline": "Your card was declined.",
    "insufficient_funds": "Your card has insufficient funds.",
}


def card_error(decline_code: str) -> StripeError:
    return StripeError(
        402,
        _DECLINE_MESSAGES.get(decline_code, "Your card was declined."),
        kind="card_error",
        code="card_declined",
        decline_code=decline_code,
    )


def read_card(number: str) -> TestCard:
    """The test card a number names (spaces and dashes ignored); anything else is refused like Stripe does."""
    digits = re.sub(r"[\s-]", "", number)
    card = TEST_CARDS.get(digits)
    if card is None:
        raise StripeError(402, "Your card number is incorrect.", kind="card_error", code="incorrect_number")
    return card


def attach_card(state: State, customer: Customer, number: str, at: int) -> PaymentMethod:
    card = read_card(number)
    if card.attach_decline is not None:
        raise card_error(card.attach_decline)
    digits = re.sub(r"[\s-]", "", number)
    outcome = card.charge_decline or "ok"
    pm = PaymentMethod(new_id("pm_"), at, customer.id, card.brand, digits[-4:], card.funding, outcome)
    state.payment_methods[pm.id] = pm
    state.emit("payment_method.attached", render.payment_method(pm), at=at)
    return pm


def set_default_card(state: State, customer: Customer, pm: PaymentMethod, at: int) -> None:
    previous = customer.default_payment_method
    customer.default_payment_method = pm.id
    state.emit(
        "customer.updated",
        render.customer(customer),
        at=at,
        previous={"invoice_settings": {"default_payment_method": previous}},
    )


# ---------------------------------------------------------------------------------------------- periods


def add_interval(anchor: int, interval: str, count: int, n: int) -> int:
    if interval == "day":
        return anchor + n * count * DAY
    if interval == "week":
        return anchor + n * count * 7 * DAY
    months = n * count * (12 if interval == "year" else 1)
    start = datetime.fromtimestamp(anchor, UTC)
    index = start.year * 12 + start.month - 1 + months
    year, month = divmod(index, 12)
    day = min(start.day, calendar.monthrange(year, month + 1)[1])
    return int(start.replace(year=year, month=month + 1, day=day).timestamp())


def set_period(sub: Subscription, index: int) -> None:
    sub.period_index = index
    sub.period_start = add_interval(sub.anchor, sub.interval, sub.interval_count, index)
    sub.period_end = add_interval(sub.anchor, sub.interval, sub.interval_count, index + 1)


# ---------------------------------------------------------------------------------------------- meters


def usage(state: State, meter_id: str, customer_id: str, start: int, end: int) -> Decimal:
    """The meter's aggregate for one customer over [start, end): sum, count or last value."""
    meter = state.meters.get(meter_id)
    if meter is None:
        return Decimal(0)
    events = [
        e
        for e in state.meter_events
        if e.meter == meter_id and e.customer == customer_id and start <= e.timestamp < end
    ]
    if meter.formula == "count":
        return Decimal(len(events))
    if meter.formula == "last":
        if not events:
            return Decimal(0)
        return max(enumerate(events), key=lambda pair: (pair[1].timestamp, pair[0]))[1].value
    return sum((e.value for e in events), Decimal(0))


# ---------------------------------------------------------------------------------------------- invoices


def _line_description(state: State, p: Price, quantity: Decimal) -> str:
    name = state.products[p.product].name
    shown = f"{quantity.normalize():,f}" if quantity else "0"
    unit = render.money(p.unit_amount_decimal, p.currency)
    interval = render.interval_text(p.interval or "month", p.interval_count)
    return f"{shown} \N{MULTIPLICATION SIGN} {name} (at {unit} / {interval})"


def build_invoice(
    state: State,
    sub: Subscription,
    reason: str,
    at: int,
    *,
    licensed: tuple[int, int] | None,
    metered: tuple[int, int] | None,
) -> Invoice:
    """A draft invoice for ``sub``: licensed items over ``licensed``, metered usage over ``metered``."""
    customer = state.customers[sub.customer]
    inv = Invoice(
        new_id("in_"),
        at,
        customer.id,
        sub.currency,
        [],
        reason,
        period_start=metered[0] if metered else at,
        period_end=metered[1] if metered else at,
        subscription=sub.id,
        subscription_metadata=dict(sub.metadata) or None,
        test_clock=customer.test_clock,
        customer_email=customer.email,
        customer_name=customer.name,
    )
    for item in sub.items:
        p = state.prices[item.price]
        if p.metered:
            if metered is None or p.meter is None:
                continue
            quantity = max(usage(state, p.meter, customer.id, *metered), Decimal(0))
            period = metered
        else:
            if licensed is None:
                continue
            quantity = Decimal(item.quantity or 0)
            period = licensed
        inv.lines.append(
            InvoiceLine(
                new_id("il_"),
                render.round_amount(quantity * p.unit_amount_decimal),
                p.currency,
                _line_description(state, p, quantity),
                period[0],
                period[1],
                p.id,
                quantity,
                sub.id,
                item.id,
            )
        )
    state.invoices[inv.id] = inv
    return inv


def finalize(state: State, inv: Invoice, at: int) -> None:
    customer = state.customers[inv.customer]
    inv.status = "open"
    inv.finalized_at = at
    inv.number = f"{customer.invoice_prefix}-{customer.next_invoice_sequence:04d}"
    customer.next_invoice_sequence += 1
    state.emit("invoice.finalized", render.invoice(state, inv), at=at)


def issue(state: State, inv: Invoice, at: int) -> None:
    """Announce a new draft, finalize it and collect it."""
    state.emit("invoice.created", render.invoice(state, inv), at=at)
    finalize(state, inv, at)
    collect(state, inv, at)


def _payment_method_for(state: State, inv: Invoice) -> PaymentMethod | None:
    sub = state.subscriptions.get(inv.subscription or "")
    customer = state.customers[inv.customer]
    pm_id = (sub.default_payment_method if sub is not None else None) or customer.default_payment_method
    return state.payment_methods.get(pm_id or "")


def collect(state: State, inv: Invoice, at: int) -> bool:
    """One payment attempt for an open invoice; True when it is paid."""
    if inv.status != "open":
        return inv.status == "paid"
    if inv.total <= 0:
        mark_paid(state, inv, at)
        return True
    pm = _payment_method_for(state, inv)
    inv.attempted = True
    inv.attempt_count += 1
    if pm is not None and pm.outcome == "ok":
        inv.next_payment_attempt = None
        mark_paid(state, inv, at)
        return True
    inv.last_decline = pm.outcome if pm is not None else "no_payment_method"
    retries_left = inv.attempt_count <= len(RETRY_DAYS)
    inv.next_payment_attempt = at + RETRY_DAYS[inv.attempt_count - 1] * DAY if retries_left else None
    state.emit("invoice.payment_failed", render.invoice(state, inv), at=at)
    customer = state.customers[inv.customer]
    customer.delinquent = True
    sub = state.subscriptions.get(inv.subscription or "")
    if sub is not None and sub.status in ("active", "past_due"):
        if not retries_left:
            cancel(state, sub, at, reason="payment_failed")
        elif sub.status == "active":
            sub.status = "past_due"
            state.emit(
                "customer.subscription.updated",
                render.subscription(state, sub),
                at=at,
                previous={"status": "active"},
            )
    return False


def mark_paid(state: State, inv: Invoice, at: int) -> None:
    inv.status = "paid"
    inv.amount_paid = inv.total
    inv.paid_at = at
    inv.next_payment_attempt = None
    snapshot = render.invoice(state, inv)
    state.emit("invoice.paid", snapshot, at=at)
    state.emit("invoice.payment_succeeded", snapshot, at=at)
    customer = state.customers[inv.customer]
    still_open = [
        i for i in state.invoices.values() if i.customer == customer.id and i.status == "open" and i.attempted
    ]
    if not still_open:
        customer.delinquent = False
    sub = state.subscriptions.get(inv.subscription or "")
    if sub is not None and sub.status == "past_due" and not any(i.subscription == sub.id for i in still_open):
        sub.status = "active"
        state.emit(
            "customer.subscription.updated",
            render.subscription(state, sub),
            at=at,
            previous={"status": "past_due"},
        )


# ---------------------------------------------------------------------------------------------- subscriptions


def check_prices(state: State, prices: list[Price], param: str) -> tuple[str, str, int]:
    """(currency, interval, interval_count) shared by a subscription's recurring prices."""
    for p in prices:
        if p.interval is None:
            raise StripeError(
                400,
                f"The price specified is set to `type=one_time` but this field only accepts prices with "
                f"`type=recurring`: {p.id}",
                param=param,
            )
        if not p.active:
            raise StripeError(400, f"The price specified is inactive: {p.id}", param=param)
    first = prices[0]
    for p in prices[1:]:
        if p.currency != first.currency:
            raise StripeError(400, "All prices on a subscription must have the same `currency`.", param=param)
        if (p.interval, p.interval_count) != (first.interval, first.interval_count):
            raise StripeError(
                400,
                "The prices on a subscription must all have the same billing interval "
                "(`recurring[interval]` and `recurring[interval_count]`).",
                param=param,
            )
    assert first.interval is not None
    return first.currency, first.interval, first.interval_count


def start_subscription(
    state: State,
    customer: Customer,
    lines: list[tuple[Price, int | None]],
    at: int,
    *,
    payment_method: str | None,
    metadata: dict[str, str],
    description: str | None = None,
) -> tuple[Subscription, Invoice]:
    """An active subscription from ``at`` and its first invoice, collected with ``payment_method``.

    The caller has already checked that the card can be charged (Checkout refuses declined cards)."""
    currency, interval, count = check_prices(state, [p for p, _ in lines], "line_items")
    sub = Subscription(
        new_id("sub_"),
        at,
        customer.id,
        currency,
        [SubscriptionItem(new_id("si_"), at, p.id, None if p.metered else (q or 1)) for p, q in lines],
        at,
        interval=interval,
        interval_count=count,
        start_date=at,
        metadata=metadata,
        description=description,
        default_payment_method=payment_method,
        test_clock=customer.test_clock,
    )
    set_period(sub, 0)
    state.subscriptions[sub.id] = sub
    if customer.currency is None:
        customer.currency = currency
    inv = build_invoice(
        state, sub, "subscription_create", at, licensed=(sub.period_start, sub.period_end), metered=None
    )
    sub.latest_invoice = inv.id
    state.emit("customer.subscription.created", render.subscription(state, sub), at=at)
    issue(state, inv, at)
    return sub, inv


def items_snapshot(state: State, sub: Subscription) -> dict[str, Any]:
    snapshot: dict[str, Any] = render.subscription(state, sub)["items"]
    return snapshot


def next_change(sub: Subscription) -> int:
    """When the subscription next changes by itself: its scheduled cancellation or its period's end."""
    return min(sub.period_end, sub.cancel_at) if sub.cancel_at is not None else sub.period_end


def renew(state: State, sub: Subscription) -> None:
    """Close the period that just ended: cancel if asked to (usage up to then is invoiced), else start the
    next period and invoice it."""
    at = next_change(sub)
    if sub.cancel_at is not None and sub.cancel_at <= sub.period_end:
        if any(state.prices[i.price].metered for i in sub.items):
            inv = build_invoice(
                state, sub, "subscription_cycle", at, licensed=None, metered=(sub.period_start, at)
            )
            sub.latest_invoice = inv.id
            issue(state, inv, at)
        cancel(state, sub, at, reason=sub.cancellation_reason or "cancellation_requested")
        return
    ended = (sub.period_start, sub.period_end)
    previous = {"items": items_snapshot(state, sub), "latest_invoice": sub.latest_invoice}
    set_period(sub, sub.period_index + 1)
    inv = build_invoice(
        state, sub, "subscription_cycle", at, licensed=(sub.period_start, sub.period_end), metered=ended
    )
    sub.latest_invoice = inv.id
    state.emit("invoice.created", render.invoice(state, inv), at=at)
    state.emit("customer.subscription.updated", render.subscription(state, sub), at=at, previous=previous)
    finalize(state, inv, at)
    collect(state, inv, at)


def cancel(
    state: State,
    sub: Subscription,
    at: int,
    *,
    reason: str = "cancellation_requested",
    invoice_now: bool = False,
) -> None:
    if sub.status == "canceled":
        return
    if invoice_now and any(state.prices[i.price].metered for i in sub.items):
        inv = build_invoice(
            state, sub, "subscription_cycle", at, licensed=None, metered=(sub.period_start, at)
        )
        sub.latest_invoice = inv.id
        issue(state, inv, at)
    sub.status = "canceled"
    sub.ended_at = at
    if sub.canceled_at is None or reason == "payment_failed" or sub.cancel_at is None or sub.cancel_at > at:
        sub.canceled_at = at
    sub.cancellation_reason = reason
    state.emit("customer.subscription.deleted", render.subscription(state, sub), at=at)


def apply_cancel_at(sub: Subscription, cancel_at: int | None, at: int) -> None:
    """Schedule (None: withdraw) the cancellation; at the period's end it is ``cancel_at_period_end``."""
    sub.cancel_at = cancel_at
    sub.cancel_at_period_end = cancel_at is not None and cancel_at == sub.period_end
    sub.canceled_at = at if cancel_at is not None else None
    sub.cancellation_reason = "cancellation_requested" if cancel_at is not None else None


def set_cancel_at_period_end(state: State, sub: Subscription, flag: bool, at: int) -> None:
    previous = render.cancellation(sub)
    apply_cancel_at(sub, sub.period_end if flag else None, at)
    state.emit("customer.subscription.updated", render.subscription(state, sub), at=at, previous=previous)


def swap_price(
    state: State, sub: Subscription, item: SubscriptionItem, new_price: Price, at: int
) -> Invoice | None:
    """Put ``new_price`` on one item, without events. Prorations are not computed; a different interval
    restarts the billing cycle now and returns the (draft) invoice for the new period, to be issued."""
    item.price = new_price.id
    if new_price.metered:
        item.quantity = None
    elif item.quantity is None:
        item.quantity = 1
    if (new_price.interval, new_price.interval_count) == (sub.interval, sub.interval_count):
        return None
    assert new_price.interval is not None
    ended = (sub.period_start, at)
    sub.interval, sub.interval_count = new_price.interval, new_price.interval_count
    sub.anchor = at
    set_period(sub, 0)
    if sub.cancel_at_period_end:
        sub.cancel_at = sub.period_end
    inv = build_invoice(
        state, sub, "subscription_update", at, licensed=(sub.period_start, sub.period_end), metered=ended
    )
    sub.latest_invoice = inv.id
    return inv


def change_price(state: State, sub: Subscription, item: SubscriptionItem, new_price: Price, at: int) -> None:
    previous: dict[str, Any] = {"items": items_snapshot(state, sub), "latest_invoice": sub.latest_invoice}
    inv = swap_price(state, sub, item, new_price, at)
    after = render.subscription(state, sub)
    if after["latest_invoice"] == previous["latest_invoice"]:
        del previous["latest_invoice"]
    state.emit("customer.subscription.updated", after, at=at, previous=previous)
    if inv is not None:
        issue(state, inv, at)


def update_card(state: State, customer: Customer, number: str, at: int) -> PaymentMethod:
    """A new default card (customer and its live subscriptions); open invoices are retried with it at once."""
    pm = attach_card(state, customer, number, at)
    set_default_card(state, customer, pm, at)
    for sub in state.subscriptions.values():
        if sub.customer == customer.id and sub.status not in ("canceled", "incomplete_expired"):
            sub.default_payment_method = pm.id
    for inv in list(state.invoices.values()):
        if inv.customer == customer.id and inv.status == "open" and inv.attempted:
            collect(state, inv, at)
    return pm


# ---------------------------------------------------------------------------------------------- checkout


def complete_checkout(
    state: State, session: CheckoutSession, card_number: str, email: str | None, name: str | None
) -> None:
    """Pay a Checkout Session. A refused card raises ``StripeError`` (card_error) and changes nothing."""
    customer = state.customer(session.customer or "")
    at = state.now(customer)
    card = read_card(card_number)
    lines = [(state.prices[line.price], line.quantity) for line in session.lines]
    total = sum(render.round_amount(p.unit_amount_decimal * (q or 0)) for p, q in lines)
    decline = card.attach_decline or (card.charge_decline if total > 0 else None)
    if decline is not None:
        raise card_error(decline)
    if customer is None:
        customer = create_customer(state, at, email=email or session.customer_email, name=name)
    pm = attach_card(state, customer, card_number, at)
    set_default_card(state, customer, pm, at)
    sub, inv = start_subscription(
        state,
        customer,
        lines,
        at,
        payment_method=pm.id,
        metadata=dict(session.subscription_metadata),
        description=session.subscription_description,
    )
    session.status = "complete"
    session.payment_status = "paid" if total > 0 else "no_payment_required"
    session.customer = customer.id
    session.subscription = sub.id
    session.invoice = inv.id
    session.completed_at = at
    session.customer_details = {
        "address": None,
        "business_name": None,
        "email": customer.email,
        "individual_name": None,
        "name": customer.name,
        "phone": None,
        "tax_exempt": "none",
        "tax_ids": [],
    }
    state.emit("checkout.session.completed", render.checkout_session(state, session), at=at)


def create_customer(
    state: State,
    at: int,
    *,
    email: str | None = None,
    name: str | None = None,
    description: str | None = None,
    phone: str | None = None,
    metadata: dict[str, str] | None = None,
    test_clock: str | None = None,
    invoice_prefix: str | None = None,
) -> Customer:
    customer = Customer(
        new_id("cus_", 14),
        at,
        email=email,
        name=name,
        description=description,
        phone=phone,
        metadata=metadata or {},
        test_clock=test_clock,
        invoice_prefix=invoice_prefix or new_id("", 8).upper(),
    )
    state.customers[customer.id] = customer
    state.emit("customer.created", render.customer(customer), at=at)
    return customer


# ---------------------------------------------------------------------------------------------- time


def run_due(state: State, customers: list[Customer], until: int) -> None:
    """Everything due up to ``until`` for these customers, in time order: period ends and payment retries."""
    ids = {c.id for c in customers}
    for _ in range(_MAX_STEPS):
        best: tuple[int, int, Subscription | Invoice] | None = None
        for sub in state.subscriptions.values():
            change = next_change(sub)
            live = sub.customer in ids and sub.status in ("active", "past_due")
            if live and change <= until and (best is None or change < best[0]):
                best = (change, 0, sub)
        for inv in state.invoices.values():
            due = inv.next_payment_attempt
            if inv.customer not in ids or inv.status != "open" or due is None or due > until:
                continue
            if best is None or (due, 1) < best[:2]:
                best = (due, 1, inv)
        if best is None:
            return
        at, _, record = best
        if isinstance(record, Subscription):
            renew(state, record)
        else:
            collect(state, record, at)


def tick(state: State) -> None:
    """Real time's due work: expired Checkout Sessions, periods and retries of customers without clocks."""
    for session in state.checkout_sessions.values():
        now = state.now(state.customer(session.customer or ""))
        if session.status == "open" and session.expires_at <= now:
            session.status = "expired"
            state.emit("checkout.session.expired", render.checkout_session(state, session), at=now)
    waiting = {
        s.customer
        for s in state.subscriptions.values()
        if s.status in ("active", "past_due") and s.test_clock is None
    }
    for customer_id in waiting:
        customer = state.customers[customer_id]
        if customer.test_clock is None:
            run_due(state, [customer], state.now(customer))


def advance_clock_limit(state: State, clock_id: str, frozen_time: int) -> tuple[int, str] | None:
    """How far a test clock may go: two intervals of its shortest subscription interval (Stripe's rule), as
    (latest frozen time, the interval's name)."""
    limit: tuple[int, str] | None = None
    for sub in state.subscriptions.values():
        if sub.test_clock == clock_id and sub.status in ("active", "past_due"):
            until = add_interval(frozen_time, sub.interval, sub.interval_count, 2)
            if limit is None or until < limit[0]:
                limit = (until, sub.interval)
    return limit
