"""The console's routes: server-rendered pages at ``/``, ``/signup``, ``/login``, ``/logout``,
``/forgot-password`` and ``/console/...`` (static files under ``/console/static``). Thin: parse the form, call
the same services as the JSON API, commit once, then render or redirect."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated, Any

from litestar import Controller, Request, Response, Router, get, post
from litestar.di import Provide
from litestar.enums import RequestEncodingType
from litestar.params import Body, Parameter, QueryParameter
from litestar.static_files import create_static_files_router

from poindexter_cloud.accounts import api_keys
from poindexter_cloud.accounts.api_keys import ApiKeyVerifier
from poindexter_cloud.accounts.errors import AdminOnly
from poindexter_cloud.accounts.service import Accounts, Client
from poindexter_cloud.accounts.throttle import LoginThrottle
from poindexter_cloud.billing import reports
from poindexter_cloud.billing import service as billing
from poindexter_cloud.billing.errors import AlreadySubscribed, NoBillingAccount
from poindexter_cloud.billing.plans import PLANS
from poindexter_cloud.billing.stripe_adapter import StripeAdapter
from poindexter_cloud.console import charts
from poindexter_cloud.console.auth import Visitor, identify
from poindexter_cloud.console.connect import check_connection
from poindexter_cloud.console.errors import NotSignedIn
from poindexter_cloud.console.identity import (
    PROBLEMS,
    current_progress,
    identity_view,
    operator_action,
    progress_of,
)
from poindexter_cloud.console.pages import EXCEPTION_HANDLERS, STATIC, Page, error_response, safe_next
from poindexter_cloud.console.schemas import (
    CheckForm,
    EmailForm,
    KeyForm,
    LinkForm,
    LoginForm,
    PlanForm,
    ResetForm,
    RetryForm,
    SignupForm,
)
from poindexter_cloud.console.security import ConsoleMiddleware
from poindexter_cloud.core.db import UnitOfWork
from poindexter_cloud.core.errors import AppError
from poindexter_cloud.core.resources import Resources
from poindexter_cloud.identity import service as identities
from poindexter_cloud.provisioning import service as provisioning

FORM = Body(media_type=RequestEncodingType.URL_ENCODED)
ADMIN_PAGE_SIZE = 50
MAX_PAGE = 1_000_000  # its offset stays well inside PostgreSQL's bigint OFFSET


async def provide_page(
    request: Request[Any, Any, Any], resources: Resources, accounts: Accounts, client: Client
) -> Page:
    return Page(request, resources.settings, await identify(request, resources, accounts, client))


def provide_visitor(page: Page) -> Visitor:
    if page.visitor is None:
        raise NotSignedIn("Log in to continue.")
    return page.visitor


def provide_admin(visitor: Visitor) -> Visitor:
    if not visitor.user.is_admin:
        raise AdminOnly("These pages are for operators only.")
    return visitor


SIGNED_IN = {"visitor": Provide(provide_visitor, sync_to_thread=False)}


@get("/")
async def front_door(page: Page) -> Response[Any]:
    return page.redirect("/console" if page.visitor else "/login")


@get("/console/{rest:path}")
async def unknown_page(request: Request[Any, Any, Any], rest: str) -> Response[Any]:
    """A mistyped console address gets a page, not the JSON API's 404."""
    return error_response(request, 404, "Not found", "There is no such page.")


