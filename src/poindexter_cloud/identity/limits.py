"""Per-key, per-operation rate limits of the identity API, exact across every web replica.

Each operation (``OPERATIONS``) has a limit per sliding minute and optionally per sliding day in the plan
(``billing/plans.py``). One Lua script checks every window of the operation and, only if all allow it,
records the call in each, so concurrent calls from any number of replicas never overshoot; time is Redis's
own clock. A window is a sorted set of call ids scored by their time (ms), trimmed as it is read, under
``poindexter:identity-limits:{<credential>}:<operation>:<window>`` (hash-tagged by credential: one cluster
slot) and expiring once idle for a window. A refusal records nothing and says when the first call that
blocks leaves its window: that is ``Retry-After``.

The credential is the API key (``k:<id>``), or the login session (``s:<id>``) for a subscriber's own calls.
"""

from __future__ import annotations

import math
import secrets
from typing import Final, Literal, get_args

from redis.asyncio import Redis

from poindexter_cloud.accounts.auth import Principal
from poindexter_cloud.billing.plans import IdentityLimits, OperationLimit
from poindexter_cloud.identity.errors import OperationRateLimited

Operation = Literal[
    "email_send",
    "email_read",
    "calendar_read",
    "calendar_write",
    "signal_send",
    "signal_read",
    "sms_send",
    "sms_read",
]
OPERATIONS: Final[tuple[Operation, ...]] = get_args(Operation)
PREFIX: Final = "poindexter:identity-limits:"
MINUTE_MS: Final = 60_000
DAY_MS: Final = 86_400_000

# KEYS: one sorted set per window. ARGV: the call's id, then (window ms, limit) per key.
# Returns 0 if the call was recorded, else the ms until it would be allowed.
_TAKE: Final = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local wait = 0
for i, key in ipairs(KEYS) do
  local window = tonumber(ARGV[2 * i])
  local limit = tonumber(ARGV[2 * i + 1])
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now - window)
  local count = redis.call('ZCARD', key)
  if count >= limit then
    local blocking = redis.call('ZRANGE', key, count - limit, count - limit, 'WITHSCORES')
    local free_at = limit > 0 and tonumber(blocking[2]) + window or now + window
    if free_at - now > wait then wait = free_at - now end
  end
end
if wait > 0 then return wait end
for i, key in ipairs(KEYS) do
  redis.call('ZADD', key, now, ARGV[1])
  redis.call('PEXPIRE', key, tonumber(ARGV[2 * i]))
end
return 0
"""


def credential(principal: Principal) -> str:
    if principal.api_key_id is not None:
        return f"k:{principal.api_key_id}"
    return f"s:{principal.session_id}"


def windows(limit: OperationLimit) -> list[tuple[int, int, str]]:
    """(window ms, limit, name) of each window the operation has."""
    found = [(MINUTE_MS, limit.per_minute, "minute")]
    if limit.per_day is not None:
        found.append((DAY_MS, limit.per_day, "day"))
    return found


class Limiter:
    def __init__(self, redis: Redis) -> None:
        self._script = redis.register_script(_TAKE)

    async def take(self, principal: Principal, limits: IdentityLimits, operation: Operation) -> None:
        """Count one call of ``operation``, or raise ``OperationRateLimited`` (with ``Retry-After``)."""
        limit: OperationLimit = getattr(limits, operation)
        scope = credential(principal)
        spans = windows(limit)
        keys = [f"{PREFIX}{{{scope}}}:{operation}:{name}" for _, _, name in spans]
        args: list[str | int] = [secrets.token_hex(8)]
        for window, allowed, _ in spans:
            args += [window, allowed]
        wait_ms = int(await self._script(keys=keys, args=args))
        if wait_ms <= 0:
            return
        retry_after = max(1, math.ceil(wait_ms / 1000))
        raise OperationRateLimited(
            f"This API key's {operation.replace('_', ' ')} limit is reached "
            f"({_described(limit)}); try again in {retry_after} s.",
            headers={"Retry-After": str(retry_after)},
            details={
                "operation": operation,
                "per_minute": limit.per_minute,
                "per_day": limit.per_day,
                "retry_after": retry_after,
            },
        )


def _described(limit: OperationLimit) -> str:
    parts = [f"{limit.per_minute} a minute"]
    if limit.per_day is not None:
        parts.append(f"{limit.per_day} a day")
    return ", ".join(parts)
