"""The identity API contract: an identity as its subscriber and operators see it, the configuration Dex reads
at start, and the email, calendar, Signal and SMS calls. ``poindexter_cloud.client`` speaks it too."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

import msgspec


class StepView(msgspec.Struct):
    """One part of the identity: ``mailbox``, ``number``, ``messaging`` (inbound SMS reach us) or ``signal``;
    ``state`` is ``done``, ``pending``, ``removed`` or, for Signal, its registration state."""

    name: str
    state: str


class IdentityView(msgspec.Struct):
    user_id: uuid.UUID
    status: str  # provisioning, active, suspended, failed, deprovisioning, deleted
    email: str | None
    phone_number: str | None
    signal: str  # none, pending, retrying, awaiting_code, captcha_required, registered, failed, unregistered
    steps: list[StepView]
    pending: list[str]  # the steps not done yet
    failure_step: str | None
    failure_reason: str | None
    last_error: str | None
    signal_error: str | None
    provisioned_at: datetime | None
    status_changed_at: datetime
    updated_at: datetime


class ProvisioningIssue(msgspec.Struct):
    """Why an operator should look: ``failed``, ``stuck`` (no progress for a while), ``signal_captcha``
    (Signal wants a captcha solved) or ``signal_failed``."""

    problem: str
    identity: IdentityView


class ProvisioningIssues(msgspec.Struct):
    issues: list[ProvisioningIssue]
    stuck_after_minutes: int


# --- what Dex reads at start: GET /v1/identity and its parts ------------------------------------------------


class EmailIdentity(msgspec.Struct):
    """The mailbox. ``state``: ``ready``, ``pending`` (being provisioned), ``failed`` (provisioning failed;
    an operator retries it), ``suspended`` (payment failing) or ``removed``."""

    status: str  # the identity's
    state: str
    address: str | None
    pending: list[str]


class PhoneIdentity(msgspec.Struct):
    """The number, ``ready`` once it is ours and its SMS reach us (same states as the mailbox's, without
    ``suspended``: the number stays while a payment fails)."""

    status: str
    state: str
    number: str | None
    pending: list[str]


class SignalIdentity(msgspec.Struct):
    """The Signal account on the number: ``state`` as the mailbox's; ``registration`` the registration's own
    state (``pending``, ``retrying``, ``awaiting_code``, ``captcha_required``, ``registered``, ...)."""

    status: str
    state: str
    registration: str
    number: str | None
    pending: list[str]


class IdentityParts(msgspec.Struct):
    email: EmailIdentity
    phone: PhoneIdentity
    signal: SignalIdentity


class ProxyConfiguration(msgspec.Struct):
    """Where Dex's AI clients go, with its API key: the Anthropic SDK's ``base_url`` and the OpenAI SDK's."""

    base_url: str
    anthropic_base_url: str
    openai_base_url: str


class PlanInfo(msgspec.Struct):
    name: str | None
    state: str  # active, suspended (payment failing), none


class OperationLimitView(msgspec.Struct):
    per_minute: int
    per_day: int | None


class Limits(msgspec.Struct):
    """The plan's limits per API key: the identity API's by operation (email_send, email_read,
    calendar_read, calendar_write, signal_send, signal_read, sms_send, sms_read), the AI proxy's, sizes."""

    operations: dict[str, OperationLimitView]
    ai_requests_per_minute: int
    ai_tokens_per_minute: int
    max_attachment_bytes: int
    max_email_recipients: int
    max_sms_segments: int


class DexConfiguration(msgspec.Struct):
    """Everything Dex needs at start. ``ready`` once every part is; until then ``pending`` names the parts
    still being provisioned, and each part's ``state`` says whether it can be used already."""

    user_id: uuid.UUID
    status: str  # provisioning, active, suspended, failed, deprovisioning, deleted
    ready: bool
    pending: list[str]
    email: str | None
    phone_number: str | None
    signal: str  # the registration's state
    parts: IdentityParts
    proxy: ProxyConfiguration
    plan: PlanInfo
    limits: Limits
    failure_step: str | None
    failure_reason: str | None
    updated_at: datetime


# --- email --------------------------------------------------------------------------------------------------

