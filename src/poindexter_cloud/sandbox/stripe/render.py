"""Records as Stripe's JSON objects (the shapes of API version ``store.API_VERSION``), lists and ``expand[]``.

Since 2025-03-31.basil the billing period lives on each subscription item
(``items.data[].current_period_start`` / ``current_period_end``), invoices name their subscription under
``parent.subscription_details`` and lines theirs under ``parent.subscription_item_details`` with the price
under ``pricing.price_details``. A request that sends an older ``Stripe-Version`` also gets the
subscription-level ``current_period_start``/``_end``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, Final, TypeVar

from .errors import StripeError, invalid, no_such
from .forms import Params
from .store import (
    API_VERSION,
    CheckoutSession,
    Customer,
    Event,
    Invoice,
    InvoiceLine,
    Meter,
    MeterEvent,
    PaymentMethod,
    PortalSession,
    Price,
    Product,
    State,
    Subscription,
    SubscriptionItem,
    TestClock,
    WebhookEndpoint,
)

BASIL: Final = "2025-03-31"
_SYMBOLS: Final = {"usd": "$", "eur": "€", "gbp": "£", "cad": "CA$", "aud": "A$", "jpy": "¥", "chf": "CHF "}
_ZERO_DECIMAL: Final = frozenset({"jpy", "krw", "vnd", "clp", "pyg", "isk", "ugx", "xaf", "xof"})


def decimal_str(value: Decimal) -> str:
    text = format(value.normalize(), "f")
    return text if text != "-0" else "0"


def whole(value: Decimal) -> int | None:
    return int(value) if value == value.to_integral_value() else None


def round_amount(value: Decimal) -> int:
    """A line's amount: the exact product rounded to the nearest minor unit, halves up (Stripe's rule)."""
    return int(value.quantize(Decimal(1), rounding=ROUND_HALF_UP))


def money(minor: Decimal | int, currency: str) -> str:
    symbol = _SYMBOLS.get(currency, currency.upper() + " ")
    amount = Decimal(minor) if currency in _ZERO_DECIMAL else Decimal(minor) / 100
    text = f"{amount:,.2f}" if amount == amount.quantize(Decimal("0.01")) else f"{amount.normalize():,f}"
    return symbol + text


def interval_text(interval: str, count: int) -> str:
    return interval if count == 1 else f"every {count} {interval}s"


# ---------------------------------------------------------------------------------------------- objects


def customer(c: Customer) -> dict[str, Any]:
    if c.deleted:
        return deleted(c.id, "customer")
    return {
        "id": c.id,
        "object": "customer",
        "address": None,
        "balance": 0,
        "business_name": None,
        "created": c.created,
        "currency": c.currency,
        "customer_account": None,
        "default_source": None,
        "delinquent": c.delinquent,
        "description": c.description,
        "discount": None,
        "email": c.email,
        "individual_name": None,
        "invoice_prefix": c.invoice_prefix,
        "invoice_settings": {
            "custom_fields": None,
            "default_payment_method": c.default_payment_method,
            "footer": None,
            "rendering_options": None,
        },
        "livemode": False,
        "metadata": c.metadata,
        "name": c.name,
        "next_invoice_sequence": c.next_invoice_sequence,
        "phone": c.phone,
        "preferred_locales": [],
        "shipping": None,
        "tax_exempt": "none",
        "test_clock": c.test_clock,
    }


def deleted(object_id: str, name: str) -> dict[str, Any]:
    return {"id": object_id, "object": name, "deleted": True}


def payment_method(pm: PaymentMethod) -> dict[str, Any]:
    return {
        "id": pm.id,
        "object": "payment_method",
        "allow_redisplay": "always",
        "billing_details": {"address": None, "email": None, "name": None, "phone": None, "tax_id": None},
        "card": {
            "brand": pm.brand,
            "checks": {"address_line1_check": None, "address_postal_code_check": None, "cvc_check": "pass"},
            "country": "US",
            "display_brand": pm.brand,
            "exp_month": pm.exp_month,
            "exp_year": pm.exp_year,
            "fingerprint": "sandbox" + pm.last4,
            "funding": pm.funding,
            "generated_from": None,
            "last4": pm.last4,
            "networks": {"available": [pm.brand], "preferred": None},
            "regulated_status": "unregulated",
            "three_d_secure_usage": {"supported": True},
            "wallet": None,
        },
        "created": pm.created,
        "customer": pm.customer,
        "customer_account": None,
        "livemode": False,
        "metadata": {},
        "type": "card",
    }


def product(p: Product) -> dict[str, Any]:
    if p.deleted:
        return deleted(p.id, "product")
    return {
        "id": p.id,
        "object": "product",
        "active": p.active,
        "created": p.created,
        "default_price": p.default_price,
        "description": p.description,
        "images": p.images,
        "livemode": False,
        "marketing_features": [],
        "metadata": p.metadata,
        "name": p.name,
        "package_dimensions": None,
        "shippable": None,
        "statement_descriptor": p.statement_descriptor,
        "tax_code": p.tax_code,
        "tax_details": None,
        "type": "service",
        "unit_label": p.unit_label,
        "updated": p.updated,
        "url": p.url,
    }


def price(p: Price) -> dict[str, Any]:
    return {
        "id": p.id,
        "object": "price",
        "active": p.active,
        "billing_scheme": "per_unit",
        "created": p.created,
        "currency": p.currency,
        "custom_unit_amount": None,
        "livemode": False,
        "lookup_key": p.lookup_key,
        "metadata": p.metadata,
        "nickname": p.nickname,
        "product": p.product,
        "recurring": (
            {
                "interval": p.interval,
                "interval_count": p.interval_count,
                "meter": p.meter,
                "trial_period_days": None,
                "usage_type": p.usage_type,
            }
            if p.interval is not None
            else None
        ),
        "tax_behavior": p.tax_behavior,
        "tiers_mode": None,
        "transform_quantity": None,
        "type": "recurring" if p.interval is not None else "one_time",
        "unit_amount": whole(p.unit_amount_decimal),
        "unit_amount_decimal": decimal_str(p.unit_amount_decimal),
    }


def meter(m: Meter) -> dict[str, Any]:
    return {
        "id": m.id,
        "object": "billing.meter",
        "created": m.created,
        "customer_mapping": {"event_payload_key": m.customer_key, "type": "by_id"},
        "default_aggregation": {"formula": m.formula},
        "display_name": m.display_name,
        "event_name": m.event_name,
        "event_time_window": m.event_time_window,
        "livemode": False,
        "status": m.status,
        "status_transitions": {"deactivated_at": m.deactivated_at},
        "updated": m.updated,
        "value_settings": {"event_payload_key": m.value_key},
    }


def meter_event(e: MeterEvent) -> dict[str, Any]:
    return {
        "object": "billing.meter_event",
        "created": e.created,
        "event_name": e.event_name,
        "identifier": e.identifier,
        "livemode": False,
        "payload": e.payload,
        "timestamp": e.timestamp,
    }


def test_clock(c: TestClock) -> dict[str, Any]:
    if c.deleted:
        return deleted(c.id, "test_helpers.test_clock")
    return {
        "id": c.id,
        "object": "test_helpers.test_clock",
        "created": c.created,
        "deletes_after": c.created + 30 * 86400,
        "frozen_time": c.frozen_time,
        "livemode": False,
        "name": c.name,
        "status": c.status,
        "status_details": {},
    }


def checkout_session(state: State, s: CheckoutSession) -> dict[str, Any]:
    subtotal = sum(
        round_amount(state.prices[line.price].unit_amount_decimal * (line.quantity or 0)) for line in s.lines
    )
    return {
        "id": s.id,
        "object": "checkout.session",
        "adaptive_pricing": {"enabled": False},
        "after_expiration": None,
        "allow_promotion_codes": None,
        "allowed_payment_method_types": None,
        "amount_subtotal": subtotal,
        "amount_total": subtotal,
        "automatic_tax": {"enabled": False, "liability": None, "provider": None, "status": None},
        "billing_address_collection": None,
        "branding_settings": None,
        "cancel_url": s.cancel_url,
        "client_reference_id": s.client_reference_id,
        "client_secret": None,
        "collected_information": (
            {"business_name": None, "individual_name": None, "shipping_details": None}
            if s.status == "complete"
            else None
        ),
        "consent": None,
        "consent_collection": None,
        "created": s.created,
        "currency": s.currency,
        "currency_conversion": None,
        "custom_fields": [],
        "custom_text": {
            "after_submit": None,
            "shipping_address": None,
            "submit": None,
            "terms_of_service_acceptance": None,
        },
        "customer": s.customer,
        "customer_account": None,
        "customer_creation": None if s.customer else "always",
        "customer_details": s.customer_details,
        "customer_email": s.customer_email,
        "discounts": [],
        "excluded_payment_method_types": [],
        "expires_at": s.expires_at,
        "integration_identifier": None,
        "invoice": s.invoice,
        "invoice_creation": None,
        "livemode": False,
        "locale": s.locale,
        "managed_payments": None,
        "metadata": s.metadata,
        "mode": s.mode,
        "name_collection": None,
        "optional_items": None,
        "origin_context": None,
        "payment_intent": None,
        "payment_link": None,
        "payment_method_collection": "always",
        "payment_method_configuration_details": None,
        "payment_method_options": {"card": {"request_three_d_secure": "automatic"}},
        "payment_method_types": ["card"],
        "payment_status": s.payment_status,
        "permissions": None,
        "phone_number_collection": {"enabled": False},
        "presentment_details": None,
        "recovered_from": None,
        "redirect_on_completion": None,
        "return_url": s.return_url,
        "saved_payment_method_options": {
            "allow_redisplay_filters": ["always"],
            "payment_method_remove": None,
            "payment_method_save": None,
        },
        "setup_intent": None,
        "shipping_address_collection": None,
        "shipping_cost": None,
        "shipping_options": [],
        "status": s.status,
        "submit_type": None,
        "subscription": s.subscription,
        "success_url": s.success_url,
        "tax_id_collection": {"enabled": False, "required": "never"},
        "total_details": {"amount_discount": 0, "amount_shipping": 0, "amount_tax": 0},
        "ui_mode": s.ui_mode,
        "url": f"{s.base_url}/stripe/checkout/{s.id}" if s.status == "open" else None,
        "wallet_options": None,
    }


def checkout_items(state: State, s: CheckoutSession) -> list[dict[str, Any]]:
    out = []
    for line in s.lines:
        p = state.prices[line.price]
        amount = round_amount(p.unit_amount_decimal * (line.quantity or 0))
        out.append(
            {
                "id": line.id,
                "object": "item",
                "adjustable_quantity": None,
                "amount_discount": 0,
                "amount_subtotal": amount,
                "amount_tax": 0,
                "amount_total": amount,
                "currency": p.currency,
                "description": state.products[p.product].name,
                "metadata": {},
                "price": price(p),
                "quantity": line.quantity,
            }
        )
    return out


def portal_session(s: PortalSession) -> dict[str, Any]:
    return {
        "id": s.id,
        "object": "billing_portal.session",
        "configuration": "bpc_sandbox_default",
        "created": s.created,
        "customer": s.customer,
        "customer_account": None,
        "flow": None,
        "livemode": False,
        "locale": s.locale,
        "on_behalf_of": None,
        "return_url": s.return_url,
        "url": f"{s.base_url}/stripe/portal/{s.id}",
    }


def subscription_item(state: State, sub: Subscription, item: SubscriptionItem) -> dict[str, Any]:
    p = state.prices[item.price]
    out: dict[str, Any] = {
        "id": item.id,
        "object": "subscription_item",
        "billed_until": None,
        "billing_thresholds": None,
        "created": item.created,
        "current_period_end": sub.period_end,
        "current_period_start": sub.period_start,
        "current_trial": None,
        "discounts": [],
        "metadata": item.metadata,
        "plan": plan(p),
        "price": price(p),
        "subscription": sub.id,
        "tax_rates": [],
    }
    if item.quantity is not None:
        out["quantity"] = item.quantity
    return out


def plan(p: Price) -> dict[str, Any]:
    """The legacy ``plan`` view of a recurring price, still on subscription items."""
    return {
        "id": p.id,
        "object": "plan",
        "active": p.active,
        "amount": whole(p.unit_amount_decimal),
        "amount_decimal": decimal_str(p.unit_amount_decimal),
        "billing_scheme": "per_unit",
        "created": p.created,
        "currency": p.currency,
        "interval": p.interval,
        "interval_count": p.interval_count,
        "livemode": False,
        "metadata": p.metadata,
        "meter": p.meter,
        "nickname": p.nickname,
        "product": p.product,
        "tiers_mode": None,
        "transform_usage": None,
        "trial_period_days": None,
        "usage_type": p.usage_type,
    }


def cancellation(sub: Subscription) -> dict[str, Any]:
    """A subscription's cancellation fields (also the ``previous_attributes`` of a change to them)."""
    return {
        "cancel_at": sub.cancel_at,
        "cancel_at_period_end": sub.cancel_at_period_end,
        "canceled_at": sub.canceled_at,
        "cancellation_details": {
            "comment": sub.cancellation_comment,
            "feedback": sub.cancellation_feedback,
            "reason": sub.cancellation_reason,
        },
    }


