"""The provider clients of one process, shared by everything in it that calls a provider: the worker's jobs
and the web role's identity API (both, under ``serve --role all``).

Each client is made on first use, not when a role starts: making an httpx client costs ~20 ms of CPU, more
than most calls take, and the Google key may have to be fetched from the sandbox, which need not be up yet.
A role holds the registry while it runs (``Registry.held``: the worker as a background service, the web role
in its lifespan), and the clients are closed when the last role holding them stops. Clients belong to the
event loop they were made on (httpx's connection pools do), so they are kept per loop and settings.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Final

from poindexter_cloud.core.settings import Settings
from poindexter_cloud.integrations.errors import ProviderRefused
from poindexter_cloud.integrations.google import GoogleAdapter
from poindexter_cloud.integrations.signal import SignalAdapter
from poindexter_cloud.integrations.telnyx import TelnyxAdapter


class ProviderClients:
    """The Google, Telnyx and Signal clients for one ``Settings`` on one event loop."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._google_lock = asyncio.Lock()
        self._telnyx: TelnyxAdapter | None = None
        self._signal: SignalAdapter | None = None

    async def google(self) -> GoogleAdapter:
        """The Google adapter (``GoogleAdapter.for_settings`` keeps it: it holds the key, no connection)."""
        async with self._google_lock:  # one key fetch, not one per concurrent first caller
            return await GoogleAdapter.for_settings(self.settings)

    def telnyx(self) -> TelnyxAdapter:
        if self._telnyx is None:
            self._telnyx = TelnyxAdapter.from_settings(self.settings)
        return self._telnyx

    def signal(self) -> SignalAdapter:
        if self._signal is None:
            try:
                self._signal = SignalAdapter.from_settings(self.settings)
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


class Registry:
    """The process's ``ProviderClients``, one per event loop and settings, and the roles holding them."""

    def __init__(self) -> None:
        self._made: dict[tuple[int, Settings], ProviderClients] = {}
        self._holders: Counter[int] = Counter()

    def get(self, settings: Settings) -> ProviderClients:
        """The clients for ``settings`` on the running loop (made now if there are none yet)."""
        key = (id(asyncio.get_running_loop()), settings)
        clients = self._made.get(key)
        if clients is None:
            clients = self._made[key] = ProviderClients(settings)
        return clients

    @asynccontextmanager
    async def held(self) -> AsyncIterator[None]:
        """Hold the running loop's clients open while a role runs; the last holder to leave closes them."""
        loop = id(asyncio.get_running_loop())
        self._holders[loop] += 1
        try:
            yield
        finally:
            self._holders[loop] -= 1
            if self._holders[loop] == 0:
                del self._holders[loop]
                for key in [key for key in self._made if key[0] == loop]:
                    await self._made.pop(key).close()


CLIENTS: Final = Registry()
