"""Stripe's error body, ``{"error": {"type", "code", "message", "param", ...}}``, and the common errors."""

from __future__ import annotations

from typing import Any, Final

DOCS: Final = "https://stripe.com/docs/error-codes/"


class StripeError(Exception):
    """An error answer. ``code``, ``param`` and ``decline_code`` are left out of the body when None, as Stripe
    does; ``doc_url`` is added for errors with a code."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        kind: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
        decline_code: str | None = None,
        should_retry: bool | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.kind = kind
        self.code = code
        self.param = param
        self.decline_code = decline_code
        self.should_retry = should_retry

    def body(self) -> dict[str, Any]:
        error: dict[str, Any] = {"type": self.kind, "message": self.message}
        if self.code is not None:
            error["code"] = self.code
            error["doc_url"] = DOCS + self.code.replace("_", "-")
        if self.param is not None:
            error["param"] = self.param
        if self.decline_code is not None:
            error["decline_code"] = self.decline_code
        return {"error": error}


def missing(param: str) -> StripeError:
    return StripeError(400, f"Missing required param: {param}.", code="parameter_missing", param=param)


def unknown(param: str) -> StripeError:
    return StripeError(
        400,
        f"Received unknown parameter: {param}",
        code="parameter_unknown",
        param=param,
    )


def invalid(param: str, message: str, code: str = "parameter_invalid") -> StripeError:
    return StripeError(400, message, code=code, param=param)


def no_such(resource: str, object_id: str, param: str = "id", status: int = 404) -> StripeError:
    """``No such customer: 'cus_x'`` (404 for the path's object, 400 for a referenced one)."""
    return StripeError(status, f"No such {resource}: '{object_id}'", code="resource_missing", param=param)


def unrecognized_url(method: str, path: str) -> StripeError:
    return StripeError(
        404,
        f"Unrecognized request URL ({method}: {path}). Please see https://stripe.com/docs or we can help at "
        "https://support.stripe.com/.",
    )
