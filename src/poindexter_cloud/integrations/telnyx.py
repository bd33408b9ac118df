"""The Telnyx adapter: the only module that imports the ``telnyx`` SDK (4.x).

``TelnyxAdapter`` wraps one ``telnyx.AsyncTelnyx`` pointed at ``Settings.telnyx_api_base_url`` (Telnyx in
production, the sandbox's simulator elsewhere; the SDK wants the base to end in ``/v2``) with just the calls
provisioning needs (searching, ordering, finding and releasing numbers, and the messaging profile their
inbound SMS webhooks come from) and the one the identity API needs: sending an SMS. Every number we order
carries ``customer_reference`` = our identity's id, so an order whose answer was lost is found again instead
of being placed twice.

``verify_webhook`` checks a delivery with the SDK's ``webhooks.unwrap`` (Ed25519 over
``"{telnyx-timestamp}|{body}"``, at most 300 s off) against ``TELNYX_PUBLIC_KEY`` (outside production,
when unset, the sandbox's key from ``{SANDBOX_URL}/telnyx/_control/public_key``).

SDK errors become ``ProviderUnavailable`` / ``ProviderRefused`` (``TelnyxRefused`` carries Telnyx's error
code) with messages of our own; bodies, texts and keys are never logged.
"""

from __future__ import annotations

import json
import logging
import random
import uuid
from collections.abc import Awaitable, Mapping
from dataclasses import dataclass
from typing import Any, Final, Self, TypeVar

import httpx
import telnyx
from telnyx.types import available_phone_number_list_params

from poindexter_cloud.core.settings import Settings
from poindexter_cloud.integrations.errors import (
    InvalidTelnyxSignature,
    NumberNotAvailable,
    ProviderObjectMissing,
    ProviderRefused,
    ProviderUnavailable,
)

log = logging.getLogger(__name__)

PROVIDER: Final = "telnyx"
TIMEOUT_SECONDS: Final = 20.0
MAX_RETRIES: Final = 1
SEARCH_LIMIT: Final = 20
PROFILE_NAME: Final = "Poindexter Cloud"
# A number the account holds for us: ordered and not (yet) failed or released.
HELD_STATUSES: Final = ("active", "purchase-pending")
NOT_AVAILABLE_CODE: Final = "10015"

T = TypeVar("T")


class TelnyxRefused(ProviderRefused):
    """Telnyx refused the request; ``telnyx_code`` is its error code (``40310`` an invalid 'to', ``40302`` a
    message too large, ...), for the caller to map to an error of its own."""

    def __init__(self, provider: str, message: str, telnyx_code: str | None) -> None:
        super().__init__(provider, message)
        self.telnyx_code = telnyx_code


@dataclass(frozen=True, slots=True)
class SentSms:
    id: str
    status: str  # queued at first; Telnyx's message.sent / message.finalized webhooks follow
    parts: int


@dataclass(frozen=True, slots=True)
class Number:
    id: str
    phone_number: str
    status: str
    messaging_profile_id: str | None


@dataclass(frozen=True, slots=True)
class Order:
    id: str
    status: str  # pending, success, failure
    phone_numbers: tuple[str, ...]


def _error_code(exc: telnyx.APIStatusError) -> str | None:
    body = exc.body
    if isinstance(body, Mapping):
        errors = body.get("errors")
        if isinstance(errors, list) and errors and isinstance(errors[0], Mapping):
            return str(errors[0].get("code") or "") or None
    return None


def _order(data: Any) -> Order:
    return Order(
        str(data.id), str(data.status), tuple(str(n.phone_number) for n in data.phone_numbers or () if n)
    )


def _number(data: Any) -> Number:
    return Number(str(data.id), str(data.phone_number), str(data.status), data.messaging_profile_id or None)


