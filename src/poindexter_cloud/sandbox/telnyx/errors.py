"""Telnyx's error body, ``{"errors": [{"code", "title", "detail", "source"?, "meta": {"url"}}]}``, and the
errors the simulator answers with (codes and titles from Telnyx's published API and messaging error lists)."""

from __future__ import annotations

from typing import Any, Final

DOCS: Final = "https://developers.telnyx.com/docs/overview/errors/"


class TelnyxError(Exception):
    """An error answer: HTTP ``status`` and one error object."""

    def __init__(self, status: int, code: str, title: str, detail: str, pointer: str | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.title = title
        self.detail = detail
        self.pointer = pointer

    def body(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "title": self.title, "detail": self.detail}
        if self.pointer is not None:
            error["source"] = {"pointer": self.pointer}
        error["meta"] = {"url": DOCS + self.code}
        return {"errors": [error]}


def authentication_failed() -> TelnyxError:
    return TelnyxError(
        401,
        "10009",
        "Authentication failed",
        "The required authentication headers were either invalid or not included in the request.",
    )


def not_found(detail: str = "The requested resource or URL could not be found.") -> TelnyxError:
    return TelnyxError(404, "10005", "Resource not found", detail)


def missing(param: str) -> TelnyxError:
    return TelnyxError(
        422, "10004", "Missing required parameter", f"The '{param}' parameter is required.", f"/{param}"
    )


def invalid(param: str, detail: str) -> TelnyxError:
    return TelnyxError(422, "10015", "Bad Request", detail, f"/{param}")


def invalid_json() -> TelnyxError:
    return TelnyxError(400, "10023", "Invalid JSON", "The supplied JSON body could not be parsed.")


def not_e164(param: str) -> TelnyxError:
    return TelnyxError(
        422,
        "10016",
        "Phone number must be in +E.164 format",
        "The specified phone number parameter must be in +E.164 format.",
        f"/{param}",
    )


def missing_association(param: str, detail: str) -> TelnyxError:
    return TelnyxError(422, "10017", "Associated resource does not exist", detail, f"/{param}")


def invalid_from(detail: str) -> TelnyxError:
    return TelnyxError(400, "40305", "Invalid 'from' address", detail, "/from")


def invalid_to() -> TelnyxError:
    return TelnyxError(
        400, "40310", "Invalid 'to' address", "The 'to' address should be a single valid number.", "/to"
    )


def message_too_large(parts: int, maximum: int) -> TelnyxError:
    return TelnyxError(
        400,
        "40302",
        "Message too large",
        f"The SMS message would be divided into {parts} parts. The maximum is {maximum}.",
    )


def not_available(phone_number: str, pointer: str) -> TelnyxError:
    return TelnyxError(
        422,
        "10015",
        "Bad Request",
        f"The phone number {phone_number} is not available for purchase.",
        pointer,
    )


def resource_in_use() -> TelnyxError:
    return TelnyxError(
        422, "10021", "Resource in use", "The resource can not be removed as it is still in use."
    )


# The error object Telnyx answers with for a bare HTTP status (what an injected fault answers by default).
_STATUS_ERRORS: Final = {
    400: ("10015", "Bad Request", "The request failed because it was not well-formed."),
    401: (
        "10009",
        "Authentication failed",
        "The required authentication headers were either invalid or not included in the request.",
    ),
    403: (
        "10010",
        "Authorization failed",
        "You do not have permission to perform the requested action on the specified resource or resources.",
    ),
    404: ("10005", "Resource not found", "The requested resource or URL could not be found."),
    408: ("10008", "Request timeout", "The request timed out."),
    422: ("10015", "Bad Request", "The request failed because it was not well-formed."),
    429: ("10011", "Too many requests", "You have exceeded the maximum number of allowed requests."),
}
_UNEXPECTED: Final = ("10007", "Unexpected error", "An unexpected error occured.")


def for_status(status: int) -> TelnyxError:
    code, title, detail = _STATUS_ERRORS.get(status, _UNEXPECTED)
    return TelnyxError(status, code, title, detail)