def subscription(state: State, sub: Subscription, version: str = API_VERSION) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": sub.id,
        "object": "subscription",
        "application": None,
        "application_fee_percent": None,
        "automatic_tax": {"disabled_reason": None, "enabled": False, "liability": None},
        "billing_cycle_anchor": sub.anchor,
        "billing_cycle_anchor_config": None,
        "billing_mode": {
            "flexible": {"proration_discounts": "included"},
            "type": "flexible",
            "updated_at": sub.created,
        },
        "billing_schedules": [],
        "billing_thresholds": None,
        **cancellation(sub),
        "collection_method": "charge_automatically",
        "created": sub.created,
        "currency": sub.currency,
        "customer": sub.customer,
        "customer_account": None,
        "days_until_due": None,
        "default_payment_method": sub.default_payment_method,
        "default_source": None,
        "default_tax_rates": [],
        "description": sub.description,
        "discounts": [],
        "ended_at": sub.ended_at,
        "invoice_settings": {"account_tax_ids": None, "issuer": {"type": "self"}},
        "items": list_object(
            [subscription_item(state, sub, item) for item in sub.items],
            f"/v1/subscription_items?subscription={sub.id}",
            False,
        ),
        "latest_invoice": sub.latest_invoice,
        "livemode": False,
        "managed_payments": None,
        "metadata": sub.metadata,
        "next_pending_invoice_item_invoice": None,
        "on_behalf_of": None,
        "pause_collection": None,
        "payment_settings": {
            "payment_method_options": None,
            "payment_method_types": None,
            "save_default_payment_method": "off",
        },
        "pending_invoice_item_interval": None,
        "pending_setup_intent": None,
        "pending_update": None,
        "presentment_details": None,
        "schedule": None,
        "start_date": sub.start_date,
        "status": sub.status,
        "test_clock": sub.test_clock,
        "transfer_data": None,
        "trial_end": None,
        "trial_settings": {"end_behavior": {"missing_payment_method": "create_invoice"}},
        "trial_start": None,
    }
    if version[:10] < BASIL:
        out["current_period_start"] = sub.period_start
        out["current_period_end"] = sub.period_end
    return out


