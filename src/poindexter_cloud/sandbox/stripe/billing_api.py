"""Test clocks, Checkout Sessions, portal sessions, subscriptions and invoices."""

from __future__ import annotations

import asyncio
import re
from typing import Any, Final

from . import billing, render
from .api import (
    SANDBOX_ONLY,
    Call,
    api,
    check_email,
    created_filter,
    get_clock,
    get_customer,
    get_invoice,
    get_price,
    get_subscription,
    newest,
    state,
)
from .errors import StripeError, invalid, missing, no_such
from .forms import apply_metadata
from .store import (
    REQUEST,
    CheckoutLine,
    CheckoutSession,
    Invoice,
    PortalSession,
    Price,
    Subscription,
    SubscriptionItem,
    TestClock,
    new_id,
    real_now,
)

CHECKOUT_TTL: Final = 24 * 3600

# ---------------------------------------------------------------------------------------------- test clocks


@api("POST", "/v1/test_helpers/test_clocks")
def create_test_clock(call: Call, _: re.Match[str]) -> dict[str, Any]:
    p = call.params
    frozen_time = p.integer("frozen_time", required=True, minimum=0)
    name = p.string("name", max_length=300)
    customer_id = p.string("customer")
    paths = p.expand()
    p.finish()
    customer = get_customer(customer_id, "customer", 400) if customer_id else None
    if customer is not None and customer.test_clock is not None:
        raise invalid("customer", "This customer is already attached to a test clock.")
    assert frozen_time is not None
    clock = TestClock(new_id("clock_"), real_now(), frozen_time, name or None)
    state.test_clocks[clock.id] = clock
    if customer is not None:
        customer.test_clock = clock.id
    state.emit("test_helpers.test_clock.created", render.test_clock(clock))
    return render.expand(state, render.test_clock(clock), paths, version=call.version)


@api("GET", "/v1/test_helpers/test_clocks/{id}")
def retrieve_test_clock(call: Call, m: re.Match[str]) -> dict[str, Any]:
    found = state.test_clocks.get(m.group(1))
    if found is None:
        raise no_such("test_helpers.test_clock", m.group(1))
    return call.out(render.test_clock(found))


@api("GET", "/v1/test_helpers/test_clocks")
def list_test_clocks(call: Call, _: re.Match[str]) -> dict[str, Any]:
    records = [c for c in newest(state.test_clocks.values()) if not c.deleted]
    page = render.paginate(
        call.params, records, lambda c: c.id, render.test_clock, "/v1/test_helpers/test_clocks", "test_clock"
    )
    return call.out(page)


@api("DELETE", "/v1/test_helpers/test_clocks/{id}")
def delete_test_clock(call: Call, m: re.Match[str]) -> dict[str, Any]:
    clock = get_clock(m.group(1))
    call.params.finish()
    clock.deleted = True
    for customer in state.customers.values():
        if customer.test_clock == clock.id:
            customer.deleted = True
    for sub in state.subscriptions.values():
        if sub.test_clock == clock.id and sub.status != "canceled":
            sub.status = "canceled"
            sub.ended_at = sub.canceled_at = clock.frozen_time
    return render.deleted(clock.id, "test_helpers.test_clock")


@api("POST", "/v1/test_helpers/test_clocks/{id}/advance")
def advance_test_clock(call: Call, m: re.Match[str]) -> dict[str, Any]:
    clock = get_clock(m.group(1))
    p = call.params
    frozen_time = p.integer("frozen_time", required=True, minimum=0)
    paths = p.expand()
    p.finish()
    assert frozen_time is not None
    if clock.status == "advancing":
        raise StripeError(400, "The test clock is already advancing; wait until its status is `ready`.")
    if frozen_time <= clock.frozen_time:
        raise invalid(
            "frozen_time", "The new frozen_time must be after the test clock's current frozen_time."
        )
    limit = billing.advance_clock_limit(state, clock.id, clock.frozen_time)
    if limit is not None and frozen_time > limit[0]:
        raise invalid(
            "frozen_time",
            "Test clocks can only be advanced up to two intervals ahead of the current frozen_time, based on "
            f"the shortest subscription interval ({limit[1]}): at most {limit[0]}.",
        )
    clock.status = "advancing"
    state.emit("test_helpers.test_clock.advancing", render.test_clock(clock))
    answer = render.expand(state, render.test_clock(clock), paths, version=call.version)
    schedule_advance(clock, frozen_time)
    return answer


