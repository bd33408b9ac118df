"""Proxy rate limits and spend caps: exact across replicas, against a real Redis.

Every test uses fresh key and user ids, so tests share the Redis database without meeting. Tests that need
time to pass give `now` explicitly (a fake clock), the rest run on Redis's clock.
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest
from redis.asyncio import Redis

from poindexter_cloud.billing.plans import PLANS, plan_named
from poindexter_cloud.proxy.limits import (
    Limiter,
    Limits,
    LimitState,
    RateLimited,
    Reservation,
    anthropic_headers,
    limits_for,
    openai_headers,
)

BIG = 1_000_000_000
T0 = 1_750_000_000.0  # a fake clock, mid-June 2025


def limits(
    rpm_key: int = BIG, rpm_user: int = BIG, tpm_key: int = BIG, tpm_user: int = BIG, cap: int | None = None
) -> Limits:
    return Limits(rpm_key, rpm_user, tpm_key, tpm_user, cap)


def ids() -> tuple[uuid.UUID, uuid.UUID]:
    return uuid.uuid4(), uuid.uuid4()


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_url)
    yield client
    await client.aclose()


@pytest.fixture
def limiter(redis: Redis) -> Limiter:
    return Limiter(redis)


async def refused(coro: Any) -> RateLimited:
    with pytest.raises(RateLimited) as caught:
        await coro
    return caught.value


def test_plans_and_their_limits() -> None:
    basic, pro = plan_named("basic"), plan_named("pro")
    assert (basic.monthly_price_cents, basic.included_tokens) == (5_000, 5_000_000)
    assert (pro.monthly_price_cents, pro.included_tokens) == (25_000, 30_000_000)
    assert basic.overage_microdollars(1_000_000, 1_000_000) == 18_000_000  # $3 + $15
    assert pro.overage_microdollars(1_000_000, 1_000_000) == 14_500_000  # $2.50 + $12
    assert pro.overage_microdollars(1, 0) == 3  # 2.5 micro-dollars, rounded up
    assert pro.requests_per_minute_per_key == 5 * basic.requests_per_minute_per_key
    assert limits_for(basic, None) == Limits(60, 120, 200_000, 400_000, None)
    assert limits_for(pro, 5_000_000).monthly_spend_cap_microdollars == 5_000_000
    assert set(PLANS) == {"basic", "pro"}
    with pytest.raises(ValueError):
        plan_named("enterprise")


async def test_requests_per_minute_refuses_the_one_over_the_limit(limiter: Limiter) -> None:
    key, user = ids()
    for n in range(5):
        reservation = await limiter.reserve(key, user, limits(rpm_key=5), 10, 0)
        assert reservation.state.requests_remaining == 4 - n
        assert reservation.state.requests_limit == 5
    error = await refused(limiter.reserve(key, user, limits(rpm_key=5), 10, 0))
    assert (error.scope, error.dimension, error.permanent) == ("key", "requests", False)
    assert 1 <= error.retry_after <= 60
    assert error.headers_state.requests_remaining == 0
    assert error.headers_state.retry_after == error.retry_after


async def test_the_window_slides_and_retry_after_is_exact(limiter: Limiter) -> None:
    key, user = ids()
    rule = limits(rpm_key=2)
    await limiter.reserve(key, user, rule, 1, 0, now=T0)
    await limiter.reserve(key, user, rule, 1, 0, now=T0 + 10)
    error = await refused(limiter.reserve(key, user, rule, 1, 0, now=T0 + 20))
    assert error.retry_after == 40  # the first request leaves the window at T0 + 60
    await refused(limiter.reserve(key, user, rule, 1, 0, now=T0 + 59.9))
    granted = await limiter.reserve(key, user, rule, 1, 0, now=T0 + 60)
    assert granted.state.requests_remaining == 0
    assert granted.state.requests_reset == pytest.approx(10)  # the T0 + 10 one leaves next
    error = await refused(limiter.reserve(key, user, rule, 1, 0, now=T0 + 61))
    assert error.retry_after == 9


async def test_tokens_per_minute_refuses_an_estimate_that_would_exceed_and_settle_gives_back(
    limiter: Limiter,
) -> None:
    key, user = ids()
    rule = limits(tpm_key=1000)
    first = await limiter.reserve(key, user, rule, 700, 0)
    assert first.state.tokens_remaining == 300
    error = await refused(limiter.reserve(key, user, rule, 400, 0))
    assert (error.scope, error.dimension) == ("key", "tokens")
    assert error.retry_after >= 1
    assert error.headers_state.tokens_remaining == 300
    await limiter.settle(first, 200, 0)  # used 200 of the 700 reserved
    second = await limiter.reserve(key, user, rule, 400, 0)
    assert second.state.tokens_remaining == 1000 - 200 - 400
    await limiter.settle(second, 900, 0)  # used more than estimated: charged, not refused
    error = await refused(limiter.reserve(key, user, rule, 1, 0))
    assert error.headers_state.tokens_remaining == 0


async def test_tokens_leave_the_window_a_minute_after_the_request_but_not_while_in_flight(
    limiter: Limiter,
) -> None:
    key, user = ids()
    rule = limits(tpm_key=1000)
    done = await limiter.reserve(key, user, rule, 500, 0, now=T0)
    await limiter.settle(done, 400, 0, now=T0 + 1)
    streaming = await limiter.reserve(key, user, rule, 500, 0, now=T0 + 2)
    error = await refused(limiter.reserve(key, user, rule, 500, 0, now=T0 + 3))
    assert error.retry_after == 57  # when the settled 400 leave with the T0 request
    # after T0 + 60 the settled request is gone; the one still streaming holds its estimate past its minute
    assert (await limiter.reserve(key, user, rule, 500, 0, now=T0 + 61)).state.tokens_remaining == 0
    await refused(limiter.reserve(key, user, rule, 1, 0, now=T0 + 90))
    await limiter.settle(streaming, 450, 0, now=T0 + 91)  # its minute is over: it holds nothing more
    assert (await limiter.reserve(key, user, rule, 500, 0, now=T0 + 92)).state.tokens_remaining == 0


async def test_an_estimate_above_the_limit_is_refused_as_permanent(limiter: Limiter) -> None:
    key, user = ids()
    error = await refused(limiter.reserve(key, user, limits(tpm_key=1000, rpm_key=5), 1001, 0))
    assert (error.scope, error.dimension, error.permanent) == ("key", "tokens", True)


async def test_fifty_concurrent_requests_against_a_limit_of_ten_get_exactly_ten(limiter: Limiter) -> None:
    key, user = ids()
    results = await asyncio.gather(
        *(limiter.reserve(key, user, limits(rpm_key=10), 100, 0) for _ in range(50)), return_exceptions=True
    )
    granted = [r for r in results if isinstance(r, Reservation)]
    refusals = [r for r in results if isinstance(r, RateLimited)]
    assert (len(granted), len(refusals)) == (10, 40)
    assert sorted(r.state.requests_remaining for r in granted) == list(range(10))


async def test_two_replicas_share_one_limit_exactly(redis_url: str) -> None:
    key, user = ids()
    replicas = [Redis.from_url(redis_url), Redis.from_url(redis_url)]
    try:
        limiters = [Limiter(replicas[0]), Limiter(replicas[1])]
        rule = limits(rpm_key=15, tpm_key=BIG)
        results = await asyncio.gather(
            *(limiters[n % 2].reserve(key, user, rule, 10, 0) for n in range(40)), return_exceptions=True
        )
        granted = [r for r in results if isinstance(r, Reservation)]
        assert len(granted) == 15
        assert all(isinstance(r, RateLimited) for r in results if not isinstance(r, Reservation))
        # tokens too: a budget of 100 reserved 10 at a time from both replicas admits exactly 10
        key2, user2 = ids()
        rule = limits(tpm_key=100)
        results = await asyncio.gather(
            *(limiters[n % 2].reserve(key2, user2, rule, 10, 0) for n in range(30)), return_exceptions=True
        )
        assert sum(isinstance(r, Reservation) for r in results) == 10
        # a settlement made through one replica frees capacity seen by the other
        first = next(r for r in results if isinstance(r, Reservation))
        await limiters[0].settle(first, 0, 0)
        await limiters[1].reserve(key2, user2, rule, 10, 0)
    finally:
        for client in replicas:
            await client.aclose()


async def test_the_user_limit_spans_the_users_keys(limiter: Limiter) -> None:
    key_a, user = ids()
    key_b = uuid.uuid4()
    rule = limits(rpm_key=10, rpm_user=3, tpm_key=1000, tpm_user=1500)
    await limiter.reserve(key_a, user, rule, 100, 0)
    await limiter.reserve(key_a, user, rule, 100, 0)
    third = await limiter.reserve(key_b, user, rule, 100, 0)
    assert third.state.requests_remaining == 0  # the user's, narrower than key b's 9
    error = await refused(limiter.reserve(key_b, user, rule, 100, 0))
    assert (error.scope, error.dimension) == ("user", "requests")
    # tokens: two keys of one user, each within its own limit, together over the user's
    key_c, user_c = ids()
    rule = limits(tpm_key=1000, tpm_user=1500)
    await limiter.reserve(key_c, user_c, rule, 900, 0)
    other = uuid.uuid4()
    state = (await limiter.reserve(other, user_c, rule, 500, 0)).state
    assert (state.tokens_limit, state.tokens_remaining) == (1500, 100)  # the user's, narrower than the key's
    error = await refused(limiter.reserve(other, user_c, rule, 200, 0))
    assert (error.scope, error.dimension) == ("user", "tokens")


async def test_an_unsettled_reservation_expires_and_frees_its_tokens_and_spend(redis: Redis) -> None:
    limiter = Limiter(redis, reservation_ttl=0.3)
    key, user = ids()
    rule = limits(tpm_key=1000, cap=1000)
    await limiter.reserve(key, user, rule, 1000, 1000)  # the proxy "dies" and never settles
    error = await refused(limiter.reserve(key, user, rule, 1, 1))
    assert error.dimension in {"tokens", "spend"}
    await asyncio.sleep(0.4)
    reservation = await limiter.reserve(key, user, rule, 1000, 1000)
    assert reservation.state.tokens_remaining == 0
    assert reservation.state.requests_remaining == BIG - 2  # the expired request still counts in its minute


async def test_settling_twice_is_harmless(limiter: Limiter, redis: Redis) -> None:
    key, user = ids()
    stream = f"test-usage-{uuid.uuid4().hex}"
    rule = limits(tpm_key=1000, cap=10_000)
    reservation = await limiter.reserve(key, user, rule, 600, 5_000)
    await limiter.settle(reservation, 100, 1_000, stream, {"n": b"1"})
    await limiter.settle(reservation, 100, 1_000, stream, {"n": b"2"})
    await limiter.settle(reservation, 999, 9_000, stream, {"n": b"3"})
    assert await redis.xlen(stream) == 1
    state = (await limiter.reserve(key, user, rule, 900, 9_000)).state
    assert state.tokens_remaining == 0  # 100 + 900
    await redis.delete(stream)


async def test_a_settle_after_expiry_is_recorded_once(redis: Redis) -> None:
    limiter = Limiter(redis, reservation_ttl=5)
    key, user = ids()
    stream = f"test-usage-{uuid.uuid4().hex}"
    rule = limits(cap=1_000)
    stale = await limiter.reserve(key, user, rule, 10, 600, now=T0)
    await limiter.reserve(key, user, rule, 10, 0, now=T0 + 6)  # purges the expired reservation
    await limiter.settle(stale, 10, 700, stream, {"n": b"1"}, now=T0 + 7)  # the spend is real: recorded
    await limiter.settle(stale, 10, 700, stream, {"n": b"2"}, now=T0 + 8)
    assert await redis.xlen(stream) == 1
    error = await refused(limiter.reserve(key, user, rule, 10, 301, now=T0 + 9))
    assert error.scope == "spend"
    await limiter.reserve(key, user, rule, 10, 300, now=T0 + 9)
    # a reservation settled just after its deadline but before any purge, then repeated
    late = await limiter.reserve(key, user, limits(), 10, 0, now=T0 + 10)
    await limiter.settle(late, 10, 0, stream, {"n": b"3"}, now=T0 + 16)
    await limiter.settle(late, 10, 0, stream, {"n": b"4"}, now=T0 + 17)
    assert await redis.xlen(stream) == 2
    await redis.delete(stream)


async def test_every_key_a_user_leaves_expires_on_its_own(redis: Redis) -> None:
    limiter = Limiter(redis, reservation_ttl=0.3, window=1.0)
    key, user = ids()
    stream = f"test-usage-{uuid.uuid4().hex}"

    async def keys_without_expiry() -> list[bytes]:
        found = [name async for name in redis.scan_iter(match=f"poindexter:limits:{{{user.hex}}}*")]
        assert found
        return [name for name in found if await redis.pttl(name) < 0]

    done = await limiter.reserve(key, user, limits(cap=10_000), 10, 100)
    await limiter.settle(done, 8, 80, stream, {"n": b"1"})
    assert await keys_without_expiry() == []
    # A reservation outlives its deadline (its proxy stalled); a refused request on its key purges it,
    # which empties the key's holdings; the late settle, still within the minute, holds its tokens again.
    other = uuid.uuid4()
    stalled = await limiter.reserve(other, user, limits(rpm_key=1), 10, 100)
    await asyncio.sleep(0.35)
    await refused(limiter.reserve(other, user, limits(rpm_key=1), 10, 100))
    await limiter.settle(stalled, 10, 90, stream, {"n": b"2"})
    assert await redis.xlen(stream) == 2
    assert await keys_without_expiry() == []
    await redis.delete(stream)


async def test_settle_appends_the_usage_event_in_the_same_call(
    limiter: Limiter, redis: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    key, user = ids()
    stream = f"test-usage-{uuid.uuid4().hex}"
    warm = await limiter.reserve(key, user, limits(), 10, 0)
    await limiter.settle(warm, 10, 0)  # both scripts are loaded now
    reservation = await limiter.reserve(key, user, limits(), 10, 0)
    sent: list[Any] = []
    execute: Any = redis.execute_command

    async def counting(*args: Any, **options: Any) -> Any:
        sent.append(args[0])
        return await execute(*args, **options)

    monkeypatch.setattr(redis, "execute_command", counting)
    fields = {"user_id": user.bytes, "input_tokens": b"7", "model": b"claude-sonnet"}
    await limiter.settle(reservation, 10, 25, stream, fields)
    assert sent == ["EVALSHA"]
    entries: Any = await redis.xrange(stream)
    assert len(entries) == 1
    assert entries[0][1] == {k.encode(): v for k, v in fields.items()}
    await redis.delete(stream)


async def test_the_spend_cap_refuses_with_scope_spend(limiter: Limiter) -> None:
    key, user = ids()
    rule = limits(cap=1_000)
    first = await limiter.reserve(key, user, rule, 10, 600)
    error = await refused(limiter.reserve(key, user, rule, 10, 600))
    assert (error.scope, error.dimension, error.permanent) == ("spend", "spend", False)
    now = datetime.now(UTC)
    month_end = datetime(now.year + now.month // 12, now.month % 12 + 1, 1, tzinfo=UTC)
    assert abs(error.retry_after - (month_end - now).total_seconds()) < 5
    await limiter.settle(first, 10, 100)  # cheaper than estimated
    await limiter.reserve(key, user, rule, 10, 900)  # 100 + 900 = the cap
    await refused(limiter.reserve(key, user, rule, 10, 1))
    # no cap: spend is still counted, so a cap set later sees the month so far
    await limiter.reserve(key, user, limits(), 10, 5_000)
    await refused(limiter.reserve(key, user, limits(cap=5_999), 10, 0))


def test_header_builders() -> None:
    at = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC).timestamp()
    state = LimitState(60, 59, 1.0, 200_000, 150_000, 360.0, at)
    assert anthropic_headers(state) == [
        (b"anthropic-ratelimit-requests-limit", b"60"),
        (b"anthropic-ratelimit-requests-remaining", b"59"),
        (b"anthropic-ratelimit-requests-reset", b"2025-01-02T03:04:06Z"),
        (b"anthropic-ratelimit-tokens-limit", b"200000"),
        (b"anthropic-ratelimit-tokens-remaining", b"150000"),
        (b"anthropic-ratelimit-tokens-reset", b"2025-01-02T03:10:05Z"),
    ]
    assert openai_headers(state) == [
        (b"x-ratelimit-limit-requests", b"60"),
        (b"x-ratelimit-remaining-requests", b"59"),
        (b"x-ratelimit-reset-requests", b"1s"),
        (b"x-ratelimit-limit-tokens", b"200000"),
        (b"x-ratelimit-remaining-tokens", b"150000"),
        (b"x-ratelimit-reset-tokens", b"6m0s"),
    ]
    refused_state = LimitState(60, 0, 12.5, 200_000, 0, 0.02, at, retry_after=13)
    assert (b"retry-after", b"13") in anthropic_headers(refused_state)
    openai = dict(openai_headers(refused_state))
    assert (openai[b"retry-after"], openai[b"x-ratelimit-reset-requests"]) == (b"13", b"12.5s")
    assert openai[b"x-ratelimit-reset-tokens"] == b"20ms"
    assert dict(openai_headers(LimitState(1, 1, 3725.25, 1, 1, 0, at)))[b"x-ratelimit-reset-requests"] == (
        b"1h2m5.25s"
    )


async def test_headers_from_a_live_decision_are_sane(limiter: Limiter) -> None:
    key, user = ids()
    plan_limits = limits_for(plan_named("basic"), None)
    reservation = await limiter.reserve(key, user, plan_limits, 1_000, 0)
    headers = dict(anthropic_headers(reservation.state))
    assert headers[b"anthropic-ratelimit-requests-remaining"] == b"59"
    assert headers[b"anthropic-ratelimit-tokens-remaining"] == b"199000"
    reset = headers[b"anthropic-ratelimit-requests-reset"].decode()
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", reset)
    seconds = datetime.fromisoformat(reset).timestamp() - time.time()
    assert 55 <= seconds <= 62
    assert dict(openai_headers(reservation.state))[b"x-ratelimit-reset-tokens"] == b"1m0s"
