"""The sandbox's own controls under ``/telnyx/_control`` (no API key needed), separate from Telnyx's API."""

from __future__ import annotations

from typing import Any

from litestar import Request, Response, delete, get, post

from ..control_json import answer, object_body
from . import network, render
from .api import E164
from .faults import FAULTS, Fault
from .idempotency import KEYS
from .signing import sandbox_public_key
from .store import STATE
from .webhooks import DISPATCHER, MODES

ORDER_OUTCOMES = ("success", "failure")


def _problem(detail: str, status: int = 400) -> Response[bytes]:
    return answer({"errors": [{"code": "sandbox", "title": "Sandbox control", "detail": detail}]}, status)


def _seconds(value: Any) -> float | None:
    """A number of seconds >= 0, or None when ``value`` is not one."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        return None
    return float(value)


@get("/_control/public_key", include_in_schema=False)
async def public_key() -> Response[bytes]:
    """The webhook-signing public key, base64: what Mission Control shows as the account's public key."""
    return answer({"public_key": sandbox_public_key()})


@post("/_control/inbound", include_in_schema=False, status_code=200)
async def inbound(request: Request[Any, Any, Any]) -> Response[bytes]:
    """``{"from": "+1...", "to": "<active number>", "text": "...", "media_urls": [...]}``: someone texts one
    of the account's numbers (``network.deliver_sms``)."""
    body = await object_body(request)
    if body is None:
        return _problem("the body must be a JSON object")
    sender, to, text = body.get("from"), body.get("to"), body.get("text")
    media = body.get("media_urls") or []
    if not isinstance(sender, str) or not E164.match(sender) or not isinstance(to, str) or not E164.match(to):
        return _problem("'from' and 'to' must be E.164 phone numbers")
    if text is not None and not isinstance(text, str):
        return _problem("'text' must be a string")
    if not isinstance(media, list) or not all(isinstance(url, str) for url in media) or not (text or media):
        return _problem("give 'text' and/or 'media_urls' (a list of URLs)")
    message = network.deliver_sms(sender, to, text, media)
    if message is None:
        return _problem(f"{to} is not an active number of the sandbox account", 404)
    return answer({"data": render.message(message)})


@post("/_control/reset", include_in_schema=False, status_code=200)
async def reset() -> Response[bytes]:
    """Forget numbers, profiles, orders, messages, idempotency keys, faults, deliveries and every setting
    (the signing key pair stays)."""
    network.reset()
    STATE.reset()
    DISPATCHER.reset()
    FAULTS.reset()
    KEYS.reset()
    return answer({"status": "reset"})


@get("/_control/state", include_in_schema=False)
async def counts() -> Response[bytes]:
    settings = STATE.settings
    return answer(
        {
            **STATE.counts(),
            "carrier_delay_seconds": settings.carrier_delay_seconds,
            "number_orders_settings": {"outcome": settings.order_outcome, "seconds": settings.order_seconds},
            "off_network_messages": [render.message(m) for m in STATE.off_network],
            "webhooks": DISPATCHER.status(),
        }
    )


@post("/_control/network", include_in_schema=False, status_code=200)
async def network_settings(request: Request[Any, Any, Any]) -> Response[bytes]:
    """``{"carrier_delay_seconds": 0.05}``: time between a message's queued, sent and delivered states."""
    delay = _seconds((await object_body(request) or {}).get("carrier_delay_seconds"))
    if delay is None:
        return _problem("carrier_delay_seconds must be a number >= 0")
    STATE.settings.carrier_delay_seconds = delay
    return answer({"carrier_delay_seconds": delay})


@post("/_control/number_orders", include_in_schema=False, status_code=200)
async def number_orders(request: Request[Any, Any, Any]) -> Response[bytes]:
    """``{"outcome": "success"|"failure", "seconds": 0.05}``: how orders placed from now on end, and how long
    after they are placed. ``failure`` lasts until set back (or reset)."""
    body = await object_body(request)
    if body is None:
        return _problem("the body must be a JSON object")
    settings = STATE.settings
    outcome = body.get("outcome", settings.order_outcome)
    seconds = _seconds(body.get("seconds", settings.order_seconds))
    if outcome not in ORDER_OUTCOMES or seconds is None:
        return _problem("outcome must be success or failure, and seconds a number >= 0")
    settings.order_outcome, settings.order_seconds = outcome, seconds
    return answer({"outcome": outcome, "seconds": seconds})


