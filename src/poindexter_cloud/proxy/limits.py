"""Rate limits and the monthly spending cap of the AI proxy, exact across any number of proxy replicas.

Per request the proxy makes two Redis round trips, each one EVALSHA of a Lua script (redis-py's `Script`
loads it again by itself after a NOSCRIPT, e.g. when Redis restarted):

* `Limiter.reserve` checks the request against the per-key and per-user requests-per-minute and
  tokens-per-minute limits of the user's plan and the optional monthly spending cap and, only when all of
  them allow it, reserves one request, the estimated tokens (input plus max_tokens) and the estimated spend.
  A refusal raises `RateLimited` and reserves nothing.
* `Limiter.settle` replaces the reservation by the real usage (giving back an over-estimate, charging an
  under-estimate, which cannot be refused after the fact) and, in the same script, XADDs the usage event to
  a stream, so the durable usage record and the settlement are one round trip and happen together or not.

Algorithm: a sliding log per scope (the key, and the user across all their keys). All state lives in Redis
and every decision is taken inside the script, so replicas share one exact limit (N replicas do not get N
times the limit) and concurrent requests cannot overshoot: 50 simultaneous requests against a limit of 10
get exactly 10 grants. Time is Redis's clock (`TIME`), not the replicas', unless a test passes `now`.

Keys, all under `poindexter:limits:{<user id>}` (hash-tagged: one cluster slot per user); per scope
(`:k:<key id>` for the key, `:u` for the user):

* `…:w`: sorted set, reservation id -> time granted (ms). Its size is the requests of the last minute; an
  entry leaves once it is a full window old (an entry granted at t counts during [t, t + 60 s)). Sliding,
  so there is no 2x burst at a fixed window's boundary.
* `…:h`: sorted set of token holdings, scored by the time each holding ends. A reservation in flight is
  `f:<id>:<estimated tokens>:<estimated spend>:<YYYYMM>`, ending at its deadline (grant +
  `reservation_ttl`, default 10 minutes since streams can be long); once settled it is replaced by
  `s:<id>:<tokens used>`, ending when its minute does. The amounts live in the members, so a purge reads
  what it gives back in one range query instead of a lookup per entry.

and per user: `:sums` (a hash: each key's tokens held, field `k:<key id>`, and the user's, field `u`, so a
check costs O(1), not a walk of the holdings), `:spend:<YYYYMM>` (the month's spend counter) and `:settled`
(recently settled ids, see below). Every key expires on its own once idle for longer than its contents can
matter (renewed at half-life, which costs a PTTL rather than a PEXPIRE per write), so abandoned keys and
users leave nothing behind.

Tokens are attributed to the time the request was granted. A reservation still in flight keeps holding its
estimate after its minute has passed (a stream may run for minutes); once settled it holds its real usage
until its minute ends, or nothing if the minute has already ended. Every reserve first purges, in both
scopes, log entries older than the window and reservations past their deadline (a proxy that died
mid-request): an expired reservation gives back its tokens and spend at once; its request still counts
until its minute ends, since the request did happen. A reservation settled after it expired is still
recorded (stream and spend), and its tokens count if its minute has not ended.

Settling is idempotent by reservation id: the first settle removes its in-flight holdings; a repeat finds
them gone before the deadline and does nothing. After the deadline, "gone" could also mean
expired (and a late first settle must still be recorded), so a settle made less than `settle_dedupe`
(default 60 s) before its deadline, or after it, also leaves its id in the per-user `:settled` set for
`settle_dedupe`: a repeat within that time never appends a second usage event.

Monthly spend: a per-user counter per calendar month (UTC) of settled spend plus reserved in-flight spend,
in micro-dollars, kept whether or not a cap is set (so a cap set mid-month applies to the month so far). A
request is refused with scope "spend" when a cap is set and counter + estimate would exceed it; retry_after
is then the time until the month ends. A reservation's spend is settled into the month it was reserved in.

Refusals: when several limits refuse, the one that lasts longest is reported. `retry_after` is exact for
requests (when the entry that frees the slot leaves the window) and, for tokens, the time at which enough
settled or in-flight tokens leave the window, assuming in-flight ones settle by then. A request whose
estimate alone exceeds a token limit (or any request against a limit of 0) can never pass: it is refused
with `permanent=True`, which the proxy may answer as too large rather than as 429.

Cost (`python bench/limits.py`: 2-core machine, Valkey 8.1, 389 users with two keys each at 2,000
requests/s, so a user's log holds ~300 entries): 90-115 µs of Redis time per request for reserve and settle
together, 31.5 commands inside the scripts. Each command costs ~2.5 µs from Lua all told, so the layout is
built to need few: the previous one (a hash entry per holding, separate in-flight and spend-held sets) ran
54.5 commands in 134-157 µs.

Upgrading from that layout: `:w` is unchanged, so request limits hold across old and new replicas during a
rollout; token sums are kept apart until the last old replica is gone (the old `:a`, `:p` and
`:spend-held` keys then expire on their own).

Guarantees: no overshoot of the request limits; token sums exceed a limit only by the amount in-flight
requests use beyond their estimates (input-token estimates are approximate; output is capped by
max_tokens). Not covered: Redis itself failing over to a replica that missed the last writes, and Redis
Cluster with a stream outside the user's slot (the usage stream is one key; on a cluster it would need the
user's hash tag).
"""

