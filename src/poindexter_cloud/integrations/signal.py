"""A thin async client of signal-cli-rest-api (0.99, normal or native mode): the only module speaking to it.

Its Python client on PyPI is synchronous and has no registration, so this is plain httpx against
``Settings.signal_api_base_url`` (``SIGNAL_API_URL``; the sandbox's simulator outside production). Failures
come back as ``{"error": "..."}``, nearly always with status 400, carrying signal-cli's own message: they are
sorted here into our errors (a captcha wanted, a wrong code, no session, not registered, rate limited, a
recipient without Signal, an unknown group...). Provisioning registers and keeps accounts alive; the identity
API sends, and reads contacts, groups and received attachments. Neither a code, a captcha token, a message
body nor an error body is logged.
"""

from __future__ import annotations

import json
import logging
from typing import Any, Final, Self
from urllib.parse import quote

import httpx

from poindexter_cloud.core.settings import Settings
from poindexter_cloud.integrations.errors import (
    ProviderError,
    ProviderRefused,
    ProviderUnavailable,
    SignalAlreadyRegistered,
    SignalCaptchaInvalid,
    SignalCaptchaRequired,
    SignalNoSession,
    SignalNotRegistered,
    SignalWrongCode,
)

log = logging.getLogger(__name__)


class SignalRecipientUnknown(ProviderRefused):
    """A recipient (or group member) has no Signal account."""

    code = "signal_recipient_unknown"


class SignalGroupUnknown(ProviderRefused):
    """No such group, or the account is not a member of it (or may not post in it)."""

    code = "signal_group_unknown"


class SignalPartlySent(ProviderRefused):
    """A group message reached some members but not all (signal-cli-rest-api 0.99 answers 400 then)."""

    code = "signal_partly_sent"


class SignalAttachmentMissing(ProviderRefused):
    code = "signal_attachment_missing"


PROVIDER: Final = "signal"
TIMEOUT_SECONDS: Final = 30.0  # signal-cli talks to Signal's servers for most calls
RECEIVE_WAIT_SECONDS: Final = 1
RECEIVE_BATCH: Final = 100

# signal-cli's message fragments, and what each means for us, first match wins.
_ERRORS: Final[tuple[tuple[str, type[ProviderError], str], ...]] = (
    ("captcha required", SignalCaptchaRequired, "Signal asks for a captcha before it sends a code."),
    ("invalid captcha", SignalCaptchaInvalid, "Signal refused the captcha token."),
    ("rate limited", ProviderUnavailable, "Signal is rate limiting registrations of this number."),
    ("already registered", SignalAlreadyRegistered, "The number is registered on Signal already."),
    ("authorization failed", SignalWrongCode, "Signal refused the verification code."),
    # A recipient's error ("The user +1... is not registered.") before the account's own ("User +1... is").
    ("the user ", SignalRecipientUnknown, "A recipient has no Signal account."),
    ("group not found", SignalGroupUnknown, "There is no such Signal group."),
    ("invalid signal group", SignalGroupUnknown, "There is no such Signal group."),
    ("is not a member in group", SignalGroupUnknown, "The account is not a member of that Signal group."),
    ("not allowed to send message to group", SignalGroupUnknown, "Only the group's admins may post in it."),
    ("failed to send (some) messages", SignalPartlySent, "Signal did not reach every member of the group."),
    ("no attachment with that name", SignalAttachmentMissing, "There is no such Signal attachment."),
    ("no registration verification session", SignalNoSession, "No Signal verification is pending."),
    ("verification code expired", SignalNoSession, "The Signal verification code expired."),
    ("is not registered", SignalNotRegistered, "The number is not registered on Signal."),
    ("timeout reached", ProviderUnavailable, "signal-cli timed out talking to Signal."),
)


