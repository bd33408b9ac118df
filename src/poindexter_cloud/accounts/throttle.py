"""Login throttling in Redis, per account and per client IP, shared by every web replica.

Failures are counted in a fixed window. The account counter is keyed by a hash of the normalised email, so
an unknown address is throttled exactly like a known one and the answer says nothing about which it is.
"""

from __future__ import annotations

import hashlib

from redis.asyncio import Redis

from poindexter_cloud.accounts.errors import LoginThrottled
from poindexter_cloud.core.settings import Settings

PREFIX = "poindexter:login-failures"


class LoginThrottle:
    def __init__(self, redis: Redis, settings: Settings) -> None:
        self.redis = redis
        self.window = settings.login_throttle_window_seconds
        self.limits = {"account": settings.login_attempts_per_account, "ip": settings.login_attempts_per_ip}

    def _keys(self, email: str, ip: str | None) -> dict[str, str]:
        account = hashlib.sha256(email.strip().lower().encode()).hexdigest()[:32]
        return {"account": f"{PREFIX}:account:{account}", "ip": f"{PREFIX}:ip:{ip or 'unknown'}"}

    async def check(self, email: str, ip: str | None) -> None:
        """429 with Retry-After while either counter is at its limit."""
        keys = self._keys(email, ip)
        async with self.redis.pipeline(transaction=False) as pipe:
            for key in keys.values():
                pipe.get(key)
                pipe.ttl(key)
            results = await pipe.execute()
        for index, kind in enumerate(keys):
            count, ttl = results[2 * index], results[2 * index + 1]
            if count is not None and int(count) >= self.limits[kind]:
                retry_after = max(int(ttl), 1)
                raise LoginThrottled(
                    "Too many failed logins. Try again later.",
                    headers={"Retry-After": str(retry_after)},
                    details={"retry_after": retry_after},
                )

    async def failed(self, email: str, ip: str | None) -> None:
        async with self.redis.pipeline(transaction=True) as pipe:
            for key in self._keys(email, ip).values():
                pipe.incr(key)
                pipe.expire(key, self.window, nx=True)
            await pipe.execute()

    async def succeeded(self, email: str, ip: str | None) -> None:
        """A right password clears the account's counter; the IP's keeps counting (password spraying)."""
        await self.redis.delete(self._keys(email, ip)["account"])
