"""Billing routes on the web role."""

from __future__ import annotations

from decimal import Decimal

from litestar import Controller, put
from litestar.di import Provide

from poindexter_cloud.accounts.api_keys import ApiKeyVerifier
from poindexter_cloud.accounts.auth import Principal, provide_session_principal
from poindexter_cloud.billing import service
from poindexter_cloud.billing.schemas import SpendCap
from poindexter_cloud.core import audit
from poindexter_cloud.core.db import UnitOfWork


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


ROUTES = [BillingController]
