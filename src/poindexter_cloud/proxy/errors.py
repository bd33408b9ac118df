"""Errors of the proxy, rendered in the error format of the API family the client called.

The Anthropic and OpenAI SDKs raise their usual exception types only if the body and status look like
their provider's: Anthropic ``{"type": "error", "error": {"type", "message"}}``, OpenAI
``{"error": {"message", "type", "param", "code"}}``.
"""

from __future__ import annotations

from typing import Literal

import msgspec

Family = Literal["anthropic", "openai"]

# Our status -> (Anthropic error type, OpenAI error type)
_TYPES: dict[int, tuple[str, str]] = {
    400: ("invalid_request_error", "invalid_request_error"),
    401: ("authentication_error", "invalid_request_error"),
    402: ("billing_error", "insufficient_quota"),
    403: ("permission_error", "invalid_request_error"),
    404: ("not_found_error", "invalid_request_error"),
    413: ("request_too_large", "invalid_request_error"),
    429: ("rate_limit_error", "rate_limit_exceeded"),
    500: ("api_error", "server_error"),
    502: ("api_error", "server_error"),
    503: ("overloaded_error", "server_error"),
    504: ("api_error", "server_error"),
    529: ("overloaded_error", "server_error"),
}


class ProxyError(Exception):
    """A failure answered to the client; ``code`` is ours and stable, ``param`` names a bad field."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        param: str | None = None,
        headers: list[tuple[bytes, bytes]] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.param = status, code, message, param
        self.headers = headers or []

    def body(self, family: Family, request_id: str) -> bytes:
        anthropic_type, openai_type = _TYPES.get(self.status, ("api_error", "server_error"))
        if family == "anthropic":
            return msgspec.json.encode(
                {
                    "type": "error",
                    "error": {"type": anthropic_type, "message": self.message},
                    "request_id": request_id,
                }
            )
        return msgspec.json.encode(
            {"error": {"message": self.message, "type": openai_type, "param": self.param, "code": self.code}}
        )


def bad_request(message: str, param: str | None = None, code: str = "invalid_request") -> ProxyError:
    return ProxyError(400, code, message, param=param)
