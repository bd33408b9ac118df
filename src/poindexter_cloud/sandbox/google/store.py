"""The simulator's state, in this process's memory: the domain's users, their mailboxes and calendars, the
service accounts the token endpoint trusts, the access tokens it issued, and the pending faults."""

from __future__ import annotations

import base64
import os
import secrets
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import EmailMessage
from typing import TYPE_CHECKING, Any, Final

from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey

if TYPE_CHECKING:
    from .mime import Facts

TOKEN_LIFETIME_SECONDS: Final = 3599  # what Google's token endpoint answers in expires_in
DEFAULT_DOMAIN: Final = "dex.sandbox.test"
CUSTOMER_ID: Final = "C04dexsbx"
SERVICE_ACCOUNT_PREFIX: Final = "sa:"  # principal keys of service accounts acting as themselves


def now() -> float:
    return time.time()


def rfc3339_millis(moment: float) -> str:
    """``2024-05-01T12:34:56.789Z``, the form of the APIs' creation and update times."""
    stamp = datetime.fromtimestamp(moment, UTC)
    return stamp.strftime("%Y-%m-%dT%H:%M:%S.") + f"{stamp.microsecond // 1000:03d}Z"


def numeric_id(digits: int = 21) -> str:
    return "1" + "".join(secrets.choice("0123456789") for _ in range(digits - 1))


def b64url(data: bytes) -> str:
    """URL-safe base64 with padding, as the Gmail API writes ``raw`` and ``body.data``."""
    return base64.urlsafe_b64encode(data).decode()


def b64url_decode(text: str) -> bytes:
    """Accepts URL-safe or standard base64, with or without padding (the Gmail API accepts both)."""
    cleaned = "".join(text.split())
    cleaned = cleaned.replace("+", "-").replace("/", "_").rstrip("=")
    return base64.urlsafe_b64decode(cleaned + "=" * (-len(cleaned) % 4))


@dataclass(slots=True, eq=False)
class ServiceAccount:
    client_email: str
    client_id: str
    keys: dict[str, RSAPublicKey]  # private_key_id -> public key
    delegated_scopes: frozenset[str] | None  # domain-wide delegation allowlist; None: every scope


@dataclass(slots=True, eq=False)
class Grant:
    token: str
    client_email: str
    subject: str | None  # the delegated user's email (as asked), None: the service account itself
    scopes: frozenset[str]
    expires_at: float


@dataclass(slots=True, eq=False)
class User:
    id: str
    primary_email: str
    given_name: str
    family_name: str
    created: float
    password: str = ""
    hash_function: str | None = None
    is_admin: bool = False
    suspended: bool = False
    suspension_time: float | None = None
    archived: bool = False
    change_password_at_next_login: bool = False
    include_in_global_address_list: bool = True
    ip_whitelisted: bool = False
    org_unit_path: str = "/"
    display_name: str | None = None
    aliases: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)  # the other writable fields, stored as given
    version: int = 1
    deleted: float | None = None

    @property
    def full_name(self) -> str:
        return f"{self.given_name} {self.family_name}".strip()


@dataclass(slots=True, eq=False)
class Message:
    id: str
    thread_id: str
    labels: list[str]
    internal_date: int  # epoch milliseconds
    raw: bytes  # CRLF line endings
    history_id: int
    parsed: EmailMessage | None = None
    before_trash: list[str] = field(default_factory=list)  # the labels messages.trash took away
    facts: Facts | None = None  # what searches look at, built on the first search


@dataclass(slots=True, eq=False)
class Mailbox:
    owner_id: str
    messages: dict[str, Message] = field(default_factory=dict)
    by_message_id: dict[str, str] = field(default_factory=dict)  # Message-ID header -> message id
    history_id: int = 1000


@dataclass(slots=True, eq=False)
class Event:
    id: str
    fields: dict[str, Any]  # the client's other fields (summary, attendees, reminders, ...), as given
    start: dict[str, Any]  # as given ({"dateTime", "timeZone"?} or {"date"})
    end: dict[str, Any]
    start_at: float  # epoch seconds, for ordering and time ranges
    end_at: float
    created: float
    updated: float
    change: int  # the calendar's change counter at the last change (sync tokens)
    creator: str  # the email of whoever created it
    status: str = "confirmed"
    sequence: int = 0


@dataclass(slots=True, eq=False)
class Calendar:
    """A user's primary calendar (its id is their address) or a secondary one (``...@group.calendar...``)."""

    id: str
    owner: str  # the principal key of its owner: a user id, or "sa:" + a service account's email
    summary: str
    time_zone: str
    primary: bool
    description: str = ""
    events: dict[str, Event] = field(default_factory=dict)
    changes: int = 0


@dataclass(slots=True)
class Fault:
    """The next ``count`` calls of ``api`` (any API when None) wait ``delay_seconds`` and then answer
    ``status`` (or, with no status, are served normally after the wait)."""

    api: str | None
    count: int
    status: int | None
    delay_seconds: float
    method: str | None = None

    def view(self) -> dict[str, Any]:
        return {
            "api": self.api,
            "count": self.count,
            "status": self.status,
            "delay_seconds": self.delay_seconds,
            "method": self.method,
        }


