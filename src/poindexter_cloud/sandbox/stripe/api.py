"""The REST API's machinery: one Litestar route takes every request under ``/stripe/v1`` and ``/stripe/v2``
and dispatches it on this module's table (filled by ``catalog``, ``metering``, ``billing_api`` and
``events``), so every request gets Stripe's treatment: ``Authorization: Bearer sk_test_...`` (or HTTP basic
with the key as user name), a ``Stripe-Version`` check, form decoding, unknown parameters refused,
``Idempotency-Key`` replays, ``Request-Id`` on every answer, and Stripe's error body for every failure,
including unknown URLs.
"""

from __future__ import annotations

import base64
import json
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Final, TypeVar

from litestar import Request, Response, route

from . import billing, render
from .errors import StripeError, invalid, no_such, unrecognized_url
from .forms import Params, decode_form
from .store import (
    API_VERSION,
    REQUEST,
    STATE,
    Customer,
    Invoice,
    Meter,
    Price,
    Product,
    Replay,
    Subscription,
    TestClock,
    new_id,
)

JSON: Final = "application/json"
_VERSION_RE: Final = re.compile(r"^\d{4}-\d{2}-\d{2}(\.[a-z]+)?$")
SANDBOX_ONLY: Final = "The Stripe sandbox does not support"

state = STATE


@dataclass(slots=True)
class Call:
    method: str
    path: str
    params: Params
    version: str
    base_url: str
    v2: bool
    token: str

    def view(self, record: object) -> dict[str, Any]:
        return render.any_record(state, record, self.version)

    def out(self, obj: dict[str, Any], include: render.Includer | None = None) -> dict[str, Any]:
        """A read's answer: refuse unknown parameters, then apply ``expand[]``."""
        paths = self.params.expand()
        self.params.finish()
        return render.expand(state, obj, paths, include, self.version)


Handler = Callable[[Call, re.Match[str]], Any]
_ROUTES: list[tuple[str, re.Pattern[str], Handler]] = []


def api(method: str, pattern: str) -> Callable[[Handler], Handler]:
    compiled = re.compile("^" + pattern.replace("{id}", "([^/]+)") + "$")

    def register(handler: Handler) -> Handler:
        _ROUTES.append((method, compiled, handler))
        return handler

    return register


T = TypeVar("T")


def newest(values: Iterable[T]) -> list[T]:
    return list(reversed(list(values)))


# ---------------------------------------------------------------------------------------------- lookups


def get_customer(customer_id: str, param: str = "id", status: int = 404) -> Customer:
    found = state.customer(customer_id)
    if found is None:
        raise no_such("customer", customer_id, param, status)
    return found


def get_price(price_id: str, param: str = "id", status: int = 404) -> Price:
    found = state.prices.get(price_id)
    if found is None:
        raise no_such("price", price_id, param, status)
    return found


def get_product(product_id: str, param: str = "id", status: int = 404) -> Product:
    found = state.products.get(product_id)
    if found is None or found.deleted:
        raise no_such("product", product_id, param, status)
    return found


def get_meter(meter_id: str, param: str = "id", status: int = 404) -> Meter:
    found = state.meters.get(meter_id)
    if found is None:
        raise no_such("billing.meter", meter_id, param, status)
    return found


def get_subscription(sub_id: str) -> Subscription:
    found = state.subscriptions.get(sub_id)
    if found is None:
        raise no_such("subscription", sub_id)
    return found


def get_invoice(invoice_id: str) -> Invoice:
    found = state.invoices.get(invoice_id)
    if found is None:
        raise no_such("invoice", invoice_id)
    return found


def get_clock(clock_id: str, param: str = "id", status: int = 404) -> TestClock:
    found = state.test_clocks.get(clock_id)
    if found is None or found.deleted:
        raise no_such("test_helpers.test_clock", clock_id, param, status)
    return found


def check_email(email: str | None, param: str = "email") -> None:
    if email and ("@" not in email or email.startswith("@") or email.endswith("@")):
        raise invalid(param, f"Invalid email address: {email}", "email_invalid")


def created_filter(p: Params) -> Callable[[int], bool]:
    """``created`` (or another timestamp) as an exact value or ``[gt|gte|lt|lte]`` bounds."""
    value = p.raw("created")
    if value is None or value == "":
        return lambda _: True
    if isinstance(value, str):
        exact = p.integer("created")
        return lambda created: created == exact
    bounds = p.obj("created")
    assert bounds is not None
    gt, gte, lt, lte = (bounds.integer(k) for k in ("gt", "gte", "lt", "lte"))
    bounds.finish()
    return lambda c: (
        (gt is None or c > gt)
        and (gte is None or c >= gte)
        and (lt is None or c < lt)
        and (lte is None or c <= lte)
    )


# ---------------------------------------------------------------------------------------------- dispatch


