"""The REST API's machinery: one Litestar route takes every request under ``/telnyx/v2`` and dispatches it on
this module's table (filled by ``numbers_api`` and ``messaging_api``), so every request gets Telnyx's
treatment: ``Authorization: Bearer KEY...``, JSON bodies, ``filter[...]``/``page[...]`` query parameters, an
``x-request-id`` on every answer, Telnyx's error body for every failure (unknown URLs included),
``Idempotency-Key`` where the endpoint takes one (``idempotency.py``), and the injected faults
(``faults.py``)."""

from __future__ import annotations

import asyncio
import json
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final, TypeVar
from urllib.parse import parse_qsl

from litestar import Request, Response, route

from .errors import TelnyxError, authentication_failed, invalid, invalid_json, missing, not_e164, not_found
from .faults import FAULTS
from .idempotency import KEYS
from .store import new_uuid
from .webhooks import DISPATCHER

JSON: Final = "application/json"
E164: Final = re.compile(r"^\+[1-9]\d{6,14}$")
URL: Final = re.compile(r"^https?://[^\s/$.?#][^\s]*$", re.IGNORECASE)
DEFAULT_PAGE_SIZE: Final = 20
MAX_PAGE_SIZE: Final = 250


@dataclass(slots=True)
class Call:
    method: str
    path: str
    query: dict[str, Any]
    body: dict[str, Any]

    def text(self, name: str, *, required: bool = False) -> str | None:
        value = self.body.get(name)
        if value is None or value == "":
            if required:
                raise missing(name)
            return None if value is None else ""
        if not isinstance(value, str):
            raise invalid(name, f"The '{name}' parameter must be a string.")
        return value

    def url(self, name: str) -> str | None:
        value = self.text(name)
        if value and (len(value) > 2000 or not URL.match(value)):
            raise TelnyxError(
                422,
                "10003",
                "Invalid URL",
                "The URL provided was invalid, malformed, or too long. URLs can be a maximum of 2000 "
                "characters.",
                f"/{name}",
            )
        return value or None

    def strings(self, name: str, *, required: bool = False) -> list[str] | None:
        value = self.body.get(name)
        if value is None:
            if required:
                raise missing(name)
            return None
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            raise invalid(name, f"The '{name}' parameter must be an array of strings.")
        return list(value)

    def flag(self, name: str) -> bool | None:
        value = self.body.get(name)
        if value is None:
            return None
        if not isinstance(value, bool):
            raise invalid(name, f"The '{name}' parameter must be a boolean.")
        return value

    def filters(self) -> dict[str, Any]:
        value = self.query.get("filter", {})
        return value if isinstance(value, dict) else {}


def e164(value: Any, param: str) -> str:
    """``value`` (a request's phone number, of whatever JSON type) as an E.164 string, else Telnyx's error."""
    if value is None or value == "":
        raise missing(param)
    if not isinstance(value, str) or not E164.match(value):
        raise not_e164(param)
    return value


Handler = Callable[[Call, re.Match[str]], dict[str, Any]]


@dataclass(slots=True, frozen=True)
class Endpoint:
    method: str
    pattern: re.Pattern[str]
    handler: Handler
    idempotent: bool  # takes an Idempotency-Key header


_ENDPOINTS: list[Endpoint] = []


def api(method: str, pattern: str, *, idempotent: bool = False) -> Callable[[Handler], Handler]:
    """Register ``handler`` for ``method`` on ``pattern`` (``{id}`` is one path segment). A more specific
    pattern must be registered before one whose ``{id}`` would also match it."""
    compiled = re.compile("^" + pattern.replace("{id}", "([^/]+)") + "$")

    def register(handler: Handler) -> Handler:
        _ENDPOINTS.append(Endpoint(method, compiled, handler, idempotent))
        return handler

    return register


T = TypeVar("T")


def page(call: Call, items: Sequence[T], render: Callable[[T], dict[str, Any]]) -> dict[str, Any]:
    """A list answer: ``page[number]``/``page[size]`` over ``items``, with Telnyx's ``meta``."""
    params = call.query.get("page", {})
    params = params if isinstance(params, dict) else {}
    try:
        number = int(params.get("number") or 1)
        size = int(params.get("size") or DEFAULT_PAGE_SIZE)
    except (TypeError, ValueError):
        raise invalid("page", "page[number] and page[size] must be integers.") from None
    if number < 1 or not 1 <= size <= MAX_PAGE_SIZE:
        raise invalid("page", f"page[number] must be >= 1 and page[size] between 1 and {MAX_PAGE_SIZE}.")
    chunk = items[(number - 1) * size : number * size]
    return {
        "data": [render(item) for item in chunk],
        "meta": {
            "page_number": number,
            "page_size": size,
            "total_pages": max(1, math.ceil(len(items) / size)),
            "total_results": len(items),
        },
    }


