"""The sandbox's own controls under ``/google/_control`` (no token needed), and the fault injection every API
call passes through (:func:`inject_fault`)."""

from __future__ import annotations

import asyncio
import base64
import binascii
from typing import Any, Final

from litestar import Request, Response, delete, get, post

from ..control_json import answer, object_body
from ..fault_queue import take
from . import gmail, mime
from .auth import TOKEN_PATH, register_service_account, sandbox_service_account
from .errors import GoogleError, OAuthError
from .store import STATE, Fault

DEFAULT_ACCOUNT: Final = "provisioning"
# Which API a path belongs to (below /google), for faults.
APIS: Final = {
    "oauth": "/oauth2/",
    "directory": "/admin/directory/",
    "gmail": "/gmail/",
    "calendar": "/calendar/",
}
_FAULT_MESSAGES: Final = {
    429: "Rate Limit Exceeded",
    500: "Internal error encountered.",
    502: "Bad Gateway",
    503: "The service is currently unavailable.",
    504: "Deadline exceeded.",
}


def _problem(message: str, status: int = 400) -> Response[bytes]:
    return answer({"error": {"code": status, "message": f"sandbox control: {message}"}}, status)


def _base_url(request: Request[Any, Any, Any]) -> str:
    return f"{request.url.scheme}://{request.url.netloc}"


@post("/_control/reset", include_in_schema=False, status_code=200)
async def reset() -> Response[bytes]:
    """Forget users (but the admin), mail, calendars, tokens, faults and the outbound log. Service accounts
    stay trusted, so a key handed out before keeps working."""
    STATE.reset()
    return answer({"status": "reset", "domain": STATE.domain, "admin": STATE.admin_email})


@get("/_control/state", include_in_schema=False)
async def state() -> Response[bytes]:
    return answer(STATE.counts())


@get("/_control/service-account", include_in_schema=False)
async def default_service_account(request: Request[Any, Any, Any]) -> Response[bytes]:
    """The sandbox's service-account key (the same for the life of the process, whatever resets happen), with
    ``token_uri`` on the host this was asked on; it may impersonate any user of the domain, for any scope."""
    if STATE.default_account is None:
        STATE.default_account = sandbox_service_account(_base_url(request), name=DEFAULT_ACCOUNT)
    return answer({**STATE.default_account, "token_uri": _base_url(request) + TOKEN_PATH})


@post("/_control/service-accounts", include_in_schema=False, status_code=200)
async def new_service_account(request: Request[Any, Any, Any]) -> Response[bytes]:
    """``{"name": "other", "delegated_scopes": [...]}`` (both optional): a new key (of a new account, or a
    second key of the account ``name``), whose domain-wide delegation allows only ``delegated_scopes``
    (absent: any scope)."""
    body = await object_body(request)
    if body is None:
        return _problem("the body must be a JSON object")
    name = body.get("name", f"account-{len(STATE.service_accounts) + 1}")
    scopes = body.get("delegated_scopes")
    if not isinstance(name, str) or not name.replace("-", "").isalnum() or name == DEFAULT_ACCOUNT:
        return _problem(f"name must be letters, digits and dashes, and not {DEFAULT_ACCOUNT}")
    if scopes is not None and (not isinstance(scopes, list) or not all(isinstance(s, str) for s in scopes)):
        return _problem("delegated_scopes must be a list of scope URLs")
    return answer(sandbox_service_account(_base_url(request), name=name, delegated_scopes=scopes))


@post("/_control/service-accounts/trust", include_in_schema=False, status_code=200)
async def trust_service_account(request: Request[Any, Any, Any]) -> Response[bytes]:
    """``{"info": <service-account key JSON>, "delegated_scopes"?: [...]}``: trust a key made elsewhere (for
    a service configured with a key file of its own)."""
    body = await object_body(request)
    info = body.get("info") if body is not None else None
    if not isinstance(info, dict) or not info.get("client_email") or not info.get("private_key"):
        return _problem("info must be a service-account key JSON with client_email and private_key")
    try:
        email = register_service_account(info, body.get("delegated_scopes") if body else None)
    except (ValueError, TypeError) as error:
        return _problem(f"the private key does not load: {error}")
    return answer({"client_email": email})


