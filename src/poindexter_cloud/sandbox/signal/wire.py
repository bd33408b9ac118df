"""How signal-cli-rest-api answers: gin's JSON (``{"error": "..."}`` on failures, 400 nearly always), empty
201/204 bodies, and the error texts signal-cli prints (they end with a newline, as the REST API passes
signal-cli's output through)."""

from __future__ import annotations

import base64
import binascii
import json
import re
import string
from typing import Any, Final

from litestar import Request, Response

JSON: Final = "application/json; charset=utf-8"
PHONE: Final = re.compile(r"^\+[1-9]\d{6,14}$")
INVALID_ACCOUNT: Final = "Invalid account (phone number), make sure you include the country code.\n"
INVALID_REQUEST: Final = "Couldn't process request - invalid request"
_BASE64_ALPHABET: Final = frozenset(string.ascii_letters + string.digits + "+/=")


def answer(body: Any, status: int = 200) -> Response[bytes]:
    return Response(content=json.dumps(body).encode(), status_code=status, media_type=JSON)


def error(message: str, status: int = 400) -> Response[bytes]:
    return answer({"error": message}, status)


def empty(status: int) -> Response[bytes]:
    return Response(content=b"", status_code=status, media_type=None)


def page_not_found() -> Response[bytes]:
    """gin's answer to a path (or method) it has no route for."""
    return Response(content=b"404 page not found", status_code=404, media_type="text/plain")


def not_registered(number: str) -> str:
    """signal-cli's error for a command on an account it does not hold registered."""
    return f"User {number} is not registered.\n"


def recipient_not_registered(identifier: str) -> str:
    """signal-cli's error for a recipient (or group member) without a Signal account."""
    return f"The user {identifier} is not registered.\n"


def decode_base64(text: str) -> bytes:
    """Go's ``base64.StdEncoding.DecodeString``: padded standard base64 (CR/LF ignored), else ``ValueError``
    with Go's message, which names the offset of the first bad byte or of the incomplete last quantum."""
    data = text.replace("\r", "").replace("\n", "")
    bad = next((i for i, char in enumerate(data) if char not in _BASE64_ALPHABET), None)
    if bad is None and len(data) % 4:
        bad = len(data) - len(data) % 4
    if bad is None:
        try:
            return base64.b64decode(data, validate=True)
        except binascii.Error:
            bad = max(data.find("="), 0)
    raise ValueError(f"illegal base64 data at input byte {bad}")


class Refused(Exception):
    """A request signal-cli (or signal-cli-rest-api) refuses; the message is the ``error`` it answers."""


class BadBody(Exception):
    """The body is not the JSON object the endpoint wants."""


async def optional_body(request: Request[Any, Any, Any]) -> dict[str, Any]:
    """An optional JSON body: empty means ``{}``; anything but an object raises ``BadBody``."""
    raw = await request.body()
    if not raw.strip():
        return {}
    return _object(raw)


async def required_body(request: Request[Any, Any, Any]) -> dict[str, Any]:
    return _object(await request.body())


def _object(raw: bytes) -> dict[str, Any]:
    try:
        data = json.loads(raw)
    except ValueError:
        raise BadBody from None
    if not isinstance(data, dict):
        raise BadBody
    return data


def text_field(body: dict[str, Any], name: str) -> str:
    """A string field (absent or null is ``""``); another type raises ``BadBody``, as Go's decoding fails."""
    value = body.get(name)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise BadBody
    return value


def bool_field(body: dict[str, Any], name: str) -> bool:
    value = body.get(name)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise BadBody
    return value


def strings_field(body: dict[str, Any], name: str) -> list[str]:
    value = body.get(name)
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise BadBody
    return list(value)