from __future__ import annotations

import calendar
import functools
import math
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any, Literal
from uuid import UUID

import msgspec
from redis.asyncio import Redis

from poindexter_cloud.billing.plans import Plan
from poindexter_cloud.core.redis_scripts import ScriptClient, Sent

PREFIX = "poindexter:limits:"

Scope = Literal["key", "user", "spend"]
Dimension = Literal["requests", "tokens", "spend"]

# The scripts' refusal codes: (scope, dimension).
_REFUSALS: dict[int, tuple[Scope, Dimension]] = {
    1: ("key", "requests"),
    2: ("key", "tokens"),
    3: ("user", "requests"),
    4: ("user", "tokens"),
    5: ("spend", "spend"),
}

_MONTH_KEEP_MS = 40 * 24 * 3600 * 1000  # a month's spend counter outlives its month

# Shared by both scripts: the current time in ms (ARGV "now" or Redis's clock) and key renewal.
_COMMON_LUA = """
local rid = ARGV[1]
local now = tonumber(ARGV[2])
if now < 0 then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local window = tonumber(ARGV[3])

-- keep a key for ttl ms after its last write; PTTL is cheaper than a PEXPIRE, so renew only at half-life
local function touch(key, ttl)
  if redis.call('PTTL', key) < ttl / 2 then redis.call('PEXPIRE', key, ttl) end
end
"""

