"""HTTP routes of accounts: authentication, the account itself and API keys. Thin: parse, call, commit."""

from __future__ import annotations

import uuid
from typing import Any

from litestar import Controller, Response, delete, get, patch, post
from litestar.di import Provide
from litestar.status_codes import HTTP_200_OK, HTTP_201_CREATED, HTTP_202_ACCEPTED, HTTP_204_NO_CONTENT

from poindexter_cloud.accounts import api_keys
from poindexter_cloud.accounts.api_keys import ApiKeyVerifier
from poindexter_cloud.accounts.auth import (
    DEPENDENCIES as AUTH_DEPENDENCIES,
)
from poindexter_cloud.accounts.auth import (
    Principal,
    accounts_lifespan,
    authenticate,
    provide_session_principal,
    provide_user,
)
from poindexter_cloud.accounts.errors import AccountSuspended, InvalidCredentials, InvalidToken
from poindexter_cloud.accounts.models import ApiKey, User
from poindexter_cloud.accounts.schemas import (
    Accepted,
    Account,
    AccountDeletion,
    AccountUpdate,
    ApiKeyCreate,
    ApiKeyCreated,
    ApiKeyInfo,
    ApiKeyList,
    ApiKeyRotated,
    EmailRequest,
    LinkTokenRequest,
    LoginRequest,
    PasswordResetRequest,
    RefreshRequest,
    RegisterRequest,
    TokenResponse,
)
from poindexter_cloud.accounts.service import Accounts, Client, TokenPair
from poindexter_cloud.accounts.throttle import LoginThrottle
from poindexter_cloud.core.db import UnitOfWork
from poindexter_cloud.core.resources import Resources


def token_response(pair: TokenPair) -> TokenResponse:
    return TokenResponse(pair.access_token, pair.refresh_token, pair.expires_in, pair.user_id)


def account_view(user: User) -> Account:
    return Account(
        user.id,
        user.email,
        user.name,
        user.status,
        user.email_verified_at is not None,
        user.is_admin,
        user.created_at,
    )


def key_info(key: ApiKey) -> ApiKeyInfo:
    return ApiKeyInfo(
        key.id, key.name, key.key_prefix, key.created_at, key.last_used_at, key.last_used_ip, key.expires_at
    )


def key_created(issued: api_keys.IssuedKey) -> ApiKeyCreated:
    row = issued.row
    return ApiKeyCreated(row.id, row.name, row.key_prefix, issued.secret, row.created_at)


SESSION = {"principal": Provide(provide_session_principal), "user": Provide(provide_user)}


class AuthController(Controller):
    path = "/v1/auth"
    tags = ["auth"]

    @post("/register", status_code=HTTP_201_CREATED)
    async def register(
        self, data: RegisterRequest, uow: UnitOfWork, accounts: Accounts, client: Client
    ) -> TokenResponse:
        """Create an account and log it in. A verification link is emailed to the address."""
        _, pair = await accounts.register(uow, data.email, data.password, data.name, client)
        await uow.commit()
        return token_response(pair)

    @post("/login", status_code=HTTP_200_OK)
    async def login(
        self, data: LoginRequest, uow: UnitOfWork, accounts: Accounts, client: Client, resources: Resources
    ) -> TokenResponse:
        """Exchange email and password for tokens. Throttled per account and per IP."""
        throttle = LoginThrottle(resources.redis, resources.settings)
        try:
            pair = await accounts.login_throttled(uow, throttle, data.email, data.password, client)
        except (InvalidCredentials, AccountSuspended):
            await uow.commit()  # keep the audit row of the failure
            raise
        await uow.commit()
        return token_response(pair)

    @post("/refresh", status_code=HTTP_200_OK)
    async def refresh(
        self, data: RefreshRequest, uow: UnitOfWork, accounts: Accounts, client: Client
    ) -> TokenResponse:
        """Rotate a refresh token for a new pair. Reusing a rotated one ends the whole session, unless it
        comes within 30 s of the rotation (two tabs refreshing at once): it then gets a pair of its own."""
        try:
            pair = await accounts.refresh(uow.session, data.refresh_token, client)
        except InvalidToken:
            await uow.commit()  # a detected reuse revokes the session even though this request fails
            raise
        await uow.commit()
        return token_response(pair)

    @post(
        "/logout",
        status_code=HTTP_204_NO_CONTENT,
        dependencies={"principal": Provide(provide_session_principal)},
    )
    async def logout(self, principal: Principal, uow: UnitOfWork, accounts: Accounts, client: Client) -> None:
        """End this session: its access and refresh tokens stop working at once."""
        assert principal.session_id is not None
        await accounts.logout(uow.session, principal.user_id, principal.session_id, client)
        await uow.commit()

    @post("/verify-email", status_code=HTTP_200_OK)
    async def verify_email(
        self, data: LinkTokenRequest, uow: UnitOfWork, accounts: Accounts, client: Client
    ) -> Account:
        """Confirm an address with the token from the emailed link."""
        user = await accounts.verify_email(uow.session, data.token, client)
        await uow.commit()
        return account_view(user)

    @post("/verify-email/resend", status_code=HTTP_202_ACCEPTED, dependencies=SESSION)
    async def resend_verification(self, user: User, uow: UnitOfWork, accounts: Accounts) -> Accepted:
        if user.email_verified_at is None:
            await accounts.send_link(uow, user, "verify_email")
            await uow.commit()
        return Accepted(message="If the address is not verified yet, a new link is on its way.")

    @post("/password-reset", status_code=HTTP_202_ACCEPTED)
    async def request_password_reset(
        self, data: EmailRequest, uow: UnitOfWork, accounts: Accounts, client: Client
    ) -> Accepted:
        """Email a reset link if the account exists. The answer is the same either way."""
        await accounts.request_password_reset(uow, data.email, client)
        await uow.commit()
        return Accepted(message="If an account uses that address, a reset link is on its way.")

    @post("/password-reset/confirm", status_code=HTTP_200_OK)
    async def reset_password(
        self, data: PasswordResetRequest, uow: UnitOfWork, accounts: Accounts, client: Client
    ) -> Accepted:
        """Set a new password with the token from the emailed link; every session is logged out."""
        await accounts.reset_password(uow.session, data.token, data.new_password, client)
        await uow.commit()
        return Accepted(status="password_reset", message="Log in with the new password.")


