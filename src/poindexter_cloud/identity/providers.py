"""The web role's identity API's per-process services: its rate limiter, and the process's provider clients
(``integrations.clients``, shared with the worker's jobs under ``serve --role all``), held while the role
runs, so they are closed when it stops.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from litestar import Litestar
from litestar.datastructures import State

from poindexter_cloud.core.resources import Resources
from poindexter_cloud.identity.limits import Limiter
from poindexter_cloud.integrations.clients import CLIENTS, ProviderClients


@asynccontextmanager
async def identity_lifespan(app: Litestar) -> AsyncIterator[None]:
    resources: Resources = app.state.resources
    app.state.identity_limiter = Limiter(resources.redis)
    async with CLIENTS.held():
        app.state.provider_clients = CLIENTS.get(resources.settings)
        yield


def provide_providers(state: State) -> ProviderClients:
    providers: ProviderClients = state.provider_clients
    return providers


def provide_limiter(state: State) -> Limiter:
    limiter: Limiter = state.identity_limiter
    return limiter