# KEYS: the key's and the user's logs, the key's and the user's holdings, the sums hash, the month's spend.
_RESERVE_LUA = (
    _COMMON_LUA
    + """
local ttl = tonumber(ARGV[4])
local tokens = tonumber(ARGV[5])
local spend = tonumber(ARGV[6])
local cap = tonumber(ARGV[11])
local month = ARGV[12]
local keep = tonumber(ARGV[13])
local L = {KEYS[1], KEYS[2]}
local H = {KEYS[3], KEYS[4]}
local S, M = KEYS[5], KEYS[6]
local field = {ARGV[15], 'u'}
local rpm = {tonumber(ARGV[7]), tonumber(ARGV[8])}
local tpm = {tonumber(ARGV[9]), tonumber(ARGV[10])}

local held = redis.call('HMGET', S, field[1], field[2])
local sum = {tonumber(held[1] or '0'), tonumber(held[2] or '0')}
local changed = false

-- purge: holdings that ended (settled ones a window after their grant, in-flight ones at their deadline)
-- give back their tokens, expired in-flight ones also their spend; requests a window old leave the log
for s = 1, 2 do
  local ended = redis.call('ZRANGEBYSCORE', H[s], '-inf', now)
  if #ended > 0 then
    redis.call('ZREMRANGEBYSCORE', H[s], '-inf', now)
    for i = 1, #ended do
      local state, amount = string.match(ended[i], '^(%a):[^:]+:(%d+)')
      sum[s] = sum[s] - tonumber(amount)
      if s == 2 and state == 'f' then
        local given, reserved_in = string.match(ended[i], ':(%d+):(%d+)$')
        if given ~= '0' and reserved_in == month then redis.call('DECRBY', M, given) end
      end
    end
    sum[s] = math.max(sum[s], 0)
    changed = true
  end
  redis.call('ZREMRANGEBYSCORE', L[s], '-inf', now - window)
end

local count = {redis.call('ZCARD', L[1]), redis.call('ZCARD', L[2])}

-- refusals: report the one lasting longest (priority 2: can never pass, 1: spend, 0: the rest)
local code, retry, priority = 0, 0, -1
local function refuse(c, r, p)
  if p > priority or (p == priority and r > retry) then code, retry, priority = c, r, p end
end
for s = 1, 2 do
  if count[s] + 1 > rpm[s] then
    if rpm[s] <= 0 then
      refuse(2 * s - 1, window, 2)
    else
      local i = count[s] - rpm[s]
      local e = redis.call('ZRANGE', L[s], i, i, 'WITHSCORES')
      refuse(2 * s - 1, e[2] and (tonumber(e[2]) + window - now) or window, 0)
    end
  end
  if sum[s] + tokens > tpm[s] then
    if tokens > tpm[s] or tpm[s] <= 0 then
      refuse(2 * s, window, 2)
    else
      -- when enough tokens leave the window, oldest grant first (in-flight ones assumed settled by then)
      local need = sum[s] + tokens - tpm[s]
      local e = redis.call('ZRANGE', H[s], 0, -1, 'WITHSCORES')
      local leaving = {}
      for j = 1, #e, 2 do
        local state, amount = string.match(e[j], '^(%a):[^:]+:(%d+)')
        local leaves = tonumber(e[j + 1])
        if state == 'f' then leaves = leaves - ttl + window end
        if leaves > now then leaving[#leaving + 1] = {leaves, tonumber(amount)} end
      end
      table.sort(leaving, function(x, y) return x[1] < y[1] end)
      local freed, at = 0, window
      for j = 1, #leaving do
        freed = freed + leaving[j][2]
        if freed >= need then at = leaving[j][1] - now; break end
      end
      refuse(2 * s, at, 0)
    end
  end
end
if cap >= 0 and tonumber(redis.call('GET', M) or '0') + spend > cap then refuse(5, 0, 1) end

local deadline = now + ttl
if code == 0 then
  -- in flight until settled or its deadline: holds the estimate, and (user scope) the spend of its month
  local member = ARGV[16]
  for s = 1, 2 do
    redis.call('ZADD', L[s], now, rid)
    touch(L[s], keep)
    redis.call('ZADD', H[s], deadline, member)
    touch(H[s], keep)
    count[s] = count[s] + 1
    sum[s] = sum[s] + tokens
  end
  changed = changed or tokens ~= 0
  if spend ~= 0 then
    redis.call('INCRBY', M, spend)
    touch(M, tonumber(ARGV[14]))
  end
end
if changed then
  redis.call('HSET', S, field[1], sum[1], field[2], sum[2])
  touch(S, keep)
end

-- the narrower scope of each dimension, for the response headers
local function reset(Ls)
  local e = redis.call('ZRANGE', Ls, 0, 0, 'WITHSCORES')
  if e[2] then return tonumber(e[2]) + window - now end
  return 0
end
local rs = (rpm[1] - count[1] <= rpm[2] - count[2]) and 1 or 2
if code == 1 then rs = 1 elseif code == 3 then rs = 2 end
local ts = (tpm[1] - sum[1] <= tpm[2] - sum[2]) and 1 or 2
if code == 2 then ts = 1 elseif code == 4 then ts = 2 end
local request_reset = reset(L[rs])
local token_reset = (ts == rs) and request_reset or reset(L[ts])
if code == 2 * rs - 1 then request_reset = math.max(request_reset, retry) end
if code == 2 * ts then token_reset = math.max(token_reset, retry) end
return {code, retry, (priority == 2) and 1 or 0, now, deadline,
  rpm[rs], math.max(rpm[rs] - count[rs], 0), request_reset,
  tpm[ts], math.max(tpm[ts] - sum[ts], 0), token_reset}
"""
)

