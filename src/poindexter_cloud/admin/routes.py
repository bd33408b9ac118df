"""Operator routes. Every one needs an admin session, and every change is audited."""

from __future__ import annotations

import uuid
from typing import Annotated

from litestar import Controller, get, post
from litestar.di import Provide
from litestar.params import Parameter

from poindexter_cloud.accounts.api_keys import ApiKeyVerifier
from poindexter_cloud.accounts.auth import Principal, provide_admin
from poindexter_cloud.accounts.models import User
from poindexter_cloud.accounts.schemas import UserPage, UserSummary
from poindexter_cloud.accounts.service import Accounts, Client
from poindexter_cloud.admin.schemas import Suspension
from poindexter_cloud.billing import reports
from poindexter_cloud.billing.schemas import AdminUsage
from poindexter_cloud.billing.usage_sync import parse_month
from poindexter_cloud.core.db import UnitOfWork


def summary(user: User) -> UserSummary:
    return UserSummary(
        user.id,
        user.email,
        user.name,
        user.status,
        user.is_admin,
        user.email_verified_at is not None,
        user.created_at,
    )


class AdminUsersController(Controller):
    path = "/v1/admin/users"
    tags = ["admin"]
    dependencies = {"admin": Provide(provide_admin)}

    @get("/")
    async def list_users(
        self,
        admin: Principal,
        uow: UnitOfWork,
        accounts: Accounts,
        q: Annotated[str | None, Parameter(max_length=200, description="search email and name")] = None,
        limit: Annotated[int, Parameter(ge=1, le=200)] = 50,
        offset: Annotated[int, Parameter(ge=0)] = 0,
    ) -> UserPage:
        """Users, newest first, optionally searched by email or name."""
        users, total = await accounts.list_users(uow.session, q, limit, offset)
        return UserPage([summary(user) for user in users], total, limit, offset)

    @get("/{user_id:uuid}")
    async def show(
        self, user_id: uuid.UUID, admin: Principal, uow: UnitOfWork, accounts: Accounts
    ) -> UserSummary:
        return summary(await accounts.get_user(uow.session, user_id))

    @post("/{user_id:uuid}/suspend")
    async def suspend(
        self,
        user_id: uuid.UUID,
        data: Suspension,
        admin: Principal,
        uow: UnitOfWork,
        accounts: Accounts,
        client: Client,
        verifier: ApiKeyVerifier,
    ) -> UserSummary:
        """Suspend a user: their sessions and API keys stop working at once."""
        return await _set_suspended(user_id, True, data.reason, admin, uow, accounts, client, verifier)

    @post("/{user_id:uuid}/unsuspend")
    async def unsuspend(
        self,
        user_id: uuid.UUID,
        admin: Principal,
        uow: UnitOfWork,
        accounts: Accounts,
        client: Client,
        verifier: ApiKeyVerifier,
    ) -> UserSummary:
        return await _set_suspended(user_id, False, None, admin, uow, accounts, client, verifier)


async def _set_suspended(
    user_id: uuid.UUID,
    suspended: bool,
    reason: str | None,
    admin: Principal,
    uow: UnitOfWork,
    accounts: Accounts,
    client: Client,
    verifier: ApiKeyVerifier,
) -> UserSummary:
    user = await accounts.get_user(uow.session, user_id)
    await accounts.set_suspended(uow.session, user, suspended, reason, admin.user_id, client)
    uow.after_commit(lambda: verifier.announce_user_changed(user_id))
    await uow.commit()
    return summary(user)


class AdminUsageController(Controller):
    path = "/v1/admin/usage"
    tags = ["admin"]
    dependencies = {"admin": Provide(provide_admin)}

    @get("/")
    async def usage(
        self,
        admin: Principal,
        uow: UnitOfWork,
        month: Annotated[
            str | None,
            Parameter(
                pattern=r"^[0-9]{4}-(0[1-9]|1[0-2])$", description="YYYY-MM (UTC); all months if absent"
            ),
        ] = None,
    ) -> AdminUsage:
        """Usage by month, plan and model: AI tokens and upstream cost, messages, and the overage units
        recorded for Stripe (sent, or not yet)."""
        return await reports.admin_usage(uow.session, parse_month(month) if month else None)


ROUTES = [AdminUsersController, AdminUsageController]
