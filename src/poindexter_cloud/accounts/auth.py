"""Who is calling: the authentication every protected route of the web role depends on.

A request carries either an access token (JWT, from a login) or an API key (a Dex instance), as
``Authorization: Bearer ...`` or ``x-api-key``. Sessions manage the account; API keys use the identity.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from litestar import Litestar, Request
from litestar.datastructures import State
from litestar.di import Provide

from poindexter_cloud.accounts.api_keys import ApiKeyVerifier
from poindexter_cloud.accounts.errors import AdminOnly, InvalidToken
from poindexter_cloud.accounts.models import User
from poindexter_cloud.accounts.service import Accounts, Client
from poindexter_cloud.accounts.tokens import read_access_token
from poindexter_cloud.core.db import UnitOfWork
from poindexter_cloud.core.errors import Forbidden
from poindexter_cloud.core.resources import Resources

API_KEY_PREFIXES = ("pk_live_", "pk_test_")


@dataclass(frozen=True, slots=True)
class Principal:
    user_id: uuid.UUID
    is_admin: bool
    session_id: uuid.UUID | None = None
    api_key_id: uuid.UUID | None = None


class SessionRequired(Forbidden):
    code = "session_required"


def credential(request: Request[Any, Any, Any]) -> str | None:
    header = request.headers.get("authorization")
    if header:
        scheme, _, value = header.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    return request.headers.get("x-api-key") or None


def client_of(request: Request[Any, Any, Any]) -> Client:
    return Client(request.client.host if request.client else None, request.headers.get("user-agent"))


async def authenticate(request: Request[Any, Any, Any], state: State) -> Principal:
    token = credential(request)
    if token is None:
        raise InvalidToken("Authentication required.", headers={"WWW-Authenticate": "Bearer"})
    if token.startswith(API_KEY_PREFIXES):
        verifier: ApiKeyVerifier = state.api_key_verifier
        key = await verifier.verify(token, client_of(request).ip)
        return Principal(key.user_id, key.is_admin, api_key_id=key.key_id)
    accounts: Accounts = state.accounts
    claims = read_access_token(accounts.signing_keys, token)
    resources: Resources = state.resources
    async with resources.db.sessions() as session:
        user = await accounts.session_user(session, claims.user_id, claims.session_id)
    return Principal(user.id, user.is_admin, session_id=claims.session_id)


async def provide_session_principal(request: Request[Any, Any, Any], state: State) -> Principal:
    principal = await authenticate(request, state)
    if principal.session_id is None:
        raise SessionRequired("This needs a login session, not an API key.")
    return principal


async def provide_admin(request: Request[Any, Any, Any], state: State) -> Principal:
    principal = await provide_session_principal(request, state)
    if not principal.is_admin:
        raise AdminOnly("Operators only.")
    return principal


async def provide_user(principal: Principal, uow: UnitOfWork) -> User:
    """The caller's row, loaded in the request's transaction so it can be changed."""
    user = await uow.session.get(User, principal.user_id, with_for_update=True)
    if user is None:
        raise InvalidToken("This session has ended; log in again.")
    return user


def provide_accounts(state: State) -> Accounts:
    accounts: Accounts = state.accounts
    return accounts


def provide_client(request: Request[Any, Any, Any]) -> Client:
    return client_of(request)


def provide_verifier(state: State) -> ApiKeyVerifier:
    verifier: ApiKeyVerifier = state.api_key_verifier
    return verifier


DEPENDENCIES = {
    "accounts": Provide(provide_accounts, sync_to_thread=False),
    "client": Provide(provide_client, sync_to_thread=False),
    "verifier": Provide(provide_verifier, sync_to_thread=False),
}


@asynccontextmanager
async def accounts_lifespan(app: Litestar) -> AsyncIterator[None]:
    """The accounts service and the API-key verifier of this process (web and proxy roles)."""
    resources: Resources = app.state.resources
    app.state.accounts = Accounts(resources.settings)
    verifier = ApiKeyVerifier(resources.db, resources.redis, resources.settings)
    await verifier.start()
    app.state.api_key_verifier = verifier
    try:
        yield
    finally:
        await verifier.stop()