# KEYS: the key's holdings, the user's holdings, the sums hash, the month's spend counter, the settled set,
# and optionally the usage stream.
_SETTLE_LUA = (
    _COMMON_LUA
    + """
local actual = tonumber(ARGV[4])
local spent = tonumber(ARGV[5])
local deadline = tonumber(ARGV[6])
local horizon = tonumber(ARGV[7])
local member = ARGV[9]
local reserved = tonumber(ARGV[10])
local reserved_spend = tonumber(ARGV[11])
local granted = tonumber(ARGV[12])
local keep = tonumber(ARGV[14])
local H = {KEYS[1], KEYS[2]}
local S, M, D = KEYS[3], KEYS[4], KEYS[5]
local field = {ARGV[13], 'u'}
-- tokens: the real usage while the request's minute lasts, nothing after it. The settled holding goes in
-- before the in-flight one leaves, so a holdings key never empties here and keeps its expiry.
local counts = actual > 0 and granted > now - window
local settled = 's:' .. rid .. ':' .. ARGV[4]
local added, held = {0, 0}, {false, false}
for s = 1, 2 do
  if counts then added[s] = redis.call('ZADD', H[s], granted + window, settled) end
  held[s] = redis.call('ZREM', H[s], member) == 1
  if counts and not held[s] then touch(H[s], keep) end
end
if not held[1] and not held[2] then
  -- gone from both scopes: settled already, unless it expired (only possible after its deadline)
  if now < deadline or redis.call('ZSCORE', D, rid) then
    for s = 1, 2 do
      if added[s] == 1 then redis.call('ZREM', H[s], settled) end
    end
    return 0
  end
end
if now + horizon > deadline then
  -- a repeat of this settle could arrive after the deadline: remember the id for a while
  redis.call('ZREMRANGEBYSCORE', D, '-inf', now)
  redis.call('ZADD', D, now + horizon, rid)
  redis.call('PEXPIRE', D, horizon)
end
local written = false
for s = 1, 2 do
  local delta = (counts and actual or 0) - (held[s] and reserved or 0)
  if delta ~= 0 then
    redis.call('HINCRBY', S, field[s], delta)
    written = true
  end
end
if written then touch(S, keep) end

-- spend: replace the held estimate (already given back if the reservation expired) by the real spend
local delta = spent - (held[2] and reserved_spend or 0)
if delta ~= 0 then
  redis.call('INCRBY', M, delta)
  touch(M, tonumber(ARGV[8]))
end

if KEYS[6] then
  local fields = {}
  for i = 15, #ARGV do fields[#fields + 1] = ARGV[i] end
  redis.call('XADD', KEYS[6], '*', unpack(fields))
end
return 1
"""
)


class Limits(msgspec.Struct, frozen=True):
    requests_per_minute_per_key: int
    requests_per_minute_per_user: int
    tokens_per_minute_per_key: int
    tokens_per_minute_per_user: int
    monthly_spend_cap_microdollars: int | None = None


def limits_for(plan: Plan, spend_cap: int | None) -> Limits:
    """The limits of ``plan`` with the user's monthly spending cap (micro-dollars, None for no cap)."""
    return Limits(
        requests_per_minute_per_key=plan.requests_per_minute_per_key,
        requests_per_minute_per_user=plan.requests_per_minute_per_user,
        tokens_per_minute_per_key=plan.tokens_per_minute_per_key,
        tokens_per_minute_per_user=plan.tokens_per_minute_per_user,
        monthly_spend_cap_microdollars=spend_cap,
    )


class LimitState(msgspec.Struct):
    """What the rate-limit headers report: per dimension, the narrower of the key's and the user's limit.

    ``*_reset`` is the seconds from ``at`` (Unix time of the decision, Redis's clock) until the window next
    frees capacity, or until the refused request could pass. ``retry_after`` is set on a refusal.
    """

    requests_limit: int
    requests_remaining: int
    requests_reset: float
    tokens_limit: int
    tokens_remaining: int
    tokens_reset: float
    at: float
    retry_after: int | None = None


class Reservation(msgspec.Struct):
    """A granted reservation, to hand back to `Limiter.settle`."""

    id: str
    keys: tuple[str, ...]  # the Redis keys settle needs
    tokens: int  # reserved
    spend_microdollars: int  # reserved
    granted_ms: int  # Redis's time of the grant
    deadline_ms: int  # after it, the reservation expires unless settled
    holding: str  # its member in both scopes' holdings while in flight
    key_field: str  # the key's field in the user's sums hash
    state: LimitState


class RateLimited(Exception):
    """The request was refused; nothing was reserved."""

    def __init__(
        self,
        retry_after: int,
        scope: Scope,
        dimension: Dimension,
        headers_state: LimitState,
        permanent: bool = False,
    ) -> None:
        super().__init__(f"{scope} {dimension} limit reached, retry after {retry_after}s")
        self.retry_after = retry_after
        self.scope: Scope = scope
        self.dimension: Dimension = dimension
        self.headers_state = headers_state
        # True when the request can never pass (its estimate alone exceeds the limit, or the limit is 0)
        self.permanent = permanent


