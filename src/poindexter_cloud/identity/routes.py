"""The identity API on the web role: what a Dex instance calls with its API key (a login session works too).

``/v1/identity`` (and ``/email``, ``/phone``, ``/signal``) say what the identity is and how far its
provisioning got; ``/v1/email``, ``/v1/calendar``, ``/v1/signal`` and ``/v1/sms`` use it. Every call is
limited per key and operation (``limits``), needs its part of the identity ready, and a send needs the
subscription paid (``access``). The handlers parse, check, and hand over to one service module per part.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Annotated, Literal, TypeVar

import msgspec
from litestar import Controller, Response, delete, get, post, put
from litestar.di import Provide
from litestar.params import HeaderParameter, Parameter, QueryParameter
from litestar.status_codes import HTTP_201_CREATED

from poindexter_cloud.accounts.auth import Principal, authenticate
from poindexter_cloud.billing import service as billing
from poindexter_cloud.core.db import UnitOfWork
from poindexter_cloud.core.idempotency import REPLAYED_HEADER, IdempotencyKeys
from poindexter_cloud.core.resources import Resources
from poindexter_cloud.identity import access, calendar_events, mail, signal_messaging, sms
from poindexter_cloud.identity.limits import Limiter, Operation
from poindexter_cloud.identity.providers import identity_lifespan, provide_limiter, provide_providers
from poindexter_cloud.identity.schemas import (
    AttachmentContent,
    DexConfiguration,
    EmailIdentity,
    EmailMessage,
    EmailSend,
    EmailSent,
    Event,
    EventCreate,
    EventPage,
    EventUpdate,
    InboxPage,
    PhoneIdentity,
    SignalContacts,
    SignalIdentity,
    SignalMessagesPage,
    SignalSend,
    SignalSent,
    Sms,
    SmsPage,
    SmsSend,
)
from poindexter_cloud.integrations.clients import ProviderClients

# Sends carry attachments as base64 in JSON: IDENTITY_MAX_ATTACHMENT_BYTES (25 MiB at most) and a third more,
# and the bodies. A larger body is refused before it is read (413 payload_too_large).
MAX_SEND_BODY = 40 * 1024 * 1024
Cursor = Annotated[int, Parameter(ge=0, description="the next_cursor of the previous page; 0 from the start")]
PageToken = Annotated[str | None, Parameter(max_length=1024, description="next_page_token of the last page")]
Text = Annotated[str | None, Parameter(max_length=500)]
Moment = Annotated[str | None, Parameter(max_length=64, description="RFC 3339 with an offset")]
SendUpdates = Annotated[
    Literal["all", "external_only", "none"],
    Parameter(description="who Google emails about the change: attendees (all), only outside ones, nobody"),
]


# ``caller = await gate(part, operation)``: the caller of an operation on a part of their identity, the part
# checked, with the call's admission under the key's limit (``access.caller``), which the service takes once
# the request has passed its own checks. Awaited in the handler, after Litestar has validated the request.
Gate = Callable[[access.Part, Operation], Awaitable[access.Caller]]


def provide_gate(resources: Resources, principal: Principal, limiter: Limiter) -> Gate:
    return functools.partial(access.caller, resources, principal, limiter)


AUTH = {"principal": Provide(authenticate), "gate": Provide(provide_gate, sync_to_thread=False)}

IdempotencyKey = Annotated[
    str | None,
    HeaderParameter(
        name="Idempotency-Key",
        required=False,
        description="one per logical send (a UUID, say): a retry with it is not sent again",
    ),
]
T = TypeVar("T")
S = TypeVar("S", bound=msgspec.Struct)


async def committed(uow: UnitOfWork, work: Awaitable[T]) -> T:
    """``work``'s answer, once the request's transaction has committed (the part modules never commit)."""
    answer = await work
    await uow.commit()
    return answer


async def sent_once(
    resources: Resources,
    caller: access.Caller,
    key: str | None,
    route: str,
    data: msgspec.Struct,
    perform: Callable[[], Awaitable[S]],
    answer_type: type[S],
) -> Response[S]:
    """A send's 201, performed once per Idempotency-Key (a repeat gets the first answer again)."""
    answer, replayed = await IdempotencyKeys(resources.redis).once(
        caller.identity.user_id, key, route, data, answer_type, perform
    )
    return Response(
        answer, status_code=HTTP_201_CREATED, headers={REPLAYED_HEADER: "true"} if replayed else None
    )


# --- the identity -------------------------------------------------------------------------------------------