class AccountPages(Controller):
    """Signing up, logging in and out, and the pages the account emails link to."""

    @get("/signup")
    async def signup_form(self, page: Page) -> Response[Any]:
        return page.redirect("/console") if page.visitor else page.render("auth/signup.html")

    @post("/signup")
    async def signup(
        self,
        data: Annotated[SignupForm, FORM],
        page: Page,
        uow: UnitOfWork,
        accounts: Accounts,
        client: Client,
    ) -> Response[Any]:
        try:
            _, pair = await accounts.register(
                uow, data.email, data.password, data.name.strip() or None, client
            )
        except AppError as error:
            return page.failed("auth/signup.html", error, email=data.email, name=data.name)
        await uow.commit()
        page.start_session(pair)
        return page.redirect("/console/plans")

    @get("/login")
    async def login_form(
        self, page: Page, next_path: Annotated[str, QueryParameter(name="next")] = ""
    ) -> Response[Any]:
        if page.visitor:
            return page.redirect(safe_next(next_path))
        return page.render("auth/login.html", email="", next=next_path)

    @post("/login")
    async def login(
        self,
        data: Annotated[LoginForm, FORM],
        page: Page,
        uow: UnitOfWork,
        accounts: Accounts,
        client: Client,
        resources: Resources,
    ) -> Response[Any]:
        throttle = LoginThrottle(resources.redis, resources.settings)
        try:
            pair = await accounts.login_throttled(uow, throttle, data.email, data.password, client)
        except AppError as error:
            await uow.commit()  # keep the audit row of the failure
            return page.failed("auth/login.html", error, email=data.email, next=data.next)
        await uow.commit()
        page.start_session(pair)
        return page.redirect(safe_next(data.next))

    @post("/logout")
    async def logout(self, page: Page, uow: UnitOfWork, accounts: Accounts, client: Client) -> Response[Any]:
        if page.visitor is not None:
            await accounts.logout(uow.session, page.visitor.user.id, page.visitor.session_id, client)
            await uow.commit()
        page.end_session()
        return page.redirect("/login?notice=signed_out")

    @get("/forgot-password")
    async def forgot_form(self, page: Page) -> Response[Any]:
        return page.render("auth/forgot.html", sent_to=None)

    @post("/forgot-password")
    async def forgot(
        self,
        data: Annotated[EmailForm, FORM],
        page: Page,
        uow: UnitOfWork,
        accounts: Accounts,
        client: Client,
    ) -> Response[Any]:
        await accounts.request_password_reset(uow, data.email, client)
        await uow.commit()
        return page.render("auth/forgot.html", sent_to=data.email)

    @get("/console/reset-password")
    async def reset_form(self, page: Page, token: str = "") -> Response[Any]:
        return page.render("auth/reset.html", token=token)

    @post("/console/reset-password")
    async def reset(
        self,
        data: Annotated[ResetForm, FORM],
        page: Page,
        uow: UnitOfWork,
        accounts: Accounts,
        client: Client,
    ) -> Response[Any]:
        try:
            await accounts.reset_password(uow.session, data.token, data.new_password, client)
        except AppError as error:
            return page.failed("auth/reset.html", error, token=data.token)
        await uow.commit()
        page.end_session()  # every session of the account has just ended
        return page.redirect("/login?notice=password_reset")

    @get("/console/verify-email")
    async def verify_form(self, page: Page, token: str = "") -> Response[Any]:
        return page.render("auth/verify.html", token=token, verified=False)

    @post("/console/verify-email")
    async def verify(
        self, data: Annotated[LinkForm, FORM], page: Page, uow: UnitOfWork, accounts: Accounts, client: Client
    ) -> Response[Any]:
        try:
            await accounts.verify_email(uow.session, data.token, client)
        except AppError as error:
            return page.failed("auth/verify.html", error, token="", verified=False)
        await uow.commit()
        return page.render("auth/verify.html", token="", verified=True)


class OverviewPages(Controller):
    path = "/console"
    dependencies = SIGNED_IN

    @get("/")
    async def overview(self, page: Page, visitor: Visitor, uow: UnitOfWork) -> Response[Any]:
        subscription = await billing.subscription_state(uow.session, visitor.user.id)
        return page.render(
            "console/home.html",
            section="home",
            subscription=subscription,
            identity=progress_of(await identity_view(uow.session, visitor.user.id), subscription),
            keys=await api_keys.list_keys(uow.session, visitor.user.id),
        )


