"""Which plan a user is on, cached per process and dropped with the API-key cache's user invalidations.

Billing announces subscription changes as user changes (``ApiKeyVerifier.announce_user_changed``), so a
payment failure reaches every proxy replica within a second, like a revoked key. As with keys, a user still
calling in an entry's last quarter has it read again in the background, with the others due then, so
steady traffic never waits for the database; misses of one event-loop pass share a query
(`core.batched_reads`).
"""

from __future__ import annotations

import math
import time
import uuid

from poindexter_cloud.accounts.api_keys import ApiKeyVerifier
from poindexter_cloud.billing import service as billing
from poindexter_cloud.core.batched_reads import BatchedReads
from poindexter_cloud.core.db import Database

# (the entitlement, valid until, background refresh due at (inf: started already)), monotonic seconds
_Entry = tuple[billing.Entitlement, float, float]


class Entitlements:
    TTL_SECONDS: float = 60.0
    REFRESH_AHEAD_SHARE: float = ApiKeyVerifier.REFRESH_AHEAD_SHARE  # refreshed when keys are

    def __init__(self, db: Database, verifier: ApiKeyVerifier) -> None:
        self._db = db
        self._cache: dict[uuid.UUID, _Entry] = {}
        # Bumped by every invalidation: a read that raced one does not cache its (maybe stale) answer.
        self._generation = 0
        self._reads = BatchedReads(self._read, "plans")
        verifier.on_user_changed(self._forget)

    def _forget(self, user_id: uuid.UUID | None) -> None:
        self._generation += 1
        self._reads.forget_reads()
        if user_id is None:
            self._cache.clear()
        else:
            self._cache.pop(user_id, None)

    async def of(self, user_id: uuid.UUID) -> billing.Entitlement:
        now = time.monotonic()
        cached = self._cache.get(user_id)
        if cached is not None and cached[1] > now:
            if cached[2] <= now:
                self._cache[user_id] = (cached[0], cached[1], math.inf)  # one refresh per entry
                self._reads.refresh(user_id)
            return cached[0]
        found = await self._reads.read(user_id)
        assert found is not None  # every user has one, NO_SUBSCRIPTION at least
        return found

    async def _read(self, user_ids: list[uuid.UUID]) -> dict[uuid.UUID, billing.Entitlement]:
        """Read outside a transaction (``Database.reads``): a lone SELECT needs no BEGIN or ROLLBACK."""
        generation = self._generation
        async with self._db.reads() as session:
            found = await billing.entitlements(session, user_ids)
        if generation == self._generation:
            now = time.monotonic()
            ttl = self.TTL_SECONDS
            for user_id, entitlement in found.items():
                self._cache[user_id] = (entitlement, now + ttl, now + ttl * (1 - self.REFRESH_AHEAD_SHARE))
        return found

    async def stop(self) -> None:
        await self._reads.stop()
