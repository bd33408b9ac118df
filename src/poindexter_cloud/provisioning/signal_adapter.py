"""A thin async client of signal-cli-rest-api (0.99, normal or native mode): the only module speaking to it.

Its Python client on PyPI is synchronous and has no registration, so this is plain httpx against
``Settings.signal_api_base_url`` (``SIGNAL_API_URL``; the sandbox's simulator outside production). Failures
come back as ``{"error": "..."}``, nearly always with status 400, carrying signal-cli's own message: they are
sorted here into our errors (a captcha wanted, a wrong code, no session, not registered, rate limited...).
Neither a code, a captcha token, a message body nor an error body is logged.
"""

from __future__ import annotations

import json
import logging
from typing import Any, Final, Self
from urllib.parse import quote

import httpx

from poindexter_cloud.core.settings import Settings
from poindexter_cloud.provisioning.errors import (
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
