"""The Google Workspace adapter: the only module that drives the Admin SDK Directory API.

A service account with domain-wide delegation acts as the Workspace administrator (``GOOGLE_ADMIN_EMAIL``)
to create, suspend and delete the subscribers' users; their Gmail and Calendar are later used by
impersonating each mailbox, so no per-user credential is stored. The key is ``GOOGLE_SERVICE_ACCOUNT_JSON``;
outside production, when it is unset, the sandbox's key is fetched once from
``{SANDBOX_URL}/google/_control/service-account`` (its ``token_uri`` is the sandbox's token endpoint).

google-api-python-client is synchronous: every call runs in a thread (``asyncio.to_thread``) with an
``httplib2.Http`` of its own (they are not thread-safe), discovery documents come from the package
(``static_discovery=True``, no discovery request), and ``api_endpoint`` points the Directory at
``GOOGLE_API_BASE`` outside production. SDK errors become ``ProviderUnavailable`` / ``ProviderRefused``;
neither a key nor a response body is ever logged.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

import google_auth_httplib2
import httplib2
import httpx
from google.auth.exceptions import GoogleAuthError, RefreshError, TransportError
from google.oauth2 import service_account
from googleapiclient.discovery import build
from googleapiclient.errors import HttpError

from poindexter_cloud.core.settings import Settings
from poindexter_cloud.provisioning.errors import (
    ProviderError,
    ProviderObjectMissing,
    ProviderRefused,
    ProviderUnavailable,
)

log = logging.getLogger(__name__)

PROVIDER: Final = "google"
TIMEOUT_SECONDS: Final = 20.0
DIRECTORY_SCOPES: Final = ("https://www.googleapis.com/auth/admin.directory.user",)
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
        if status == 404:
            return ProviderObjectMissing(PROVIDER, f"Google Workspace has no such {what.split()[-1]}.")
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


class GoogleAdapter:
    """The Directory API as our Workspace administrator. One per process (``for_settings`` caches it):
    it holds the loaded key and the token, no connection."""

    def __init__(self, info: dict[str, Any], admin: str, api_base: str | None) -> None:
        credentials = service_account.Credentials.from_service_account_info(  # type: ignore[no-untyped-call]
            info, scopes=list(DIRECTORY_SCOPES)
        )
        self._admin_credentials = credentials.with_subject(admin)
        options = {"api_endpoint": f"{api_base}/"} if api_base else None
        self._directory: Any = build(
            "admin",
            "directory_v1",
            credentials=self._admin_credentials,
            static_discovery=True,
            client_options=options,
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

    async def _run(self, what: str, make: Callable[[Any], Any]) -> Any:
        def execute() -> Any:
            http = google_auth_httplib2.AuthorizedHttp(
                self._admin_credentials, http=httplib2.Http(timeout=TIMEOUT_SECONDS)
            )
            return make(self._directory).execute(http=http)

        try:
            return await asyncio.to_thread(execute)
        except (HttpError, GoogleAuthError, *_TRANSIENT) as exc:
            raise _mapped(what, exc) from None

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