class AccountController(Controller):
    path = "/v1/account"
    tags = ["account"]
    dependencies = SESSION

    @get("/", dependencies={"principal": Provide(authenticate)})
    async def show(self, user: User) -> Account:
        """The account; a Dex instance may read it with its API key."""
        return account_view(user)

    @patch("/")
    async def update(
        self, data: AccountUpdate, user: User, uow: UnitOfWork, accounts: Accounts, client: Client
    ) -> Account:
        """Change name, email (needs the current password; re-verified) or password."""
        await accounts.update_account(
            uow,
            user,
            client,
            name=data.name,
            email=data.email,
            password=data.password,
            current_password=data.current_password,
        )
        await uow.commit()
        return account_view(user)

    @delete("/", status_code=HTTP_202_ACCEPTED)
    async def delete_account(
        self,
        data: AccountDeletion,
        user: User,
        uow: UnitOfWork,
        accounts: Accounts,
        client: Client,
        verifier: ApiKeyVerifier,
    ) -> Response[Accepted]:
        """Erase the account (GDPR): keys and sessions stop now; personal data is erased once the
        identity is deprovisioned. Billing records required by law are kept, anonymised."""
        revoked = await accounts.delete_account(uow, user, data.password, client)
        uow.after_commit(lambda: verifier.announce_revoked(revoked))
        await uow.commit()
        return Response(
            Accepted(status="deleting", message="The account is being erased."), status_code=HTTP_202_ACCEPTED
        )

    @get("/export")
    async def export(self, user: User, uow: UnitOfWork, accounts: Accounts) -> dict[str, Any]:
        """Every piece of personal data we hold about you, as JSON."""
        return await accounts.export(uow.session, user)


class ApiKeyController(Controller):
    path = "/v1/api-keys"
    tags = ["api keys"]
    dependencies = {"principal": Provide(provide_session_principal)}

    @get("/")
    async def list_keys(self, principal: Principal, uow: UnitOfWork) -> ApiKeyList:
        return ApiKeyList([key_info(key) for key in await api_keys.list_keys(uow.session, principal.user_id)])

    @post("/", status_code=HTTP_201_CREATED)
    async def create(
        self,
        principal: Principal,
        uow: UnitOfWork,
        accounts: Accounts,
        client: Client,
        verifier: ApiKeyVerifier,
        data: ApiKeyCreate | None = None,
    ) -> ApiKeyCreated:
        """Create a key for a Dex instance. The secret is in this response only."""
        issued = await accounts.create_api_key(
            uow, verifier, principal.user_id, data.name if data else None, client
        )
        await uow.commit()
        return key_created(issued)

    @delete("/{key_id:uuid}", status_code=HTTP_204_NO_CONTENT)
    async def revoke(
        self,
        key_id: uuid.UUID,
        principal: Principal,
        uow: UnitOfWork,
        accounts: Accounts,
        client: Client,
        verifier: ApiKeyVerifier,
    ) -> None:
        """Revoke a key: it stops working on every replica within a second."""
        await accounts.revoke_api_key(uow, verifier, principal.user_id, key_id, client)
        await uow.commit()

    @post("/{key_id:uuid}/rotate", status_code=HTTP_201_CREATED)
    async def rotate(
        self,
        key_id: uuid.UUID,
        principal: Principal,
        uow: UnitOfWork,
        accounts: Accounts,
        client: Client,
        verifier: ApiKeyVerifier,
    ) -> ApiKeyRotated:
        """A new secret for the key; the old one keeps working for the grace period, then stops."""
        issued, old_expires_at = await accounts.rotate_api_key(
            uow, verifier, principal.user_id, key_id, client
        )
        await uow.commit()
        return ApiKeyRotated(key_created(issued), old_expires_at)


ROUTES = [AuthController, AccountController, ApiKeyController]
DEPENDENCIES = AUTH_DEPENDENCIES
LIFESPAN = [accounts_lifespan]