class PlanPages(Controller):
    path = "/console"
    dependencies = SIGNED_IN

    @get("/plans")
    async def plans(self, page: Page, visitor: Visitor, uow: UnitOfWork) -> Response[Any]:
        subscription = await billing.subscription_state(uow.session, visitor.user.id)
        return page.render("console/plans.html", section="billing", plans=PLANS, subscription=subscription)

    @post("/checkout")
    async def checkout(
        self,
        data: Annotated[PlanForm, FORM],
        page: Page,
        visitor: Visitor,
        uow: UnitOfWork,
        accounts: Accounts,
        stripe: StripeAdapter,
        resources: Resources,
    ) -> Response[Any]:
        """Off to Stripe Checkout; the plan takes effect once Stripe's webhook confirms the payment."""
        try:
            started = await billing.start_checkout(
                uow, accounts, stripe, resources.settings, visitor.user.id, data.plan
            )
        except AlreadySubscribed:
            return page.redirect("/console/billing?notice=already_subscribed")
        except AppError as error:
            subscription = await billing.subscription_state(uow.session, visitor.user.id)
            return page.failed(
                "console/plans.html", error, section="billing", plans=PLANS, subscription=subscription
            )
        await uow.commit()
        return page.redirect(started.url)


class BillingPages(Controller):
    path = "/console/billing"
    dependencies = SIGNED_IN

    @get("/")
    async def billing_page(
        self, page: Page, visitor: Visitor, uow: UnitOfWork, checkout: str | None = None
    ) -> Response[Any]:
        """Also where Stripe Checkout comes back to (``?checkout=success`` or ``cancelled``)."""
        subscription = await billing.subscription_state(uow.session, visitor.user.id)
        return page.render(
            "console/billing.html",
            section="billing",
            subscription=subscription,
            plan=PLANS.get(subscription.plan or ""),
            checkout=checkout,
        )

    @get("/status")
    async def status(self, page: Page, visitor: Visitor, uow: UnitOfWork) -> Response[Any]:
        """What the billing page polls while Stripe's confirmation is on its way."""
        subscription = await billing.subscription_state(uow.session, visitor.user.id)
        return page.json({"status": subscription.status, "plan": subscription.plan})

    @post("/portal")
    async def portal(
        self,
        page: Page,
        visitor: Visitor,
        uow: UnitOfWork,
        accounts: Accounts,
        stripe: StripeAdapter,
        resources: Resources,
    ) -> Response[Any]:
        """Stripe's Customer Portal: change plan or card, see invoices, cancel."""
        try:
            url = await billing.portal_url(uow.session, accounts, stripe, resources.settings, visitor.user.id)
        except NoBillingAccount:
            return page.redirect("/console/plans?notice=no_billing_account")
        return page.redirect(url)


class IdentityPages(Controller):
    """The Dex's mailbox, number and Signal account, and their provisioning as it happens."""

    path = "/console/identity"
    dependencies = SIGNED_IN

    @get("/")
    async def identity(self, page: Page, visitor: Visitor, uow: UnitOfWork) -> Response[Any]:
        shown = await current_progress(uow.session, visitor.user.id)
        return page.render("console/identity.html", section="identity", progress=shown)

    @get("/progress")
    async def progress_part(self, page: Page, visitor: Visitor, uow: UnitOfWork) -> Response[Any]:
        """What the identity page polls: its progress part, rendered, and how soon to ask again (none once
        nothing changes by itself)."""
        shown = await current_progress(uow.session, visitor.user.id)
        html = page.fragment("console/identity_progress.html", progress=shown)
        return page.json({"html": html, "poll_seconds": shown.poll_seconds})


