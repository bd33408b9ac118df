"""Billing routes on the web role."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from decimal import Decimal

from litestar import Controller, Litestar, get, post, put
from litestar.datastructures import State
from litestar.di import Provide
from litestar.status_codes import HTTP_200_OK

from poindexter_cloud.accounts.api_keys import ApiKeyVerifier
from poindexter_cloud.accounts.auth import Principal, provide_session_principal
from poindexter_cloud.accounts.service import Accounts
from poindexter_cloud.billing import reports, service
from poindexter_cloud.billing.schemas import (
    CheckoutStarted,
    PortalSession,
    SpendCap,
    SubscribeRequest,
    SubscriptionInfo,
    UsageInfo,
)
from poindexter_cloud.billing.stripe_adapter import StripeAdapter
from poindexter_cloud.core import audit
from poindexter_cloud.core.db import UnitOfWork
from poindexter_cloud.core.resources import Resources


class BillingController(Controller):
    path = "/v1/billing"
    tags = ["billing"]
    dependencies = {"principal": Provide(provide_session_principal)}

    @put("/spend-cap")
    async def set_spend_cap(
        self, data: SpendCap, principal: Principal, uow: UnitOfWork, verifier: ApiKeyVerifier
    ) -> SpendCap:
        """Cap this month's (and every month's) AI spend; the proxy refuses requests past it with 402."""
        cap = None if data.monthly_cap_usd is None else int(Decimal(str(data.monthly_cap_usd)) * 1_000_000)
        await service.set_spend_cap(uow.session, principal.user_id, cap)
        audit.record(
            uow.session,
            "billing.spend_cap_set",
            actor=principal.user_id,
            subject=principal.user_id,
            cap_microdollars=cap,
        )
        uow.after_commit(lambda: verifier.announce_user_changed(principal.user_id))  # proxies re-read the cap
        await uow.commit()
        return data

    @get("/subscription")
    async def subscription(self, principal: Principal, uow: UnitOfWork) -> SubscriptionInfo:
        """The caller's plan and whether it is active, suspended (and why), canceled or absent."""
        state = await service.subscription_state(uow.session, principal.user_id)
        cap = state.spend_cap_microdollars
        return SubscriptionInfo(
            plan=state.plan,
            status=state.status,
            reason=state.reason,
            current_period_start=state.current_period_start,
            current_period_end=state.current_period_end,
            cancel_at_period_end=state.cancel_at_period_end,
            monthly_cap_usd=None if cap is None else cap / 1_000_000,
            complimentary=state.complimentary,
        )

    @get("/usage")
    async def usage(self, principal: Principal, uow: UnitOfWork) -> UsageInfo:
        """This billing period's usage so far: tokens by model (every field), included tokens used and left,
        overage units and their price at the plan's rates (cents, exact), upstream cost, and messages."""
        return await reports.subscriber_usage(uow.session, principal.user_id, datetime.now(UTC))

    @post("/subscribe", status_code=HTTP_200_OK)
    async def subscribe(
        self,
        data: SubscribeRequest,
        principal: Principal,
        uow: UnitOfWork,
        accounts: Accounts,
        stripe: StripeAdapter,
        resources: Resources,
    ) -> CheckoutStarted:
        """Start a subscription: returns Stripe Checkout's URL. The plan takes effect once Stripe confirms
        the payment (by webhook), never from this request alone. 409 if already subscribed: use the portal."""
        checkout = await service.start_checkout(
            uow, accounts, stripe, resources.settings, principal.user_id, data.plan
        )
        await uow.commit()
        return CheckoutStarted(url=checkout.url, session_id=checkout.id)

    @post("/portal", status_code=HTTP_200_OK)
    async def portal(
        self,
        principal: Principal,
        uow: UnitOfWork,
        accounts: Accounts,
        stripe: StripeAdapter,
        resources: Resources,
    ) -> PortalSession:
        """Stripe's Customer Portal for the caller: change plan or card, see invoices, cancel."""
        url = await service.portal_url(uow.session, accounts, stripe, resources.settings, principal.user_id)
        return PortalSession(url=url)


@asynccontextmanager
async def stripe_lifespan(app: Litestar) -> AsyncIterator[None]:
    """The process's Stripe client (one connection pool), for the billing routes."""
    resources: Resources = app.state.resources
    adapter = StripeAdapter.from_settings(resources.settings)
    app.state.stripe = adapter
    try:
        yield
    finally:
        await adapter.close()


def provide_stripe(state: State) -> StripeAdapter:
    adapter: StripeAdapter = state.stripe
    return adapter


ROUTES = [BillingController]
DEPENDENCIES = {"stripe": Provide(provide_stripe, sync_to_thread=False)}
LIFESPAN = [stripe_lifespan]
