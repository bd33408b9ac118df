"""The sandbox's own controls under ``/signal/_control`` (not part of signal-cli-rest-api). Errors are
``{"error": "sandbox control: ..."}``."""

from __future__ import annotations

from typing import Any

from litestar import Request, Response, get, post

from ..control_json import object_body
from .delivery import deliver, send_to_group
from .faults import KINDS, cancel_waits
from .messages import parse_attachment
from .recipients import GROUP_PREFIX, rest_group_id
from .store import STATE, Fault, OutsideUser
from .wire import PHONE, Refused, answer, error

state = STATE


def _problem(message: str, status: int = 400) -> Response[bytes]:
    return error(f"sandbox control: {message}", status)


def _count(body: dict[str, Any]) -> int | None:
    count = body.get("count", 1)
    return count if isinstance(count, int) and not isinstance(count, bool) and count >= 1 else None


def _outside_view(user: OutsideUser) -> dict[str, Any]:
    return {"number": user.number, "uuid": user.uuid, "name": user.name, "received": list(user.received)}


@post("/_control/reset", include_in_schema=False, status_code=200)
async def reset() -> Response[bytes]:
    """Forget everything: accounts, Signal users, groups, messages, captcha demands and faults."""
    state.reset()
    cancel_waits()
    return answer({"status": "reset"})


@get("/_control/state", include_in_schema=False)
async def show_state() -> Response[bytes]:
    """Accounts (with the pending verification code), outside users, groups, captcha demands, faults, and
    every verification SMS and call Signal made."""
    return answer(state.summary())


@post("/_control/captcha", include_in_schema=False, status_code=200)
async def demand_captcha(request: Request[Any, Any, Any]) -> Response[bytes]:
    """``{"count": 1}`` or ``{"number": "+1..."}``: Signal demands a captcha of the next ``count``
    registrations, or of that number's next one. The demand holds until a registration brings a captcha."""
    body = await object_body(request)
    if body is None:
        return _problem("the body must be a JSON object")
    number = body.get("number")
    count = _count(body)
    if number is not None:
        if not isinstance(number, str) or not PHONE.match(number):
            return _problem("number must be an E.164 phone number")
        state.captcha_numbers.add(number)
    elif count is None:
        return _problem("count must be a positive integer")
    else:
        state.captcha_next += count
    return answer(state.summary()["captcha"])


@post("/_control/faults", include_in_schema=False, status_code=200)
async def add_fault(request: Request[Any, Any, Any]) -> Response[bytes]:
    """``{"kind": "error"|"timeout"|"rate_limit", "count": 1, "endpoint": "POST /v2/send"?, "seconds": 30?,
    "status": 429?}``: the next ``count`` calls (to ``endpoint``, else any) fail. ``rate_limit`` is Signal
    refusing a registration, so its endpoint is ``POST /v1/register/{number}``."""
    body = await object_body(request)
    if body is None:
        return _problem("the body must be a JSON object")
    kind, count, seconds = body.get("kind"), _count(body), body.get("seconds", 30)
    endpoint = body.get("endpoint", "POST /v1/register/{number}" if kind == "rate_limit" else "")
    status = body.get("status", 429)
    if kind not in KINDS:
        return _problem(f"kind must be one of {', '.join(KINDS)}")
    if count is None:
        return _problem("count must be a positive integer")
    if not isinstance(endpoint, str) or (endpoint and " /" not in endpoint):
        return _problem('endpoint must look like "POST /v1/register/{number}"')
    if not isinstance(seconds, (int, float)) or isinstance(seconds, bool) or seconds < 0:
        return _problem("seconds must be a number >= 0")
    if kind == "rate_limit" and status not in (413, 429):
        return _problem("status must be 413 or 429")
    state.faults.append(Fault(kind, count, endpoint, float(seconds), status))
    return answer(state.summary()["faults"])


@post("/_control/outside_users", include_in_schema=False, status_code=201)
async def add_outside_user(request: Request[Any, Any, Any]) -> Response[bytes]:
    """``{"number": "+1...", "name": "Alice"}``: someone with Signal on a phone of their own."""
    body = await object_body(request)
    if body is None:
        return _problem("the body must be a JSON object")
    number, name = body.get("number"), body.get("name", "")
    if not isinstance(number, str) or not PHONE.match(number):
        return _problem("number must be an E.164 phone number")
    if not isinstance(name, str):
        return _problem("name must be a string")
    if number in state.accounts:
        return _problem(f"{number} is an account of this signal-cli-rest-api", 409)
    user = state.outsiders.get(number)
    if user is None:
        user = state.outsiders[number] = OutsideUser(number, state.aci(number), name)
    user.name = name
    return answer(_outside_view(user), 201)


@get("/_control/outside_users/{number:str}", include_in_schema=False)
async def show_outside_user(number: str) -> Response[bytes]:
    """The outside user and what their phone received, oldest first."""
    user = state.outsiders.get(number)
    if user is None:
        return _problem(f"no outside user {number}", 404)
    return answer(_outside_view(user))


@post("/_control/outside_users/{number:str}/messages", include_in_schema=False, status_code=201)
async def outside_user_sends(request: Request[Any, Any, Any], number: str) -> Response[bytes]:
    """``{"recipient": "+1..." | "group....", "message": "...", "base64_attachments": [...]?}``: the outside
    user sends a Signal message to an account of this API (or to a group they are in) -> ``{"timestamp"}``."""
    user = state.outsiders.get(number)
    if user is None:
        return _problem(f"no outside user {number}", 404)
    body = await object_body(request)
    if body is None:
        return _problem("the body must be a JSON object")
    recipient, message, raw = body.get("recipient"), body.get("message"), body.get("base64_attachments", [])
    if not isinstance(recipient, str) or not isinstance(message, (str, type(None))):
        return _problem("recipient must be a string and message a string")
    if not isinstance(raw, list) or not all(isinstance(item, str) for item in raw) or not (message or raw):
        return _problem("give message and/or base64_attachments (a list of base64 strings)")
    try:
        attachments = [parse_attachment(item) for item in raw]
    except Refused as exc:
        return _problem(str(exc))
    timestamp = state.timestamp()
    if recipient.startswith(GROUP_PREFIX):
        group = next((g for g in state.groups.values() if rest_group_id(g) == recipient), None)
        if group is None or number not in group.members:
            return _problem(f"{number} is not in group {recipient}", 404)
        send_to_group(user, group, timestamp, message, attachments)
    else:
        account = state.registered(recipient)
        if account is None:
            return _problem(f"{recipient} is not a registered account of this signal-cli-rest-api", 404)
        deliver(user, account, timestamp, message, attachments)
    return answer({"timestamp": timestamp}, 201)


HANDLERS = [
    reset,
    show_state,
    demand_captcha,
    add_fault,
    add_outside_user,
    show_outside_user,
    outside_user_sends,
]