def schedule_advance(clock: TestClock, frozen_time: int) -> None:
    """Advance in a task after the answer, as Stripe does (status ``advancing`` until ``ready``)."""

    async def run() -> None:
        REQUEST.set((None, None))
        await asyncio.sleep(0.05)
        if clock.deleted:
            return
        try:
            customers = [c for c in state.customers.values() if c.test_clock == clock.id and not c.deleted]
            clock.frozen_time = frozen_time
            billing.run_due(state, customers, frozen_time)
        finally:
            clock.status = "ready"
            state.emit("test_helpers.test_clock.ready", render.test_clock(clock))

    task = asyncio.get_running_loop().create_task(run())
    _BACKGROUND.add(task)
    task.add_done_callback(_BACKGROUND.discard)


_BACKGROUND: set[asyncio.Task[None]] = set()


# ---------------------------------------------------------------------------------------------- checkout

CHECKOUT_IGNORED: Final = (
    "adaptive_pricing",
    "after_expiration",
    "allow_promotion_codes",
    "allowed_payment_method_types",
    "automatic_tax",
    "billing_address_collection",
    "branding_settings",
    "consent_collection",
    "custom_fields",
    "custom_text",
    "customer_account",
    "customer_creation",
    "customer_update",
    "discounts",
    "excluded_payment_method_types",
    "integration_identifier",
    "invoice_creation",
    "managed_payments",
    "name_collection",
    "optional_items",
    "origin_context",
    "payment_method_collection",
    "payment_method_configuration",
    "payment_method_options",
    "payment_method_types",
    "permissions",
    "phone_number_collection",
    "redirect_on_completion",
    "saved_payment_method_options",
    "shipping_address_collection",
    "shipping_options",
    "submit_type",
    "tax_id_collection",
    "wallet_options",
    "currency",
)


