"""The sandbox's own controls under ``/stripe/_control`` (no API key needed)."""

from __future__ import annotations

from typing import Any

from litestar import Request, Response, get, post

from ..control_json import answer, object_body
from . import billing
from .store import STATE, real_now
from .webhooks import DISPATCHER, MODES

state = STATE


def _problem(message: str, status: int = 400) -> Response[bytes]:
    return answer(
        {"error": {"type": "invalid_request_error", "message": f"sandbox control: {message}"}}, status
    )


@post("/_control/reset", include_in_schema=False, status_code=200)
async def reset() -> Response[bytes]:
    """Forget everything: objects, events, idempotency keys, webhook endpoints, deliveries and the mode."""
    state.reset()
    DISPATCHER.reset()
    return answer({"status": "reset"})


@get("/_control/state", include_in_schema=False)
async def counts() -> Response[bytes]:
    return answer({**state.counts(), "webhooks": DISPATCHER.status()})


@get("/_control/deliveries", include_in_schema=False)
async def deliveries() -> Response[bytes]:
    """Every delivery attempt, oldest first: event, type, endpoint, url, attempt, status, error."""
    return answer(
        {"deliveries": list(DISPATCHER.deliveries), "idle": DISPATCHER.idle(), **DISPATCHER.status()}
    )


@get("/_control/webhooks", include_in_schema=False)
async def webhooks_status() -> Response[bytes]:
    return answer(DISPATCHER.status())


@post("/_control/webhooks", include_in_schema=False, status_code=200)
async def webhooks_mode(request: Request[Any, Any, Any]) -> Response[bytes]:
    """``{"mode": "normal"|"reverse"|"duplicate"|"hold", "retry_base_seconds": 1, "max_attempts": 4}``."""
    body = await object_body(request)
    if body is None:
        return _problem("the body must be a JSON object")
    mode = body.get("mode", DISPATCHER.mode)
    if mode not in MODES:
        return _problem(f"mode must be one of {', '.join(MODES)}")
    retry = body.get("retry_base_seconds", DISPATCHER.retry_base_seconds)
    attempts = body.get("max_attempts", DISPATCHER.max_attempts)
    if not isinstance(retry, (int, float)) or retry < 0 or not isinstance(attempts, int) or attempts < 1:
        return _problem("retry_base_seconds must be >= 0 and max_attempts >= 1")
    DISPATCHER.mode = mode
    DISPATCHER.retry_base_seconds = float(retry)
    DISPATCHER.max_attempts = attempts
    return answer(DISPATCHER.status())


@post("/_control/webhooks/flush", include_in_schema=False, status_code=200)
async def webhooks_flush() -> Response[bytes]:
    """Deliver the held events (newest first in ``reverse`` mode)."""
    flushed = DISPATCHER.flush()
    return answer({"flushed": flushed, **DISPATCHER.status()})


@post("/_control/advance", include_in_schema=False, status_code=200)
async def advance(request: Request[Any, Any, Any]) -> Response[bytes]:
    """``{"customer": "cus_...", "seconds": 2678400}``: move a customer without a test clock forward in time
    and run what falls due (period ends, payment retries), like advancing a test clock."""
    body = await object_body(request)
    if body is None:
        return _problem("the body must be a JSON object")
    customer = state.customer(str(body.get("customer", "")))
    seconds = body.get("seconds")
    if customer is None:
        return _problem("no such customer", 404)
    if not isinstance(seconds, int) or seconds <= 0:
        return _problem("seconds must be a positive integer")
    if customer.test_clock is not None:
        return _problem("this customer has a test clock; advance the clock instead")
    customer.offset += seconds
    billing.run_due(state, [customer], state.now(customer))
    return answer(
        {
            "customer": customer.id,
            "now": state.now(customer),
            "offset": customer.offset,
            "real_now": real_now(),
        }
    )


HANDLERS = [reset, counts, deliveries, webhooks_status, webhooks_mode, webhooks_flush, advance]
