"""Identity routes on the web role: the caller's identity and where its provisioning stands."""

from __future__ import annotations

from litestar import get
from litestar.di import Provide

from poindexter_cloud.accounts.auth import Principal, authenticate
from poindexter_cloud.core.db import UnitOfWork
from poindexter_cloud.core.errors import NotFound
from poindexter_cloud.identity import service
from poindexter_cloud.identity.schemas import IdentityView


class NoIdentity(NotFound):
    code = "no_identity"


@get("/v1/identity", tags=["identity"], dependencies={"principal": Provide(authenticate)})
async def my_identity(principal: Principal, uow: UnitOfWork) -> IdentityView:
    """Your identity (by login session or API key): its status, mailbox, number, Signal and the steps
    still pending; 404 before a subscription starts provisioning it."""
    identity = await service.get(uow.session, principal.user_id)
    if identity is None:
        raise NoIdentity("There is no identity yet: it is provisioned once a subscription is paid.")
    return service.view(identity)


ROUTES = [my_identity]
