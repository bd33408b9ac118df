"""Who is signed in to the console: the JSON API's sessions, carried in cookies.

Logging in gives the same token pair as ``POST /v1/auth/login``; the access token (a JWT) and the refresh
token live in HttpOnly, SameSite=Lax cookies, Secure and ``__Host-`` prefixed in production. A request whose
access token has expired is renewed with the accounts service's refresh (single-use and rotated; presenting
a used one ends the session, unless within 30 s of its rotation: two tabs renewing at once), in a
transaction of its own, committed at once so a detected reuse sticks. The JSON API never reads these
cookies, so they give it no ambient authority to forge requests against.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from litestar import Request
from litestar.datastructures import Cookie

from poindexter_cloud.accounts.errors import AccountSuspended, InvalidToken
from poindexter_cloud.accounts.models import User
from poindexter_cloud.accounts.service import Accounts, Client, TokenPair
from poindexter_cloud.accounts.tokens import read_access_token
from poindexter_cloud.core.resources import Resources
from poindexter_cloud.core.settings import Settings

ACCESS_COOKIE = "pdx_access"
REFRESH_COOKIE = "pdx_refresh"
CSRF_COOKIE = "pdx_csrf"


def cookie_name(settings: Settings, base: str) -> str:
    """``__Host-`` prefixed in production: browsers keep such a cookie only if it is Secure, host-only and
    for path ``/``, so no sibling subdomain can plant one (a planted CSRF cookie would defeat the check)."""
    return f"__Host-{base}" if settings.is_production else base


def cookie(settings: Settings, base: str, value: str, max_age: int) -> Cookie:
    return Cookie(
        key=cookie_name(settings, base),
        value=value,
        max_age=max_age,
        path="/",
        httponly=True,
        secure=settings.is_production,
        samesite="lax",
    )


def session_cookies(settings: Settings, pair: TokenPair) -> list[Cookie]:
    return [
        cookie(settings, ACCESS_COOKIE, pair.access_token, pair.expires_in),
        cookie(settings, REFRESH_COOKIE, pair.refresh_token, settings.refresh_token_ttl_days * 86400),
    ]


def ended_cookies(settings: Settings) -> list[Cookie]:
    return [cookie(settings, name, "", 0) for name in (ACCESS_COOKIE, REFRESH_COOKIE)]


def dropped_csrf_cookie(settings: Settings) -> Cookie:
    """Sent when a login starts or ends (both POSTs): the next page gets a CSRF token of its own."""
    return cookie(settings, CSRF_COOKIE, "", 0)


@dataclass(frozen=True, slots=True)
class Visitor:
    user: User
    session_id: uuid.UUID


@dataclass(frozen=True, slots=True)
class SignIn:
    """What the request's cookies amount to: a visitor (or none), and the cookies the response must set."""

    visitor: Visitor | None
    cookies: tuple[Cookie, ...] = ()


async def identify(
    request: Request[Any, Any, Any], resources: Resources, accounts: Accounts, client: Client
) -> SignIn:
    settings = resources.settings
    access = request.cookies.get(cookie_name(settings, ACCESS_COOKIE))
    refresh = request.cookies.get(cookie_name(settings, REFRESH_COOKIE))
    if access:
        try:
            claims = read_access_token(accounts.signing_keys, access)
            async with resources.db.sessions() as session:
                user = await accounts.session_user(session, claims.user_id, claims.session_id)
            return SignIn(Visitor(user, claims.session_id))
        except AccountSuspended:
            return SignIn(None, tuple(ended_cookies(settings)))
        except InvalidToken:
            pass  # expired, or its session ended: the refresh token decides
    if not refresh:
        return SignIn(None, tuple(ended_cookies(settings)) if access else ())
    async with resources.unit_of_work() as uow:
        try:
            pair = await accounts.refresh(uow.session, refresh, client)
            user = await accounts.session_user(uow.session, pair.user_id, pair.session_id)
        except (InvalidToken, AccountSuspended):
            await uow.commit()  # a detected reuse ends the session although this request fails
            return SignIn(None, tuple(ended_cookies(settings)))
        await uow.commit()
    return SignIn(Visitor(user, pair.session_id), tuple(session_cookies(settings, pair)))
