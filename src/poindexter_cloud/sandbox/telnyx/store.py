"""The simulator's state (one per sandbox process, in memory until ``POST /telnyx/_control/reset``): the
account's phone numbers, messaging profiles, number orders and messages, and the sandbox's own settings."""

from __future__ import annotations

import secrets
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

# One organization for the whole sandbox: every API key starting with ``KEY`` is the same account.
ORGANIZATION_ID: Final = str(uuid.uuid4())

# A number the account holds (ordered and not yet failed or released): it is off sale.
HELD_STATUSES: Final = frozenset({"purchase-pending", "active"})


def new_uuid() -> str:
    return str(uuid.uuid4())


def new_numeric_id() -> str:
    """Telnyx phone number ids are large decimal integers as strings."""
    return str(1_293_384_261_075_731_456 + secrets.randbelow(10**15))


def iso(seconds: float | None = None) -> str:
    """``2019-01-23T18:10:02.574+00:00``: how Telnyx writes times."""
    moment = datetime.fromtimestamp(time.time() if seconds is None else seconds, UTC)
    return moment.isoformat(timespec="milliseconds")


@dataclass(slots=True, eq=False)
class MessagingProfile:
    id: str
    created_at: str
    updated_at: str
    name: str
    whitelisted_destinations: list[str]
    webhook_url: str | None = None
    webhook_failover_url: str | None = None
    webhook_api_version: str = "2"
    enabled: bool = True
    # Settings the simulator stores and echoes but does not act on (alpha_sender, daily_spend_limit...).
    settings: dict[str, Any] = field(default_factory=dict)
    v1_secret: str = field(default_factory=lambda: secrets.token_urlsafe(24))


@dataclass(slots=True, eq=False)
class PhoneNumber:
    id: str
    phone_number: str
    created_at: str
    purchased_at: str
    updated_at: str
    messaging_profile_id: str | None = None
    connection_id: str | None = None
    billing_group_id: str | None = None
    customer_reference: str | None = None
    external_pin: str | None = None
    address_id: str | None = None
    hd_voice_enabled: bool = False
    tags: list[str] = field(default_factory=list)
    # purchase-pending -> active | purchase-failed; deleted once released.
    status: str = "purchase-pending"
    activated_at: str | None = None


@dataclass(slots=True, eq=False)
class OrderedNumber:
    id: str
    phone_number: str
    phone_number_id: str
    status: str = "pending"


@dataclass(slots=True, eq=False)
class NumberOrder:
    id: str
    created_at: str
    updated_at: str
    phone_numbers: list[OrderedNumber]
    messaging_profile_id: str | None = None
    connection_id: str | None = None
    billing_group_id: str | None = None
    customer_reference: str | None = None
    status: str = "pending"  # -> success | failure


@dataclass(slots=True, frozen=True)
class Party:
    phone_number: str
    carrier: str
    line_type: str


@dataclass(slots=True, eq=False)
class Message:
    id: str
    direction: str  # "outbound" (sent through the API) or "inbound" (received by one of our numbers)
    sender: Party
    recipient: Party
    text: str | None
    media_urls: list[str]
    messaging_profile_id: str | None
    received_at: str
    subject: str | None = None
    webhook_url: str | None = None
    webhook_failover_url: str | None = None
    # Where this message's webhooks go, in order of trial: the message's URLs, then the profile's.
    webhook_urls: tuple[str, ...] = ()
    status: str = "queued"
    sent_at: str | None = None
    completed_at: str | None = None
    tags: list[str] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)

    @property
    def type(self) -> str:
        return "MMS" if self.media_urls else "SMS"


@dataclass(slots=True)
class Settings:
    """How the sandbox's world behaves (``/telnyx/_control/network`` and ``/_control/number_orders``)."""

    # Seconds between a message's states (queued -> sent -> delivered), like a carrier's latency.
    carrier_delay_seconds: float = 0.05
    # Seconds from a number order's creation (pending) to its outcome.
    order_seconds: float = 0.05
    # How new number orders end: "success", or "failure" (every number purchase-failed).
    order_outcome: str = "success"


class State:
    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.numbers: dict[str, PhoneNumber] = {}
        self.profiles: dict[str, MessagingProfile] = {}
        self.orders: dict[str, NumberOrder] = {}
        self.messages: dict[str, Message] = {}
        # Messages that left the sandbox's network: outbound to numbers nobody here owns.
        self.off_network: list[Message] = []
        self.settings = Settings()

    def held(self, phone_number: str) -> PhoneNumber | None:
        """The account's record of ``phone_number`` while it is ordered or active (so not on sale)."""
        for number in self.numbers.values():
            if number.phone_number == phone_number and number.status in HELD_STATUSES:
                return number
        return None

    def owned(self, phone_number: str) -> PhoneNumber | None:
        """The account's active number ``phone_number``: one that can send and receive messages."""
        number = self.held(phone_number)
        return number if number is not None and number.status == "active" else None

    def number(self, key: str) -> PhoneNumber | None:
        """A number of the account (not released) by id, or by its E.164 form."""
        found = self.numbers.get(key)
        if found is None and key.startswith("+"):
            found = next(
                (n for n in self.numbers.values() if n.phone_number == key and n.status != "deleted"), None
            )
        return found if found is not None and found.status != "deleted" else None

    def counts(self) -> dict[str, Any]:
        return {
            "phone_numbers": [
                {"phone_number": n.phone_number, "status": n.status}
                for n in self.numbers.values()
                if n.status != "deleted"
            ],
            "messaging_profiles": len(self.profiles),
            "number_orders": len(self.orders),
            "messages": len(self.messages),
            "off_network": len(self.off_network),
        }


STATE: Final = State()
