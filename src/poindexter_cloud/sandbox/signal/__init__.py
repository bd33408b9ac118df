"""A stateful simulator of bbernhard/signal-cli-rest-api 0.99 (signal-cli 0.14) in its default ``normal``
mode, mounted at ``/signal``: the REST API's ``/v1/about`` is ``{sandbox}/signal/v1/about``. There is no
official SDK; clients speak plain HTTP+JSON. State lives in this process's memory until ``POST
/signal/_control/reset``.

Wire behaviour (``wire.py``): gin's JSON (``application/json; charset=utf-8``); every failure is
``{"error": "..."}``, nearly always 400, with signal-cli's own message where signal-cli failed (those end
with a newline, e.g. ``"User +15550100 is not registered.\\n"``); success bodies are empty for 201/204 where
the REST API writes none; unknown paths are gin's plain ``404 page not found`` (a known path with the wrong
method gets Litestar's 405 JSON here, where gin would also say 404). Path numbers are E.164.

Endpoints (under ``/signal``):

* ``GET /v1/about`` (``mode: normal``, ``version: 0.99``), ``GET /v1/health`` (204), ``GET /v1/accounts``
  (the registered numbers).
* ``POST /v1/register/{number}`` (``{"captcha"?, "use_voice"?}``) -> 201: Signal texts a six-digit code
  through the Telnyx simulator (``sms.py``), or "calls" (``use_voice``, only after an SMS was requested). A
  pending captcha demand answers signal-cli's ``Captcha required for verification, use --captcha ...``; a
  token shaped like signalcaptchas.org's
  (``signalcaptcha://signal-hcaptcha.<sitekey>.registration.<token>``) is accepted, another shape is
  ``Invalid captcha given.``. Registering a number unregistered without ``delete_account`` reactivates it at
  once, with no code (as signal-cli does). Errors: ``registration.py``.
* ``POST /v1/register/{number}/verify/{token}`` (``{"pin"?}``) -> 201; wrong code ``Verify error: [401]
  Authorization failed!``, nothing requested ``Verify error: No registration verification session active``.
* ``POST /v1/unregister/{number}`` (``{"delete_account"?, "delete_local_data"?}``) -> 204.
* ``PUT /v1/profiles/{number}`` (``{"name", "base64_avatar"?, "about"?}``) -> 204.
* ``POST /v2/send`` (``number``, ``recipients`` (numbers, ACIs or one ``group.`` id), ``recipient``,
  ``message``, ``base64_attachments``, ...) -> 201 ``{"timestamp": "<ms>"}``. Recipients must have Signal
  (``The user +1... is not registered.``); the sender must be registered (``User +1... is not
  registered.``). Delivery: ``delivery.py``.
* ``GET /v1/receive/{number}`` (``timeout``, ``max_messages``, ``ignore_*``, ``send_read_receipts``): the
  queued envelopes as signal-cli prints them (``envelopes.py``), each once, as ``text/plain`` JSON; receiving
  sends delivery (and read) receipts back to senders that are accounts here.
* ``GET /v1/contacts/{number}``, ``GET /v1/contacts/{number}/{uuid}``, ``PUT /v1/contacts/{number}``
  (``profiles.py``).
* ``POST /v1/groups/{number}``, ``GET /v1/groups/{number}``, ``GET /v1/groups/{number}/{groupid}``
  (``groups.py``).
* ``GET /v1/attachments``, ``GET /v1/attachments/{id}``.

Controls (``controls.py``): ``POST /signal/_control/reset``, ``GET /signal/_control/state``, ``POST
/signal/_control/captcha``, ``POST /signal/_control/faults`` (``faults.py``), ``POST
/signal/_control/outside_users``, ``GET /signal/_control/outside_users/{number}``, ``POST
/signal/_control/outside_users/{number}/messages``.
"""

from __future__ import annotations

from typing import Any, Final

from litestar import Request, Response, Router, route
from litestar.exceptions import HTTPException

from . import controls, groups, messages, profiles, registration
from .faults import inject
from .wire import error, page_not_found


def _on_http_exception(_: Request[Any, Any, Any], exc: HTTPException) -> Response[bytes]:
    if exc.status_code in (404, 405):
        return page_not_found()
    return error(str(exc.detail or "Couldn't process request - invalid request"), exc.status_code)


def _on_exception(_: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
    return error(f"sandbox internal error: {type(exc).__name__}: {exc}", 500)


# Litestar's router does not fall back from a matched static segment to a path parameter, so each prefix
# with routes gets its own catch-all.
@route(
    ["/{path:path}", "/v1/{path:path}", "/v2/{path:path}", "/_control/{path:path}"],
    http_method=["GET", "POST", "PUT", "DELETE", "PATCH"],
    include_in_schema=False,
)
async def unknown(path: str) -> Response[bytes]:
    return page_not_found()


router: Final = Router(
    path="/signal",
    route_handlers=[
        *registration.HANDLERS,
        *messages.HANDLERS,
        *profiles.HANDLERS,
        *groups.HANDLERS,
        *controls.HANDLERS,
        unknown,
    ],
    before_request=inject,
    exception_handlers={HTTPException: _on_http_exception, Exception: _on_exception},
)

__all__ = ["router"]
