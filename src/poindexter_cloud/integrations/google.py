"""The Google Workspace adapter: the only module that drives Google's APIs (Admin SDK Directory, Gmail,
Calendar).

A service account with domain-wide delegation acts as the Workspace administrator (``GOOGLE_ADMIN_EMAIL``)
to create, suspend and delete the subscribers' users (provisioning), and as each subscriber's mailbox
(``with_subject(mailbox)``) for its Gmail and Calendar (the identity API), so no per-user credential is
stored. The delegation must grant ``DIRECTORY_SCOPES`` and ``MAILBOX_SCOPES``. The key is
``GOOGLE_SERVICE_ACCOUNT_JSON``; outside production, when it is unset, the sandbox's key is fetched once from
``{SANDBOX_URL}/google/_control/service-account`` (its ``token_uri`` is the sandbox's token endpoint).

google-api-python-client is synchronous: every call runs in a thread (``asyncio.to_thread``) with an
``httplib2.Http`` of its own (they are not thread-safe), discovery documents come from the package
(``static_discovery=True``, no discovery request), and ``api_endpoint`` points each API at
``GOOGLE_API_BASE`` outside production (Gmail and the Directory at ``{base}/``, Calendar at
``{base}/calendar/v3/``, where their discovery documents' paths begin; a mail is sent as a media upload, to
``{base}/upload/...``). Gmail and Calendar answers are
returned as the APIs' JSON resources (``identity`` reads them); SDK errors become ``ProviderUnavailable`` /
``ProviderRefused`` (``GoogleBadRequest`` with Google's reason for a 400); neither a key, a token nor a
response body is ever logged.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import secrets
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import urlsplit

import google_auth_httplib2
import httplib2
import httpx
from google.auth.exceptions import GoogleAuthError, RefreshError, TransportError
from google.oauth2 import service_account
from googleapiclient.discovery import build
from googleapiclient.errors import HttpError
from googleapiclient.http import MediaInMemoryUpload

from poindexter_cloud.core.settings import Settings
from poindexter_cloud.integrations.errors import (
    ProviderError,
    ProviderObjectMissing,
    ProviderRefused,
    ProviderUnavailable,
)

log = logging.getLogger(__name__)

PROVIDER: Final = "google"
TIMEOUT_SECONDS: Final = 20.0
DIRECTORY_SCOPES: Final = ("https://www.googleapis.com/auth/admin.directory.user",)
# What the identity API does as a mailbox: read, send and trash mail (not delete it for good), and manage
# the events of its calendars.
MAILBOX_SCOPES: Final = (
    "https://www.googleapis.com/auth/gmail.modify",
    "https://www.googleapis.com/auth/calendar.events",
)
MAILBOXES_CACHED: Final = 2048  # mailbox credentials (each holds its access token) kept per process
# The external id that marks a Workspace user as the mailbox of one of our identities.
EXTERNAL_ID_TYPE: Final = "poindexter_identity"


@dataclass(frozen=True, slots=True)
class WorkspaceUser:
    id: str
    primary_email: str
    suspended: bool
    identity_id: str | None  # our external id on the user, if it has one


class UserExists(ProviderRefused):
    """A user with that address exists already (409 ``duplicate``)."""

    code = "workspace_user_exists"


class GoogleBadRequest(ProviderRefused):
    """Google refused what the request says (400); ``reason`` is Google's reason code (``timeRangeEmpty``,
    ``invalidArgument``, ...), for the caller to map to an error of its own."""

    code = "provider_bad_request"

    def __init__(self, provider: str, message: str, reason: str | None) -> None:
        super().__init__(provider, message)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class SentMail:
    id: str
    thread_id: str


@dataclass(frozen=True, slots=True)
class MailPage:
    ids: list[str]
    next_page_token: str | None
    size_estimate: int


@dataclass(frozen=True, slots=True)
class EventPage:
    events: list[dict[str, Any]]  # Calendar API Event resources
    next_page_token: str | None
    time_zone: str | None  # the calendar's


def _reason(exc: HttpError) -> str | None:
    """Google's reason code of an error answer (``error.errors[0].reason``), never its text."""
    try:
        error = json.loads(exc.content.decode("utf-8"))["error"]
        return str(error["errors"][0]["reason"])
    except (ValueError, KeyError, IndexError, TypeError):
        return None