@api("POST", "/v1/checkout/sessions")
def create_checkout_session(call: Call, _: re.Match[str]) -> dict[str, Any]:
    p = call.params
    p.seen.update(CHECKOUT_IGNORED)
    mode = p.enum("mode", ("payment", "setup", "subscription"), required=True)
    if mode != "subscription":
        raise invalid("mode", f"{SANDBOX_ONLY} mode={mode}; only mode=subscription.")
    ui_mode = p.enum("ui_mode", ("custom", "embedded", "hosted", "elements", "embedded_page", "form"))
    if ui_mode not in (None, "hosted"):
        raise invalid("ui_mode", f"{SANDBOX_ONLY} ui_mode={ui_mode}; only the hosted page.")
    for unsupported in ("payment_intent_data", "setup_intent_data", "payment_method_data", "return_url"):
        if p.has(unsupported):
            raise invalid(
                unsupported, f"`{unsupported}` is not allowed with mode=subscription and ui_mode=hosted."
            )
    customer_id = p.string("customer")
    customer_email = p.string("customer_email", max_length=800)
    check_email(customer_email, "customer_email")
    if customer_id and customer_email:
        raise StripeError(400, "You may only specify one of these parameters: customer, customer_email.")
    customer = get_customer(customer_id, "customer", 400) if customer_id else None
    success_url = p.string("success_url", max_length=5000)
    cancel_url = p.string("cancel_url", max_length=5000)
    client_reference_id = p.string("client_reference_id", max_length=200)
    locale = p.string("locale")
    metadata = apply_metadata({}, p.metadata())
    expires_at = p.integer("expires_at", minimum=0)
    sub_data = p.obj(
        "subscription_data",
        ignored=(
            "application_fee_percent",
            "billing_mode",
            "default_tax_rates",
            "invoice_settings",
            "on_behalf_of",
            "proration_behavior",
            "transfer_data",
            "trial_settings",
        ),
    )
    sub_metadata: dict[str, str] = {}
    sub_description = None
    if sub_data is not None:
        sub_metadata = apply_metadata({}, sub_data.metadata())
        sub_description = sub_data.string("description", max_length=500)
        for unsupported in ("trial_period_days", "trial_end", "billing_cycle_anchor"):
            if sub_data.has(unsupported):
                raise invalid(sub_data.name(unsupported), f"{SANDBOX_ONLY} trials or custom billing anchors.")
        sub_data.finish()
    items = p.objects("line_items", ignored=("adjustable_quantity", "dynamic_tax_rates", "tax_rates"))
    if not items:
        raise missing("line_items")
    lines: list[CheckoutLine] = []
    prices: list[Price] = []
    for item in items:
        if item.has("price_data"):
            raise invalid(item.name("price_data"), f"{SANDBOX_ONLY} `price_data`; create the price first.")
        price = get_price(item.req("price"), item.name("price"), 400)
        quantity = item.integer("quantity", minimum=0)
        item.metadata()
        item.finish()
        if price.metered and quantity is not None:
            raise invalid(
                item.name("quantity"),
                f"Quantity should not be specified where usage_type is `metered`. Remove quantity from "
                f"`{item.prefix}`.",
            )
        if not price.metered and quantity is None:
            raise missing(item.name("quantity"))
        lines.append(CheckoutLine(new_id("li_"), price.id, quantity))
        prices.append(price)
    currency = billing.check_prices(state, prices, "line_items")[0]
    paths = p.expand()
    p.finish()
    now = state.now(customer) if customer is not None else real_now()
    if expires_at is not None and not now + 1800 <= expires_at <= now + CHECKOUT_TTL:
        raise invalid("expires_at", "expires_at must be between 30 minutes and 24 hours from now.")
    session = CheckoutSession(
        "cs_test_" + new_id("", 58),
        now,
        expires_at or now + CHECKOUT_TTL,
        "subscription",
        currency,
        lines,
        call.base_url,
        customer=customer.id if customer is not None else None,
        customer_email=customer_email or None,
        success_url=success_url or None,
        cancel_url=cancel_url or None,
        client_reference_id=client_reference_id or None,
        metadata=metadata,
        subscription_metadata=sub_metadata,
        subscription_description=sub_description or None,
        locale=locale or None,
    )
    state.checkout_sessions[session.id] = session
    return render.expand(
        state, render.checkout_session(state, session), paths, _checkout_include, call.version
    )


def _checkout_include(obj: dict[str, Any], key: str) -> Any:
    if key == "line_items" and obj.get("object") == "checkout.session":
        session = state.checkout_sessions[obj["id"]]
        url = f"/v1/checkout/sessions/{session.id}/line_items"
        return render.list_object(render.checkout_items(state, session), url, False)
    return None


def get_checkout_session(session_id: str) -> CheckoutSession:
    found = state.checkout_sessions.get(session_id)
    if found is None:
        raise no_such("checkout.session", session_id)
    return found


@api("GET", "/v1/checkout/sessions/{id}")
def retrieve_checkout_session(call: Call, m: re.Match[str]) -> dict[str, Any]:
    session = get_checkout_session(m.group(1))
    return call.out(render.checkout_session(state, session), _checkout_include)


@api("GET", "/v1/checkout/sessions/{id}/line_items")
def checkout_line_items(call: Call, m: re.Match[str]) -> dict[str, Any]:
    session = get_checkout_session(m.group(1))
    items = render.checkout_items(state, session)
    url = f"/v1/checkout/sessions/{session.id}/line_items"
    return call.out(render.paginate(call.params, items, lambda x: x["id"], lambda x: x, url, "item"))