def invoice_line(state: State, inv: Invoice, line: InvoiceLine) -> dict[str, Any]:
    p = state.prices[line.price]
    quantity = whole(line.quantity)
    return {
        "id": line.id,
        "object": "line_item",
        "amount": line.amount,
        "currency": line.currency,
        "description": line.description,
        "discount_amounts": [],
        "discountable": True,
        "discounts": [],
        "invoice": inv.id,
        "livemode": False,
        "metadata": {},
        "parent": {
            "invoice_item_details": None,
            "subscription_item_details": {
                "invoice_item": None,
                "proration": False,
                "proration_details": {"credited_items": None},
                "subscription": line.subscription,
                "subscription_item": line.subscription_item,
            },
            "type": "subscription_item_details",
        },
        "period": {"end": line.period_end, "start": line.period_start},
        "pretax_credit_amounts": [],
        "pricing": {
            "price_details": {"price": p.id, "product": p.product},
            "type": "price_details",
            "unit_amount_decimal": decimal_str(p.unit_amount_decimal),
        },
        "quantity": quantity,
        "quantity_decimal": decimal_str(line.quantity),
        "subscription": line.subscription,
        "subtotal": line.amount,
        "taxes": [],
    }


def invoice(state: State, inv: Invoice) -> dict[str, Any]:
    total = inv.total
    remaining = 0 if inv.status in ("paid", "void") else total - inv.amount_paid
    open_or_later = inv.status != "draft"
    return {
        "id": inv.id,
        "object": "invoice",
        "account_country": "US",
        "account_name": "Poindexter Sandbox",
        "account_tax_ids": None,
        "amount_due": total,
        "amount_overpaid": 0,
        "amount_paid": inv.amount_paid,
        "amount_paid_off_stripe": 0,
        "amount_remaining": remaining,
        "amount_shipping": 0,
        "application": None,
        "attempt_count": inv.attempt_count,
        "attempted": inv.attempted,
        "auto_advance": inv.status in ("draft", "open"),
        "automatic_tax": {
            "disabled_reason": None,
            "enabled": False,
            "liability": None,
            "provider": None,
            "status": None,
        },
        "automatically_finalizes_at": inv.created + 3600 if inv.status == "draft" else None,
        "billing_reason": inv.billing_reason,
        "collection_method": "charge_automatically",
        "confirmation_secret": None,
        "created": inv.created,
        "currency": inv.currency,
        "custom_fields": None,
        "customer": inv.customer,
        "customer_account": None,
        "customer_address": None,
        "customer_email": inv.customer_email,
        "customer_name": inv.customer_name,
        "customer_phone": None,
        "customer_shipping": None,
        "customer_tax_exempt": "none",
        "customer_tax_ids": [],
        "default_payment_method": None,
        "default_source": None,
        "default_tax_rates": [],
        "description": None,
        "discounts": [],
        "due_date": None,
        "effective_at": inv.finalized_at,
        "ending_balance": 0 if open_or_later else None,
        "footer": None,
        "from_invoice": None,
        "hosted_invoice_url": None,
        "invoice_pdf": None,
        "issuer": {"type": "self"},
        "last_finalization_error": None,
        "latest_revision": None,
        "lines": list_object(
            [invoice_line(state, inv, line) for line in inv.lines[:10]],
            f"/v1/invoices/{inv.id}/lines",
            len(inv.lines) > 10,
        ),
        "livemode": False,
        "metadata": inv.metadata,
        "next_payment_attempt": inv.next_payment_attempt,
        "number": inv.number,
        "on_behalf_of": None,
        "parent": (
            {
                "quote_details": None,
                "subscription_details": {
                    "metadata": inv.subscription_metadata,
                    "subscription": inv.subscription,
                },
                "type": "subscription_details",
            }
            if inv.subscription is not None
            else None
        ),
        "payment_settings": {
            "default_mandate": None,
            "payment_method_options": None,
            "payment_method_types": None,
        },
        "period_end": inv.period_end,
        "period_start": inv.period_start,
        "post_payment_credit_notes_amount": 0,
        "pre_payment_credit_notes_amount": 0,
        "receipt_number": None,
        "rendering": None,
        "shipping_cost": None,
        "shipping_details": None,
        "starting_balance": 0,
        "statement_descriptor": None,
        "status": inv.status,
        "status_details": None,
        "status_transitions": {
            "finalized_at": inv.finalized_at,
            "marked_uncollectible_at": inv.marked_uncollectible_at,
            "paid_at": inv.paid_at,
            "voided_at": inv.voided_at,
        },
        "subtotal": total,
        "subtotal_excluding_tax": total,
        "test_clock": inv.test_clock,
        "threshold_reason": None,
        "total": total,
        "total_discount_amounts": [],
        "total_excluding_tax": total,
        "total_pretax_credit_amounts": [],
        "total_taxes": [],
        "webhooks_delivered_at": inv.created,
    }