def _user(data: dict[str, Any]) -> WorkspaceUser:
    identity_id = next(
        (
            str(entry.get("value"))
            for entry in data.get("externalIds") or ()
            if isinstance(entry, dict) and entry.get("customType") == EXTERNAL_ID_TYPE
        ),
        None,
    )
    return WorkspaceUser(str(data["id"]), str(data["primaryEmail"]), bool(data.get("suspended")), identity_id)


def _mapped(what: str, exc: Exception) -> ProviderError:
    """Our error for an SDK failure; logs the call and the status, never the body."""
    if isinstance(exc, HttpError):
        status = exc.status_code
        log.warning("google call failed", extra={"call": what, "status": status})
        if status in (404, 410):  # 410: a Calendar event deleted already
            return ProviderObjectMissing(PROVIDER, f"Google Workspace has no such {what.split()[-1]}.")
        if status == 400:
            return GoogleBadRequest(PROVIDER, f"Google Workspace refused to {what} (400).", _reason(exc))
        if status == 409:
            return UserExists(PROVIDER, "A Workspace user with that address exists already.")
        if status == 429 or status >= 500:
            return ProviderUnavailable(PROVIDER, f"Google Workspace is not answering ({status}).")
        return ProviderRefused(PROVIDER, f"Google Workspace refused to {what} ({status}).")
    if isinstance(exc, RefreshError):
        retryable = bool(getattr(exc, "retryable", False))
        log.warning("google token refresh failed", extra={"call": what, "retryable": retryable})
        if retryable:
            return ProviderUnavailable(PROVIDER, "Google's token endpoint is not answering.")
        return ProviderRefused(
            PROVIDER, "Google refused our service account (its key or its domain-wide delegation)."
        )
    log.warning("google call failed", extra={"call": what, "error": type(exc).__name__})
    return ProviderUnavailable(PROVIDER, f"Google Workspace could not be reached ({type(exc).__name__}).")


_TRANSIENT: Final = (TransportError, httplib2.HttpLib2Error, OSError, TimeoutError)


def upload_on(api_base: str | None, request: Any) -> Any:
    """An upload ``request`` of the SDK, sent to ``{api_base}/upload/...`` when a base is set: the SDK
    derives an upload's URL from Google's root URL, keeping its https and dropping ``api_endpoint``'s path."""
    if api_base is not None:
        parts = urlsplit(request.uri)
        request.uri = api_base + parts.path + (f"?{parts.query}" if parts.query else "")
    return request