@api("POST", "/v1/checkout/sessions/{id}/expire")
def expire_checkout_session(call: Call, m: re.Match[str]) -> dict[str, Any]:
    session = get_checkout_session(m.group(1))
    paths = call.params.expand()
    call.params.finish()
    if session.status != "open":
        raise StripeError(
            400,
            f'Only Checkout Sessions with a status in ["open"] can be expired. This Checkout Session '
            f'has a status of "{session.status}".',
        )
    session.status = "expired"
    state.emit("checkout.session.expired", render.checkout_session(state, session))
    return render.expand(
        state, render.checkout_session(state, session), paths, _checkout_include, call.version
    )


@api("GET", "/v1/checkout/sessions")
def list_checkout_sessions(call: Call, _: re.Match[str]) -> dict[str, Any]:
    p = call.params
    p.seen.update(("payment_intent", "payment_link", "customer_details", "customer_account"))
    customer = p.string("customer")
    status = p.enum("status", ("complete", "expired", "open"))
    subscription = p.string("subscription")
    created = created_filter(p)
    records = [
        s
        for s in newest(state.checkout_sessions.values())
        if (customer is None or s.customer == customer)
        and (status is None or s.status == status)
        and (subscription is None or s.subscription == subscription)
        and created(s.created)
    ]
    page = render.paginate(
        p,
        records,
        lambda s: s.id,
        lambda s: render.checkout_session(state, s),
        "/v1/checkout/sessions",
        "checkout.session",
    )
    return call.out(page, _checkout_include)


# ---------------------------------------------------------------------------------------------- portal


@api("POST", "/v1/billing_portal/sessions")
def create_portal_session(call: Call, _: re.Match[str]) -> dict[str, Any]:
    p = call.params
    p.seen.update(("configuration", "flow_data", "on_behalf_of", "after_expiration", "customer_account"))
    customer = get_customer(p.req("customer"), "customer", 400)
    return_url = p.string("return_url", max_length=5000)
    locale = p.string("locale")
    paths = p.expand()
    p.finish()
    session = PortalSession(
        new_id("bps_"), real_now(), customer.id, return_url or None, call.base_url, locale or None
    )
    state.portal_sessions[session.id] = session
    state.emit("billing_portal.session.created", render.portal_session(session))
    return render.expand(state, render.portal_session(session), paths, version=call.version)


# ---------------------------------------------------------------------------------------------- subscriptions

SUBSCRIPTION_UPDATE_IGNORED: Final = (
    "add_invoice_items",
    "application_fee_percent",
    "automatic_tax",
    "billing_cycle_anchor",
    "billing_schedules",
    "billing_thresholds",
    "collection_method",
    "days_until_due",
    "default_source",
    "default_tax_rates",
    "discounts",
    "invoice_settings",
    "off_session",
    "on_behalf_of",
    "payment_behavior",
    "payment_settings",
    "pending_invoice_item_interval",
    "proration_behavior",
    "proration_date",
    "transfer_data",
    "trial_settings",
)


@api("POST", "/v1/subscriptions")
def create_subscription(call: Call, _: re.Match[str]) -> dict[str, Any]:
    raise StripeError(
        400,
        f"{SANDBOX_ONLY} creating subscriptions with the API; use a Checkout Session (mode=subscription).",
    )


@api("GET", "/v1/subscriptions/{id}")
def retrieve_subscription(call: Call, m: re.Match[str]) -> dict[str, Any]:
    return call.out(call.view(get_subscription(m.group(1))))