@get("/_control/faults", include_in_schema=False)
async def faults() -> Response[bytes]:
    return answer({"faults": [fault.view() for fault in FAULTS.pending]})


@post("/_control/faults", include_in_schema=False, status_code=200)
async def add_fault(request: Request[Any, Any, Any]) -> Response[bytes]:
    """``{"path": "/v2/number_orders", "method": "POST", "count": 2, "status": 503}`` (``code``, ``title``,
    ``detail`` override the error object), or ``{"path": ..., "delay_seconds": 5}`` to hold the answers."""
    body = await object_body(request)
    if body is None:
        return _problem("the body must be a JSON object")
    path, method, count = body.get("path"), body.get("method"), body.get("count", 1)
    status, delay = body.get("status"), _seconds(body.get("delay_seconds", 0))
    texts = {name: body.get(name) for name in ("code", "title", "detail")}
    if not isinstance(path, str) or not path.startswith("/"):
        return _problem("path must be an API path such as /v2/messages (fnmatch patterns allowed)")
    if method is not None and not isinstance(method, str):
        return _problem("method must be an HTTP method")
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        return _problem("count must be an integer >= 1")
    if status is not None and (
        isinstance(status, bool) or not isinstance(status, int) or not 400 <= status < 600
    ):
        return _problem("status must be an HTTP error status (400-599)")
    if delay is None or (status is None and not delay):
        return _problem("give status, or delay_seconds > 0")
    if not all(value is None or isinstance(value, str) for value in texts.values()):
        return _problem("code, title and detail must be strings")
    fault = Fault(path, method.upper() if method else None, count, status, delay, **texts)
    FAULTS.add(fault)
    return answer({"faults": [pending.view() for pending in FAULTS.pending]})


@delete("/_control/faults", include_in_schema=False, status_code=200)
async def clear_faults() -> Response[bytes]:
    FAULTS.reset()
    return answer({"faults": []})


@get("/_control/deliveries", include_in_schema=False)
async def deliveries() -> Response[bytes]:
    """Every delivery attempt, oldest first (event, type, url, attempt, status, error), and every event."""
    return answer(
        {
            "deliveries": list(DISPATCHER.deliveries),
            "events": list(DISPATCHER.events),
            "idle": DISPATCHER.idle(),
            **DISPATCHER.status(),
        }
    )


@get("/_control/webhooks", include_in_schema=False)
async def webhooks_status() -> Response[bytes]:
    return answer(DISPATCHER.status())


@post("/_control/webhooks", include_in_schema=False, status_code=200)
async def webhooks_mode(request: Request[Any, Any, Any]) -> Response[bytes]:
    """``{"mode": "normal"|"duplicate"|"hold", "retry_base_seconds": 1, "attempts_per_url": 3,
    "timeout_seconds": 2}``."""
    body = await object_body(request)
    if body is None:
        return _problem("the body must be a JSON object")
    mode = body.get("mode", DISPATCHER.mode)
    if mode not in MODES:
        return _problem(f"mode must be one of {', '.join(MODES)}")
    retry = _seconds(body.get("retry_base_seconds", DISPATCHER.retry_base_seconds))
    timeout = _seconds(body.get("timeout_seconds", DISPATCHER.timeout_seconds))
    attempts = body.get("attempts_per_url", DISPATCHER.attempts_per_url)
    if (
        retry is None
        or not timeout
        or isinstance(attempts, bool)
        or not isinstance(attempts, int)
        or attempts < 1
    ):
        return _problem("retry_base_seconds must be >= 0, timeout_seconds > 0 and attempts_per_url >= 1")
    DISPATCHER.mode = mode
    DISPATCHER.retry_base_seconds = retry
    DISPATCHER.attempts_per_url = attempts
    DISPATCHER.timeout_seconds = timeout
    return answer(DISPATCHER.status())


@post("/_control/webhooks/flush", include_in_schema=False, status_code=200)
async def webhooks_flush() -> Response[bytes]:
    """Deliver the events held in ``hold`` mode."""
    return answer({"flushed": DISPATCHER.flush(), **DISPATCHER.status()})


HANDLERS = [
    public_key,
    inbound,
    reset,
    counts,
    network_settings,
    number_orders,
    faults,
    add_fault,
    clear_faults,
    deliveries,
    webhooks_status,
    webhooks_mode,
    webhooks_flush,
]
