"""``DexClient``: one async client of the identity API, typed with the API's own contract
(``poindexter_cloud.identity.schemas``, msgspec structs that import nothing else of the service), over httpx.

Every call sends the API key (``Authorization: Bearer pk_...``) and returns the route's answer decoded into
its struct; an error answer raises ``PoindexterError`` with the service's stable ``code`` (and
``retry_after`` on a 429). ``anthropic()`` / ``openai()`` hand out the AI SDKs' async clients configured with
the proxy's base URL (from ``GET /v1/identity``) and the same key; the SDKs are optional: they are imported
only then.
"""

from __future__ import annotations

import asyncio
import base64
import importlib
import os
from collections.abc import Sequence
from datetime import datetime
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, Literal, Self, TypeVar

import httpx
import msgspec

from poindexter_cloud.identity.schemas import (
    AttachmentContent,
    AttachmentUpload,
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

if TYPE_CHECKING:
    import anthropic
    import openai

T = TypeVar("T")
DEFAULT_TIMEOUT: Final = 30.0
SendUpdates = Literal["all", "external_only", "none"]


class PoindexterError(Exception):
    """An error answer: ``status``, the stable ``code`` (docs/dex-client.md lists them), a message for
    people, ``details`` when the service gives them, and ``retry_after`` (seconds) on a 429."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        details: Any = None,
        request_id: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status, self.code, self.message = status, code, message
        self.details, self.request_id, self.retry_after = details, request_id, retry_after


class _ErrorBody(msgspec.Struct):
    code: str
    message: str
    request_id: str | None = None
    details: Any = None


class _ErrorResponse(msgspec.Struct):
    error: _ErrorBody


def upload(filename: str, data: bytes, content_type: str | None = None) -> AttachmentUpload:
    """A file to attach to an email or a Signal message."""
    return AttachmentUpload(filename, base64.b64encode(data).decode(), content_type)


def _moment(value: datetime | str | None) -> str | None:
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError("give an aware datetime (with its time zone)")
        return value.isoformat()
    return value


def _params(**values: Any) -> dict[str, Any]:
    """Query parameters, without the unset ones; booleans as the API reads them."""
    return {
        name: ("true" if value else "false") if isinstance(value, bool) else value
        for name, value in values.items()
        if value is not None
    }


class DexClient:
    """``async with DexClient("https://api.example.com", "pk_live_...") as dex: ...``"""

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        http: httpx.AsyncClient | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key
        self._own_http = http is None
        self._http = http or httpx.AsyncClient(timeout=timeout)
        self._configuration: DexConfiguration | None = None

    @classmethod
    def from_env(cls) -> DexClient:
        """From ``POINDEXTER_URL`` (the web role) and ``POINDEXTER_API_KEY``."""
        return cls(os.environ["POINDEXTER_URL"], os.environ["POINDEXTER_API_KEY"])

    async def close(self) -> None:
        if self._own_http:
            await self._http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        await self.close()

    async def _call(
        self,
        method: str,
        path: str,
        answer: type[T] | None,
        *,
        params: dict[str, Any] | None = None,
        body: msgspec.Struct | None = None,
        idempotency_key: str | None = None,
    ) -> T:
        headers = {"Authorization": f"Bearer {self.api_key}", "Accept": "application/json"}
        if idempotency_key is not None:
            headers["Idempotency-Key"] = idempotency_key
        content = None
        if body is not None:
            content = msgspec.json.encode(body)
            headers["Content-Type"] = "application/json"
        response = await self._http.request(
            method, f"{self.base_url}{path}", params=params, content=content, headers=headers
        )
        if response.status_code >= 400:
            raise _error(response)
        if answer is None:
            return None  # type: ignore[return-value]
        return msgspec.json.decode(response.content, type=answer)

    # --- the identity ------------------------------------------------------------------------------------

    async def identity(self) -> DexConfiguration:
        """Everything to start with: addresses, states, the proxy's URLs, the plan and its limits."""
        self._configuration = await self._call("GET", "/v1/identity", DexConfiguration)
        return self._configuration

    async def wait_until_ready(self, within: float = 600.0, interval: float = 5.0) -> DexConfiguration:
        """``identity()`` once every part is ready (a new subscriber's takes a minute or so); TimeoutError."""
        deadline = asyncio.get_running_loop().time() + within
        while True:
            configuration = await self.identity()
            if configuration.ready:
                return configuration
            if asyncio.get_running_loop().time() + interval > deadline:
                raise TimeoutError(f"still pending: {', '.join(configuration.pending)}")
            await asyncio.sleep(interval)

    async def email_identity(self) -> EmailIdentity:
        return await self._call("GET", "/v1/identity/email", EmailIdentity)

    async def phone_identity(self) -> PhoneIdentity:
        return await self._call("GET", "/v1/identity/phone", PhoneIdentity)

    async def signal_identity(self) -> SignalIdentity:
        return await self._call("GET", "/v1/identity/signal", SignalIdentity)

    # --- email -------------------------------------------------------------------------------------------

    async def send_email(
        self,
        *,
        to: Sequence[str] = (),
        cc: Sequence[str] = (),
        bcc: Sequence[str] = (),
        subject: str | None = None,
        text: str | None = None,
        html: str | None = None,
        reply_to_message_id: str | None = None,
        from_name: str | None = None,
        attachments: Sequence[AttachmentUpload] = (),
        idempotency_key: str | None = None,
    ) -> EmailSent:
        """Send an email; retrying with the same ``idempotency_key`` (one per email) never sends it twice."""
        request = EmailSend(
            to=list(to),
            cc=list(cc),
            bcc=list(bcc),
            subject=subject,
            text=text,
            html=html,
            reply_to_message_id=reply_to_message_id,
            from_name=from_name,
            attachments=list(attachments),
        )
        return await self._call(
            "POST", "/v1/email/send", EmailSent, body=request, idempotency_key=idempotency_key
        )

    async def inbox(
        self,
        *,
        folder: Literal["inbox", "sent", "trash", "all"] = "inbox",
        q: str | None = None,
        sender: str | None = None,
        to: str | None = None,
        subject: str | None = None,
        unread: bool | None = None,
        has_attachment: bool | None = None,
        after: datetime | str | None = None,
        before: datetime | str | None = None,
        page_token: str | None = None,
        limit: int = 20,
    ) -> InboxPage:
        params = _params(
            folder=folder,
            q=q,
            to=to,
            subject=subject,
            unread=unread,
            has_attachment=has_attachment,
            after=_moment(after),
            before=_moment(before),
            page_token=page_token,
            limit=limit,
        )
        if sender is not None:
            params["from"] = sender
        return await self._call("GET", "/v1/email/inbox", InboxPage, params=params)

    async def email_message(self, message_id: str) -> EmailMessage:
        return await self._call("GET", f"/v1/email/messages/{message_id}", EmailMessage)

    async def email_attachment(self, message_id: str, attachment_id: str) -> bytes:
        found = await self._call(
            "GET", f"/v1/email/messages/{message_id}/attachments/{attachment_id}", AttachmentContent
        )
        return base64.b64decode(found.content_base64)

    async def trash_email(self, message_id: str) -> None:
        await self._call("DELETE", f"/v1/email/messages/{message_id}", None)

    # --- calendar ----------------------------------------------------------------------------------------

    async def events(
        self,
        *,
        start: datetime | str | None = None,
        end: datetime | str | None = None,
        time_zone: str | None = None,
        q: str | None = None,
        page_token: str | None = None,
        limit: int = 50,
    ) -> EventPage:
        params = _params(
            start=_moment(start),
            end=_moment(end),
            time_zone=time_zone,
            q=q,
            page_token=page_token,
            limit=limit,
        )
        return await self._call("GET", "/v1/calendar/events", EventPage, params=params)

    async def create_event(self, event: EventCreate, *, send_updates: SendUpdates = "all") -> Event:
        return await self._call(
            "POST", "/v1/calendar/events", Event, body=event, params={"send_updates": send_updates}
        )

    async def update_event(
        self, event_id: str, changes: EventUpdate, *, send_updates: SendUpdates = "all"
    ) -> Event:
        return await self._call(
            "PUT",
            f"/v1/calendar/events/{event_id}",
            Event,
            body=changes,
            params={"send_updates": send_updates},
        )

    async def delete_event(self, event_id: str, *, send_updates: SendUpdates = "all") -> None:
        await self._call(
            "DELETE", f"/v1/calendar/events/{event_id}", None, params={"send_updates": send_updates}
        )

    # --- Signal ------------------------------------------------------------------------------------------

    async def send_signal(
        self,
        *,
        recipients: Sequence[str] = (),
        group_id: str | None = None,
        message: str | None = None,
        attachments: Sequence[AttachmentUpload] = (),
        idempotency_key: str | None = None,
    ) -> SignalSent:
        """Send a Signal message; retrying with the same ``idempotency_key`` never sends it twice."""
        request = SignalSend(list(recipients), group_id, message, list(attachments))
        return await self._call(
            "POST", "/v1/signal/send", SignalSent, body=request, idempotency_key=idempotency_key
        )

    async def signal_messages(
        self, *, after: int = 0, limit: int = 50, kind: str = "message", receive: bool = True
    ) -> SignalMessagesPage:
        """What arrived past the cursor ``after``: keep ``next_cursor`` and pass it next time."""
        params = _params(after=after, limit=limit, kind=kind, receive=receive)
        return await self._call("GET", "/v1/signal/messages", SignalMessagesPage, params=params)

    async def signal_contacts(self) -> SignalContacts:
        return await self._call("GET", "/v1/signal/contacts", SignalContacts)

    async def signal_attachment(self, attachment_id: str) -> bytes:
        found = await self._call("GET", f"/v1/signal/attachments/{attachment_id}", AttachmentContent)
        return base64.b64decode(found.content_base64)

    # --- SMS ---------------------------------------------------------------------------------------------

    async def send_sms(
        self,
        to: str,
        text: str | None = None,
        media_urls: Sequence[str] = (),
        *,
        idempotency_key: str | None = None,
    ) -> Sms:
        """Send an SMS; retrying with the same ``idempotency_key`` never sends it twice."""
        request = SmsSend(to, text, list(media_urls))
        return await self._call("POST", "/v1/sms/send", Sms, body=request, idempotency_key=idempotency_key)

    async def sms_messages(
        self, *, after: int = 0, limit: int = 50, direction: Literal["inbound", "outbound", "all"] = "all"
    ) -> SmsPage:
        params = _params(after=after, limit=limit, direction=direction)
        return await self._call("GET", "/v1/sms/messages", SmsPage, params=params)

    # --- AI, through the proxy ---------------------------------------------------------------------------

    async def _proxy(self) -> DexConfiguration:
        return self._configuration or await self.identity()

    async def anthropic(self, **options: Any) -> anthropic.AsyncAnthropic:
        """An ``anthropic.AsyncAnthropic`` on the proxy with this key (``pip install anthropic``)."""
        sdk = _optional("anthropic")
        configuration = await self._proxy()
        client: anthropic.AsyncAnthropic = sdk.AsyncAnthropic(
            base_url=configuration.proxy.anthropic_base_url, api_key=self.api_key, **options
        )
        return client

    async def openai(self, **options: Any) -> openai.AsyncOpenAI:
        """An ``openai.AsyncOpenAI`` on the proxy with this key (``pip install openai``)."""
        sdk = _optional("openai")
        configuration = await self._proxy()
        client: openai.AsyncOpenAI = sdk.AsyncOpenAI(
            base_url=configuration.proxy.openai_base_url, api_key=self.api_key, **options
        )
        return client


def _optional(name: str) -> Any:
    try:
        return importlib.import_module(name)
    except ImportError:
        raise ImportError(f"DexClient.{name}() needs the {name} package: pip install {name}") from None


def _error(response: httpx.Response) -> PoindexterError:
    retry = response.headers.get("retry-after")
    retry_after = float(retry) if retry and retry.replace(".", "", 1).isdigit() else None
    try:
        body = msgspec.json.decode(response.content, type=_ErrorResponse).error
    except msgspec.DecodeError:
        return PoindexterError(
            response.status_code, "http_error", response.text[:200], retry_after=retry_after
        )
    return PoindexterError(
        response.status_code, body.code, body.message, body.details, body.request_id, retry_after
    )