@api("POST", "/v1/subscriptions/{id}")
def update_subscription(call: Call, m: re.Match[str]) -> dict[str, Any]:
    sub = get_subscription(m.group(1))
    p = call.params
    p.seen.update(SUBSCRIPTION_UPDATE_IGNORED)
    for unsupported in ("trial_end", "trial_from_plan", "pause_collection"):
        if p.has(unsupported) and p.raw(unsupported) != "":
            raise invalid(unsupported, f"{SANDBOX_ONLY} `{unsupported}`.")
    cancel_at_period_end = p.boolean("cancel_at_period_end")
    cancel_at_given = p.has("cancel_at")
    cancel_at_raw = p.raw("cancel_at")
    cancel_at: int | None = None
    if cancel_at_given and cancel_at_raw not in ("", None):
        if cancel_at_raw in ("min_period_end", "max_period_end"):
            cancel_at = sub.period_end
        else:
            cancel_at = p.integer("cancel_at", minimum=0)
    details = p.obj("cancellation_details")
    comment = feedback = None
    if details is not None:
        comment = details.string("comment", max_length=5000)
        feedback = details.enum(
            "feedback",
            (
                "customer_service",
                "low_quality",
                "missing_features",
                "other",
                "switched_service",
                "too_complex",
                "too_expensive",
                "unused",
            ),
        )
        details.finish()
    pm_given, default_pm = p.nullable_str("default_payment_method")
    if default_pm and default_pm not in state.payment_methods:
        raise no_such("PaymentMethod", default_pm, "default_payment_method", 400)
    desc_given, description = p.nullable_str("description", 500)
    metadata = p.metadata()
    changes: list[
        tuple[SubscriptionItem | None, Price | None, int | None, bool, dict[str, str | None] | None]
    ] = []
    for item in (
        p.objects("items", ignored=("billing_thresholds", "discounts", "tax_rates", "price_data")) or []
    ):
        item_id = item.string("id")
        target = next((i for i in sub.items if i.id == item_id), None) if item_id else None
        if item_id and target is None:
            raise no_such("subscription_item", item_id, item.name("id"), 400)
        price_id = item.string("price")
        price = get_price(price_id, item.name("price"), 400) if price_id else None
        quantity = item.integer("quantity", minimum=0)
        remove = bool(item.boolean("deleted"))
        item.boolean("clear_usage")
        item_metadata = item.metadata()
        item.finish()
        if target is None and price is None:
            raise missing(item.name("price"))
        if price is not None and price.metered and quantity is not None:
            raise invalid(
                item.name("quantity"), "Quantity should not be specified where usage_type is `metered`."
            )
        changes.append((target, price, quantity, remove, item_metadata))
    paths = p.expand()
    p.finish()
    if sub.status in ("canceled", "incomplete_expired"):
        raise StripeError(
            400,
            "A canceled subscription can only update its cancellation_details and metadata.",
            param="id",
        )
    resulting = {item.id: state.prices[item.price] for item in sub.items}
    for target, price, _, remove, _ in changes:
        key = target.id if target is not None else f"new-{id(price)}"
        if remove:
            resulting.pop(key, None)
        elif price is not None:
            resulting[key] = price
    if not resulting:
        raise invalid("items", "A subscription must keep at least one item.")
    billing.check_prices(state, list(resulting.values()), "items")
    if any(price.currency != sub.currency for price in resulting.values()):
        raise invalid("items", "All prices on a subscription must have the same `currency`.")
    now = state.now(state.customers.get(sub.customer))
    before = render.subscription(state, sub)
    new_invoice: Invoice | None = None
    for target, price, quantity, remove, item_metadata in changes:
        if remove:
            if target is not None:
                sub.items.remove(target)
            continue
        if target is None:
            assert price is not None
            target = SubscriptionItem(
                new_id("si_"), now, price.id, None if price.metered else (quantity or 1)
            )
            sub.items.append(target)
        elif price is not None and price.id != target.price:
            new_invoice = billing.swap_price(state, sub, target, price, now) or new_invoice
        if quantity is not None and target.quantity is not None:
            target.quantity = quantity
        target.metadata = apply_metadata(target.metadata, item_metadata)
    if cancel_at_period_end is not None and cancel_at_period_end != sub.cancel_at_period_end:
        billing.apply_cancel_at(sub, sub.period_end if cancel_at_period_end else None, now)
    if cancel_at_given:
        billing.apply_cancel_at(sub, cancel_at, now)
    if details is not None:
        sub.cancellation_comment = comment or sub.cancellation_comment
        sub.cancellation_feedback = feedback or sub.cancellation_feedback
    if pm_given:
        sub.default_payment_method = default_pm
    if desc_given:
        sub.description = description
    sub.metadata = apply_metadata(sub.metadata, metadata)
    after = render.subscription(state, sub)
    previous = {k: v for k, v in before.items() if after.get(k) != v}
    if previous:
        state.emit("customer.subscription.updated", after, at=now, previous=previous)
    if new_invoice is not None:
        billing.issue(state, new_invoice, now)
    return render.expand(state, call.view(sub), paths, version=call.version)