@post("/_control/inbound", include_in_schema=False, status_code=200)
async def inbound(request: Request[Any, Any, Any]) -> Response[bytes]:
    """Mail from outside arrives: ``{"to", "from"?, "cc"?, "subject"?, "text"?, "html"?, "attachments"?:
    [{"filename", "mime_type"?, "content" | "content_base64"}], "message_id"?, "in_reply_to"?,
    "references"?, "headers"?, "date"?}``, or ``{"raw": base64 RFC 822}``. Each To/Cc (and ``bcc`` list)
    address of the sandbox domain gets it in its INBOX; one without a mailbox is a 404 and nothing is
    delivered."""
    body = await object_body(request)
    if body is None:
        return _problem("the body must be a JSON object")
    try:
        raw = _inbound_message(body)
    except (ValueError, binascii.Error, KeyError, TypeError) as error:
        return _problem(f"the message does not build: {error}")
    email = mime.parse(raw)
    bcc = body.get("bcc") or []
    addresses = [a for _, a in mime.addresses(email, "To", "Cc")] + [str(a).lower() for a in bcc]
    local = list(dict.fromkeys(a for a in addresses if STATE.in_domain(a)))
    users = [STATE.user_by_key(a) for a in local]
    missing = [a for a, u in zip(local, users, strict=True) if u is None]
    if missing or not local:
        return _problem(f"no mailbox in {STATE.domain} for: {', '.join(missing or addresses)}", 404)
    delivered = []
    for user in dict.fromkeys(u for u in users if u is not None):
        message = gmail.deliver(user, raw)
        delivered.append({"mailbox": user.primary_email, "id": message.id, "threadId": message.thread_id})
    return answer({"delivered": delivered})


def _inbound_message(body: dict[str, Any]) -> bytes:
    if body.get("raw"):
        return mime.normalize(base64.b64decode(str(body["raw"]), validate=False))
    if not body.get("to"):
        raise ValueError("'to' is required")
    return mime.build(body)


@get("/_control/outbound", include_in_schema=False)
async def outbound(request: Request[Any, Any, Any]) -> Response[bytes]:
    """Mail sent to addresses outside the sandbox domain, oldest first (``?to=`` filters by recipient):
    ``{"from", "to", "subject", "message_id", "sent_at", "raw"}`` with ``raw`` in standard base64."""
    to = request.query_params.get("to")
    messages = [m for m in STATE.outbound if to is None or m["to"] == str(to).lower()]
    return answer({"messages": messages})


@get("/_control/faults", include_in_schema=False)
async def list_faults() -> Response[bytes]:
    return answer({"faults": [fault.view() for fault in STATE.faults]})


@post("/_control/faults", include_in_schema=False, status_code=200)
async def add_fault(request: Request[Any, Any, Any]) -> Response[bytes]:
    """``{"api": "gmail"|"calendar"|"directory"|"oauth"|null, "count": 1, "status": 503, "delay_seconds": 0,
    "method": "POST"?}``: the next ``count`` matching calls wait ``delay_seconds``, then answer ``status``
    with Google's error body (the token endpoint: an OAuth error); without ``status`` they are served
    normally after the wait (a time-out drill: set the delay past the client's timeout)."""
    body = await object_body(request)
    if body is None:
        return _problem("the body must be a JSON object")
    api, count = body.get("api"), body.get("count", 1)
    status, delay, method = body.get("status"), body.get("delay_seconds", 0), body.get("method")
    if api is not None and api not in APIS:
        return _problem(f"api must be one of {', '.join(APIS)} or null")
    if not isinstance(count, int) or count < 1:
        return _problem("count must be a positive integer")
    if status is not None and (not isinstance(status, int) or not 400 <= status <= 599):
        return _problem("status must be an HTTP error status")
    if not isinstance(delay, int | float) or not 0 <= delay <= 600 or (status is None and not delay):
        return _problem("delay_seconds must be within [0, 600], and positive when no status is given")
    if method is not None and not isinstance(method, str):
        return _problem("method must be an HTTP method")
    STATE.faults.append(Fault(api, count, status, float(delay), method.upper() if method else None))
    return answer({"faults": [fault.view() for fault in STATE.faults]})


@delete("/_control/faults", include_in_schema=False, status_code=204)
async def clear_faults() -> None:
    STATE.faults.clear()


def _api_of(path: str) -> str | None:
    below = path.removeprefix("/google").removeprefix("/upload")  # an upload is a call of its API
    return next((api for api, prefix in APIS.items() if below.startswith(prefix)), None)


async def inject_fault(request: Request[Any, Any, Any]) -> Response[bytes] | None:
    """Before every API call: count it, and play the first pending fault that matches it."""
    api = _api_of(request.url.path)
    if api is None:
        return None
    STATE.requests += 1
    method = request.method.upper()
    fault = take(STATE.faults, lambda f: f.api in (None, api) and f.method in (None, method))
    if fault is None:
        return None
    if fault.delay_seconds:
        await asyncio.sleep(fault.delay_seconds)
    if fault.status is None:
        return None
    message = _FAULT_MESSAGES.get(fault.status)
    if api == "oauth":
        error = "temporarily_unavailable" if fault.status == 503 else "internal_failure"
        return OAuthError(error, message or "Backend Error", fault.status).response()
    return GoogleError(fault.status, message).response()


HANDLERS: Final = [
    reset,
    state,
    default_service_account,
    new_service_account,
    trust_service_account,
    inbound,
    outbound,
    list_faults,
    add_fault,
    clear_faults,
]
