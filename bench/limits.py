"""What the AI proxy's rate-limit scripts cost Redis per request, in the steady state of a busy service.

    python bench/limits.py

Uses REDIS_URL when set, otherwise starts an embedded Valkey in a temporary folder. Redis must allow
CONFIG RESETSTAT (the embedded server and a local one do); the keys it writes have a prefix of their own and
are removed at the end.

389 users with two API keys each (the proxy benchmark's population) send 2,000 requests/s round-robin on a
fake clock (`now`), so every log holds a full minute: ~150 entries per key, ~300 per user, and each request
purges the holdings that ended. After a minute and five seconds of such traffic (130,000 requests, made 32
at a time), 10,000 more are measured: each one `Limiter.reserve` and, eight requests later, `Limiter.settle`
with an 18-field usage event, as the proxy does. Printed: Redis's own time per request (INFO commandstats,
EVALSHA), the commands the scripts ran per request, and this process's CPU per reserve + settle pair.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
import uuid
from collections import deque
from pathlib import Path

from redis.asyncio import Redis

from poindexter_cloud.core.embedded import EmbeddedRedis
from poindexter_cloud.core.redis_scripts import ScriptClient
from poindexter_cloud.proxy.limits import Limiter, Limits, Reservation

USERS = 389
REQUESTS_PER_SECOND = 2_000
WARMUP_REQUESTS = 130_000
MEASURED_REQUESTS = 10_000
IN_FLIGHT = 8  # a request settles this many requests after it was reserved
BATCH = 32
LIMITS = Limits(300, 600, 2_000_000, 4_000_000, None)
EVENT = {f"field_{i}": b"x" * 20 for i in range(18)}
PREFIX = "poindexter-bench:limits:"  # apart from a live service's keys, and removed at the end
STREAM = PREFIX + "usage"


async def traffic(limiter: Limiter, requests: int, start: int, t0: float) -> None:
    users = [uuid.UUID(int=i + 1) for i in range(USERS)]
    keys = [(uuid.UUID(int=10_000 + i), users[i // 2]) for i in range(2 * USERS)]
    open_: deque[Reservation] = deque()
    for first in range(start, start + requests, BATCH):
        numbers = range(first, min(first + BATCH, start + requests))
        now = [t0 + n / REQUESTS_PER_SECOND for n in numbers]
        granted = await asyncio.gather(
            *(
                limiter.reserve(*keys[n % len(keys)], LIMITS, 500, 1_000, now=at)
                for n, at in zip(numbers, now, strict=True)
            )
        )
        open_.extend(granted)
        due = [open_.popleft() for _ in range(max(0, len(open_) - IN_FLIGHT))]
        await asyncio.gather(*(limiter.settle(r, 400, 800, STREAM, EVENT, now=now[-1]) for r in due))


async def forget(redis: Redis) -> None:
    names = [name async for name in redis.scan_iter(match=PREFIX + "*", count=1000)]
    for at in range(0, len(names), 1000):
        await redis.delete(*names[at : at + 1000])


async def run(url: str) -> None:
    redis = Redis.from_url(url)
    scripts = ScriptClient(url)
    limiter = Limiter(redis, scripts=scripts, prefix=PREFIX)
    try:
        await forget(redis)
        t0 = time.time()
        await traffic(limiter, WARMUP_REQUESTS, 0, t0)
        await redis.delete(STREAM)
        await redis.config_resetstat()
        cpu = time.process_time()
        await traffic(limiter, MEASURED_REQUESTS, WARMUP_REQUESTS, t0)
        cpu = time.process_time() - cpu
        stats = await redis.info("commandstats")
        user_log = f"{PREFIX}{{{uuid.UUID(int=1).hex}}}:u:w"
        print(f"\nrate-limit scripts, steady state ({(await redis.info('server'))['redis_version']}):")
        print(f"  a user's log holds {await redis.zcard(user_log)} entries")
        evalsha = stats.pop("cmdstat_evalsha")
        print(f"  Redis time per request (reserve + settle): {evalsha['usec'] / MEASURED_REQUESTS:.1f} µs")
        inner = {name.removeprefix("cmdstat_"): s for name, s in stats.items() if "config" not in name}
        calls = sum(s["calls"] for s in inner.values()) / MEASURED_REQUESTS
        usec = sum(s["usec"] for s in inner.values()) / MEASURED_REQUESTS
        print(f"  commands per request inside the scripts: {calls:.1f} ({usec:.1f} µs of it in the commands)")
        for name, s in sorted(inner.items(), key=lambda item: -item[1]["usec"]):
            per_request = s["calls"] / MEASURED_REQUESTS
            print(f"    {name:<18} {per_request:5.1f} per request  {s['usec_per_call']:5.2f} µs each")
        print(f"  this process's CPU per reserve + settle: {cpu / MEASURED_REQUESTS * 1e6:.1f} µs\n")
    finally:
        await forget(redis)
        await scripts.close()
        await redis.aclose()


def main() -> None:
    url = os.environ.get("REDIS_URL")
    if url:
        asyncio.run(run(url))
        return
    with tempfile.TemporaryDirectory(prefix="pdx-bench-") as tmp:
        valkey = EmbeddedRedis(Path(tmp) / "valkey")
        valkey.start()
        try:
            asyncio.run(run(valkey.url))
        finally:
            valkey.stop()


if __name__ == "__main__":
    main()
