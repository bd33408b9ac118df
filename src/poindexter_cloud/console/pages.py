"""Rendering console pages: Litestar's Jinja engine over console/templates, the request's ``Page`` (who is
signed in and the cookies the response must carry), and the HTML error pages of the console's routes."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any
from urllib.parse import quote

from jinja2 import Environment, FileSystemLoader, StrictUndefined
from litestar import MediaType, Request, Response
from litestar.datastructures import Cookie
from litestar.exceptions import HTTPException, ValidationException
from litestar.plugins.jinja import JinjaTemplateEngine
from litestar.response import Redirect

from poindexter_cloud.accounts.service import TokenPair
from poindexter_cloud.console.auth import SignIn, Visitor, dropped_csrf_cookie, ended_cookies, session_cookies
from poindexter_cloud.console.errors import NotSignedIn
from poindexter_cloud.core.errors import AppError
from poindexter_cloud.core.logs import request_id_var
from poindexter_cloud.core.settings import Settings

log = logging.getLogger(__name__)

TEMPLATES = Path(__file__).parent / "templates"
STATIC = Path(__file__).parent / "static"
NO_STORE = {"Cache-Control": "no-store"}  # pages show secrets (a new key) and personal data

# Messages a redirect may ask the next page to show (?notice=...): fixed texts, never reflected input.
NOTICES = {
    "signed_out": "You are logged out.",
    "password_reset": "Your password was changed and every session logged out. Log in with the new one.",
    "plan_active": "Payment received: your plan is active.",
    "key_revoked": "The key was revoked. Requests with it are refused from now on.",
    "already_subscribed": "You already have a subscription: change or cancel it from here.",
    "no_billing_account": "Choose a plan first: your billing account is created at checkout.",
    "provisioning_retried": "Provisioning starts again: the worker takes it from where it stopped.",
}


def tokens(value: int) -> str:
    return f"{value:,}"


def compact(value: int) -> str:
    """5000000 -> 5M, 1234567 -> 1.23M, 4200 -> 4.2k."""
    for size, suffix in ((1_000_000, "M"), (1_000, "k")):
        if abs(value) >= size:
            return f"{value / size:.3g}{suffix}"
    return str(value)


def usd(cents: int | Decimal) -> str:
    """Whole cents as dollars; an amount above zero but under a cent says so instead of showing $0.00."""
    exact = Decimal(cents)
    if 0 < exact < 1:
        return "under $0.01"
    rounded = (exact / 100).quantize(Decimal("0.01"), ROUND_HALF_UP)
    return f"${rounded:,}".replace("$-", "-$")


def microdollars(value: int) -> str:
    return usd(Decimal(value) / 10_000)


def per_million(nanodollars_per_token: int) -> str:
    """An overage rate as dollars per million tokens: 3000 n$/token -> $3.00."""
    return f"${Decimal(nanodollars_per_token) / 1000:,.2f}"


def when(value: datetime | None) -> str:
    return "never" if value is None else value.strftime("%-d %b %Y, %H:%M UTC")


def day(value: date | None) -> str:
    return "" if value is None else value.strftime("%-d %B %Y")


def _environment() -> Environment:
    environment = Environment(
        loader=FileSystemLoader(TEMPLATES),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    environment.filters.update(
        tokens=tokens,
        compact=compact,
        usd=usd,
        microdollars=microdollars,
        per_million=per_million,
        when=when,
        day=day,
    )
    return environment


ENGINE = JinjaTemplateEngine.from_environment(_environment())  # gives templates Litestar's csrf_token()


def render(request: Request[Any, Any, Any], template: str, visitor: Visitor | None, **context: Any) -> str:
    notice = NOTICES.get(request.query_params.get("notice", ""))
    return ENGINE.get_template(template).render(
        request=request, visitor=visitor, notice=notice, **{"error": None, "section": "", **context}
    )


PAGE_STATE = "console_page"  # the request's Page, in request.state


@dataclass
class Page:
    """The request's page: who is signed in and the cookies the response sets (a renewed session, a new
    login, a logout)."""

    request: Request[Any, Any, Any]
    settings: Settings
    sign_in: SignIn
    cookies: list[Cookie] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.cookies.extend(self.sign_in.cookies)
        # An error page answers in place of the route, and still sets these cookies (``error_response``).
        self.request.state[PAGE_STATE] = self

    @property
    def visitor(self) -> Visitor | None:
        return self.sign_in.visitor

    def render(self, template: str, *, status: int = 200, **context: Any) -> Response[str]:
        return Response(
            render(self.request, template, self.visitor, settings=self.settings, **context),
            status_code=status,
            media_type=MediaType.HTML,
            cookies=self.cookies,
            headers=NO_STORE,
        )

    def fragment(self, template: str, **context: Any) -> str:
        """A part of a page rendered alone, for a page's script to show in place."""
        return render(self.request, template, self.visitor, settings=self.settings, **context)

    def json(self, data: dict[str, Any]) -> Response[dict[str, Any]]:
        """What a page's script polls. It carries the page's cookies too: a session renewed on this request
        must reach the browser, or its next request presents the used refresh token and ends the session."""
        return Response(data, cookies=self.cookies, headers=NO_STORE)

    def failed(self, template: str, error: AppError, **context: Any) -> Response[str]:
        """The form again, with the service's message and status (and its headers, e.g. Retry-After)."""
        response = self.render(template, status=error.status, error=error.message, **context)
        response.headers.update(error.headers)
        return response

    def redirect(self, url: str) -> Redirect:
        return Redirect(url, status_code=303, cookies=self.cookies)

    def start_session(self, pair: TokenPair) -> None:
        self.cookies = [*session_cookies(self.settings, pair), dropped_csrf_cookie(self.settings)]

    def end_session(self) -> None:
        self.cookies = [*ended_cookies(self.settings), dropped_csrf_cookie(self.settings)]