class IdentityController(Controller):
    path = "/v1/identity"
    tags = ["identity"]
    dependencies = AUTH

    @get("/")
    async def configuration(
        self, principal: Principal, uow: UnitOfWork, resources: Resources
    ) -> DexConfiguration:
        """Everything Dex needs at start: the mailbox, number and Signal (each with its state; ``pending``
        while provisioning is under way), the AI proxy's base URLs, the plan and its limits. 404 before a
        subscription starts provisioning the identity."""
        identity = await access.identity_of(uow.session, principal.user_id)
        entitlement = await billing.entitlement(uow.session, principal.user_id)
        return access.configuration(identity, entitlement, resources.settings)

    @get("/email")
    async def email(self, principal: Principal, uow: UnitOfWork) -> EmailIdentity:
        return access.email_part(await access.identity_of(uow.session, principal.user_id))

    @get("/phone")
    async def phone(self, principal: Principal, uow: UnitOfWork) -> PhoneIdentity:
        return access.phone_part(await access.identity_of(uow.session, principal.user_id))

    @get("/signal")
    async def signal(self, principal: Principal, uow: UnitOfWork) -> SignalIdentity:
        return access.signal_part(await access.identity_of(uow.session, principal.user_id))


# --- email --------------------------------------------------------------------------------------------------


class EmailController(Controller):
    path = "/v1/email"
    tags = ["email"]
    dependencies = AUTH

    @post("/send", status_code=HTTP_201_CREATED, request_max_body_size=MAX_SEND_BODY)
    async def send(
        self,
        data: EmailSend,
        gate: Gate,
        resources: Resources,
        providers: ProviderClients,
        idempotency_key: IdempotencyKey = None,
    ) -> Response[EmailSent]:
        """Send an email from the identity's mailbox (to/cc/bcc, subject, text and/or HTML, attachments,
        optionally as a reply in a message's thread)."""
        caller = await gate("email", "email_send")
        google = await providers.google()
        perform = functools.partial(mail.send, google, resources, caller, data)
        return await sent_once(resources, caller, idempotency_key, "email", data, perform, EmailSent)

    @get("/inbox")
    async def inbox(
        self,
        gate: Gate,
        uow: UnitOfWork,
        resources: Resources,
        providers: ProviderClients,
        folder: Literal["inbox", "sent", "trash", "all"] = "inbox",
        q: Annotated[str | None, Parameter(max_length=500, description="Gmail search terms")] = None,
        sender: Annotated[str | None, QueryParameter(name="from", max_length=500)] = None,
        to: Text = None,
        subject: Text = None,
        unread: bool | None = None,
        has_attachment: bool | None = None,
        after: Moment = None,
        before: Moment = None,
        page_token: PageToken = None,
        limit: Annotated[int, Parameter(ge=1, le=100)] = 20,
    ) -> InboxPage:
        """A page of the mailbox, newest first; the filters AND together (``q`` is Gmail's own search)."""
        caller = await gate("email", "email_read")
        query = mail.search_query(
            q=q,
            sender=sender,
            to=to,
            subject=subject,
            unread=unread,
            has_attachment=has_attachment,
            after=after,
            before=before,
        )
        google = await providers.google()
        page = mail.inbox(
            google, uow, resources, caller, folder=folder, query=query, page_token=page_token, limit=limit
        )
        return await committed(uow, page)

    @get("/messages/{message_id:str}")
    async def message(
        self,
        message_id: str,
        gate: Gate,
        uow: UnitOfWork,
        resources: Resources,
        providers: ProviderClients,
    ) -> EmailMessage:
        """One message: its headers, text and HTML bodies, and its attachments' names, types and sizes."""
        caller = await gate("email", "email_read")
        return await committed(uow, mail.read(await providers.google(), uow, resources, caller, message_id))

    @get("/messages/{message_id:str}/attachments/{attachment_id:str}")
    async def attachment(
        self,
        message_id: str,
        attachment_id: str,
        gate: Gate,
        providers: ProviderClients,
    ) -> AttachmentContent:
        """An attachment's bytes (base64), by the ``attachment_id`` the message lists."""
        caller = await gate("email", "email_read")
        return await mail.attachment(await providers.google(), caller, message_id, attachment_id)

    @delete("/messages/{message_id:str}")
    async def trash(
        self,
        message_id: str,
        gate: Gate,
        providers: ProviderClients,
    ) -> None:
        """Move the message to the trash (Gmail deletes it for good after 30 days)."""
        caller = await gate("email", "email_read")
        await mail.trash(await providers.google(), caller, message_id)


# --- calendar -----------------------------------------------------------------------------------------------


class CalendarController(Controller):
    path = "/v1/calendar/events"
    tags = ["calendar"]
    dependencies = AUTH

    @get("/")
    async def events(
        self,
        gate: Gate,
        providers: ProviderClients,
        start: Moment = None,
        end: Moment = None,
        time_zone: Annotated[
            str | None, Parameter(max_length=64, description="IANA zone to show times in")
        ] = None,
        q: Text = None,
        page_token: PageToken = None,
        limit: Annotated[int, Parameter(ge=1, le=250)] = 50,
    ) -> EventPage:
        """Events of the primary calendar that end after ``start`` and begin before ``end``, by start time."""
        caller = await gate("email", "calendar_read")
        return await calendar_events.list_events(
            await providers.google(),
            caller,
            start=start,
            end=end,
            zone=time_zone,
            query=q,
            page_token=page_token,
            limit=limit,
        )

    @post("/", status_code=HTTP_201_CREATED)
    async def create(
        self,
        data: EventCreate,
        gate: Gate,
        providers: ProviderClients,
        send_updates: SendUpdates = "all",
    ) -> Event:
        caller = await gate("email", "calendar_write")
        return await calendar_events.create(await providers.google(), caller, data, send_updates)

    @put("/{event_id:str}")
    async def update(
        self,
        event_id: str,
        data: EventUpdate,
        gate: Gate,
        providers: ProviderClients,
        send_updates: SendUpdates = "all",
    ) -> Event:
        """Change the fields given (the others keep their values): move it, rename it, change attendees."""
        caller = await gate("email", "calendar_write")
        return await calendar_events.update(await providers.google(), caller, event_id, data, send_updates)

    @delete("/{event_id:str}")
    async def delete(
        self,
        event_id: str,
        gate: Gate,
        providers: ProviderClients,
        send_updates: SendUpdates = "all",
    ) -> None:
        caller = await gate("email", "calendar_write")
        await calendar_events.delete(await providers.google(), caller, event_id, send_updates)