class Limiter:
    """Reserves and settles requests against `Limits`; one per process, safe to share between tasks."""

    def __init__(
        self,
        redis: Redis,
        *,
        reservation_ttl: float = 600.0,
        window: float = 60.0,
        settle_dedupe: float = 60.0,
        prefix: str = PREFIX,
        scripts: ScriptClient | None = None,
    ) -> None:
        self._reserve_script: Callable[..., Awaitable[Any]] = redis.register_script(_RESERVE_LUA)
        settle = redis.register_script(_SETTLE_LUA)
        self._send_settle: Callable[..., Sent] = lambda keys, args: Sent(None, settle(keys=keys, args=args))
        if scripts is not None:  # the proxy's pipelined connection (core/redis_scripts.py)
            self._reserve_script = scripts.register(_RESERVE_LUA)
            self._send_settle = scripts.register(_SETTLE_LUA).send
        self._prefix = prefix
        self._window_ms = round(window * 1000)
        self._ttl_ms = round(reservation_ttl * 1000)
        self._dedupe_ms = round(settle_dedupe * 1000)
        # a scope's keys outlive their contents: renewed at half-life, they live >= max(window, ttl) + 1 s
        self._keep_ms = 2 * (max(self._window_ms, self._ttl_ms) + 1000)
        self._month: tuple[float, float, str] = (0.0, 0.0, "")  # [start, end) of the cached month, YYYYMM

    def _month_of(self, when: float) -> tuple[str, float]:
        """``when``'s UTC month as YYYYMM, and the Unix time the month ends."""
        start, end, name = self._month
        if not start <= when < end:
            moment = time.gmtime(when)
            year, month = moment.tm_year, moment.tm_mon
            start = calendar.timegm((year, month, 1, 0, 0, 0))
            end = calendar.timegm((year + month // 12, month % 12 + 1, 1, 0, 0, 0))
            name = f"{year:04d}{month:02d}"
            self._month = (start, end, name)
        return name, end

    async def reserve(
        self,
        key_id: UUID,
        user_id: UUID,
        limits: Limits,
        estimated_tokens: int,
        estimated_spend_microdollars: int,
        now: float | None = None,
    ) -> Reservation:
        """Reserve one request, ``estimated_tokens`` and the estimated spend, or raise `RateLimited`.

        ``now`` (Unix seconds) replaces Redis's clock, for tests; use it for every call on the same keys.
        """
        if estimated_tokens < 0 or estimated_spend_microdollars < 0:
            raise ValueError("estimates cannot be negative")
        month, month_end = self._month_of(time.time() if now is None else now)
        user = f"{self._prefix}{{{user_id.hex}}}"
        key = f"{user}:k:{key_id.hex}"
        keys = (
            key + ":w",
            user + ":u:w",
            key + ":h",
            user + ":u:h",
            user + ":sums",
            f"{user}:spend:{month}",
            user + ":settled",
        )
        key_field = "k:" + key_id.hex
        rid = secrets.token_hex(8)
        holding = f"f:{rid}:{estimated_tokens}:{estimated_spend_microdollars}:{month}"
        cap = limits.monthly_spend_cap_microdollars
        result: list[int] = await self._reserve_script(
            keys=keys[:6],
            args=(
                rid,
                -1 if now is None else round(now * 1000),
                self._window_ms,
                self._ttl_ms,
                estimated_tokens,
                estimated_spend_microdollars,
                limits.requests_per_minute_per_key,
                limits.requests_per_minute_per_user,
                limits.tokens_per_minute_per_key,
                limits.tokens_per_minute_per_user,
                -1 if cap is None else cap,
                month,
                self._keep_ms,
                _MONTH_KEEP_MS,
                key_field,
                holding,
            ),
        )
        code, retry_ms, permanent, at_ms, deadline_ms, rl, rr, rreset, tl, tr, treset = result
        at = at_ms / 1000
        state = LimitState(rl, rr, rreset / 1000, tl, tr, treset / 1000, at)
        if code:
            scope, dimension = _REFUSALS[code]
            retry_after = max(1, math.ceil(month_end - at if code == 5 else retry_ms / 1000))
            state.retry_after = retry_after
            raise RateLimited(retry_after, scope, dimension, state, bool(permanent))
        return Reservation(
            rid,
            keys[2:],
            estimated_tokens,
            estimated_spend_microdollars,
            at_ms,
            deadline_ms,
            holding,
            key_field,
            state,
        )

    def settle(
        self,
        reservation: Reservation,
        actual_tokens: int,
        actual_spend_microdollars: int,
        stream: str | None = None,
        stream_fields: dict[str, bytes] | None = None,
        now: float | None = None,
    ) -> Sent:
        """Settle the reservation to the real usage and, with ``stream``, XADD ``stream_fields`` to it;
        await the result for Redis's answer.

        One script call does both. A repeat for the same reservation does nothing (and appends nothing).
        On the proxy's script client the call is queued for this event-loop pass's write (`Sent.delivered`).
        """
        if actual_tokens < 0 or actual_spend_microdollars < 0:
            raise ValueError("usage cannot be negative")
        keys: tuple[str, ...] = reservation.keys
        args: list[Any] = [
            reservation.id,
            -1 if now is None else round(now * 1000),
            self._window_ms,
            actual_tokens,
            actual_spend_microdollars,
            reservation.deadline_ms,
            self._dedupe_ms,
            _MONTH_KEEP_MS,
            reservation.holding,
            reservation.tokens,
            reservation.spend_microdollars,
            reservation.granted_ms,
            reservation.key_field,
            self._keep_ms,
        ]
        if stream is not None:
            if not stream_fields:
                raise ValueError("a stream event needs at least one field")
            keys = (*keys, stream)
            for field, value in stream_fields.items():
                args.append(field)
                args.append(value)
        return self._send_settle(keys, args)


def _rfc3339(when: float) -> bytes:
    return _rfc3339_second(math.ceil(when))


@functools.lru_cache(maxsize=256)
def _rfc3339_second(second: int) -> bytes:
    """strftime costs over a microsecond, and every Anthropic-family answer formats two reset times, which
    fall on the few seconds a one-minute window can end at."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(second)).encode()


def _duration(seconds: float) -> bytes:
    """A duration the way OpenAI writes them (Go's): 20ms, 1s, 1.5s, 6m0s, 1h0m0s."""
    ms = max(0, math.ceil(seconds * 1000))
    if ms < 1000:
        return b"%dms" % ms
    hours, rest = divmod(ms, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    whole, fraction = divmod(rest, 1000)
    secs = f"{whole}.{fraction:03d}".rstrip("0") if fraction else str(whole)
    if hours:
        return f"{hours}h{minutes}m{secs}s".encode()
    if minutes:
        return f"{minutes}m{secs}s".encode()
    return f"{secs}s".encode()


def anthropic_headers(state: LimitState) -> list[tuple[bytes, bytes]]:
    """Anthropic's rate-limit headers (resets as RFC 3339 times), plus retry-after on a refusal."""
    headers = [
        (b"anthropic-ratelimit-requests-limit", b"%d" % state.requests_limit),
        (b"anthropic-ratelimit-requests-remaining", b"%d" % state.requests_remaining),
        (b"anthropic-ratelimit-requests-reset", _rfc3339(state.at + state.requests_reset)),
        (b"anthropic-ratelimit-tokens-limit", b"%d" % state.tokens_limit),
        (b"anthropic-ratelimit-tokens-remaining", b"%d" % state.tokens_remaining),
        (b"anthropic-ratelimit-tokens-reset", _rfc3339(state.at + state.tokens_reset)),
    ]
    if state.retry_after is not None:
        headers.append((b"retry-after", b"%d" % state.retry_after))
    return headers


def openai_headers(state: LimitState) -> list[tuple[bytes, bytes]]:
    """OpenAI's rate-limit headers (resets as durations such as 1s or 6m0s), plus retry-after on a refusal."""
    headers = [
        (b"x-ratelimit-limit-requests", b"%d" % state.requests_limit),
        (b"x-ratelimit-remaining-requests", b"%d" % state.requests_remaining),
        (b"x-ratelimit-reset-requests", _duration(state.requests_reset)),
        (b"x-ratelimit-limit-tokens", b"%d" % state.tokens_limit),
        (b"x-ratelimit-remaining-tokens", b"%d" % state.tokens_remaining),
        (b"x-ratelimit-reset-tokens", _duration(state.tokens_reset)),
    ]
    if state.retry_after is not None:
        headers.append((b"retry-after", b"%d" % state.retry_after))
    return headers