def safe_next(path: str) -> str:
    """Where to go after logging in: a console path of ours, never another site."""
    ours = (path == "/console" or path.startswith("/console/")) and path.isprintable()
    return path if ours and "//" not in path and "\\" not in path else "/console"


# --- errors --------------------------------------------------------------------------------------------


def error_response(
    request: Request[Any, Any, Any],
    status: int,
    title: str,
    message: str,
    headers: dict[str, str] | None = None,
) -> Response[str]:
    """An error page. It carries the cookies of the request's page, if it got that far: a session renewed
    on this request must reach the browser, or its next request presents the used refresh token and ends
    the session."""
    page = request.state.get(PAGE_STATE)
    html = render(
        request,
        "error.html",
        None,
        status=status,
        title=title,
        message=message,
        request_id=request_id_var.get(),
    )
    return Response(
        html,
        status_code=status,
        media_type=MediaType.HTML,
        headers={**NO_STORE, **(headers or {})},
        cookies=page.cookies if isinstance(page, Page) else None,
    )


TITLES = {
    400: "That did not work",
    403: "Not allowed",
    404: "Not found",
    405: "Not allowed",
    429: "Slow down",
}


def _not_signed_in(request: Request[Any, Any, Any], _: NotSignedIn) -> Response[Any]:
    settings: Settings = request.app.state.settings
    target = "/login"
    if request.method == "GET":
        here = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        target += f"?next={quote(here, safe='')}"
    return Redirect(target, status_code=303, cookies=ended_cookies(settings))


def _app_error(request: Request[Any, Any, Any], exc: AppError) -> Response[str]:
    return error_response(
        request, exc.status, TITLES.get(exc.status, "Something went wrong"), exc.message, exc.headers
    )


def _validation_error(request: Request[Any, Any, Any], _: ValidationException) -> Response[str]:
    return error_response(
        request, 400, TITLES[400], "The form was not filled in as expected. Go back and check it."
    )


def _http_error(request: Request[Any, Any, Any], exc: HTTPException) -> Response[str]:
    status = exc.status_code
    if status >= 500:
        return _unhandled(request, exc)
    return error_response(request, status, TITLES.get(status, "That did not work"), exc.detail, exc.headers)


def _unhandled(request: Request[Any, Any, Any], exc: Exception) -> Response[str]:
    log.exception("unhandled error in the console", exc_info=exc)
    return error_response(
        request,
        500,
        "Something went wrong on our side",
        "Please try again in a moment. If it keeps happening, tell us the request id below.",
    )


EXCEPTION_HANDLERS: dict[type[Exception] | int, Any] = {
    NotSignedIn: _not_signed_in,
    AppError: _app_error,
    ValidationException: _validation_error,
    HTTPException: _http_error,
    Exception: _unhandled,
}