class GoogleAdapter:
    """The Directory API as our Workspace administrator, Gmail and Calendar as a subscriber's mailbox. One per
    process (``for_settings`` caches it): it holds the loaded key and the tokens, no connection."""

    def __init__(self, info: dict[str, Any], admin: str, api_base: str | None) -> None:
        credentials = service_account.Credentials.from_service_account_info(  # type: ignore[no-untyped-call]
            info, scopes=list(DIRECTORY_SCOPES)
        )
        self._admin_credentials = credentials.with_subject(admin)
        self._mailbox_credentials = credentials.with_scopes(list(MAILBOX_SCOPES))
        self._mailboxes: OrderedDict[str, Any] = OrderedDict()
        self._api_base = api_base
        options = {"api_endpoint": f"{api_base}/"} if api_base else None
        self._directory: Any = build(
            "admin",
            "directory_v1",
            credentials=self._admin_credentials,
            static_discovery=True,
            client_options=options,
        )
        # Built without credentials: every call passes the mailbox's own authorized http.
        unauthorized = httplib2.Http(timeout=TIMEOUT_SECONDS)
        self._gmail: Any = build(
            "gmail", "v1", http=unauthorized, static_discovery=True, client_options=options
        )
        calendar = {"api_endpoint": f"{api_base}/calendar/v3/"} if api_base else None
        self._calendar: Any = build(
            "calendar", "v3", http=unauthorized, static_discovery=True, client_options=calendar
        )

    @classmethod
    async def for_settings(cls, settings: Settings) -> GoogleAdapter:
        info = settings.google_service_account_json or await _sandbox_key(settings)
        key = (info, settings.google_admin, settings.google_api_base_url)
        adapter = _ADAPTERS.get(key)
        if adapter is None:
            adapter = await asyncio.to_thread(cls, json.loads(info), settings.google_admin, key[2])
            _ADAPTERS[key] = adapter
        return adapter

    async def _execute(self, what: str, credentials: Any, request: Callable[[], Any]) -> Any:
        def execute() -> Any:
            http = google_auth_httplib2.AuthorizedHttp(
                credentials, http=httplib2.Http(timeout=TIMEOUT_SECONDS)
            )
            return request().execute(http=http)

        try:
            return await asyncio.to_thread(execute)
        except (HttpError, GoogleAuthError, *_TRANSIENT) as exc:
            raise _mapped(what, exc) from None

    async def _run(self, what: str, make: Callable[[Any], Any]) -> Any:
        return await self._execute(what, self._admin_credentials, lambda: make(self._directory))

    def _as(self, mailbox: str) -> Any:
        """The credentials that act as ``mailbox`` (kept, so its access token is reused until it expires)."""
        found = self._mailboxes.get(mailbox)
        if found is None:
            found = self._mailboxes[mailbox] = self._mailbox_credentials.with_subject(mailbox)
            if len(self._mailboxes) > MAILBOXES_CACHED:
                self._mailboxes.popitem(last=False)
        else:
            self._mailboxes.move_to_end(mailbox)
        return found

    async def create_user(
        self, email: str, given_name: str, family_name: str, identity_id: str
    ) -> WorkspaceUser:
        """A new user with a random password nobody keeps (the mailbox is used through delegation);
        ``UserExists`` if the address is taken."""
        body = {
            "primaryEmail": email,
            "name": {"givenName": given_name, "familyName": family_name},
            "password": secrets.token_urlsafe(32),
            "changePasswordAtNextLogin": False,
            "externalIds": [{"type": "custom", "customType": EXTERNAL_ID_TYPE, "value": identity_id}],
        }
        data = await self._run("create the user", lambda d: d.users().insert(body=body))
        return _user(data)

    async def get_user(self, key: str) -> WorkspaceUser | None:
        try:
            data = await self._run("read the user", lambda d: d.users().get(userKey=key))
        except ProviderObjectMissing:
            return None
        return _user(data)

    async def set_suspended(self, key: str, suspended: bool) -> WorkspaceUser:
        body = {"suspended": suspended}
        data = await self._run("suspend the user", lambda d: d.users().patch(userKey=key, body=body))
        return _user(data)

    async def delete_user(self, key: str) -> bool:
        """Delete the user; False if it was gone already."""
        try:
            await self._run("delete the user", lambda d: d.users().delete(userKey=key))
        except ProviderObjectMissing:
            return False
        return True

    # --- Gmail, as the mailbox ---------------------------------------------------------------------------

    async def _gmail_call(self, mailbox: str, what: str, make: Callable[[Any], Any]) -> Any:
        messages = self._gmail.users().messages()
        return await self._execute(what, self._as(mailbox), lambda: make(messages))

    async def send_mail(self, mailbox: str, raw: bytes, thread_id: str | None) -> SentMail:
        """Send an RFC 822 message (``users.messages.send``); ``thread_id`` files it in that thread.

        As a media upload (``multipart/related``: the metadata, then the message as ``message/rfc822``),
        Gmail's way for messages up to its 35 MB, rather than base64 in a JSON body a third larger."""
        metadata = {"threadId": thread_id} if thread_id else {}
        media = MediaInMemoryUpload(raw, mimetype="message/rfc822")
        data = await self._gmail_call(
            mailbox,
            "send the mail",
            lambda m: upload_on(self._api_base, m.send(userId="me", body=metadata, media_body=media)),
        )
        return SentMail(str(data["id"]), str(data.get("threadId") or data["id"]))

    async def list_mail(
        self, mailbox: str, *, query: str | None, label_ids: list[str], page_token: str | None, limit: int
    ) -> MailPage:
        """Message ids, newest first (``users.messages.list``)."""
        data = await self._gmail_call(
            mailbox,
            "list the mail",
            lambda m: m.list(
                userId="me",
                q=query or None,
                labelIds=label_ids or None,
                pageToken=page_token,
                maxResults=limit,
            ),
        )
        ids = [str(item["id"]) for item in data.get("messages") or ()]
        return MailPage(ids, data.get("nextPageToken") or None, int(data.get("resultSizeEstimate") or 0))

    async def get_mail(
        self, mailbox: str, message_id: str, headers: list[str] | None = None
    ) -> dict[str, Any]:
        """A Message resource: in full, or (``headers``) only those headers, the labels and the snippet."""
        wanted = {"format": "full"} if headers is None else {"format": "metadata", "metadataHeaders": headers}
        data = await self._gmail_call(
            mailbox, "read the message", lambda m: m.get(userId="me", id=message_id, **wanted)
        )
        return dict(data)

    async def trash_mail(self, mailbox: str, message_id: str) -> None:
        await self._gmail_call(mailbox, "trash the message", lambda m: m.trash(userId="me", id=message_id))

    async def mail_attachment(self, mailbox: str, message_id: str, attachment_id: str) -> bytes:
        data = await self._gmail_call(
            mailbox,
            "read the attachment",
            lambda m: m.attachments().get(userId="me", messageId=message_id, id=attachment_id),
        )
        text = str(data.get("data") or "")
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))

    # --- Calendar, as the mailbox's primary calendar -------------------------------------------------------

    async def _calendar_call(self, mailbox: str, what: str, make: Callable[[Any], Any]) -> Any:
        events = self._calendar.events()
        return await self._execute(what, self._as(mailbox), lambda: make(events))

    async def list_events(
        self,
        mailbox: str,
        *,
        time_min: str | None,
        time_max: str | None,
        time_zone: str | None,
        query: str | None,
        page_token: str | None,
        limit: int,
    ) -> EventPage:
        """Events overlapping [time_min, time_max) by start time, times shown in ``time_zone`` (else the
        calendar's)."""
        data = await self._calendar_call(
            mailbox,
            "list the events",
            lambda e: e.list(
                calendarId="primary",
                timeMin=time_min,
                timeMax=time_max,
                timeZone=time_zone,
                q=query or None,
                pageToken=page_token,
                maxResults=limit,
                singleEvents=True,
                orderBy="startTime",
            ),
        )
        events = [item for item in data.get("items") or () if isinstance(item, dict)]
        return EventPage(events, data.get("nextPageToken") or None, data.get("timeZone") or None)

    async def insert_event(self, mailbox: str, body: dict[str, Any], *, send_updates: str) -> dict[str, Any]:
        return dict(
            await self._calendar_call(
                mailbox,
                "create the event",
                lambda e: e.insert(calendarId="primary", body=body, sendUpdates=send_updates),
            )
        )

    async def patch_event(
        self, mailbox: str, event_id: str, body: dict[str, Any], *, send_updates: str
    ) -> dict[str, Any]:
        """Change the fields ``body`` names (``events.patch``)."""
        return dict(
            await self._calendar_call(
                mailbox,
                "change the event",
                lambda e: e.patch(
                    calendarId="primary", eventId=event_id, body=body, sendUpdates=send_updates
                ),
            )
        )

    async def delete_event(self, mailbox: str, event_id: str, *, send_updates: str) -> None:
        await self._calendar_call(
            mailbox,
            "delete the event",
            lambda e: e.delete(calendarId="primary", eventId=event_id, sendUpdates=send_updates),
        )


_ADAPTERS: dict[tuple[str, str, str | None], GoogleAdapter] = {}
_SANDBOX_KEYS: dict[str, str] = {}


async def _sandbox_key(settings: Settings) -> str:
    """The sandbox's service-account key (the same for the life of its process), fetched once."""
    if settings.is_production:
        raise ProviderRefused(PROVIDER, "GOOGLE_SERVICE_ACCOUNT_JSON is not set.")
    url = f"{settings.sandbox_url}/google/_control/service-account"
    if url not in _SANDBOX_KEYS:
        try:
            async with httpx.AsyncClient(timeout=TIMEOUT_SECONDS) as http:
                response = await http.get(url)
                response.raise_for_status()
        except httpx.HTTPError as exc:
            raise ProviderUnavailable(PROVIDER, f"The sandbox's Google key is unavailable: {exc}") from None
        _SANDBOX_KEYS[url] = response.text
    return _SANDBOX_KEYS[url]
