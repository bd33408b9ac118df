"""A stateful Stripe simulator, mounted at ``/stripe``: the parts of the API our billing uses, on Stripe's
wire format, driven by the official SDK with every base address pointed here::

    stripe.StripeClient(api_key="sk_test_...", base_addresses={
        "api": f"{url}/stripe", "meter_events": f"{url}/stripe", "files": f"{url}/stripe",
        "connect": f"{url}/stripe"})

State lives in this process's memory until ``POST /stripe/_control/reset``.

Wire behaviour (``api.py``): any ``Authorization: Bearer sk_test_...`` key (else 401); form bodies with
bracket notation (``forms.py``); unknown parameters refused (``parameter_unknown``); errors as ``{"error":
{"type", "message", "code"?, "param"?, "decline_code"?, "doc_url"?}}`` with Stripe's statuses (400, 401, 402
card errors, 404 ``resource_missing`` and unknown URLs); lists as ``{"object": "list", "data", "has_more",
"url"}`` newest first with ``limit``/``starting_after``/``ending_before``; ``expand[]`` on any id field (and
``line_items`` on Checkout Sessions); ``Idempotency-Key`` on POSTs replays the saved answer for 24 h
(``Idempotent-Replayed: true``) and refuses the key with other parameters (``idempotency_error``); every
answer has a ``Request-Id``. Objects have the shapes of API version ``2026-10-28.endive`` (what stripe-python
16 sends): billing periods on subscription items, invoices' subscription under ``parent`` (see ``render.py``).

Endpoints (under ``/stripe``):

* customers: ``POST/GET /v1/customers``, ``GET/POST/DELETE /v1/customers/{id}``, ``GET
  /v1/customers/{id}/payment_methods``, ``GET /v1/payment_methods/{id}``
* products: ``POST/GET /v1/products``, ``GET/POST/DELETE /v1/products/{id}``
* prices: ``POST/GET /v1/prices`` (``lookup_keys[]``, ``active``, ``product``, ``type``, ``recurring[...]``),
  ``GET/POST /v1/prices/{id}``; a lookup key is unique among active prices, ``transfer_lookup_key`` moves it
* meters: ``POST/GET /v1/billing/meters``, ``GET/POST /v1/billing/meters/{id}``, ``.../deactivate``,
  ``.../reactivate``, ``GET .../event_summaries?customer=&start_time=&end_time=[&value_grouping_window=]``
* meter events: ``POST /v1/billing/meter_events``, ``POST /v2/billing/meter_events``, ``POST
  /v2/billing/meter_event_session`` and ``POST /v2/billing/meter_event_stream`` (with the session's token). An
  ``identifier`` seen in the last 24 h is refused with 400 ``invalid_request_error`` "An event already exists
  with identifier X." (what Stripe answers; retrying with the same ``Idempotency-Key`` replays the first
  answer instead). ``timestamp`` must be within the past 35 days and at most 5 minutes ahead (of real time or
  of the customer's test clock), else 400. An event name without an active meter, or a payload without the
  meter's customer or value key, is 400 (Stripe reports some of these later, asynchronously); an unknown
  customer is accepted and counts for nobody.
* Checkout: ``POST/GET /v1/checkout/sessions`` (mode ``subscription``, hosted), ``GET .../{id}``, ``GET
  .../{id}/line_items``, ``POST .../{id}/expire``; the session's ``url`` is the hosted page
  ``/stripe/checkout/{id}`` on the host the API was called on (see ``pages.py``)
* portal: ``POST /v1/billing_portal/sessions`` -> ``/stripe/portal/{id}`` (see ``pages.py``)
* subscriptions: ``GET /v1/subscriptions`` (``customer``, ``price``, ``status`` incl. ``all``/``ended``),
  ``GET/POST/DELETE /v1/subscriptions/{id}`` (update: ``items[]`` with
  ``id``/``price``/``quantity``/``deleted``, ``cancel_at_period_end``, ``cancel_at``, ``metadata``...;
  ``proration_behavior`` accepted, no prorations), ``GET /v1/subscription_items?subscription=``. Subscriptions
  are created by Checkout only.
* invoices: ``GET /v1/invoices`` (``customer``, ``subscription``, ``status``), ``GET /v1/invoices/{id}``,
  ``GET .../lines``, ``POST .../pay``, ``.../void``, ``.../mark_uncollectible``
* test clocks: ``POST/GET /v1/test_helpers/test_clocks``, ``GET/DELETE .../{id}``, ``POST .../{id}/advance``
  (answers ``advancing``; the work runs just after, then ``ready``); at most 3 customers per clock and two
  intervals of the shortest subscription interval per advance, as on Stripe
* events: ``GET /v1/events`` (``type`` with ``*`` wildcards, ``types[]``), ``GET /v1/events/{id}``
* webhook endpoints: ``POST/GET /v1/webhook_endpoints``, ``GET/POST/DELETE .../{id}``; ``secret`` only in the
  creation answer. Delivery and signing: ``webhooks.py``.

What happens on its own (periods, invoices, payments, retries, rounding): ``billing.py``.

Controls: ``POST /stripe/_control/reset``, ``GET /stripe/_control/state`` (counts), ``GET
/stripe/_control/deliveries``, ``GET|POST /stripe/_control/webhooks`` (mode), ``POST
/stripe/_control/webhooks/flush``, ``POST /stripe/_control/advance`` (``{"customer", "seconds"}`` for
customers without a test clock).
"""

from __future__ import annotations

import json
from typing import Any, Final

from litestar import Request, Response, Router, route
from litestar.exceptions import HTTPException

from . import billing_api, catalog, controls, events, metering, pages
from .api import api_route
from .errors import StripeError, unrecognized_url


def _error(error: StripeError) -> Response[bytes]:
    return Response(
        content=json.dumps(error.body()).encode(), status_code=error.status, media_type="application/json"
    )


def _on_http_exception(request: Request[Any, Any, Any], exc: HTTPException) -> Response[bytes]:
    if exc.status_code == 404:
        return _error(unrecognized_url(request.method, request.scope["path"].removeprefix("/stripe")))
    return _error(StripeError(exc.status_code, str(exc.detail or "Invalid request")))


def _on_exception(_: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
    return _error(StripeError(500, f"sandbox internal error: {type(exc).__name__}: {exc}", kind="api_error"))


@route("/{path:path}", http_method=["GET", "POST", "DELETE", "PUT", "PATCH"], include_in_schema=False)
async def unknown(request: Request[Any, Any, Any], path: str) -> Response[bytes]:
    return _error(unrecognized_url(request.method, path))


router: Final = Router(
    path="/stripe",
    route_handlers=[api_route, *pages.HANDLERS, *controls.HANDLERS, unknown],
    exception_handlers={HTTPException: _on_http_exception, Exception: _on_exception},
)

# The API handler modules register their routes on import.
_HANDLER_MODULES: Final = (catalog, metering, billing_api, events)

__all__ = ["router"]