def event(e: Event) -> dict[str, Any]:
    return {
        "id": e.id,
        "object": "event",
        "api_version": API_VERSION,
        "created": e.created,
        "data": e.data,
        "livemode": False,
        "pending_webhooks": e.pending_webhooks,
        "request": {"id": e.request_id, "idempotency_key": e.idempotency_key},
        "type": e.type,
    }


def webhook_endpoint(w: WebhookEndpoint, *, with_secret: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": w.id,
        "object": "webhook_endpoint",
        "api_version": w.api_version,
        "application": None,
        "created": w.created,
        "description": w.description,
        "enabled_events": w.enabled_events,
        "livemode": False,
        "metadata": w.metadata,
        "status": w.status,
        "url": w.url,
    }
    if with_secret:
        out["secret"] = w.secret
    return out


def any_record(state: State, record: object, version: str = API_VERSION) -> dict[str, Any]:
    if isinstance(record, Customer):
        return customer(record)
    if isinstance(record, Product):
        return product(record)
    if isinstance(record, Price):
        return price(record)
    if isinstance(record, Subscription):
        return subscription(state, record, version)
    if isinstance(record, Invoice):
        return invoice(state, record)
    if isinstance(record, PaymentMethod):
        return payment_method(record)
    if isinstance(record, Meter):
        return meter(record)
    if isinstance(record, TestClock):
        return test_clock(record)
    if isinstance(record, CheckoutSession):
        return checkout_session(state, record)
    if isinstance(record, Event):
        return event(record)
    raise TypeError(type(record).__name__)


