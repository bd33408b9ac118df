"""Operator routes. Every one needs an admin session, and every change is audited."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Annotated

from litestar import Controller, get, post
from litestar.di import Provide
from litestar.params import Parameter
from litestar.status_codes import HTTP_202_ACCEPTED

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
from poindexter_cloud.identity import service as identities
from poindexter_cloud.identity.schemas import IdentityView, ProvisioningIssues
from poindexter_cloud.provisioning import service as provisioning

MAX_OFFSET = 1_000_000_000  # far past any real list, and well inside PostgreSQL's bigint OFFSET


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
        offset: Annotated[int, Parameter(ge=0, le=MAX_OFFSET)] = 0,
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


class AdminProvisioningController(Controller):
    path = "/v1/admin"
    tags = ["admin"]
    dependencies = {"admin": Provide(provide_admin)}

    @post("/provision/{user_id:uuid}", status_code=HTTP_202_ACCEPTED)
    async def provision(
        self, user_id: uuid.UUID, admin: Principal, uow: UnitOfWork, accounts: Accounts
    ) -> IdentityView:
        """Provision (or resume provisioning) the user's identity: a new, failed or stuck one; an active one
        whose Signal registration failed gets a new registration. The work happens in the worker."""
        await accounts.get_user(uow.session, user_id)
        identity = await provisioning.provision_by_operator(uow, user_id, admin.user_id)
        await uow.commit()
        await uow.session.refresh(identity)  # updated_at is the database's
        return identities.view(identity)

    @get("/provisioning")
    async def provisioning_issues(
        self,
        admin: Principal,
        uow: UnitOfWork,
        stuck_after_minutes: Annotated[int, Parameter(ge=1, le=10080)] = identities.STUCK_AFTER_MINUTES,
    ) -> ProvisioningIssues:
        """Identities to look at: failed (with the step and reason), stuck (no progress for
        ``stuck_after_minutes``), or whose Signal registration wants a captcha or failed."""
        found = await identities.issues(uow.session, timedelta(minutes=stuck_after_minutes))
        return ProvisioningIssues(found, stuck_after_minutes)


ROUTES = [AdminUsersController, AdminUsageController, AdminProvisioningController]
