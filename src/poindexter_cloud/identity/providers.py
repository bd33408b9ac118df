"""The web role's identity API's per-process services: its rate limiter, and the provider clients it shares,
made on first use (the Google key may have to be fetched from the sandbox, which need not be up when the web
role starts) and closed when the role stops.

The clients are the provisioning module's adapters (``provisioning/*_adapter.py``): one adapter per
provider, used by both modules.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from litestar import Litestar
from litestar.datastructures import State

from poindexter_cloud.core.resources import Resources
from poindexter_cloud.core.settings import Settings
from poindexter_cloud.identity.limits import Limiter
from poindexter_cloud.provisioning.errors import ProviderRefused
from poindexter_cloud.provisioning.google_adapter import GoogleAdapter
from poindexter_cloud.provisioning.signal_adapter import SignalAdapter
from poindexter_cloud.provisioning.telnyx_adapter import TelnyxAdapter


class IdentityProviders:
    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._telnyx: TelnyxAdapter | None = None
        self._signal: SignalAdapter | None = None
        self._google_lock = asyncio.Lock()

    async def google(self) -> GoogleAdapter:
        async with self._google_lock:  # one key fetch, not one per concurrent first request
            return await GoogleAdapter.for_settings(self._settings)

    def telnyx(self) -> TelnyxAdapter:
        if self._telnyx is None:
            self._telnyx = TelnyxAdapter.from_settings(self._settings)
        return self._telnyx

    def signal(self) -> SignalAdapter:
        if self._signal is None:
            try:
                self._signal = SignalAdapter.from_settings(self._settings)
            except ValueError:  # SIGNAL_API_URL unset in production
                raise ProviderRefused(
                    "signal", "Signal is not configured (SIGNAL_API_URL is not set)."
                ) from None
        return self._signal

    async def close(self) -> None:
        telnyx, signal, self._telnyx, self._signal = self._telnyx, self._signal, None, None
        if telnyx is not None:
            await telnyx.close()
        if signal is not None:
            await signal.close()


@asynccontextmanager
async def identity_lifespan(app: Litestar) -> AsyncIterator[None]:
    resources: Resources = app.state.resources
    providers = IdentityProviders(resources.settings)
    app.state.identity_providers = providers
    app.state.identity_limiter = Limiter(resources.redis)
    try:
        yield
    finally:
        await providers.close()


def provide_providers(state: State) -> IdentityProviders:
    providers: IdentityProviders = state.identity_providers
    return providers


def provide_limiter(state: State) -> Limiter:
    limiter: Limiter = state.identity_limiter
    return limiter