class KeyPages(Controller):
    path = "/console/keys"
    dependencies = SIGNED_IN

    async def _render(
        self, page: Page, visitor: Visitor, uow: UnitOfWork, status: int = 200, **shown: Any
    ) -> Response[Any]:
        keys = await api_keys.list_keys(uow.session, visitor.user.id)
        return page.render(
            "console/keys.html", status=status, section="keys", keys=keys, **{"issued": None, **shown}
        )

    @get("/")
    async def keys(self, page: Page, visitor: Visitor, uow: UnitOfWork) -> Response[Any]:
        return await self._render(page, visitor, uow)

    @post("/")
    async def create(
        self,
        data: Annotated[KeyForm, FORM],
        page: Page,
        visitor: Visitor,
        uow: UnitOfWork,
        accounts: Accounts,
        verifier: ApiKeyVerifier,
        client: Client,
    ) -> Response[Any]:
        """The new key's secret is on this response only (never in a URL, never stored)."""
        name = data.name.strip() or None
        issued = await accounts.create_api_key(uow, verifier, visitor.user.id, name, client)
        await uow.commit()
        return await self._render(page, visitor, uow, status=201, issued=issued, previous_expires_at=None)

    @post("/{key_id:uuid}/rotate")
    async def rotate(
        self,
        key_id: uuid.UUID,
        page: Page,
        visitor: Visitor,
        uow: UnitOfWork,
        accounts: Accounts,
        verifier: ApiKeyVerifier,
        client: Client,
    ) -> Response[Any]:
        issued, previous_expires_at = await accounts.rotate_api_key(
            uow, verifier, visitor.user.id, key_id, client
        )
        await uow.commit()
        return await self._render(
            page, visitor, uow, status=201, issued=issued, previous_expires_at=previous_expires_at
        )

    @post("/{key_id:uuid}/revoke")
    async def revoke(
        self,
        key_id: uuid.UUID,
        page: Page,
        visitor: Visitor,
        uow: UnitOfWork,
        accounts: Accounts,
        verifier: ApiKeyVerifier,
        client: Client,
    ) -> Response[Any]:
        await accounts.revoke_api_key(uow, verifier, visitor.user.id, key_id, client)
        await uow.commit()
        return page.redirect("/console/keys?notice=key_revoked")


class UsagePages(Controller):
    path = "/console/usage"
    dependencies = SIGNED_IN

    @get("/")
    async def usage(self, page: Page, visitor: Visitor, uow: UnitOfWork) -> Response[Any]:
        now = datetime.now(UTC)
        usage = await reports.subscriber_usage(uow.session, visitor.user.id, now)
        return page.render(
            "console/usage.html",
            section="usage",
            usage=usage,
            plan=PLANS.get(usage.plan or ""),
            **charts.usage_chart(usage, now),
        )


class ConnectPages(Controller):
    """The settings a Dex needs, and a check of the connection from our side."""

    path = "/console/connect"
    dependencies = SIGNED_IN

    @get("/")
    async def connect(self, page: Page, visitor: Visitor, uow: UnitOfWork) -> Response[Any]:
        keys = await api_keys.list_keys(uow.session, visitor.user.id)
        return page.render("console/connect.html", section="connect", keys=keys, checks=None, chosen=None)

    @post("/check")
    async def check(
        self,
        data: Annotated[CheckForm, FORM],
        page: Page,
        visitor: Visitor,
        uow: UnitOfWork,
        resources: Resources,
    ) -> Response[Any]:
        checks = await check_connection(uow.session, resources.settings, visitor.user.id, data.key_id)
        keys = await api_keys.list_keys(uow.session, visitor.user.id)
        return page.render(
            "console/connect.html", section="connect", keys=keys, checks=checks, chosen=data.key_id
        )


