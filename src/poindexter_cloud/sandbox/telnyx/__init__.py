"""A stateful Telnyx simulator, mounted at ``/telnyx``: the numbers and messaging parts of API v2 on Telnyx's
wire format, driven by the official SDK (telnyx 4.x) with its base URL pointed here::

    client = telnyx.AsyncTelnyx(api_key="KEY...", base_url=f"{url}/telnyx/v2")
    event = client.webhooks.unwrap(body, headers=headers, key=sandbox_public_key())  # needs pynacl

State lives in this process's memory until ``POST /telnyx/_control/reset``; every ``KEY...`` API key is the
same account.

Wire behaviour (``api.py``): ``Authorization: Bearer KEY...`` (else 401 ``10009``); JSON bodies;
``filter[...]``/``page[number]``/``page[size]`` query parameters; lists as ``{"data", "meta": {"page_number",
"page_size", "total_pages", "total_results"}}`` (20 a page, at most 250); errors as ``{"errors": [{"code",
"title", "detail", "source": {"pointer"}?, "meta": {"url"}}]}`` with Telnyx's codes (404 ``10005`` for
unknown objects and URLs, 422 ``10004`` missing parameter, ``10015`` bad request, ``10016`` not E.164,
``10017`` unknown associated object, ``10021`` resource in use, 400 ``10023`` invalid JSON, ``40305`` /
``40310`` bad from / to on messages, ``40302`` an SMS of more than 10 parts); ``x-request-id`` on every
answer; ``Idempotency-Key`` on sending.

Endpoints (under ``/telnyx``):

* ``GET /v2/available_phone_numbers``: ``filter[country_code]`` (US only),
  ``filter[national_destination_code]``, ``filter[locality]``, ``filter[administrative_area]``,
  ``filter[rate_center]``, ``filter[features]`` (``sms,mms`` as the SDK sends it, or ``[]``-repeated; every
  one required), ``filter[phone_number][starts_with|ends_with|contains]`` (without the NDC when one is
  given), ``filter[phone_number_type]`` (local), ``filter[limit]`` (default 50, at most 100); answers
  ``{"data", "metadata": {"total_results", "best_effort_results"}}``. The inventory is fixed
  (``inventory.py``): ``+1 <NDC> 555-01xx`` in 212, 312, 415, 512, 617 and 206, minus the account's numbers.
* ``POST /v2/number_orders`` (``phone_numbers: [{phone_number}]``, ``messaging_profile_id``,
  ``connection_id``, ``billing_group_id``, ``customer_reference``): answers ``pending``, then ends
  ``success`` or ``failure`` (``numbers_api.py``); a number not on sale (the account's, or outside the
  inventory) is 422 ``10015``. ``GET /v2/number_orders`` (``filter[status]``,
  ``filter[customer_reference]``), ``GET /v2/number_orders/{id}``.
* ``GET /v2/phone_numbers`` (``filter[phone_number]`` digits only, ``filter[status]``, ``filter[tag]``,
  ``filter[customer_reference]``, ``filter[connection_id]``, ``filter[billing_group_id]``, ``sort``),
  ``GET/PATCH/DELETE /v2/phone_numbers/{id}`` (id or E.164; delete releases the number back to the
  inventory), ``GET/PATCH /v2/phone_numbers/{id}/messaging`` (``messaging_profile_id``; ``""`` unassigns).
* ``POST/GET /v2/messaging_profiles`` (``name`` and ``whitelisted_destinations`` required, as the API
  demands; ``webhook_url``, ``webhook_failover_url``, ``webhook_api_version``, ``enabled``; list filters
  ``filter[name]``, ``filter[name][eq|contains]``), ``GET/PATCH/DELETE /v2/messaging_profiles/{id}``
  (delete refused with 422 ``10021`` while numbers use it), ``GET /v2/messaging_profiles/{id}/phone_numbers``.
  ``whitelisted_destinations`` is stored, not enforced.
* ``POST /v2/messages`` (and ``/long_code``, ``/number_pool``): ``from`` (an active number of the account
  in a messaging profile; or ``messaging_profile_id`` alone, which picks one of its numbers), ``to``
  (E.164, or a list of one), ``text`` (as an SMS, at most 10 parts) and/or ``media_urls``, ``subject``,
  ``webhook_url``, ``webhook_failover_url``, ``use_profile_webhooks``, ``tags``; answers the message
  ``queued`` with parts, encoding and cost. ``GET /v2/messages/{id}`` shows its current state.

The world around it (``network.py``): outbound messages go ``sent`` then ``delivered``, with
``message.sent`` and ``message.finalized`` webhooks; a message to another active number of the account
arrives there as an inbound message (``message.received``). ``deliver_sms`` is how other simulators (and
``POST /telnyx/_control/inbound``) text one of the account's numbers. Webhooks (``webhooks.py``) are
Telnyx's v2 envelope signed with Ed25519 (``signing.py``), retried and failed over as Telnyx does.

Controls (no key needed), under ``/telnyx/_control``: ``POST reset``; ``GET state``; ``POST inbound``
(``{"from", "to", "text", "media_urls"?}``); ``GET public_key``; ``GET deliveries``; ``GET|POST webhooks``
(``mode`` normal|duplicate|hold, ``retry_base_seconds``, ``attempts_per_url``, ``timeout_seconds``) and
``POST webhooks/flush``; ``POST network`` (``carrier_delay_seconds``); ``POST number_orders``
(``outcome`` success|failure, ``seconds``); ``GET|POST|DELETE faults`` (``faults.py``).
"""

from __future__ import annotations

import json
from typing import Any, Final

from litestar import Request, Response, Router, route
from litestar.exceptions import HTTPException

from . import controls, messaging_api, numbers_api
from .api import api_route
from .errors import TelnyxError, not_found
from .network import deliver_sms
from .signing import sandbox_public_key


def _error(error: TelnyxError) -> Response[bytes]:
    return Response(
        content=json.dumps(error.body()).encode(), status_code=error.status, media_type="application/json"
    )


def _on_http_exception(_: Request[Any, Any, Any], exc: HTTPException) -> Response[bytes]:
    if exc.status_code == 404:
        return _error(not_found())
    return _error(TelnyxError(exc.status_code, "10015", "Bad Request", str(exc.detail or "Bad request")))


def _on_exception(_: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
    return _error(
        TelnyxError(500, "10007", "Unexpected error", f"sandbox internal error: {type(exc).__name__}: {exc}")
    )


@route("/{path:path}", http_method=["GET", "POST", "PATCH", "PUT", "DELETE"], include_in_schema=False)
async def unknown(path: str) -> Response[bytes]:
    return _error(not_found())


router: Final = Router(
    path="/telnyx",
    route_handlers=[api_route, *controls.HANDLERS, unknown],
    exception_handlers={HTTPException: _on_http_exception, Exception: _on_exception},
)

# The API handler modules register their routes on import.
_HANDLER_MODULES: Final = (numbers_api, messaging_api)

__all__ = ["deliver_sms", "router", "sandbox_public_key"]