class GoogleState:
    """Everything the simulator knows. Service accounts survive :meth:`reset`; the rest does not."""

    def __init__(self) -> None:
        self.service_accounts: dict[str, ServiceAccount] = {}
        self.default_account: dict[str, str] | None = None  # the key /_control/service-account hands out
        self.reset()

    def reset(self) -> None:
        self.domain = os.environ.get("SANDBOX_GOOGLE_DOMAIN", DEFAULT_DOMAIN).strip().lower()
        self.time_zone = os.environ.get("SANDBOX_GOOGLE_TIME_ZONE", "UTC")
        self.tokens: dict[str, Grant] = {}
        self.users: dict[str, User] = {}
        self.deleted_users: dict[str, User] = {}
        self.emails: dict[str, str] = {}  # lower-cased primary address or alias -> user id
        self.mailboxes: dict[str, Mailbox] = {}  # user id -> mailbox
        self.calendars: dict[str, Calendar] = {}  # calendar id -> calendar
        self.faults: list[Fault] = []
        self.requests = 0
        self.tokens_issued = 0
        self._sequence = 0
        admin = os.environ.get("SANDBOX_GOOGLE_ADMIN", f"admin@{self.domain}").strip().lower()
        self.admin_email = admin
        self.outbound: list[dict[str, Any]] = []  # messages sent to addresses outside the sandbox domain
        self.add_user(
            User(
                id=numeric_id(),
                primary_email=admin,
                given_name="Sandbox",
                family_name="Admin",
                created=now(),
                is_admin=True,
            )
        )

    # ------------------------------------------------------------------------------------------ users

    def add_user(self, user: User) -> User:
        """A new user of the domain, with an empty mailbox and a primary calendar."""
        self.users[user.id] = user
        self.emails[user.primary_email.lower()] = user.id
        self.mailboxes[user.id] = Mailbox(user.id)
        self.add_calendar(Calendar(user.primary_email, user.id, user.primary_email, self.time_zone, True))
        return user

    def remove_user(self, user: User) -> None:
        """Delete a user with their mailbox and every calendar they own."""
        del self.users[user.id]
        for address in (user.primary_email, *user.aliases):
            self.emails.pop(address.lower(), None)
        self.mailboxes.pop(user.id, None)
        for calendar in [c for c in self.calendars.values() if c.owner == user.id]:
            del self.calendars[calendar.id]
        user.deleted = now()
        self.deleted_users[user.id] = user

    def rename_user(self, user: User, email: str) -> None:
        """A new primary address; the old one stays as an alias (as Google keeps it), and the primary calendar
        takes the new address as its id."""
        old = user.primary_email
        user.primary_email = email
        user.aliases = [a for a in user.aliases if a.lower() != email.lower()]
        if old.lower() != email.lower():
            user.aliases.append(old)
        self.emails[email.lower()] = user.id
        calendar = self.calendars.pop(old, None)
        if calendar is not None:
            calendar.id = calendar.summary = email
            self.add_calendar(calendar)

    # ------------------------------------------------------------------------------------------ calendars

    def add_calendar(self, calendar: Calendar) -> Calendar:
        self.calendars[calendar.id] = calendar
        return calendar

    def primary_calendar(self, principal: str, email: str) -> Calendar:
        """The primary calendar of ``principal``; a service account's own is made on first use."""
        calendar = self.calendars.get(email)
        if calendar is None or calendar.owner != principal:
            calendar = self.add_calendar(Calendar(email, principal, email, self.time_zone, True))
        return calendar

    def user_by_key(self, key: str) -> User | None:
        """A user by primary address, alias or id."""
        found = self.users.get(key)
        if found is not None:
            return found
        user_id = self.emails.get(key.strip().lower())
        return self.users.get(user_id) if user_id is not None else None

    def in_domain(self, email: str) -> bool:
        return email.rpartition("@")[2].lower() == self.domain

    # ------------------------------------------------------------------------------------------ ids

    def message_id(self) -> str:
        """16 hex digits that grow with time, like Gmail's ids."""
        self._sequence += 1
        return f"{(int(now() * 1000) << 20) | (self._sequence & 0xFFFFF):x}"

    def counts(self) -> dict[str, Any]:
        return {
            "domain": self.domain,
            "admin": self.admin_email,
            "service_accounts": len(self.service_accounts),
            "tokens": len(self.tokens),
            "tokens_issued": self.tokens_issued,
            "users": len(self.users),
            "deleted_users": len(self.deleted_users),
            "messages": sum(len(box.messages) for box in self.mailboxes.values()),
            "events": sum(
                1 for cal in self.calendars.values() for e in cal.events.values() if e.status != "cancelled"
            ),
            "faults": len(self.faults),
            "requests": self.requests,
        }


STATE: Final = GoogleState()