def public_base(request: Request[Any, Any, Any]) -> str:
    """The sandbox as the caller reached it (Host, or X-Forwarded-Host/-Proto behind a proxy)."""
    headers = request.headers
    host = headers.get("x-forwarded-host") or headers.get("host") or "127.0.0.1"
    scheme = headers.get("x-forwarded-proto") or request.url.scheme or "http"
    return f"{scheme}://{host.split(',')[0].strip()}"


def _api_key(request: Request[Any, Any, Any]) -> str | None:
    header = request.headers.get("authorization")
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer":
        return value.strip()
    if scheme.lower() == "basic":
        try:
            return base64.b64decode(value.strip()).decode().split(":", 1)[0]
        except (ValueError, UnicodeDecodeError):
            return ""
    return ""


def _authenticate(request: Request[Any, Any, Any], path: str) -> str:
    key = _api_key(request)
    if key is None:
        raise StripeError(
            401,
            "You did not provide an API key. You need to provide your API key in the Authorization header, "
            "using Bearer auth (e.g. 'Authorization: Bearer YOUR_SECRET_KEY'). See "
            "https://stripe.com/docs/api#authentication for details, or we can help at "
            "https://support.stripe.com/.",
        )
    if path == "/v2/billing/meter_event_stream" and key in state.meter_event_sessions:
        return key
    if not key.startswith("sk_test_") or len(key) <= len("sk_test_"):
        shown = f"{key[:8]}{'*' * max(0, len(key) - 12)}{key[-4:]}" if len(key) > 12 else "*" * len(key)
        raise StripeError(401, f"Invalid API Key provided: {shown}", code="api_key_invalid")
    return key


def _json(status: int, body: Any, headers: dict[str, str]) -> Response[bytes]:
    return Response(content=json.dumps(body).encode(), status_code=status, media_type=JSON, headers=headers)


async def handle(request: Request[Any, Any, Any]) -> Response[bytes]:
    request_id = new_id("req_", 14)
    method = request.method.upper()
    path = request.scope["path"].removeprefix("/stripe")
    headers = {"Request-Id": request_id}
    raw = await request.body() if method == "POST" else b""
    idempotency_key = request.headers.get("idempotency-key") if method in ("POST", "DELETE") else None
    try:
        token = _authenticate(request, path)
        version = request.headers.get("stripe-version") or API_VERSION
        if not _VERSION_RE.match(version):
            raise StripeError(400, f"Invalid Stripe API version: {version}", param="Stripe-Version")
        headers["Stripe-Version"] = version
        billing.tick(state)
        if idempotency_key:
            headers["Idempotency-Key"] = idempotency_key
            fingerprint = (method, path, raw)
            saved = state.replay(idempotency_key)
            if saved is not None:
                if saved.fingerprint != fingerprint:
                    raise StripeError(
                        400,
                        "Keys for idempotent requests can only be used with the same parameters they were "
                        f"first used with. Try using a key other than '{idempotency_key}' if you meant to "
                        "execute a different request.",
                        kind="idempotency_error",
                    )
                headers["Idempotent-Replayed"] = "true"
                return Response(
                    content=saved.body, status_code=saved.status, media_type=JSON, headers=headers
                )
        v2 = path.startswith("/v2/")
        if method == "POST":
            if v2:
                try:
                    data = json.loads(raw or b"{}")
                except ValueError:
                    raise StripeError(400, "Invalid JSON body.") from None
                if not isinstance(data, dict):
                    raise StripeError(400, "The request body must be a JSON object.")
            else:
                data = decode_form(raw)
        else:
            data = decode_form(request.scope.get("query_string", b""))
        call = Call(method, path, Params(data), version, public_base(request), v2, token)
        handler, match = _find(method, path)
        token_ctx = REQUEST.set((request_id, idempotency_key))
        try:
            body = handler(call, match)
        finally:
            REQUEST.reset(token_ctx)
        status = 200
    except StripeError as error:
        status, body = error.status, error.body()
        if error.should_retry is not None or 400 <= status < 500:
            headers["Stripe-Should-Retry"] = "true" if error.should_retry else "false"
    response = _json(status, body, headers)
    if idempotency_key and method == "POST" and (status < 400 or status == 402):
        replay = Replay((method, path, raw), status, bytes(response.content or b""), time.time())
        state.save_replay(idempotency_key, replay)
    return response


def _find(method: str, path: str) -> tuple[Handler, re.Match[str]]:
    path = path.rstrip("/") or path
    for verb, pattern, handler in _ROUTES:
        if verb == method:
            match = pattern.match(path)
            if match is not None:
                return handler, match
    raise unrecognized_url(method, path)


@route(
    ["/v1/{rest:path}", "/v2/{rest:path}"],
    http_method=["GET", "POST", "DELETE", "PUT", "PATCH"],
    include_in_schema=False,
)
async def api_route(request: Request[Any, Any, Any], rest: str) -> Response[bytes]:
    return await handle(request)
