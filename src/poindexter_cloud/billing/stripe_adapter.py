"""The Stripe adapter: the only module that imports the ``stripe`` SDK.

A thin, typed layer over ``stripe.StripeClient`` with just the calls billing needs. It talks to
``Settings.stripe_api_base_url`` (Stripe itself in production, the sandbox's simulator elsewhere), uses the
SDK's async methods over its httpx client, retries network failures with the SDK's own idempotency keys, and
turns every SDK error into one of billing's ``AppError``s with a message of our own: a provider's raw error
body never reaches a client. Results come back as small frozen dataclasses, never SDK objects.

Stripe objects read here follow recent API versions, where a subscription's billing period lives on its
items (``items.data[].current_period_*``) and an invoice names its subscription under
``parent.subscription_details``; the older top-level fields are read too when present.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Awaitable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any, Final, Self, TypeVar

import stripe
from stripe.params import PriceCreateParams

from poindexter_cloud.billing.errors import (
    InvalidWebhookSignature,
    PaymentDeclined,
    PaymentProviderError,
    PaymentProviderUnavailable,
    StripeObjectMissing,
)
from poindexter_cloud.core.settings import STRIPE_API_URL, Settings

log = logging.getLogger(__name__)

TIMEOUT_SECONDS: Final = 20.0
MAX_NETWORK_RETRIES: Final = 2
PAGE_SIZE: Final = 100

T = TypeVar("T")


# --- what the adapter returns ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Product:
    id: str
    name: str
    active: bool
    metadata: Mapping[str, str]


@dataclass(frozen=True, slots=True)
class Meter:
    id: str
    event_name: str
    display_name: str
    status: str  # active, inactive
    formula: str | None
    customer_payload_key: str | None
    value_payload_key: str | None


@dataclass(frozen=True, slots=True)
class Price:
    id: str
    product: str
    active: bool
    currency: str
    lookup_key: str | None
    nickname: str | None
    unit_amount: int | None
    unit_amount_decimal: Decimal | None
    interval: str | None
    usage_type: str | None  # licensed, metered
    meter: str | None
    metadata: Mapping[str, str]


@dataclass(frozen=True, slots=True)
class SubscriptionItem:
    id: str
    price: Price
    current_period_start: datetime | None
    current_period_end: datetime | None


@dataclass(frozen=True, slots=True)
class Subscription:
    id: str
    customer: str
    status: (
        str  # Stripe's: incomplete, incomplete_expired, trialing, active, past_due, canceled, unpaid, paused
    )
    cancel_at_period_end: bool
    canceled_at: datetime | None
    ended_at: datetime | None
    metadata: Mapping[str, str]
    items: tuple[SubscriptionItem, ...]
    current_period_start: datetime | None = None  # top level in API versions before 2025-03-31
    current_period_end: datetime | None = None


@dataclass(frozen=True, slots=True)
class CheckoutSession:
    id: str
    url: str


@dataclass(frozen=True, slots=True)
class WebhookEvent:
    """A verified Stripe event: its id, type and the whole JSON payload as Stripe sent it."""

    id: str
    type: str
    payload: dict[str, Any] = field(repr=False)


@dataclass(frozen=True, slots=True)
class MeterEventSent:
    """A meter event Stripe has: ``duplicate`` when it already held the identifier (sent before, within its
    dedupe window), so this call recorded nothing new."""

    identifier: str
    duplicate: bool


@dataclass(frozen=True, slots=True)
class LineItem:
    price: str
    quantity: int | None = None  # metered prices take none


# --- parsing Stripe's JSON ------------------------------------------------------------------------------


def _id(value: Any) -> str:
    """An expandable field: an id, or the expanded object carrying it."""
    if isinstance(value, Mapping):
        return str(value["id"])
    return str(value)


def _time(value: Any) -> datetime | None:
    return None if value is None else datetime.fromtimestamp(int(value), UTC)


def _decimal(value: Any) -> Decimal | None:
    if value is None:
        return None
    try:
        return Decimal(str(value))
    except InvalidOperation:
        return None


def _metadata(value: Any) -> dict[str, str]:
    return {str(k): str(v) for k, v in (value or {}).items()}


def _product(data: Mapping[str, Any]) -> Product:
    return Product(
        data["id"], data.get("name") or "", bool(data.get("active")), _metadata(data.get("metadata"))
    )


def _meter(data: Mapping[str, Any]) -> Meter:
    return Meter(
        id=data["id"],
        event_name=data.get("event_name") or "",
        display_name=data.get("display_name") or "",
        status=data.get("status") or "active",
        formula=(data.get("default_aggregation") or {}).get("formula"),
        customer_payload_key=(data.get("customer_mapping") or {}).get("event_payload_key"),
        value_payload_key=(data.get("value_settings") or {}).get("event_payload_key"),
    )


def _price(data: Mapping[str, Any]) -> Price:
    recurring = data.get("recurring") or {}
    return Price(
        id=data["id"],
        product=_id(data.get("product")),
        active=bool(data.get("active")),
        currency=data.get("currency") or "",
        lookup_key=data.get("lookup_key"),
        nickname=data.get("nickname"),
        unit_amount=data.get("unit_amount"),
        unit_amount_decimal=_decimal(data.get("unit_amount_decimal")),
        interval=recurring.get("interval"),
        usage_type=recurring.get("usage_type"),
        meter=recurring.get("meter"),
        metadata=_metadata(data.get("metadata")),
    )


def _subscription(data: Mapping[str, Any]) -> Subscription:
    items = tuple(
        SubscriptionItem(
            id=item["id"],
            price=_price(item["price"]),
            current_period_start=_time(item.get("current_period_start")),
            current_period_end=_time(item.get("current_period_end")),
        )
        for item in (data.get("items") or {}).get("data") or ()
    )
    return Subscription(
        id=data["id"],
        customer=_id(data.get("customer")),
        status=data.get("status") or "",
        cancel_at_period_end=bool(data.get("cancel_at_period_end")),
        canceled_at=_time(data.get("canceled_at")),
        ended_at=_time(data.get("ended_at")),
        metadata=_metadata(data.get("metadata")),
        items=items,
        current_period_start=_time(data.get("current_period_start")),
        current_period_end=_time(data.get("current_period_end")),
    )


def _plain(obj: Any) -> dict[str, Any]:
    """An SDK object as plain JSON-like data."""
    data: dict[str, Any] = obj.to_dict(recursive=True, for_json=True)
    return data


# --- webhooks -------------------------------------------------------------------------------------------


def verify_webhook(payload: bytes, signature: str | None, secret: str) -> WebhookEvent:
    """Check a webhook's ``Stripe-Signature`` (HMAC and timestamp, with the SDK's default tolerance of five
    minutes) and parse it; ``InvalidWebhookSignature`` for a forged, stale or malformed one."""
    if not secret:
        raise InvalidWebhookSignature("Stripe webhooks are not configured here.")
    try:
        event = stripe.Webhook.construct_event(payload, signature or "", secret)
    except stripe.SignatureVerificationError:
        raise InvalidWebhookSignature("The Stripe-Signature header does not verify.") from None
    except ValueError:
        raise InvalidWebhookSignature("The body is not a Stripe event.") from None
    try:
        data = json.loads(payload)
        event_id, event_type = str(event.id), str(event.type)
    except (ValueError, AttributeError):
        raise InvalidWebhookSignature("The body is not a Stripe event.") from None
    if not isinstance(data, dict) or not event_id.startswith("evt_") or not event_type:
        raise InvalidWebhookSignature("The body is not a Stripe event.")
    return WebhookEvent(event_id, event_type, data)


# --- the client -----------------------------------------------------------------------------------------


class StripeAdapter:
    """One ``StripeClient`` with its own async HTTP connection pool; close it (or use ``async with``)."""

    def __init__(self, secret_key: str, api_base: str) -> None:
        sdk_log = logging.getLogger("stripe")
        if sdk_log.level == logging.NOTSET:
            sdk_log.setLevel(logging.WARNING)  # the SDK logs every request at info; our own lines suffice
        self._http = stripe.HTTPXClient(timeout=TIMEOUT_SECONDS)
        bases: Any = None
        if api_base.rstrip("/") != STRIPE_API_URL:
            bases = {"api": api_base, "files": api_base, "connect": api_base, "meter_events": api_base}
        self._client = stripe.StripeClient(
            secret_key,
            base_addresses=bases,
            max_network_retries=MAX_NETWORK_RETRIES,
            http_client=self._http,
        )
        self.api_base = api_base

    @classmethod
    def from_settings(cls, settings: Settings) -> StripeAdapter:
        if not settings.stripe_secret_key:
            raise PaymentProviderError("Billing is not configured (STRIPE_SECRET_KEY is not set).")
        return cls(settings.stripe_secret_key, settings.stripe_api_base_url)

    async def close(self) -> None:
        await self._http.close_async()  # type: ignore[no-untyped-call]

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def sdk(self) -> stripe.StripeClient:
        """The SDK client itself, for tests and operator tooling; billing code uses the methods below."""
        return self._client

    async def _call(self, what: str, call: Awaitable[T]) -> T:
        try:
            return await call
        except stripe.CardError:
            raise PaymentDeclined("The card was declined.") from None
        except (stripe.APIConnectionError, stripe.RateLimitError) as exc:
            _log_failure(what, exc)
            raise PaymentProviderUnavailable(
                "The payment provider is not answering right now; try again shortly."
            ) from None
        except stripe.InvalidRequestError as exc:
            _log_failure(what, exc)
            if exc.http_status == 404:
                raise StripeObjectMissing(f"The payment provider has no such {what}.") from None
            raise PaymentProviderError("The payment provider refused our request.") from None
        except stripe.StripeError as exc:
            _log_failure(what, exc)
            if exc.http_status is None or exc.http_status >= 500 or exc.http_status in (409, 429):
                raise PaymentProviderUnavailable(
                    "The payment provider is not answering right now; try again shortly."
                ) from None
            raise PaymentProviderError("The payment provider refused our request.") from None

    async def _all(self, what: str, first_page: Awaitable[Any]) -> AsyncIterator[dict[str, Any]]:
        page = await self._call(what, first_page)
        iterator = page.auto_paging_iter()
        while True:
            try:
                item = await self._call(what, iterator.__anext__())
            except StopAsyncIteration:
                return
            yield _plain(item)

    # --- catalog: products, prices, meters ---------------------------------------------------------

    async def list_products(self) -> list[Product]:
        products = self._client.v1.products
        return [_product(p) async for p in self._all("product", products.list_async({"limit": PAGE_SIZE}))]

    async def create_product(self, name: str, metadata: Mapping[str, str]) -> Product:
        created = await self._call(
            "product", self._client.v1.products.create_async({"name": name, "metadata": dict(metadata)})
        )
        return _product(_plain(created))

    async def update_product(self, product_id: str, name: str, metadata: Mapping[str, str]) -> Product:
        updated = await self._call(
            "product",
            self._client.v1.products.update_async(
                product_id, {"name": name, "metadata": dict(metadata), "active": True}
            ),
        )
        return _product(_plain(updated))

    async def prices_by_lookup_keys(self, lookup_keys: Sequence[str]) -> dict[str, Price]:
        """The prices holding these lookup keys (active or archived), by lookup key."""
        found: dict[str, Price] = {}
        for start in range(0, len(lookup_keys), 10):  # Stripe takes at most 10 lookup keys per list
            keys = list(lookup_keys[start : start + 10])
            listed = self._client.v1.prices.list_async({"lookup_keys": keys, "limit": PAGE_SIZE})
            async for data in self._all("price", listed):
                price = _price(data)
                if price.lookup_key:
                    found[price.lookup_key] = price
        return found

    async def create_price(
        self,
        *,
        product: str,
        lookup_key: str,
        nickname: str,
        metadata: Mapping[str, str],
        currency: str,
        interval: str,
        usage_type: str,
        unit_amount: int | None = None,
        unit_amount_decimal: Decimal | None = None,
        meter: str | None = None,
        transfer_lookup_key: bool = False,
    ) -> Price:
        """A new recurring per-unit price. With ``transfer_lookup_key`` the lookup key moves to it from the
        price that held it (prices are immutable: a new amount is a new price)."""
        params: PriceCreateParams = {
            "product": product,
            "currency": currency,
            "lookup_key": lookup_key,
            "transfer_lookup_key": transfer_lookup_key,
            "nickname": nickname,
            "metadata": dict(metadata),
            "billing_scheme": "per_unit",
        }
        if usage_type == "metered":
            if meter is None:
                raise ValueError("a metered price needs a meter")
            params["recurring"] = {"interval": interval, "usage_type": "metered", "meter": meter}
        else:
            params["recurring"] = {"interval": interval, "usage_type": "licensed"}
        if unit_amount_decimal is not None:
            params["unit_amount_decimal"] = unit_amount_decimal  # the SDK writes it without an exponent
        elif unit_amount is not None:
            params["unit_amount"] = unit_amount
        else:
            raise ValueError("a price needs an amount")
        created = await self._call("price", self._client.v1.prices.create_async(params))
        return _price(_plain(created))

    async def update_price(
        self,
        price_id: str,
        *,
        active: bool,
        nickname: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> Price:
        params: dict[str, Any] = {"active": active}
        if nickname is not None:
            params["nickname"] = nickname
        if metadata is not None:
            params["metadata"] = dict(metadata)
        updated = await self._call("price", self._client.v1.prices.update_async(price_id, params))  # type: ignore[arg-type]
        return _price(_plain(updated))

    async def list_meters(self) -> list[Meter]:
        meters = self._client.v1.billing.meters
        return [_meter(m) async for m in self._all("meter", meters.list_async({"limit": PAGE_SIZE}))]

    async def create_meter(
        self, *, event_name: str, display_name: str, customer_payload_key: str, value_payload_key: str
    ) -> Meter:
        """A Billing Meter summing ``value`` of each meter event, per customer named by id in the event."""
        created = await self._call(
            "meter",
            self._client.v1.billing.meters.create_async(
                {
                    "display_name": display_name,
                    "event_name": event_name,
                    "default_aggregation": {"formula": "sum"},
                    "customer_mapping": {"type": "by_id", "event_payload_key": customer_payload_key},
                    "value_settings": {"event_payload_key": value_payload_key},
                }
            ),
        )
        return _meter(_plain(created))

    async def update_meter(self, meter_id: str, display_name: str) -> Meter:
        updated = await self._call(
            "meter", self._client.v1.billing.meters.update_async(meter_id, {"display_name": display_name})
        )
        return _meter(_plain(updated))

    async def reactivate_meter(self, meter_id: str) -> Meter:
        return _meter(
            _plain(await self._call("meter", self._client.v1.billing.meters.reactivate_async(meter_id)))
        )

    # --- meter events -----------------------------------------------------------------------------

    async def create_meter_event(
        self, *, event_name: str, payload: Mapping[str, str], identifier: str, timestamp: datetime
    ) -> MeterEventSent:
        """One meter event with our deterministic ``identifier`` (also its idempotency key, so the SDK's own
        retries replay the first answer). Stripe refuses an identifier it has seen in the last 24 h (at
        least) with "An event already exists with identifier ..."; that is success for us: it has the event.
        """
        params: Any = {
            "event_name": event_name,
            "payload": dict(payload),
            "identifier": identifier,
            "timestamp": int(timestamp.timestamp()),
        }

        async def create() -> bool:
            try:
                await self._client.v1.billing.meter_events.create_async(
                    params, {"idempotency_key": f"meter-event-{identifier}"}
                )
            except stripe.InvalidRequestError as exc:
                if _duplicate_identifier(exc):
                    return True
                raise
            return False

        duplicate = await self._call("meter event", create())
        return MeterEventSent(identifier, duplicate)

    async def meter_event_total(
        self, meter_id: str, customer: str, start: datetime, end: datetime
    ) -> Decimal:
        """What the meter aggregated for ``customer`` over [start, end) (whole minutes), from its event
        summaries."""
        listed = self._client.v1.billing.meters.event_summaries.list_async(
            meter_id,
            {
                "customer": customer,
                "start_time": int(start.timestamp()),
                "end_time": int(end.timestamp()),
                "limit": PAGE_SIZE,
            },
        )
        total = Decimal(0)
        async for summary in self._all("meter event summary", listed):
            total += _decimal(summary.get("aggregated_value")) or Decimal(0)
        return total

    # --- customers, checkout, portal, subscriptions ------------------------------------------------

    async def create_customer(self, *, email: str, user_id: str, idempotency_key: str) -> str:
        created = await self._call(
            "customer",
            self._client.v1.customers.create_async(
                {"email": email, "metadata": {"user_id": user_id}},
                {"idempotency_key": idempotency_key},
            ),
        )
        return str(created.id)

    async def create_checkout_session(
        self,
        *,
        customer: str,
        line_items: Sequence[LineItem],
        success_url: str,
        cancel_url: str,
        client_reference_id: str,
        metadata: Mapping[str, str],
    ) -> CheckoutSession:
        """A hosted Checkout page in subscription mode; ``metadata`` goes on the session and subscription."""
        items: list[Any] = [
            {"price": item.price}
            if item.quantity is None
            else {"price": item.price, "quantity": item.quantity}
            for item in line_items
        ]
        created = await self._call(
            "checkout session",
            self._client.v1.checkout.sessions.create_async(
                {
                    "mode": "subscription",
                    "customer": customer,
                    "line_items": items,
                    "success_url": success_url,
                    "cancel_url": cancel_url,
                    "client_reference_id": client_reference_id,
                    "metadata": dict(metadata),
                    "subscription_data": {"metadata": dict(metadata)},
                }
            ),
        )
        if not created.url:
            raise PaymentProviderError("The payment provider returned no checkout page.")
        return CheckoutSession(str(created.id), str(created.url))

    async def create_portal_session(self, *, customer: str, return_url: str) -> str:
        created = await self._call(
            "billing portal session",
            self._client.v1.billing_portal.sessions.create_async(
                {"customer": customer, "return_url": return_url}
            ),
        )
        return str(created.url)

    async def retrieve_subscription(self, subscription_id: str) -> Subscription:
        found = await self._call(
            "subscription", self._client.v1.subscriptions.retrieve_async(subscription_id)
        )
        return _subscription(_plain(found))

    async def change_item_prices(self, subscription_id: str, prices: Mapping[str, str]) -> Subscription:
        """Put subscription items (by item id) on other prices, without prorations; returns the result."""
        items: list[Any] = [{"id": item_id, "price": price} for item_id, price in prices.items()]
        updated = await self._call(
            "subscription",
            self._client.v1.subscriptions.update_async(
                subscription_id, {"items": items, "proration_behavior": "none"}
            ),
        )
        return _subscription(_plain(updated))

    async def customer_subscriptions(self, customer: str) -> list[Subscription]:
        """Every subscription of the customer, whatever its status (canceled ones included)."""
        listed = self._client.v1.subscriptions.list_async(
            {"customer": customer, "status": "all", "limit": PAGE_SIZE}
        )
        return [_subscription(s) async for s in self._all("subscription", listed)]


def _duplicate_identifier(exc: stripe.InvalidRequestError) -> bool:
    message = str(getattr(exc, "user_message", None) or exc)
    return "already exists with identifier" in message


def _log_failure(what: str, exc: Any) -> None:
    """Enough to find the request in Stripe's dashboard; never the response body."""
    log.warning(
        "stripe call failed",
        extra={
            "stripe_object": what,
            "error_type": type(exc).__name__,
            "http_status": getattr(exc, "http_status", None),
            "stripe_code": getattr(exc, "code", None),
            "stripe_request_id": getattr(exc, "request_id", None),
        },
    )
