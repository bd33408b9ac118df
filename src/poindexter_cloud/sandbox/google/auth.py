"""OAuth 2.0 for service accounts: the token endpoint (JWT bearer grant, domain-wide delegation), the access
tokens it issues, and the check every API call makes (:func:`authorize`)."""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import parse_qs

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from litestar import Request, Response, post

from .errors import OAuthError, answer, insufficient_scopes, not_authorized, unauthenticated
from .store import (
    SERVICE_ACCOUNT_PREFIX,
    STATE,
    TOKEN_LIFETIME_SECONDS,
    Grant,
    ServiceAccount,
    User,
    now,
    numeric_id,
)

JWT_BEARER: Final = "urn:ietf:params:oauth:grant-type:jwt-bearer"
TOKEN_PATH: Final = "/google/oauth2/token"
# google-auth always signs for Google's token endpoint, whatever the info's token_uri says; Google also still
# accepts its older token addresses. The sandbox accepts those and its own address (any host).
GOOGLE_TOKEN_URI: Final = "https://oauth2.googleapis.com/token"
GOOGLE_AUDIENCES: Final = frozenset(
    {
        GOOGLE_TOKEN_URI,
        "https://www.googleapis.com/oauth2/v4/token",
        "https://accounts.google.com/o/oauth2/token",
    }
)
_MAX_LIFETIME: Final = 3600
_CLOCK_SKEW: Final = 300

_AUTH: Final = "https://www.googleapis.com/auth/"
MAIL: Final = "https://mail.google.com/"


def _scopes(*names: str) -> frozenset[str]:
    return frozenset(name if name.startswith("https://") else _AUTH + name for name in names)


# Which scopes allow which calls, from the APIs' discovery documents.
DIRECTORY_READ: Final = _scopes("admin.directory.user", "admin.directory.user.readonly")
DIRECTORY_LIST: Final = DIRECTORY_READ | _scopes("cloud-platform")
DIRECTORY_WRITE: Final = _scopes("admin.directory.user")
GMAIL_SEND: Final = _scopes(
    MAIL, "gmail.modify", "gmail.compose", "gmail.send", "gmail.addons.current.action.compose"
)
GMAIL_LIST: Final = _scopes(MAIL, "gmail.modify", "gmail.readonly", "gmail.metadata")
GMAIL_GET: Final = GMAIL_LIST | _scopes(
    "gmail.addons.current.message.action",
    "gmail.addons.current.message.metadata",
    "gmail.addons.current.message.readonly",
)
GMAIL_ATTACHMENT: Final = _scopes(
    MAIL,
    "gmail.modify",
    "gmail.readonly",
    "gmail.addons.current.message.action",
    "gmail.addons.current.message.readonly",
)
GMAIL_MODIFY: Final = _scopes(MAIL, "gmail.modify")
GMAIL_DELETE: Final = _scopes(MAIL)
GMAIL_PROFILE: Final = _scopes(MAIL, "gmail.modify", "gmail.readonly", "gmail.metadata", "gmail.compose")
GMAIL_LABELS: Final = _scopes(MAIL, "gmail.modify", "gmail.readonly", "gmail.metadata", "gmail.labels")
GMAIL_METADATA_ONLY: Final = _scopes("gmail.metadata", "gmail.addons.current.message.metadata")
CALENDAR_READ: Final = _scopes(
    "calendar",
    "calendar.app.created",
    "calendar.events",
    "calendar.events.freebusy",
    "calendar.events.owned",
    "calendar.events.owned.readonly",
    "calendar.events.public.readonly",
    "calendar.events.readonly",
    "calendar.readonly",
)
CALENDAR_WRITE: Final = _scopes(
    "calendar", "calendar.app.created", "calendar.events", "calendar.events.owned"
)
CALENDAR_MOVE: Final = _scopes("calendar", "calendar.events", "calendar.events.owned")
CALENDARS_WRITE: Final = _scopes("calendar", "calendar.app.created", "calendar.calendars")
CALENDAR_GET: Final = _scopes(
    "calendar",
    "calendar.app.created",
    "calendar.calendars",
    "calendar.calendars.readonly",
    "calendar.readonly",
)