@api("DELETE", "/v1/subscriptions/{id}")
def cancel_subscription(call: Call, m: re.Match[str]) -> dict[str, Any]:
    sub = get_subscription(m.group(1))
    p = call.params
    invoice_now = bool(p.boolean("invoice_now"))
    p.boolean("prorate")
    details = p.obj("cancellation_details")
    if details is not None:
        sub.cancellation_comment = details.string("comment") or sub.cancellation_comment
        sub.cancellation_feedback = details.string("feedback") or sub.cancellation_feedback
        details.finish()
    paths = p.expand()
    p.finish()
    if sub.status == "canceled":
        raise StripeError(
            400,
            f"No such subscription: '{sub.id}'; it is already canceled.",
            code="resource_missing",
            param="id",
        )
    billing.cancel(state, sub, state.now(state.customers.get(sub.customer)), invoice_now=invoice_now)
    return render.expand(state, call.view(sub), paths, version=call.version)


@api("GET", "/v1/subscriptions")
def list_subscriptions(call: Call, _: re.Match[str]) -> dict[str, Any]:
    p = call.params
    p.seen.update(("automatic_tax", "collection_method", "current_period_end", "current_period_start"))
    p.seen.add("customer_account")
    customer = p.string("customer")
    price = p.string("price") or p.string("plan")
    status = p.enum(
        "status",
        (
            "active",
            "all",
            "canceled",
            "ended",
            "incomplete",
            "incomplete_expired",
            "past_due",
            "paused",
            "trialing",
            "unpaid",
        ),
    )
    clock = p.string("test_clock")
    created = created_filter(p)

    def wanted(s: Subscription) -> bool:
        if status is None:
            ok = s.status != "canceled"
        elif status == "all":
            ok = True
        elif status == "ended":
            ok = s.status in ("canceled", "incomplete_expired")
        else:
            ok = s.status == status
        return (
            ok
            and (customer is None or s.customer == customer)
            and (price is None or any(i.price == price for i in s.items))
            and (clock is None or s.test_clock == clock)
            and created(s.created)
        )

    records = [s for s in newest(state.subscriptions.values()) if wanted(s)]
    page = render.paginate(p, records, lambda s: s.id, call.view, "/v1/subscriptions", "subscription")
    return call.out(page)


@api("GET", "/v1/subscription_items")
def list_subscription_items(call: Call, _: re.Match[str]) -> dict[str, Any]:
    p = call.params
    sub = state.subscriptions.get(p.req("subscription"))
    if sub is None:
        raise no_such("subscription", str(p.raw("subscription")), "subscription", 400)
    url = f"/v1/subscription_items?subscription={sub.id}"
    page = render.paginate(
        p,
        sub.items,
        lambda i: i.id,
        lambda i: render.subscription_item(state, sub, i),
        url,
        "subscription_item",
    )
    return call.out(page)


# ---------------------------------------------------------------------------------------------- invoices


@api("GET", "/v1/invoices/{id}")
def retrieve_invoice(call: Call, m: re.Match[str]) -> dict[str, Any]:
    return call.out(render.invoice(state, get_invoice(m.group(1))))