# ---------------------------------------------------------------------------------------------- lists, expand


def list_object(data: list[dict[str, Any]], url: str, has_more: bool) -> dict[str, Any]:
    return {"object": "list", "data": data, "has_more": has_more, "url": url}


T = TypeVar("T")


def paginate(
    params: Params,
    records: Sequence[T],
    key: Callable[[T], str],
    render_one: Callable[[T], dict[str, Any]],
    url: str,
    resource: str,
) -> dict[str, Any]:
    """One page of ``records`` (newest first) by Stripe's cursor rules: ``limit`` (1-100, default 10),
    ``starting_after`` / ``ending_before`` an id on the list."""
    limit = params.integer("limit")
    if limit is None:
        limit = 10
    if not 1 <= limit <= 100:
        raise invalid("limit", "Invalid limit: must be between 1 and 100", "parameter_invalid_integer")
    after = params.string("starting_after")
    before = params.string("ending_before")
    ids = [key(r) for r in records]
    if after:
        if after not in ids:
            raise no_such(resource, after, "starting_after", 400)
        rest = list(records[ids.index(after) + 1 :])
        page, has_more = rest[:limit], len(rest) > limit
    elif before:
        if before not in ids:
            raise no_such(resource, before, "ending_before", 400)
        head = list(records[: ids.index(before)])
        page, has_more = head[-limit:], len(head) > limit
    else:
        page, has_more = list(records[:limit]), len(records) > limit
    return list_object([render_one(r) for r in page], url, has_more)