# ---------------------------------------------------------------------------------------- service accounts


def _register(email: str, key_id: str, public_key: rsa.RSAPublicKey, scopes: Iterable[str] | None) -> None:
    account = STATE.service_accounts.get(email)
    delegated = frozenset(scopes) if scopes is not None else None
    if account is None:
        STATE.service_accounts[email] = ServiceAccount(email, numeric_id(), {key_id: public_key}, delegated)
        return
    account.keys[key_id] = public_key
    if scopes is not None:
        account.delegated_scopes = delegated


def sandbox_service_account(
    base_url: str,
    *,
    name: str = "provisioning",
    project_id: str = "poindexter-sandbox",
    delegated_scopes: Iterable[str] | None = None,
) -> dict[str, str]:
    """A new service-account key (JSON info, as the Cloud console downloads it) the sandbox trusts.

    ``base_url`` is the sandbox's root (``http://127.0.0.1:PORT``); ``token_uri`` is its token endpoint.
    The account may impersonate any user of the sandbox domain (domain-wide delegation) for
    ``delegated_scopes`` (None: any scope). Calling again with the same name adds a key to the account.
    """
    private_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = private_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    email = f"{name}@{project_id}.iam.gserviceaccount.com"
    key_id = secrets.token_hex(20)
    _register(email, key_id, private_key.public_key(), delegated_scopes)
    return {
        "type": "service_account",
        "project_id": project_id,
        "private_key_id": key_id,
        "private_key": pem,
        "client_email": email,
        "client_id": STATE.service_accounts[email].client_id,
        "token_uri": base_url.rstrip("/") + TOKEN_PATH,
        "universe_domain": "googleapis.com",
    }


def register_service_account(info: Mapping[str, Any], delegated_scopes: Iterable[str] | None = None) -> str:
    """Trust an existing service-account info dict (its private key's public half); returns its email."""
    key = serialization.load_pem_private_key(str(info["private_key"]).encode(), password=None)
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ValueError("the service account's private_key is not an RSA key")
    email = str(info["client_email"])
    _register(
        email, str(info.get("private_key_id") or secrets.token_hex(20)), key.public_key(), delegated_scopes
    )
    return email


# ---------------------------------------------------------------------------------------- token endpoint

_TIMEFRAME: Final = (
    "Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable timeframe. Check your "
    "iat and exp values in the JWT claim."
)
_UNAUTHORIZED_CLIENT: Final = (
    "Client is unauthorized to retrieve access tokens using this method, or client not authorized for any of "
    "the scopes requested."
)


def _verify(assertion: str) -> tuple[ServiceAccount, dict[str, Any]]:
    try:
        header = jwt.get_unverified_header(assertion)
        unverified = jwt.decode(assertion, options={"verify_signature": False})
    except jwt.PyJWTError:
        raise OAuthError("invalid_grant", "Invalid JWT: malformed assertion.") from None
    if header.get("alg") != "RS256":
        raise OAuthError("invalid_grant", "Invalid JWT Signature.")
    account = STATE.service_accounts.get(str(unverified.get("iss", "")))
    if account is None:
        raise OAuthError("invalid_grant", "Invalid grant: account not found")
    kid = header.get("kid")
    keys = [account.keys[kid]] if kid in account.keys else [] if kid else list(account.keys.values())
    for key in keys:
        try:
            claims: dict[str, Any] = jwt.decode(
                assertion,
                key,
                algorithms=["RS256"],
                options={"verify_aud": False, "verify_exp": False, "verify_iat": False, "verify_nbf": False},
            )
        except jwt.InvalidSignatureError:
            continue
        except jwt.PyJWTError:
            raise OAuthError("invalid_grant", "Invalid JWT: malformed assertion.") from None
        return account, claims
    raise OAuthError("invalid_grant", "Invalid JWT Signature.")