@api("GET", "/v1/invoices/{id}/lines")
def invoice_lines(call: Call, m: re.Match[str]) -> dict[str, Any]:
    inv = get_invoice(m.group(1))
    url = f"/v1/invoices/{inv.id}/lines"
    page = render.paginate(
        call.params, inv.lines, lambda x: x.id, lambda x: render.invoice_line(state, inv, x), url, "line_item"
    )
    return call.out(page)


@api("GET", "/v1/invoices")
def list_invoices(call: Call, _: re.Match[str]) -> dict[str, Any]:
    p = call.params
    p.seen.update(("collection_method", "due_date", "customer_account"))
    customer = p.string("customer")
    subscription = p.string("subscription")
    status = p.enum("status", ("draft", "open", "paid", "uncollectible", "void"))
    created = created_filter(p)
    records = [
        i
        for i in newest(state.invoices.values())
        if (customer is None or i.customer == customer)
        and (subscription is None or i.subscription == subscription)
        and (status is None or i.status == status)
        and created(i.created)
    ]
    page = render.paginate(
        p, records, lambda i: i.id, lambda i: render.invoice(state, i), "/v1/invoices", "invoice"
    )
    return call.out(page)


@api("POST", "/v1/invoices/{id}/pay")
def pay_invoice(call: Call, m: re.Match[str]) -> dict[str, Any]:
    inv = get_invoice(m.group(1))
    p = call.params
    p.seen.update(("forgive", "mandate", "off_session", "source"))
    out_of_band = bool(p.boolean("paid_out_of_band"))
    pm_id = p.string("payment_method")
    if pm_id and pm_id not in state.payment_methods:
        raise no_such("PaymentMethod", pm_id, "payment_method", 400)
    paths = p.expand()
    p.finish()
    if inv.status == "paid":
        raise StripeError(400, "Invoice is already paid.", code="invoice_already_paid")
    if inv.status != "open":
        raise StripeError(
            400, f"You can only pay an open invoice; this one is {inv.status}.", code="invoice_not_open"
        )
    now = state.now(state.customers.get(inv.customer))
    if out_of_band:
        billing.mark_paid(state, inv, now)
    else:
        sub = state.subscriptions.get(inv.subscription or "")
        saved = sub.default_payment_method if sub is not None else None
        if pm_id and sub is not None:
            sub.default_payment_method = pm_id
        paid = billing.collect(state, inv, now)
        if pm_id and sub is not None:
            sub.default_payment_method = saved
        if not paid:
            decline = inv.last_decline if inv.last_decline != "no_payment_method" else None
            raise billing.card_error(decline or "generic_decline")
    return render.expand(state, render.invoice(state, inv), paths, version=call.version)


def _close_invoice(call: Call, m: re.Match[str], status: str) -> dict[str, Any]:
    inv = get_invoice(m.group(1))
    paths = call.params.expand()
    call.params.finish()
    if inv.status != "open":
        action = "void" if status == "void" else "mark uncollectible"
        raise StripeError(400, f"You can only {action} an open invoice; this one is {inv.status}.")
    now = state.now(state.customers.get(inv.customer))
    inv.status = status
    inv.next_payment_attempt = None
    if status == "void":
        inv.voided_at = now
        state.emit("invoice.voided", render.invoice(state, inv), at=now)
    else:
        inv.marked_uncollectible_at = now
        state.emit("invoice.marked_uncollectible", render.invoice(state, inv), at=now)
    return render.expand(state, render.invoice(state, inv), paths, version=call.version)


@api("POST", "/v1/invoices/{id}/void")
def void_invoice(call: Call, m: re.Match[str]) -> dict[str, Any]:
    return _close_invoice(call, m, "void")


@api("POST", "/v1/invoices/{id}/mark_uncollectible")
def mark_uncollectible(call: Call, m: re.Match[str]) -> dict[str, Any]:
    return _close_invoice(call, m, "uncollectible")
