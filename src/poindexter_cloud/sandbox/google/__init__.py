"""A stateful Google Workspace simulator, mounted at ``/google``: the token endpoint, the Admin SDK Directory
API (users), the Gmail API and the Calendar API, on Google's wire format, driven by the official SDKs
(google-auth, google-api-python-client) with every address pointed here::

    info = httpx.get(f"{url}/google/_control/service-account").json()   # token_uri is this sandbox's
    creds = service_account.Credentials.from_service_account_info(info, scopes=[...])
    build("admin", "directory_v1", credentials=creds.with_subject(f"admin@{domain}"), static_discovery=True,
          client_options={"api_endpoint": f"{url}/google/"})
    build("gmail", "v1", ..., client_options={"api_endpoint": f"{url}/google/"})
    build("calendar", "v3", ..., client_options={"api_endpoint": f"{url}/google/calendar/v3/"})

``api_endpoint`` replaces the discovery document's rootUrl + servicePath, and the methods' paths follow it:
the Directory's and Gmail's servicePath is empty (their paths begin ``admin/directory/v1/`` and
``gmail/v1/``), Calendar's is ``calendar/v3/``. So each API lives here at Google's own path below
``/google``. State lives in this process's memory until ``POST /google/_control/reset``.

The domain is ``SANDBOX_GOOGLE_DOMAIN`` (default ``dex.sandbox.test``), its super admin
``SANDBOX_GOOGLE_ADMIN`` (default ``admin@<domain>``), and calendars' time zone ``SANDBOX_GOOGLE_TIME_ZONE``
(default UTC); all are read at each reset.

Wire behaviour: ``POST /google/oauth2/token`` takes the JWT-bearer grant google-auth makes (RS256, signed
with a trusted key, ``aud`` Google's token URI or this one, at most an hour long; ``sub`` delegates to a user
of the domain), else ``{"error": "invalid_grant", ...}`` (``auth.py``). Every API call needs a bearer token it
issued (401 with ``WWW-Authenticate`` otherwise) with a scope the method accepts (403
``insufficientPermissions``); Gmail and Calendar act only for the token's user (another mailbox: 403
"Delegation denied for ..."; another calendar: 404). Errors are ``{"error": {"code", "message", "errors":
[{"message", "domain", "reason", ...}], "status"}}`` (the Calendar API's own errors have no ``status``, as its
documentation shows); unknown URLs are Google's HTML 404.

APIs: ``directory.py`` (users insert/get/list/update/patch/delete/makeAdmin; inserting a user gives them a
mailbox and a primary calendar), ``gmail.py`` (messages send/list/get/trash/untrash/modify/delete,
attachments, profile, labels; ``search.py`` for ``q``), ``calendar_api.py`` (events and secondary calendars;
``invitations.py`` for the mail ``sendUpdates`` sends).

Controls (``controls.py``): ``POST /google/_control/reset``, ``GET .../state``, ``GET .../service-account``
(the key to use), ``POST .../service-accounts`` (another key, optionally with limited delegation), ``POST
.../service-accounts/trust`` (trust a key made elsewhere), ``POST .../inbound`` (mail from outside), ``GET
.../outbound`` (mail to outside), ``GET|POST|DELETE .../faults`` (the next N calls answer an error, or wait).
"""

from __future__ import annotations

from typing import Any, Final

from litestar import Request, Response, Router, route
from litestar.exceptions import HTTPException

from . import auth, calendar_api, controls, directory, gmail
from .errors import GoogleError, OAuthError

_NOT_FOUND_PAGE: Final = (
    "<!DOCTYPE html>\n<html lang=en>\n  <meta charset=utf-8>\n  <title>Error 404 (Not Found)!!1</title>\n"
    "  <p><b>404.</b> <ins>That\u2019s an error.</ins>\n  <p>The requested URL <code>{path}</code> was not "
    "found on this server.  <ins>That\u2019s all we know.</ins>\n"
)


def _not_found(path: str) -> Response[bytes]:
    """What Google's front end answers for a URL no API serves."""
    page = _NOT_FOUND_PAGE.replace("{path}", path.replace("<", "&lt;").replace(">", "&gt;"))
    return Response(content=page.encode(), status_code=404, media_type="text/html; charset=UTF-8")


def _on_google_error(_: Request[Any, Any, Any], exc: GoogleError) -> Response[bytes]:
    return exc.response()


def _on_oauth_error(_: Request[Any, Any, Any], exc: OAuthError) -> Response[bytes]:
    return exc.response()


def _on_http_exception(request: Request[Any, Any, Any], exc: HTTPException) -> Response[bytes]:
    if exc.status_code in (404, 405):
        return _not_found(request.url.path)
    return GoogleError(exc.status_code, str(exc.detail or "Bad Request")).response()


def _on_exception(_: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
    return GoogleError(500, f"sandbox internal error: {type(exc).__name__}: {exc}").response()


@route("/{path:path}", http_method=["GET", "POST", "DELETE", "PUT", "PATCH"], include_in_schema=False)
async def unknown(request: Request[Any, Any, Any], path: str) -> Response[bytes]:
    return _not_found(request.url.path)


router: Final = Router(
    path="/google",
    route_handlers=[
        auth.token,
        *directory.HANDLERS,
        *gmail.HANDLERS,
        *calendar_api.HANDLERS,
        *controls.HANDLERS,
        unknown,
    ],
    before_request=controls.inject_fault,
    exception_handlers={
        GoogleError: _on_google_error,
        OAuthError: _on_oauth_error,
        HTTPException: _on_http_exception,
        Exception: _on_exception,
    },
)

__all__ = ["router"]