class TelnyxAdapter:
    """One SDK client with its own connection pool; close it (or use ``async with``)."""

    def __init__(self, api_key: str, base_url: str) -> None:
        self._client = telnyx.AsyncTelnyx(
            api_key=api_key, base_url=base_url, timeout=TIMEOUT_SECONDS, max_retries=MAX_RETRIES
        )
        # For creations Telnyx cannot dedupe (it takes no Idempotency-Key there): the SDK would repeat one
        # whose answer was lost (a time-out, a 5xx after it acted), and a repeated number order fails as
        # "not available" (we bought it) and buys another. The failure goes to the job instead, whose next
        # attempt first adopts what the lost call made (``provisioning.lifecycle``).
        self._once = self._client.with_options(max_retries=0)

    @classmethod
    def from_settings(cls, settings: Settings) -> TelnyxAdapter:
        if not settings.telnyx_api_key:
            raise ProviderRefused(PROVIDER, "Telnyx is not configured (TELNYX_API_KEY is not set).")
        return cls(settings.telnyx_api_key, settings.telnyx_api_base_url)

    async def close(self) -> None:
        await self._client.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def sdk(self) -> telnyx.AsyncTelnyx:
        """The SDK client itself, for tests and operator tooling; provisioning uses the methods below."""
        return self._client

    async def _call(self, what: str, call: Awaitable[T]) -> T:
        try:
            return await call
        except telnyx.APIConnectionError as exc:  # timeouts included
            log.warning("telnyx call failed", extra={"call": what, "error": type(exc).__name__})
            raise ProviderUnavailable(PROVIDER, f"Telnyx could not be reached to {what}.") from None
        except telnyx.APIStatusError as exc:
            status, code = exc.status_code, _error_code(exc)
            log.warning("telnyx call failed", extra={"call": what, "status": status, "code": code})
            if status == 404:
                raise ProviderObjectMissing(PROVIDER, f"Telnyx has no such object ({what}).") from None
            if status == 422 and code == NOT_AVAILABLE_CODE:
                raise NumberNotAvailable(PROVIDER, "The number is no longer available.") from None
            if status >= 500 or status in (408, 409, 429):
                raise ProviderUnavailable(
                    PROVIDER, f"Telnyx is not answering ({status}) to {what}."
                ) from None
            raise TelnyxRefused(
                PROVIDER, f"Telnyx refused to {what} ({status} {code or ''}).", code
            ) from None

    # --- numbers ---------------------------------------------------------------------------------------

    async def search_numbers(self, country: str, area_code: str | None) -> list[str]:
        """SMS-capable numbers on sale, in random order (concurrent buyers then rarely want the same)."""
        wanted: available_phone_number_list_params.Filter = {
            "country_code": country,
            "features": ["sms"],
            "limit": SEARCH_LIMIT,
        }
        if area_code:
            wanted["national_destination_code"] = area_code
        found = await self._call("search numbers", self._client.available_phone_numbers.list(filter=wanted))
        numbers = [str(n.phone_number) for n in found.data or () if n.phone_number]
        random.shuffle(numbers)
        return numbers

    async def order_number(self, phone_number: str, customer_reference: str) -> Order:
        """Order one number (``NumberNotAvailable`` if it was sold meanwhile); the order starts pending."""
        created = await self._call(
            "order a number",
            self._once.number_orders.create(
                phone_numbers=[{"phone_number": phone_number}], customer_reference=customer_reference
            ),
        )
        if created.data is None:
            raise ProviderUnavailable(PROVIDER, "Telnyx answered the order without the order.")
        return _order(created.data)

    async def get_order(self, order_id: str) -> Order:
        found = await self._call("read a number order", self._client.number_orders.retrieve(order_id))
        if found.data is None:
            raise ProviderObjectMissing(PROVIDER, "Telnyx has no such number order.")
        return _order(found.data)

    async def pending_orders(self, customer_reference: str) -> list[Order]:
        page = await self._call(
            "list number orders",
            self._client.number_orders.list(
                filter={"customer_reference": customer_reference, "status": "pending"}
            ),
        )
        return [_order(order) for order in page.data]

    async def held_numbers(self, customer_reference: str) -> list[Number]:
        """The numbers the account holds under this reference (active or still being bought)."""
        page = await self._call(
            "list numbers",
            self._client.phone_numbers.list(filter={"customer_reference": customer_reference}),
        )
        return [_number(n) for n in page.data if n.status in HELD_STATUSES]

    async def number(self, phone_number: str) -> Number | None:
        """The account's record of a number (E.164), if it holds it."""
        page = await self._call(
            "find a number",
            self._client.phone_numbers.list(filter={"phone_number": phone_number.removeprefix("+")}),
        )
        matches = [_number(n) for n in page.data if n.phone_number == phone_number]
        return next((n for n in matches if n.status in HELD_STATUSES), None)

    async def holds(self, number_id: str) -> bool:
        """Whether the account still holds the number with this Telnyx id."""
        try:
            found = await self._call("read a number", self._client.phone_numbers.retrieve(number_id))
        except ProviderObjectMissing:
            return False
        return found.data is not None and str(found.data.status) in HELD_STATUSES

    async def attach(self, number_id: str, messaging_profile_id: str) -> None:
        """Put the number in the messaging profile, so its inbound SMS reach the profile's webhook."""
        await self._call(
            "attach the messaging profile",
            self._client.phone_numbers.messaging.update(number_id, messaging_profile_id=messaging_profile_id),
        )

    async def release(self, number_id: str) -> bool:
        """Give the number back (by its Telnyx id, never its E.164 form: once back on sale it may be someone
        else's); False if it was released already."""
        try:
            await self._call("release a number", self._client.phone_numbers.delete(number_id))
        except ProviderObjectMissing:
            return False
        return True

    # --- the messaging profile -------------------------------------------------------------------------

    async def find_messaging_profile(self, name: str) -> str | None:
        """The oldest profile of that name, if any."""
        page = await self._call(
            "list messaging profiles", self._client.messaging_profiles.list(filter={"name": name})
        )
        named = sorted((p for p in page.data if p.name == name), key=lambda p: str(p.created_at or ""))
        return str(named[0].id) if named else None

    async def create_messaging_profile(self, name: str, webhook_url: str, destinations: list[str]) -> str:
        """A profile whose webhooks (API v2) go to ``webhook_url``; ``destinations`` are the countries its
        numbers may text (Telnyx requires the list)."""
        created = await self._call(
            "create a messaging profile",
            self._once.messaging_profiles.create(
                name=name,
                whitelisted_destinations=destinations,
                webhook_url=webhook_url,
                webhook_api_version="2",
            ),
        )
        if created.data is None or not created.data.id:
            raise ProviderUnavailable(PROVIDER, "Telnyx answered without the messaging profile.")
        return str(created.data.id)

    # --- messages ----------------------------------------------------------------------------------------

    async def send_sms(self, from_number: str, to: str, text: str | None, media_urls: list[str]) -> SentSms:
        """Queue an SMS (an MMS with ``media_urls``) from one of our numbers. An idempotency key of its own
        makes the SDK's retry after a lost answer a no-op at Telnyx instead of a second message."""
        sent = await self._call(
            "send the message",
            self._client.messages.send(
                from_=from_number,
                to=to,
                text=text if text else telnyx.omit,
                media_urls=media_urls if media_urls else telnyx.omit,
                idempotency_key=str(uuid.uuid4()),
            ),
        )
        data = sent.data
        if data is None or not data.id:
            raise ProviderUnavailable(PROVIDER, "Telnyx answered the message without the message.")
        status = str(data.to[0].status) if data.to and data.to[0].status else "queued"
        return SentSms(str(data.id), status, int(data.parts or 1))