# --- Signal -------------------------------------------------------------------------------------------------


class SignalController(Controller):
    path = "/v1/signal"
    tags = ["signal"]
    dependencies = AUTH

    @post("/send", status_code=HTTP_201_CREATED, request_max_body_size=MAX_SEND_BODY)
    async def send(
        self,
        data: SignalSend,
        gate: Gate,
        resources: Resources,
        providers: ProviderClients,
        idempotency_key: IdempotencyKey = None,
    ) -> Response[SignalSent]:
        """Send a Signal message (text and/or attachments) to Signal numbers or one group."""
        caller = await gate("signal", "signal_send")
        perform = functools.partial(signal_messaging.send, providers.signal(), resources, caller, data)
        return await sent_once(resources, caller, idempotency_key, "signal", data, perform, SignalSent)

    @get("/messages")
    async def messages(
        self,
        gate: Gate,
        uow: UnitOfWork,
        resources: Resources,
        providers: ProviderClients,
        after: Cursor = 0,
        limit: Annotated[int, Parameter(ge=1, le=200)] = 50,
        kind: Literal["message", "receipt", "typing", "sync", "call", "other", "all"] = "message",
        receive: Annotated[bool, Parameter(description="receive from Signal first")] = True,
    ) -> SignalMessagesPage:
        """What the account received past the cursor ``after``, oldest first; nothing is lost between polls
        (each message is stored as it arrives, by this poll or the keep-alive)."""
        caller = await gate("signal", "signal_read")
        page = signal_messaging.messages(
            uow, resources, providers.signal(), caller, after=after, limit=limit, kind=kind, receive=receive
        )
        return await committed(uow, page)

    @get("/contacts")
    async def contacts(self, gate: Gate, providers: ProviderClients) -> SignalContacts:
        """The people the account has exchanged messages with, and the groups it is in (their ``id`` is
        what a send's ``group_id`` takes)."""
        caller = await gate("signal", "signal_read")
        return await signal_messaging.contacts(providers.signal(), caller)

    @get("/attachments/{attachment_id:str}")
    async def attachment(
        self,
        attachment_id: str,
        gate: Gate,
        uow: UnitOfWork,
        providers: ProviderClients,
    ) -> AttachmentContent:
        """An attachment of a received message (base64), by the id the message lists."""
        caller = await gate("signal", "signal_read")
        return await signal_messaging.attachment(uow, providers.signal(), caller, attachment_id)


# --- SMS ----------------------------------------------------------------------------------------------------


class SmsController(Controller):
    path = "/v1/sms"
    tags = ["sms"]
    dependencies = AUTH

    @post("/send", status_code=HTTP_201_CREATED)
    async def send(
        self,
        data: SmsSend,
        gate: Gate,
        uow: UnitOfWork,
        resources: Resources,
        providers: ProviderClients,
        idempotency_key: IdempotencyKey = None,
    ) -> Response[Sms]:
        """Send an SMS (or, with ``media_urls``, an MMS) from the identity's number."""
        caller = await gate("phone", "sms_send")
        telnyx = providers.telnyx()

        def perform() -> Awaitable[Sms]:
            return committed(uow, sms.send(telnyx, uow, resources, caller, data))

        return await sent_once(resources, caller, idempotency_key, "sms", data, perform, Sms)

    @get("/messages")
    async def messages(
        self,
        gate: Gate,
        uow: UnitOfWork,
        after: Cursor = 0,
        limit: Annotated[int, Parameter(ge=1, le=200)] = 50,
        direction: Literal["inbound", "outbound", "all"] = "all",
    ) -> SmsPage:
        """The SMS the number received and sent past the cursor ``after``, oldest first."""
        caller = await gate("phone", "sms_read")
        return await committed(uow, sms.messages(uow, caller, after=after, limit=limit, direction=direction))


ROUTES = [IdentityController, EmailController, CalendarController, SignalController, SmsController]
DEPENDENCIES = {
    "providers": Provide(provide_providers, sync_to_thread=False),
    "limiter": Provide(provide_limiter, sync_to_thread=False),
}
LIFESPAN = [identity_lifespan]