Address = Annotated[str, msgspec.Meta(max_length=400, examples=["Ada Lovelace <ada@example.com>"])]
Addresses = Annotated[list[Address], msgspec.Meta(max_length=500)]
Body = Annotated[str, msgspec.Meta(max_length=2_000_000)]
ProviderId = Annotated[str, msgspec.Meta(max_length=200)]


class AttachmentUpload(msgspec.Struct, forbid_unknown_fields=True):
    """A file to send: its name, its bytes in standard base64 and, if not guessed from the name, its type."""

    filename: Annotated[str, msgspec.Meta(max_length=255)]
    content_base64: str
    content_type: Annotated[str, msgspec.Meta(max_length=255)] | None = None


class EmailSend(msgspec.Struct, forbid_unknown_fields=True):
    """An email from the identity's mailbox. Addresses are ``ada@example.com`` or ``Ada <ada@example.com>``;
    ``reply_to_message_id`` (a message of this mailbox) makes it a reply in that message's thread, with
    ``Re: <its subject>`` unless ``subject`` is given."""

    to: Addresses = msgspec.field(default_factory=list)
    cc: Addresses = msgspec.field(default_factory=list)
    bcc: Addresses = msgspec.field(default_factory=list)
    subject: Annotated[str, msgspec.Meta(max_length=998)] | None = None
    text: Body | None = None
    html: Body | None = None
    reply_to_message_id: ProviderId | None = None
    from_name: Annotated[str, msgspec.Meta(max_length=200)] | None = None
    attachments: list[AttachmentUpload] = msgspec.field(default_factory=list)


class EmailSent(msgspec.Struct):
    id: str  # Gmail's id of the sent copy in this mailbox
    thread_id: str
    message_id: str  # the RFC 822 Message-ID


class EmailAddress(msgspec.Struct):
    address: str
    name: str | None = None


class AttachmentInfo(msgspec.Struct):
    """An attachment of a received message; ``attachment_id`` (its MIME part) fetches it."""

    attachment_id: str
    filename: str
    content_type: str
    size: int


class EmailHeader(msgspec.Struct):
    name: str
    value: str


class EmailSummary(msgspec.Struct):
    id: str
    thread_id: str
    sender: EmailAddress | None
    to: list[EmailAddress]
    subject: str
    date: datetime | None
    snippet: str
    labels: list[str]
    unread: bool


class InboxPage(msgspec.Struct):
    messages: list[EmailSummary]
    next_page_token: str | None
    result_size_estimate: int


class EmailMessage(msgspec.Struct):
    id: str
    thread_id: str
    sender: EmailAddress | None
    to: list[EmailAddress]
    cc: list[EmailAddress]
    reply_to: list[EmailAddress]
    subject: str
    date: datetime | None
    message_id: str | None
    in_reply_to: str | None
    snippet: str
    labels: list[str]
    unread: bool
    text: str | None
    html: str | None
    attachments: list[AttachmentInfo]
    headers: list[EmailHeader]
    size: int


class AttachmentContent(msgspec.Struct):
    filename: str | None
    content_type: str | None
    size: int
    content_base64: str


# --- calendar -----------------------------------------------------------------------------------------------

Short = Annotated[str, msgspec.Meta(max_length=1024)]
Long = Annotated[str, msgspec.Meta(max_length=8192)]


class EventTime(msgspec.Struct, forbid_unknown_fields=True):
    """A moment: ``date_time`` in RFC 3339 (with an offset, or without one and a ``time_zone`` saying where
    the wall-clock time is), or ``date`` (YYYY-MM-DD) for an all-day event. ``time_zone`` (IANA) is also
    where the event lives when it is moved or repeated."""

    date_time: Annotated[str, msgspec.Meta(max_length=64)] | None = None
    date: Annotated[str, msgspec.Meta(max_length=10)] | None = None
    time_zone: Annotated[str, msgspec.Meta(max_length=64)] | None = None


class AttendeeInput(msgspec.Struct, forbid_unknown_fields=True):
    email: Address
    display_name: Annotated[str, msgspec.Meta(max_length=200)] | None = None
    optional: bool = False


Attendees = Annotated[list[AttendeeInput], msgspec.Meta(max_length=200)]