class AdminPages(Controller):
    """Operators only: anyone else gets 403."""

    path = "/console/admin"
    dependencies = {**SIGNED_IN, "admin": Provide(provide_admin, sync_to_thread=False)}

    @get("/")
    async def admin_home(self, page: Page, admin: Visitor) -> Response[Any]:
        return page.redirect("/console/admin/users")

    @get("/users")
    async def users(
        self,
        page: Page,
        admin: Visitor,
        uow: UnitOfWork,
        accounts: Accounts,
        q: Annotated[str, Parameter(max_length=200)] = "",
        number: Annotated[int, QueryParameter(name="page", ge=1, le=MAX_PAGE)] = 1,
    ) -> Response[Any]:
        users, total = await accounts.list_users(
            uow.session, q or None, ADMIN_PAGE_SIZE, (number - 1) * ADMIN_PAGE_SIZE
        )
        return page.render(
            "admin/users.html",
            section="admin",
            users=users,
            total=total,
            q=q,
            number=number,
            pages=-(-total // ADMIN_PAGE_SIZE),
        )

    @get("/users/{user_id:uuid}")
    async def user(
        self, user_id: uuid.UUID, page: Page, admin: Visitor, uow: UnitOfWork, accounts: Accounts
    ) -> Response[Any]:
        user = await accounts.get_user(uow.session, user_id)
        now = datetime.now(UTC)
        usage = await reports.subscriber_usage(uow.session, user_id, now)
        events, _ = await accounts.security_events(uow.session, subject=user_id, limit=20, offset=0)
        subscription = await billing.subscription_state(uow.session, user_id)
        view = await identity_view(uow.session, user_id)
        return page.render(
            "admin/user.html",
            section="admin",
            user=user,
            subscription=subscription,
            progress=progress_of(view, subscription),
            action=view and operator_action(view),
            usage=usage,
            plan=PLANS.get(usage.plan or ""),
            **charts.usage_chart(usage, now),
            keys=await api_keys.list_keys(uow.session, user_id),
            events=events,
        )

    @get("/provisioning")
    async def provisioning_issues(
        self, page: Page, admin: Visitor, uow: UnitOfWork, accounts: Accounts
    ) -> Response[Any]:
        """What ``GET /v1/admin/provisioning`` lists: failed, stuck or captcha-waiting identities."""
        rows = [  # a few as a rule; each user is one primary-key lookup
            (
                await accounts.get_user(uow.session, issue.identity.user_id),
                PROBLEMS.get(issue.problem, issue.problem),
                issue.identity,
                operator_action(issue.identity),
            )
            for issue in await identities.issues(uow.session, identities.STUCK_AFTER)
        ]
        return page.render(
            "admin/provisioning.html",
            section="admin",
            rows=rows,
            stuck_minutes=identities.STUCK_AFTER_MINUTES,
        )

    @post("/provisioning/{user_id:uuid}/retry")
    async def retry_provisioning(
        self,
        user_id: uuid.UUID,
        data: Annotated[RetryForm, FORM],
        page: Page,
        admin: Visitor,
        uow: UnitOfWork,
        accounts: Accounts,
    ) -> Response[Any]:
        """``POST /v1/admin/provision/{user_id}`` from a page: provisioning again (a failed or stuck identity,
        or a failed Signal registration), audited with the operator as its actor; the worker does the work."""
        await accounts.get_user(uow.session, user_id)
        await provisioning.provision_by_operator(uow, user_id, admin.user.id)
        await uow.commit()
        back = (
            "/console/admin/provisioning"
            if data.return_to == "provisioning"
            else f"/console/admin/users/{user_id}"
        )
        return page.redirect(f"{back}?notice=provisioning_retried")

    @get("/audit")
    async def audit(
        self,
        page: Page,
        admin: Visitor,
        uow: UnitOfWork,
        accounts: Accounts,
        number: Annotated[int, QueryParameter(name="page", ge=1, le=MAX_PAGE)] = 1,
    ) -> Response[Any]:
        events, total = await accounts.security_events(
            uow.session, limit=ADMIN_PAGE_SIZE, offset=(number - 1) * ADMIN_PAGE_SIZE
        )
        return page.render(
            "admin/audit.html",
            section="admin",
            events=events,
            number=number,
            pages=-(-total // ADMIN_PAGE_SIZE),
        )


console = Router(
    path="/",
    route_handlers=[
        front_door,
        unknown_page,
        AccountPages,
        OverviewPages,
        PlanPages,
        BillingPages,
        IdentityPages,
        KeyPages,
        UsagePages,
        ConnectPages,
        AdminPages,
        create_static_files_router(path="/console/static", directories=[STATIC], name="console-static"),
    ],
    dependencies={"page": Provide(provide_page)},
    middleware=[ConsoleMiddleware],
    exception_handlers=EXCEPTION_HANDLERS,
    include_in_schema=False,
)

ROUTES = [console]