def parse_query(raw: bytes) -> dict[str, Any]:
    """``filter[phone_number][starts_with]=555&filter[features][]=sms&page[size]=5`` as nested dicts; a
    key given twice, or ending in ``[]``, becomes a list."""
    tree: dict[str, Any] = {}
    for key, value in parse_qsl(raw.decode("latin-1"), keep_blank_values=True):
        parts = re.findall(r"[^\[\]]+|\[\]", key)
        names = [part for part in parts if part != "[]"]
        if not names:
            continue
        node = tree
        for name in names[:-1]:
            child = node.get(name)
            if not isinstance(child, dict):
                child = node[name] = {}
            node = child
        last, existing = names[-1], node.get(names[-1])
        if parts[-1] == "[]":
            node[last] = [*existing, value] if isinstance(existing, list) else [value]
        elif last in node:
            node[last] = [*existing, value] if isinstance(existing, list) else [existing, value]
        else:
            node[last] = value
    return tree


def _authenticate(request: Request[Any, Any, Any]) -> None:
    scheme, _, key = (request.headers.get("authorization") or "").partition(" ")
    key = key.strip()
    if scheme.lower() != "bearer" or not key.startswith("KEY") or len(key) <= len("KEY"):
        raise authentication_failed()


def _find(method: str, path: str) -> tuple[Endpoint, re.Match[str]]:
    path = path.rstrip("/") or path
    for endpoint in _ENDPOINTS:
        if endpoint.method == method:
            match = endpoint.pattern.match(path)
            if match is not None:
                return endpoint, match
    raise not_found()


def _json_object(raw: bytes) -> dict[str, Any]:
    if not raw.strip():
        return {}
    try:
        decoded = json.loads(raw)
    except ValueError:
        raise invalid_json() from None
    if not isinstance(decoded, dict):
        raise invalid_json()
    return decoded


def answer(status: int, body: Any, request_id: str) -> Response[bytes]:
    return Response(
        content=json.dumps(body).encode(),
        status_code=status,
        media_type=JSON,
        headers={"x-request-id": request_id},
    )


async def _run(endpoint: Endpoint, call: Call, match: re.Match[str], delay: float) -> dict[str, Any]:
    if delay:
        await asyncio.sleep(delay)
    return endpoint.handler(call, match)


async def _serve(request: Request[Any, Any, Any], method: str, path: str, delay: float) -> dict[str, Any]:
    _authenticate(request)
    raw = await request.body() if method in ("POST", "PATCH", "PUT") else b""
    body = _json_object(raw)
    endpoint, match = _find(method, path)
    query_string: bytes = request.scope.get("query_string", b"")
    call = Call(method, path, parse_query(query_string), body)
    key = request.headers.get("idempotency-key") if endpoint.idempotent else None
    if key is None:
        return await _run(endpoint, call, match, delay)
    record = KEYS.claim(key, method, path, (query_string, raw))
    if record.body is None:
        try:
            record.body = await _run(endpoint, call, match, delay)
        except BaseException:
            KEYS.release(key, method, path, record)
            raise
    answered: dict[str, Any] = record.body
    return answered


async def handle(request: Request[Any, Any, Any]) -> Response[bytes]:
    request_id = new_uuid()
    method = request.method.upper()
    path = request.scope["path"].removeprefix("/telnyx")
    DISPATCHER.bind(asyncio.get_running_loop())
    fault = FAULTS.take(method, path)
    try:
        if fault is not None and fault.status is not None:
            raise fault.error()
        return answer(
            200, await _serve(request, method, path, fault.delay_seconds if fault else 0.0), request_id
        )
    except TelnyxError as error:
        return answer(error.status, error.body(), request_id)


@route("/v2/{rest:path}", http_method=["GET", "POST", "PATCH", "PUT", "DELETE"], include_in_schema=False)
async def api_route(request: Request[Any, Any, Any], rest: str) -> Response[bytes]:
    return await handle(request)
