"""Which plan a user is on, cached per process and dropped with the API-key cache's user invalidations.

Billing announces subscription changes as user changes (``ApiKeyVerifier.announce_user_changed``), so a
payment failure reaches every proxy replica within a second, like a revoked key.
"""

from __future__ import annotations

import time
import uuid

from poindexter_cloud.accounts.api_keys import ApiKeyVerifier
from poindexter_cloud.billing import service as billing
from poindexter_cloud.core.db import Database

TTL_SECONDS = 60.0


class Entitlements:
    def __init__(self, db: Database, verifier: ApiKeyVerifier) -> None:
        self._db = db
        self._cache: dict[uuid.UUID, tuple[billing.Entitlement, float]] = {}
        verifier.on_user_changed(self._forget)

    def _forget(self, user_id: uuid.UUID | None) -> None:
        if user_id is None:
            self._cache.clear()
        else:
            self._cache.pop(user_id, None)

    async def of(self, user_id: uuid.UUID) -> billing.Entitlement:
        now = time.monotonic()
        cached = self._cache.get(user_id)
        if cached is not None and cached[1] > now:
            return cached[0]
        async with self._db.sessions() as session:
            found = await billing.entitlement(session, user_id)
        self._cache[user_id] = (found, now + TTL_SECONDS)
        return found