Includer = Callable[[dict[str, Any], str], Any]


def expand(
    state: State,
    obj: dict[str, Any],
    paths: list[str],
    include: Includer | None = None,
    version: str = API_VERSION,
) -> dict[str, Any]:
    """Replace ids by objects along each dotted path (``latest_invoice``, ``data.customer``,
    ``items.data.price.product``); ``include`` supplies fields that are only present when expanded."""
    for path in paths:
        segments = path.split(".")
        if len(segments) > 4 + segments.count("data"):
            raise invalid("expand", f"You cannot expand more than 4 levels of a property: {path}")
        _expand(state, obj, segments, path, include, version)
    return obj


def _expand(
    state: State,
    obj: dict[str, Any],
    segments: list[str],
    path: str,
    include: Includer | None,
    version: str,
) -> None:
    key, rest = segments[0], segments[1:]
    if key not in obj:
        supplied = include(obj, key) if include is not None else None
        if supplied is None:
            raise StripeError(
                400,
                f"This property cannot be expanded ({key}). You may want to try expanding "
                f"'data.{key}' instead."
                if obj.get("object") == "list"
                else f"This property cannot be expanded ({path}).",
                param="expand",
            )
        obj[key] = supplied
    value = obj[key]
    if isinstance(value, str):
        record = state.find(value)
        if record is None:
            raise StripeError(400, f"This property cannot be expanded ({path}).", param="expand")
        value = obj[key] = any_record(state, record, version)
    if not rest:
        return
    if isinstance(value, list):
        for item in value:
            if isinstance(item, dict):
                _expand(state, item, rest, path, include, version)
    elif isinstance(value, dict):
        _expand(state, value, rest, path, include, version)