def _check_claims(claims: dict[str, Any]) -> None:
    audience = claims.get("aud")
    if not isinstance(audience, str) or not (audience in GOOGLE_AUDIENCES or audience.endswith(TOKEN_PATH)):
        raise OAuthError(
            "invalid_grant",
            "Invalid JWT: Failed audience check. The right audience is " + GOOGLE_TOKEN_URI,
        )
    issued, expires = claims.get("iat"), claims.get("exp")
    if not isinstance(issued, int | float) or not isinstance(expires, int | float):
        raise OAuthError("invalid_grant", _TIMEFRAME)
    moment = time.time()
    if expires <= moment or issued > moment + _CLOCK_SKEW or expires - issued > _MAX_LIFETIME:
        raise OAuthError("invalid_grant", _TIMEFRAME)


def _delegate(account: ServiceAccount, subject: str, scopes: frozenset[str]) -> None:
    if account.delegated_scopes is not None and not scopes <= account.delegated_scopes:
        raise OAuthError("unauthorized_client", _UNAUTHORIZED_CLIENT, 401)
    user = STATE.user_by_key(subject)
    if user is None or user.suspended:
        raise OAuthError("invalid_grant", "Invalid email or User ID")


@post(TOKEN_PATH.removeprefix("/google"), status_code=200, include_in_schema=False)
async def token(request: Request[Any, Any, Any]) -> Response[bytes]:
    """``POST /oauth2/token``: ``grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer&assertion=JWT``."""
    form = parse_qs((await request.body()).decode("utf-8", "replace"))
    grant_type = (form.get("grant_type") or [""])[0]
    if grant_type != JWT_BEARER:
        raise OAuthError("unsupported_grant_type", f"Invalid grant_type: {grant_type}")
    assertion = (form.get("assertion") or [""])[0]
    if not assertion:
        raise OAuthError("invalid_request", "Missing required parameter: assertion")
    account, claims = _verify(assertion)
    _check_claims(claims)
    scope = claims.get("scope")
    scopes = frozenset(scope.split()) if isinstance(scope, str) else frozenset()
    if not scopes or not all(s.startswith("https://") for s in scopes):
        raise OAuthError("invalid_scope", "Invalid OAuth scope or ID token audience provided.")
    subject = claims.get("sub")
    if subject is not None:
        _delegate(account, str(subject), scopes)
    access_token = "ya29.c." + secrets.token_urlsafe(96)
    STATE.tokens[access_token] = Grant(
        access_token,
        account.client_email,
        str(subject).lower() if subject is not None else None,
        scopes,
        now() + TOKEN_LIFETIME_SECONDS,
    )
    STATE.tokens_issued += 1
    return answer(
        {"access_token": access_token, "expires_in": TOKEN_LIFETIME_SECONDS, "token_type": "Bearer"}
    )


# ---------------------------------------------------------------------------------------- API calls


def authorize(request: Request[Any, Any, Any], scopes: frozenset[str], service: str, method: str) -> Grant:
    """The grant behind the call's bearer token: 401 when it is missing, unknown or expired (or its delegated
    user is gone or suspended), 403 when none of its scopes allows ``method``."""
    authorization = request.headers.get("authorization", "")
    scheme, _, value = authorization.partition(" ")
    access_token = (
        value.strip() if scheme.lower() == "bearer" else request.query_params.get("access_token", "")
    )
    if not access_token:
        raise unauthenticated(missing=True)
    grant = STATE.tokens.get(access_token)
    if grant is None or grant.expires_at <= now():
        raise unauthenticated(missing=False)
    if grant.subject is not None:
        user = STATE.user_by_key(grant.subject)
        if user is None or user.suspended:
            raise unauthenticated(missing=False)
    if not grant.scopes & scopes:
        raise insufficient_scopes(service, method)
    return grant


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a call acts as: the delegated user, or the service account itself (no subject)."""

    key: str  # a user id, or "sa:" + the service account's email
    email: str
    user: User | None


def principal(grant: Grant) -> Principal:
    user = subject_user(grant)
    if user is not None:
        return Principal(user.id, user.primary_email, user)
    return Principal(SERVICE_ACCOUNT_PREFIX + grant.client_email, grant.client_email, None)


def subject_user(grant: Grant) -> User | None:
    return STATE.user_by_key(grant.subject) if grant.subject is not None else None


def require_admin(grant: Grant) -> User:
    """The Admin SDK acts only for an administrator of the domain."""
    user = subject_user(grant)
    if user is None or not user.is_admin:
        raise not_authorized()
    return user