# --- webhooks ------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class WebhookEvent:
    """A verified Telnyx event: its id, type and the whole JSON body as Telnyx sent it."""

    id: str
    type: str
    payload: dict[str, Any]


_VERIFIER: Final = telnyx.Telnyx(api_key="webhook-verification-only", base_url="http://127.0.0.1/v2")


def verify_webhook(body: bytes, headers: Mapping[str, str], public_key: str) -> WebhookEvent:
    """Check the ``telnyx-signature-ed25519`` / ``telnyx-timestamp`` headers with the SDK and parse the v2
    envelope; ``InvalidTelnyxSignature`` for a forged, stale or malformed delivery."""
    try:
        text = body.decode("utf-8")
        event = _VERIFIER.webhooks.unwrap(text, headers=dict(headers), key=public_key)
    except (ValueError, UnicodeDecodeError):
        raise InvalidTelnyxSignature("The Telnyx signature does not verify.") from None
    data = getattr(event, "data", None)
    event_id, event_type = getattr(data, "id", None), getattr(data, "event_type", None)
    payload = json.loads(text)
    if not event_id or not event_type or not isinstance(payload, dict):
        raise InvalidTelnyxSignature("The body is not a Telnyx event.")
    return WebhookEvent(str(event_id), str(event_type), payload)


_SANDBOX_PUBLIC_KEYS: dict[str, str] = {}


async def webhook_public_key(settings: Settings) -> str:
    """``TELNYX_PUBLIC_KEY``, or outside production the sandbox's key (fetched once per process)."""
    if settings.telnyx_public_key:
        return settings.telnyx_public_key
    if settings.is_production:
        raise ProviderRefused(PROVIDER, "TELNYX_PUBLIC_KEY is not set.")
    url = f"{settings.sandbox_url}/telnyx/_control/public_key"
    if url not in _SANDBOX_PUBLIC_KEYS:
        try:
            async with httpx.AsyncClient(timeout=TIMEOUT_SECONDS) as http:
                response = await http.get(url)
                response.raise_for_status()
                _SANDBOX_PUBLIC_KEYS[url] = str(response.json()["public_key"])
        except (httpx.HTTPError, ValueError, KeyError) as exc:
            raise ProviderUnavailable(PROVIDER, f"The sandbox's Telnyx key is unavailable: {exc}") from None
    return _SANDBOX_PUBLIC_KEYS[url]
