"""The simulator's state (one per sandbox process, in memory until ``POST /signal/_control/reset``): the
Signal network as the sandbox knows it (who has a Signal account, under which ACI), the accounts this
signal-cli-rest-api holds and what waits in their inboxes, the Signal users outside it, and the groups."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

from ..fault_queue import take

# How long a verification code stays good (Signal's registration sessions last about ten minutes).
CODE_LIFETIME_SECONDS: Final = 600.0


def now_ms() -> int:
    return int(time.time() * 1000)


class Party(Protocol):
    """Anyone with a Signal account: one of this API's accounts or a user outside the sandbox."""

    @property
    def number(self) -> str: ...

    @property
    def uuid(self) -> str: ...

    @property
    def profile_name(self) -> str: ...


@dataclass(slots=True)
class Verification:
    code: str  # six digits, without the dash
    issued_at: float

    def expired(self) -> bool:
        return time.time() - self.issued_at > CODE_LIFETIME_SECONDS


@dataclass(slots=True)
class Contact:
    """What the account set for someone with ``PUT /v1/contacts``."""

    name: str = ""
    expiration_seconds: int = 0


@dataclass(slots=True, eq=False)
class Attachment:
    id: str
    content_type: str
    filename: str | None
    data: bytes
    uploaded_at: int


@dataclass(slots=True, eq=False)
class Account:
    """A number this signal-cli-rest-api holds (registered, or on its way to be)."""

    number: str
    uuid: str
    registered: bool = False
    # After a plain unregister the Signal account still exists: registering again reactivates it, no code.
    deactivated: bool = False
    captcha_required: bool = False
    verification: Verification | None = None
    sms_requested: bool = False
    profile_name: str = ""  # signal-cli-rest-api sets the whole profile name as the given name
    about: str = ""
    avatar: bytes | None = None
    profile_updated_at: int = 0
    inbox: deque[dict[str, Any]] = field(default_factory=deque)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    contacts: dict[str, Contact] = field(default_factory=dict)
    # Everyone it has exchanged messages with, number -> ACI, in order of first contact.
    known: dict[str, str] = field(default_factory=dict)

    def enqueue(self, envelope: dict[str, Any]) -> None:
        """An envelope arrives for this account's next receive."""
        self.inbox.append(envelope)
        self.arrived.set()

    async def wait_for_envelopes(self, seconds: float) -> None:
        """Return once something is waiting, or after ``seconds``."""
        if self.inbox or seconds <= 0:
            return
        self.arrived.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.arrived.wait(), seconds)

    def shown_name(self, other: Party) -> str:
        """How this account's signal-cli names ``other``: the contact name, else the profile name."""
        contact = self.contacts.get(other.number)
        return contact.name if contact is not None and contact.name else other.profile_name


@dataclass(slots=True, eq=False)
class OutsideUser:
    """A Signal user outside the sandbox: a phone with a number and a profile name, whose screen
    (``received``) tests can read through a control."""

    number: str
    uuid: str
    name: str
    received: list[dict[str, Any]] = field(default_factory=list)

    @property
    def profile_name(self) -> str:
        return self.name


@dataclass(slots=True, eq=False)
class Group:
    id: str  # signal-cli's id: base64 of 32 random bytes
    name: str
    description: str
    members: list[str]  # numbers, creator first
    admins: list[str]
    add_members: str  # signal-cli's EVERY_MEMBER / ONLY_ADMINS
    send_messages: str
    invite_link: str
    expiration_seconds: int
    revision: int = 0


@dataclass(slots=True)
class Fault:
    """The next ``count`` API calls to ``endpoint`` fail as ``kind`` says. ``endpoint`` is written as in
    the API's documentation, ``"POST /v1/register/{number}"`` (a ``{...}`` segment matches any one segment);
    empty means every call."""

    kind: str  # "error" (500), "timeout", "rate_limit" (registration only)
    count: int
    endpoint: str = ""
    seconds: float = 30.0  # for "timeout": how long the call hangs before signal-cli-rest-api gives up
    status: int = 429  # for "rate_limit": what Signal answered, 413 or 429

    def matches(self, method: str, path: str) -> bool:
        if not self.endpoint:
            return True
        want_method, _, template = self.endpoint.partition(" ")
        wanted, actual = template.strip("/").split("/"), path.strip("/").split("/")
        return (
            method == want_method.upper()
            and len(wanted) == len(actual)
            and all(
                w == a or (w.startswith("{") and w.endswith("}")) for w, a in zip(wanted, actual, strict=True)
            )
        )


class State:
    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.accounts: dict[str, Account] = {}
        # The Signal server's registry: every number with a Signal account -> its ACI (outside users too).
        self.signal_users: dict[str, str] = {}
        self.outsiders: dict[str, OutsideUser] = {}
        self.groups: dict[str, Group] = {}
        self.attachments: dict[str, Attachment] = {}
        # Captcha demands: for the next N registrations of any number, and for particular numbers.
        self.captcha_next = 0
        self.captcha_numbers: set[str] = set()
        self.faults: list[Fault] = []
        self.sms_log: list[dict[str, Any]] = []
        self.calls: list[dict[str, Any]] = []
        self.last_timestamp = 0

    def timestamp(self) -> int:
        """A fresh message timestamp in ms, strictly increasing (Signal identifies messages by them)."""
        self.last_timestamp = max(now_ms(), self.last_timestamp + 1)
        return self.last_timestamp

    def aci(self, number: str) -> str:
        """The number's ACI on the Signal server, created with its first registration."""
        return self.signal_users.setdefault(number, str(uuid.uuid4()))

    def account(self, number: str) -> Account:
        found = self.accounts.get(number)
        if found is None:
            found = self.accounts[number] = Account(number, self.aci(number))
        return found

    def registered(self, identifier: str) -> Account | None:
        """A registered account by number or ACI."""
        for account in self.accounts.values():
            if account.registered and identifier in (account.number, account.uuid):
                return account
        return None

    def outsider(self, identifier: str) -> OutsideUser | None:
        """An outside user by number or ACI."""
        for user in self.outsiders.values():
            if identifier in (user.number, user.uuid):
                return user
        return None

    def party(self, identifier: str) -> Account | OutsideUser | None:
        """Whoever has a working Signal account under this number or ACI."""
        return self.registered(identifier) or self.outsider(identifier)

    def take_fault(self, method: str, path: str) -> Fault | None:
        return take(self.faults, lambda fault: fault.matches(method, path))

    def summary(self) -> dict[str, Any]:
        return {
            "accounts": [
                {
                    "number": a.number,
                    "uuid": a.uuid,
                    "registered": a.registered,
                    "captcha_required": a.captcha_required,
                    "pending_code": a.verification.code if a.verification is not None else None,
                    "profile_name": a.profile_name,
                    "inbox": len(a.inbox),
                }
                for a in self.accounts.values()
            ],
            "outside_users": [
                {"number": u.number, "uuid": u.uuid, "name": u.name} for u in self.outsiders.values()
            ],
            "groups": [{"id": g.id, "name": g.name, "members": g.members} for g in self.groups.values()],
            "captcha": {"next": self.captcha_next, "numbers": sorted(self.captcha_numbers)},
            "faults": [
                {
                    "kind": f.kind,
                    "remaining": f.count,
                    "endpoint": f.endpoint,
                    "seconds": f.seconds,
                    "status": f.status,
                }
                for f in self.faults
            ],
            "sms": list(self.sms_log),
            "calls": list(self.calls),
        }


STATE: Final = State()