def _error_text(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return ""
    return str(body.get("error") or "") if isinstance(body, dict) else ""


def _mapped(what: str, response: httpx.Response) -> ProviderError:
    text = _error_text(response).lower()
    for fragment, error, message in _ERRORS:
        if fragment in text:
            log.info(
                "signal-cli refused", extra={"call": what, "status": response.status_code, "why": error.code}
            )
            return error(PROVIDER, message)
    log.warning("signal-cli call failed", extra={"call": what, "status": response.status_code})
    if response.status_code >= 500:
        return ProviderUnavailable(
            PROVIDER, f"signal-cli-rest-api failed ({response.status_code}) to {what}."
        )
    return ProviderRefused(PROVIDER, f"signal-cli-rest-api refused to {what} ({response.status_code}).")


def _path(number: str) -> str:
    return quote(number, safe="")


class SignalAdapter:
    """One httpx client; close it (or use ``async with``)."""

    def __init__(self, base_url: str) -> None:
        self._http = httpx.AsyncClient(base_url=base_url.rstrip("/"), timeout=TIMEOUT_SECONDS)

    @classmethod
    def from_settings(cls, settings: Settings) -> SignalAdapter:
        return cls(settings.signal_api_base_url)

    async def close(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _request(self, what: str, method: str, path: str, **options: Any) -> httpx.Response:
        try:
            response = await self._http.request(method, path, **options)
        except httpx.HTTPError as exc:
            log.warning("signal-cli unreachable", extra={"call": what, "error": type(exc).__name__})
            raise ProviderUnavailable(
                PROVIDER, f"signal-cli-rest-api could not be reached to {what}."
            ) from None
        if response.is_success:
            return response
        raise _mapped(what, response)

    async def register(self, number: str, captcha: str | None = None) -> None:
        """Ask Signal to text a verification code to ``number``."""
        body: dict[str, Any] = {"use_voice": False}
        if captcha:
            body["captcha"] = captcha
        await self._request("register", "POST", f"/v1/register/{_path(number)}", json=body)

    async def verify(self, number: str, code: str) -> None:
        await self._request("verify", "POST", f"/v1/register/{_path(number)}/verify/{quote(code, safe='')}")

    async def set_profile(self, number: str, name: str) -> None:
        await self._request("set the profile", "PUT", f"/v1/profiles/{_path(number)}", json={"name": name})

    async def unregister(self, number: str) -> bool:
        """Delete the Signal account and signal-cli's data for it (the number goes back to Telnyx, and its
        next owner must not inherit the account); False if it was not registered."""
        body = {"delete_account": True, "delete_local_data": True}
        try:
            await self._request("unregister", "POST", f"/v1/unregister/{_path(number)}", json=body)
        except SignalNotRegistered:
            return False
        return True

    async def send(
        self, number: str, recipients: list[str], message: str | None, attachments: list[str]
    ) -> int:
        """Send from ``number`` to Signal numbers or to one group (``group.`` + its id); ``attachments`` in
        the REST API's ``data:<mime>;filename=<name>;base64,<data>`` form. The message's Signal timestamp."""
        body: dict[str, Any] = {"number": number, "recipients": recipients}
        if message:
            body["message"] = message
        if attachments:
            body["base64_attachments"] = attachments
        response = await self._request("send", "POST", "/v2/send", json=body)
        try:
            return int(response.json()["timestamp"])
        except (ValueError, KeyError, TypeError):
            raise ProviderUnavailable(
                PROVIDER, "signal-cli-rest-api answered send without a timestamp."
            ) from None

    async def _json_list(self, what: str, path: str) -> list[dict[str, Any]]:
        response = await self._request(what, "GET", path)
        try:
            items = response.json()
        except ValueError:
            raise ProviderUnavailable(
                PROVIDER, f"signal-cli-rest-api answered {what} with no JSON."
            ) from None
        return [item for item in items if isinstance(item, dict)] if isinstance(items, list) else []

    async def contacts(self, number: str) -> list[dict[str, Any]]:
        """The account's contacts as signal-cli lists them (``number``, ``uuid``, ``name``, ``profile``)."""
        return await self._json_list("list contacts", f"/v1/contacts/{_path(number)}")

    async def groups(self, number: str) -> list[dict[str, Any]]:
        """The groups the account is in (``id`` is the ``group.`` form sends take)."""
        return await self._json_list("list groups", f"/v1/groups/{_path(number)}")

    async def attachment(self, attachment_id: str) -> tuple[bytes, str]:
        """A received attachment's bytes and content type."""
        response = await self._request(
            "read an attachment", "GET", f"/v1/attachments/{quote(attachment_id, safe='')}"
        )
        return response.content, response.headers.get("content-type", "application/octet-stream")

    async def receive(self, number: str, max_messages: int = RECEIVE_BATCH) -> list[dict[str, Any]]:
        """What arrived since the last receive, oldest first. signal-cli hands each envelope out once: the
        caller must store them before doing anything else."""
        response = await self._request(
            "receive",
            "GET",
            f"/v1/receive/{_path(number)}",
            params={"timeout": RECEIVE_WAIT_SECONDS, "max_messages": max_messages},
            timeout=TIMEOUT_SECONDS + RECEIVE_WAIT_SECONDS,
        )
        try:
            items = json.loads(response.text or "[]")
        except ValueError:
            raise ProviderUnavailable(
                PROVIDER, "signal-cli-rest-api answered receive with no JSON."
            ) from None
        return [item for item in items if isinstance(item, dict)] if isinstance(items, list) else []
