"""Google's error answers: the JSON error body of the APIs, and the OAuth token endpoint's."""

from __future__ import annotations

import json
from typing import Any, Final

from litestar import Response

JSON: Final = "application/json; charset=UTF-8"

# The canonical status names Google puts in ``error.status`` (google.rpc.Code), by HTTP status.
STATUS_NAMES: Final = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "ALREADY_EXISTS",
    412: "FAILED_PRECONDITION",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    501: "UNIMPLEMENTED",
    502: "UNAVAILABLE",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}
_DEFAULT_REASONS: Final = {
    400: "badRequest",
    401: "authError",
    403: "forbidden",
    404: "notFound",
    409: "duplicate",
    410: "deleted",
    429: "rateLimitExceeded",
    500: "backendError",
    503: "backendError",
}
DEFAULT_MESSAGES: Final = {
    400: "Bad Request",
    403: "The caller does not have permission",
    404: "Not Found",
    409: "Entity already exists.",
    429: "Rate Limit Exceeded",
    500: "Internal error encountered.",
    503: "The service is currently unavailable.",
}
_CREDENTIAL_HINT: Final = (
    "Expected OAuth 2 access token, login cookie or other valid authentication credential. See "
    "https://developers.google.com/identity/sign-in/web/devconsole-project."
)


def answer(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response[bytes]:
    return Response(
        content=json.dumps(body, ensure_ascii=False).encode(),
        status_code=status,
        media_type=JSON,
        headers=headers,
    )


class GoogleError(Exception):
    """``{"error": {"code", "message", "errors": [{"message", "domain", "reason", ...}], "status"}}``.

    ``status`` True names the google.rpc code of ``code``; False leaves ``status`` out, as the Calendar API's
    own errors do (its documented bodies have none). ``item_message`` is the ``errors[0].message`` where
    Google words it differently from the top-level message ("Invalid Credentials", "Login Required.").
    """

    def __init__(
        self,
        code: int,
        message: str | None = None,
        *,
        reason: str | None = None,
        domain: str = "global",
        status: str | bool = True,
        item_message: str | None = None,
        location: str | None = None,
        location_type: str | None = None,
        details: list[dict[str, Any]] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.code = code
        self.message = message or DEFAULT_MESSAGES.get(code, "Error")
        super().__init__(self.message)
        self.reason = reason or _DEFAULT_REASONS.get(code, "backendError" if code >= 500 else "invalid")
        self.domain = domain
        self.status = STATUS_NAMES.get(code) if status is True else status or None
        self.item_message = item_message or self.message
        self.location = location
        self.location_type = location_type
        self.details = details
        self.headers = headers

    def body(self) -> dict[str, Any]:
        item: dict[str, Any] = {"message": self.item_message, "domain": self.domain, "reason": self.reason}
        if self.location is not None:
            item["location"] = self.location
            item["locationType"] = self.location_type or "parameter"
        error: dict[str, Any] = {"code": self.code, "message": self.message, "errors": [item]}
        if self.status is not None:
            error["status"] = self.status
        if self.details:
            error["details"] = self.details
        return {"error": error}

    def response(self) -> Response[bytes]:
        return answer(self.body(), self.code, self.headers)


def unauthenticated(*, missing: bool) -> GoogleError:
    """401: no bearer token at all ("Login Required.") or one the sandbox did not issue or that expired."""
    return GoogleError(
        401,
        (
            "Request is missing required authentication credential. "
            if missing
            else "Request had invalid authentication credentials. "
        )
        + _CREDENTIAL_HINT,
        reason="required" if missing else "authError",
        item_message="Login Required." if missing else "Invalid Credentials",
        location="Authorization",
        location_type="header",
        headers={"WWW-Authenticate": 'Bearer realm="https://accounts.google.com/", error="invalid_token"'},
    )


def insufficient_scopes(service: str, method: str) -> GoogleError:
    return GoogleError(
        403,
        "Request had insufficient authentication scopes.",
        reason="insufficientPermissions",
        item_message="Insufficient Permission",
        details=[
            {
                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                "reason": "ACCESS_TOKEN_SCOPE_INSUFFICIENT",
                "domain": "googleapis.com",
                "metadata": {"service": service, "method": method},
            }
        ],
        headers={
            "WWW-Authenticate": 'Bearer realm="https://accounts.google.com/", error="insufficient_scope"'
        },
    )


def not_authorized() -> GoogleError:
    """The Admin SDK's answer to a caller who is not an administrator (or to a domain it does not own)."""
    return GoogleError(403, "Not Authorized to access this resource/api", reason="forbidden")


def invalid(message: str, *, reason: str = "invalid") -> GoogleError:
    return GoogleError(400, message, reason=reason)


def bad_request() -> GoogleError:
    return GoogleError(400, "Bad Request", reason="badRequest")


class OAuthError(Exception):
    """The token endpoint's ``{"error": "invalid_grant", "error_description": ...}``."""

    def __init__(self, error: str, description: str, status: int = 400) -> None:
        super().__init__(description)
        self.error = error
        self.description = description
        self.status = status

    def response(self) -> Response[bytes]:
        return answer({"error": self.error, "error_description": self.description}, self.status)