class EventCreate(msgspec.Struct, forbid_unknown_fields=True):
    summary: Short
    start: EventTime
    end: EventTime
    description: Long | None = None
    location: Short | None = None
    attendees: Attendees = msgspec.field(default_factory=list)


class EventUpdate(msgspec.Struct, forbid_unknown_fields=True):
    """The fields to change; those left out (or null) keep their values. ``attendees`` replaces the list."""

    summary: Short | None = None
    start: EventTime | None = None
    end: EventTime | None = None
    description: Long | None = None
    location: Short | None = None
    attendees: Attendees | None = None


class Attendee(msgspec.Struct):
    email: str
    display_name: str | None
    response_status: str  # needsAction, accepted, tentative, declined
    optional: bool
    organizer: bool


class Event(msgspec.Struct):
    id: str
    status: str  # confirmed, tentative, cancelled
    summary: str | None
    description: str | None
    location: str | None
    start: EventTime
    end: EventTime
    attendees: list[Attendee]
    organizer: str | None
    html_link: str | None
    created: datetime | None
    updated: datetime | None


class EventPage(msgspec.Struct):
    events: list[Event]
    next_page_token: str | None
    time_zone: str | None  # the calendar's; times are shown in the requested zone, else this one


# --- Signal -------------------------------------------------------------------------------------------------


class SignalSend(msgspec.Struct, forbid_unknown_fields=True):
    """To Signal numbers (E.164) or to one group (``group_id`` as ``GET /v1/signal/contacts`` lists it)."""

    recipients: Annotated[list[Annotated[str, msgspec.Meta(max_length=20)]], msgspec.Meta(max_length=100)] = (
        msgspec.field(default_factory=list)
    )
    group_id: Annotated[str, msgspec.Meta(max_length=200)] | None = None
    message: Annotated[str, msgspec.Meta(max_length=64_000)] | None = None
    attachments: list[AttachmentUpload] = msgspec.field(default_factory=list)


class SignalSent(msgspec.Struct):
    timestamp: int  # the message's Signal timestamp (ms): how recipients' receipts name it
    recipients: list[str]
    group_id: str | None


class SignalAttachment(msgspec.Struct):
    id: str
    content_type: str | None
    filename: str | None
    size: int | None


class SignalMessageView(msgspec.Struct):
    id: int  # the cursor: ids only grow
    kind: str  # message, receipt, typing, sync, call, other
    source: str  # the sender's number (else their ACI)
    source_uuid: str | None
    source_name: str | None
    timestamp: int  # the sender's (ms)
    group_id: str | None  # the group it was sent in, in the form sends take
    body: str | None
    attachments: list[SignalAttachment]
    received_at: datetime


class SignalMessagesPage(msgspec.Struct):
    messages: list[SignalMessageView]
    next_cursor: int  # pass it as ``after`` to get what came next
    has_more: bool


class SignalContact(msgspec.Struct):
    number: str | None
    uuid: str | None
    name: str | None  # the name this account gives them, else their profile name
    profile_name: str | None


class SignalGroup(msgspec.Struct):
    id: str  # what ``group_id`` of a send takes
    name: str
    description: str | None
    members: list[str]


class SignalContacts(msgspec.Struct):
    contacts: list[SignalContact]
    groups: list[SignalGroup]


# --- SMS ----------------------------------------------------------------------------------------------------


class SmsSend(msgspec.Struct, forbid_unknown_fields=True):
    to: Annotated[str, msgspec.Meta(max_length=20)]
    text: Annotated[str, msgspec.Meta(max_length=1600)] | None = None
    media_urls: Annotated[
        list[Annotated[str, msgspec.Meta(max_length=2000)]], msgspec.Meta(max_length=10)
    ] = msgspec.field(default_factory=list)


class Sms(msgspec.Struct):
    id: uuid.UUID
    cursor: int
    direction: str  # inbound, outbound
    from_number: str
    to_number: str
    text: str
    media_urls: list[str]
    status: str | None  # outbound, Telnyx's latest: queued, sending, sent, then delivered or a failure
    parts: int | None  # outbound: billed segments
    telnyx_message_id: str | None
    at: datetime  # received (inbound) or sent (outbound)


class SmsPage(msgspec.Struct):
    messages: list[Sms]
    next_cursor: int
    has_more: bool
