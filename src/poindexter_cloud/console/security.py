"""The console's armour: security headers on every response, and Litestar's CSRF check on every form.

The CSRF check is Litestar's signed double-submit token (``CSRFMiddleware``): a random value and its HMAC
in an HttpOnly cookie, which every unsafe request must repeat in its ``_csrf_token`` form field (or the
``x-csrftoken`` header). Its secret is derived from ``SECRET_KEY``, so the middleware is configured from the
app's settings on its first request rather than at import.

The Content-Security-Policy allows scripts and styles from our own origin only (no inline script, no
``on*`` attributes, no inline style), no framing (``frame-ancestors 'none'`` and ``X-Frame-Options: DENY``),
and forms that post to us or redirect on to Stripe's hosted Checkout and Customer Portal (browsers apply
``form-action`` to the redirect after a submission too).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from litestar.config.csrf import CSRFConfig
from litestar.exceptions import PermissionDeniedException
from litestar.middleware.csrf import CSRFMiddleware
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from poindexter_cloud.console.auth import CSRF_COOKIE, cookie_name
from poindexter_cloud.console.pages import error_response
from poindexter_cloud.core.crypto import derive_key
from poindexter_cloud.core.settings import Settings

# Where Stripe serves Checkout and the Customer Portal (a Stripe account with a custom domain for them adds
# that domain here).
STRIPE_PAGE_ORIGINS = ("https://checkout.stripe.com", "https://billing.stripe.com")


def origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def stripe_page_origins(settings: Settings) -> tuple[str, ...]:
    """Stripe's hosted pages in production; elsewhere the simulator's, which serves them beside its API."""
    if settings.is_production and not settings.stripe_api_base:
        return STRIPE_PAGE_ORIGINS
    return (origin(settings.stripe_api_base_url),)


def security_headers(settings: Settings) -> dict[str, str]:
    form_targets = " ".join(("'self'", *stripe_page_origins(settings)))
    policy = "; ".join(
        (
            "default-src 'none'",
            "script-src 'self'",
            "style-src 'self'",
            "img-src 'self' data:",
            "connect-src 'self'",
            f"form-action {form_targets}",
            "frame-ancestors 'none'",
            "base-uri 'none'",
        )
    )
    headers = {
        "Content-Security-Policy": policy,
        "X-Frame-Options": "DENY",
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "same-origin",  # a reset link's token never leaves in a Referer
        "Cross-Origin-Opener-Policy": "same-origin",
    }
    if settings.is_production:
        headers["Strict-Transport-Security"] = "max-age=31536000"
    return headers


def csrf_config(settings: Settings) -> CSRFConfig:
    return CSRFConfig(
        secret=derive_key(settings.secret_key, "console-csrf").hex(),
        cookie_name=cookie_name(settings, CSRF_COOKIE),
        cookie_secure=settings.is_production,
        cookie_httponly=True,  # pages carry the token in their forms; no script needs to read it
        cookie_samesite="lax",
    )


class ConsoleMiddleware:
    """Every console route's outermost layer: adds the security headers, then checks CSRF.

    A refused form is answered here, since the refusal happens before the route's own error handling."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._inner: ASGIApp | None = None
        self._headers: list[tuple[bytes, bytes]] = []

    def _configure(self, settings: Settings) -> ASGIApp:
        self._headers = [(k.lower().encode(), v.encode()) for k, v in security_headers(settings).items()]
        self._inner = CSRFMiddleware(self.app, csrf_config(settings))
        return self._inner

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        inner = self._inner or self._configure(scope["litestar_app"].state.settings)
        started = False

        async def secured(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                message["headers"] = [*message.get("headers", []), *self._headers]
            await send(message)

        try:
            await inner(scope, receive, secured)
        except PermissionDeniedException:
            if started:
                raise
            await refused_form(scope, receive, secured)


async def refused_form(scope: Scope, receive: Receive, send: Send) -> None:
    request: Any = scope["litestar_app"].request_class(scope=scope, receive=receive)
    response = error_response(
        request,
        403,
        "This form could not be accepted",
        "It was not sent from a page of this site, or the page is too old. Go back, reload it and try again.",
    )
    await response.to_asgi_response(app=None, request=request)(scope, receive, send)
