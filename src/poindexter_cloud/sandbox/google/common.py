"""Helpers the API modules share: JSON bodies, query parameters, page tokens."""

from __future__ import annotations

import base64
import json
from typing import Any

from litestar import Request

from .errors import GoogleError, invalid


async def json_body(request: Request[Any, Any, Any], *, required: bool = True) -> dict[str, Any]:
    return json_object(await request.body(), required=required)


def json_object(raw: bytes, *, required: bool = True) -> dict[str, Any]:
    """A request's JSON object (a body, or an upload's metadata part), refused as Google refuses it."""
    if not raw.strip():
        if required:
            raise invalid("Invalid JSON payload received. The request body is empty.", reason="parseError")
        return {}
    try:
        body = json.loads(raw)
    except ValueError:
        raise GoogleError(
            400, "Invalid JSON payload received. Unexpected token.", reason="parseError"
        ) from None
    if not isinstance(body, dict):
        raise invalid("Invalid JSON payload received. Expected an object.", reason="parseError")
    return body


def query(request: Request[Any, Any, Any], name: str) -> str | None:
    value = request.query_params.get(name)
    return str(value) if value is not None else None


def query_all(request: Request[Any, Any, Any], name: str) -> list[str]:
    return [str(v) for v in request.query_params.getall(name, [])]


def query_bool(request: Request[Any, Any, Any], name: str, default: bool = False) -> bool:
    value = query(request, name)
    if value is None or value == "":
        return default
    if value.lower() in ("true", "1"):
        return True
    if value.lower() in ("false", "0"):
        return False
    raise GoogleError(
        400, f"Invalid value '{value}' for parameter {name}.", reason="invalidParameter", location=name
    )


def query_int(request: Request[Any, Any, Any], name: str, default: int, low: int, high: int | None) -> int:
    """An integer parameter; out of ``[low, high]`` is Google's 400 (``high`` None: clamp to nothing)."""
    value = query(request, name)
    if value is None or value == "":
        return default
    try:
        number = int(value)
    except ValueError:
        raise GoogleError(
            400,
            f"Invalid value '{value}'. Values must be integers.",
            reason="invalidParameter",
            location=name,
        ) from None
    if number < low or (high is not None and number > high):
        limit = f"[{low}, {high}]" if high is not None else f"[{low}, ...]"
        raise GoogleError(
            400,
            f"Invalid value '{value}'. Values must be within the range: {limit}",
            reason="invalidParameter",
            location=name,
        )
    return number


def page_token(offset: int) -> str:
    return base64.urlsafe_b64encode(f"o:{offset}".encode()).decode().rstrip("=")


def page_offset(token: str | None) -> int:
    """The offset a token from :func:`page_token` stands for; a token it did not write is a 400."""
    if not token:
        return 0
    try:
        text = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
        kind, _, number = text.partition(":")
        if kind == "o" and number.isdigit():
            return int(number)
    except ValueError:
        pass
    raise GoogleError(400, "Invalid page token", reason="invalid", location="pageToken")
