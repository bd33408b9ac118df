"""The AI proxy's throughput, added latency, streaming time to first byte and memory, beside two baselines.

    python bench/proxy.py                 # about 2.5 minutes on the 2-core machine
    python bench/proxy.py --profile       # then also samples the proxy with py-spy (+15 s)
    python bench/proxy.py --keep-logs     # and copies the servers' logs to bench/results

Three servers answer the same small Anthropic Messages request (``max_tokens`` 16, non-streaming):

(a) the sandbox upstream itself (``POST /anthropic/v1/messages``), latency 0, unlimited token rate;
(b) ``bench/passthrough.py``: one bare ASGI function forwarding the bytes with one pooled aiohttp session;
(b') the same passthrough on the proxy's own upstream client (``--client proxy``), for scale: the proxy no
    longer uses aiohttp's client, so (c) / (b') is the cost of everything else the proxy does;
(f) the floor: (b') plus only the Redis work issue 5 prescribes per request (``--limits``: the proxy's
    reserve script before forwarding, its settle script with a usage event after), on the proxy's keys,
    for scale: no proxy built to that design can pass it, so (f) / (b) bounds what (c) / (b) can reach;
(c) our proxy, ``poindexter-cloud serve --role proxy`` (one worker process), with real API-key auth, plan
    check, rate limits and metering, against the same sandbox; and (c') the same with the worker stopped
    (SIGSTOP) during the cell, because on this 2-core machine the usage drain competes with the proxy for
    CPU, where in production it runs elsewhere (the events wait in Redis and are drained afterwards).

Every server is a subprocess of its own, one process each, under uvicorn with our roles' options (httptools,
no access log in uvicorn, uvloop); the proxy keeps its defaults (ACCESS_LOG on, LOG_LEVEL info, its log going
to a file). A worker (``serve --role worker``) runs beside them and drains the usage buffer while we measure.
PostgreSQL and Redis come from DATABASE_URL / REDIS_URL when both are set (the database is migrated to head),
otherwise an embedded PostgreSQL (non-durable) and Valkey are started.

Users: API keys are created directly with the accounts service (``create_key``), each user with a 'pro'
subscription row (300 requests/min per key, 600 per user, so two keys per user). The number of keys comes
from an upper bound of the requests the proxy can be sent within one minute (``ASSUMED_MAX_RPS`` times the
seconds of proxy load, plus the other phases' requests) so that no limit is reached; the load generator
rotates through the keys round-robin, after one request per key, before each proxy cell, has put every key
and plan in the proxy's caches (they live a minute). 429s (and every other status) are counted from the
proxy's own ``/metrics`` and reported.

Measured:

* requests/s with p50 and p99 latency at concurrency 1, 16 and 64 for (a), (b), (b'), (f), (c), (c'): 1 s
  warm-up run, then a 5 s measured run per cell; the CPU time each process used during the measured run (per
  request), and the share of the machine other processes used meanwhile (other sessions' tests add noise);
* (c) as a percentage of (b) at each concurrency (goal: at least 75 %), and (c) p50 minus (a) p50 at
  concurrency 1 (goal: under 0.5 ms);
* streaming time to first byte at concurrency 1 (``"stream": true``): the median time to the response head
  and to the first SSE event for (a), (b) (which relays ``text/event-stream`` chunk by chunk) and (c); plus
  the proxy's own ``server-timing: proxy;dur=..`` (its time outside the upstream call) for non-streamed calls;
* the pipeline's stages timed in this process with the proxy's classes and Redis client options: cached
  key verification, cached plan lookup, request head decode, a Redis PING, Limiter.reserve + settle (with
  the Redis server's own time per EVALSHA from INFO commandstats);
* a burst: 400 non-streamed requests sent at the same moment (each on its own connection), by status;
* the proxy's resident memory (RSS, psutil) idle, before, and while 1,000 slow streams are open (the
  sandbox's token rate set to 2/s through ``/anthropic/_control/config``, since the proxy does not forward
  ``x-sandbox-*`` headers; 60 words, so each stream would last 30 s; opened 50 at a time; sampled once every
  stream has had its first event; goal under 300 MB), and the passthrough's under the same load;
* with ``--profile``: py-spy samples the proxy for 8 s at concurrency 64 (``--profile-concurrency``),
  summed by pipeline stage.

Load generator: ``wrk`` (Debian package ``wrk``) with a generated Lua script that holds one prepared request
per API key, one thread. A Python aiohttp client shares the 2 cores with the servers and caps below them:
against the sandbox at concurrency 16 and 64, this script's own aiohttp client (``_loadgen``) reached about
half the requests/s wrk did (3,200 against 5,700-6,500), so it would have measured itself. wrk (C, epoll)
spends 20-50 µs of CPU per request, so the servers get nearly all of the machine. Without wrk the script
falls back to that aiohttp client in its own process and says so; its figures are then lower bounds. The
streaming, latency-sample and memory phases use an aiohttp client in this process: they run at concurrency 1
(or hold idle streams), so it is not the bottleneck there, and it adds the same cost to each server.

Results are printed as a table and written as JSON to ``bench/results/proxy-<timestamp>.json``. The file
descriptor soft limit is raised to the hard limit first (children inherit it). Every subprocess is stopped
on exit, also on Ctrl-C or an error (and dies with this process, via PR_SET_PDEATHSIG, if it is killed).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import json
import math
import os
import platform
import re
import resource
import shutil
import signal
import socket
import statistics
import string
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import psutil

from bench_common import tree_cpu_seconds, usage_event
from passthrough import FLOOR_STREAM

HOST = "127.0.0.1"
MODEL = "claude-sonnet-4-5"
CONCURRENCIES = (1, 16, 64)
SANDBOX_KEY = "sk-ant-sandbox-bench"
SERVERS = ("sandbox", "passthrough", "passthrough-thin", "passthrough-floor", "proxy", "worker")
ASSUMED_MAX_RPS = 5000  # no single Python process here gets near it; the key count is sized for it
KEY_HEADROOM = 1.25
PROXY_ROWS = 2  # (c) and (c'): the proxy's throughput cells all fall within about one minute
TTFB_REQUESTS = 300
TTFB_WARMUP = 30
SAMPLE_REQUESTS = 300
SAMPLE_KEYS = 64  # keys used by the concurrency-1 samples (fewer than the cells' so they stay cached)
STREAMS = 1000
STREAM_WAVE = 50  # streams opened at once while ramping up to STREAMS
BURST = 400  # simultaneous non-streamed requests in the burst check
STAGE_ITERATIONS = 1000
IP = "127.0.0.1"
STREAM_WORDS = 60
STREAM_TOKENS_PER_SECOND = 2.0
FIRST_EVENT_TIMEOUT = 60.0
START_TIMEOUT = 60.0
STOP_TIMEOUT = 15.0
DRAIN_TIMEOUT = 20.0
GOAL_RATIO = 0.75
GOAL_ADDED_MS = 0.5
GOAL_RSS_MB = 300.0
MB = 1024 * 1024

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"

BODY = json.dumps(
    {
        "model": MODEL,
        "max_tokens": 16,
        "messages": [{"role": "user", "content": "Hello, how are you today?"}],
    },
    separators=(",", ":"),
).encode()
STREAM_BODY = json.dumps(
    {
        "model": MODEL,
        "max_tokens": 16,
        "stream": True,
        "messages": [{"role": "user", "content": "Hello, how are you today?"}],
    },
    separators=(",", ":"),
).encode()
SLOW_STREAM_BODY = json.dumps(
    {
        "model": MODEL,
        "max_tokens": STREAM_WORDS + 4,
        "stream": True,
        "messages": [{"role": "user", "content": f"Tell me a long story words={STREAM_WORDS}"}],
    },
    separators=(",", ":"),
).encode()

T = TypeVar("T")

# --- subprocesses ---------------------------------------------------------------------------------------


def _die_with_parent() -> None:
    """In the child before exec: receive SIGTERM when this benchmark process dies, however it dies."""
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def raise_file_limit() -> tuple[int, int]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 65536)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


class Children:
    """The servers this benchmark started, stopped in reverse order (SIGTERM, bounded wait, SIGKILL)."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        with (self.log_dir / f"{name}.log").open("wb") as log:
            proc = subprocess.Popen(
                args,
                env=env,
                cwd=ROOT,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a Ctrl-C reaches only us; we stop them in order
                preexec_fn=_die_with_parent,
            )
        self.procs[name] = proc
        return proc

    def log_tail(self, name: str, lines: int = 30) -> str:
        try:
            text = (self.log_dir / f"{name}.log").read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def check(self, name: str) -> None:
        code = self.procs[name].poll()
        if code is not None:
            raise RuntimeError(f"{name} exited with code {code}:\n{self.log_tail(name)}")

    def stop(self, name: str) -> None:
        proc = self.procs.pop(name, None)
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)

    def kill(self, name: str) -> None:
        proc = self.procs.pop(name, None)
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)

    def stop_all(self) -> None:
        for name in reversed(list(self.procs)):
            self.stop(name)


def wait_http(children: Children, name: str, url: str) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        children.check(name)
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status < 500:
                    return
        except OSError as exc:
            if isinstance(exc, urllib.error.HTTPError) and exc.code < 500:
                return
        time.sleep(0.1)
    raise RuntimeError(f"{name} did not answer {url} within {START_TIMEOUT} s:\n{children.log_tail(name)}")


def wait_port(children: Children, name: str, port: int) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        children.check(name)
        with socket.socket() as sock:
            sock.settimeout(0.5)
            if sock.connect_ex((HOST, port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(
        f"{name} did not listen on {port} within {START_TIMEOUT} s:\n{children.log_tail(name)}"
    )


def run_async(factory: Callable[[], Coroutine[Any, Any, T]]) -> T:
    try:
        import uvloop

        loop_factory: Any = uvloop.new_event_loop
    except ImportError:
        loop_factory = None
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        return runner.run(factory())


# --- CPU accounting -------------------------------------------------------------------------------------


class CpuMeter:
    """CPU seconds used by each named process (with its children, e.g. PostgreSQL's backends), and by the
    load generator (reaped children of this process)."""

    def __init__(self) -> None:
        self.pids: dict[str, int] = {}

    def add(self, name: str, pid: int | None) -> None:
        if pid is not None:
            self.pids[name] = pid

    def snapshot(self) -> dict[str, float]:
        seen: dict[str, float] = {}
        for name, pid in self.pids.items():
            seen[name] = tree_cpu_seconds(pid)
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        seen["client"] = usage.ru_utime + usage.ru_stime
        seen[MACHINE] = machine_busy_seconds()
        return seen

    @staticmethod
    def delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
        """CPU seconds per process between two snapshots, plus "others": every other process's."""
        used = {name: round(after[name] - before.get(name, 0.0), 3) for name in after if name != MACHINE}
        others = after[MACHINE] - before[MACHINE] - sum(used.values())
        used["others"] = round(max(0.0, others), 3)
        return used


MACHINE = "_machine"


def machine_busy_seconds() -> float:
    """CPU seconds spent on anything but idle, summed over every core, since boot."""
    times = psutil.cpu_times()
    return float(sum(times) - times.idle - getattr(times, "iowait", 0.0))


def busy_elsewhere(seconds: float = 1.0) -> float:
    """Percent of the machine busy before we start anything (other sessions' tests, builds)."""
    before = machine_busy_seconds()
    time.sleep(seconds)
    return 100 * (machine_busy_seconds() - before) / (seconds * (psutil.cpu_count() or 1))


# --- load generators ------------------------------------------------------------------------------------

WRK_LUA = string.Template(
    """
local keys = {$keys}
local path = "$path"
local body = [[$body]]
local prepared = {}
local index = 1

function init(args)
  for i, key in ipairs(keys) do
    prepared[i] = wrk.format("POST", path, {
      ["Content-Type"] = "application/json",
      ["anthropic-version"] = "2023-06-01",
      ["x-api-key"] = key,
    }, body)
  end
end

function request()
  local r = prepared[index]
  index = index % #prepared + 1
  return r
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK_JSON {"requests":%.0f,"duration_us":%.0f,"connect":%.0f,"read":%.0f,"write":%.0f,' ..
    '"status":%.0f,"timeout":%.0f,"p50_us":%.0f,"p99_us":%.0f,"mean_us":%.1f,"max_us":%.0f}\\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(99), latency.mean, latency.max))
end
"""
)


class Wrk:
    name = "wrk"

    def __init__(self, executable: str, work: Path) -> None:
        self.executable = executable
        self.work = work

    def run(self, base: str, path: str, keys: list[str], concurrency: int, seconds: int) -> dict[str, Any]:
        script = self.work / f"wrk-{uuid.uuid4().hex[:8]}.lua"
        keys_lua = ", ".join(f'"{key}"' for key in keys)
        script.write_text(WRK_LUA.substitute(keys=keys_lua, path=path, body=BODY.decode()))
        args = [self.executable, "-t1", f"-c{concurrency}", f"-d{seconds}s", "--timeout", "5s"]
        args += ["-s", str(script), base]
        done = subprocess.run(args, capture_output=True, text=True, timeout=seconds + 30, check=False)
        line = next((x for x in done.stdout.splitlines() if x.startswith("WRK_JSON ")), None)
        if done.returncode != 0 or line is None:
            raise RuntimeError(f"wrk failed ({done.returncode}): {done.stdout}\n{done.stderr}")
        raw = json.loads(line.removeprefix("WRK_JSON "))
        seconds_run = raw["duration_us"] / 1e6
        return {
            "requests": int(raw["requests"]),
            "seconds": round(seconds_run, 3),
            "rps": raw["requests"] / seconds_run,
            "p50_ms": raw["p50_us"] / 1000,
            "p99_ms": raw["p99_us"] / 1000,
            "mean_ms": raw["mean_us"] / 1000,
            "non_2xx": int(raw["status"]),
            "socket_errors": int(raw["connect"] + raw["read"] + raw["write"] + raw["timeout"]),
        }


class PythonClient:
    """Fallback: a closed-loop aiohttp client in its own process (``bench/proxy.py _loadgen``)."""

    name = "aiohttp (fallback: wrk not found; figures are lower bounds)"

    def __init__(self, work: Path) -> None:
        self.work = work

    def run(self, base: str, path: str, keys: list[str], concurrency: int, seconds: int) -> dict[str, Any]:
        spec = self.work / f"loadgen-{uuid.uuid4().hex[:8]}.json"
        spec.write_text(
            json.dumps({"url": base + path, "keys": keys, "concurrency": concurrency, "seconds": seconds})
        )
        done = subprocess.run(
            [sys.executable, __file__, "_loadgen", str(spec)],
            capture_output=True,
            text=True,
            timeout=seconds + 60,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"load generator failed: {done.stderr}")
        result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
        return result


def loadgen_main(spec_path: str) -> None:
    spec = json.loads(Path(spec_path).read_text())

    async def go() -> dict[str, Any]:
        latencies: list[float] = []
        statuses: Counter[int] = Counter()
        errors = 0
        keys = spec["keys"]
        deadline = time.perf_counter() + spec["seconds"]
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=connector, auto_decompress=False) as session:

            async def worker(offset: int) -> None:
                nonlocal errors
                n = offset
                while (now := time.perf_counter()) < deadline:
                    n += 1
                    headers = {
                        "content-type": "application/json",
                        "anthropic-version": "2023-06-01",
                        "x-api-key": keys[n % len(keys)],
                    }
                    try:
                        async with session.post(spec["url"], data=BODY, headers=headers) as response:
                            await response.read()
                            statuses[response.status] += 1
                    except aiohttp.ClientError:
                        errors += 1
                        continue
                    latencies.append(time.perf_counter() - now)

            started = time.perf_counter()
            await asyncio.gather(*(worker(i * 7919) for i in range(spec["concurrency"])))
            elapsed = time.perf_counter() - started
        latencies.sort()
        count = len(latencies)
        return {
            "requests": count,
            "seconds": round(elapsed, 3),
            "rps": count / elapsed,
            "p50_ms": latencies[count // 2] * 1000 if count else math.nan,
            "p99_ms": latencies[min(count - 1, int(count * 0.99))] * 1000 if count else math.nan,
            "mean_ms": statistics.fmean(latencies) * 1000 if count else math.nan,
            "non_2xx": sum(n for status, n in statuses.items() if status >= 400),
            "socket_errors": errors,
        }

    print(json.dumps(run_async(go)))


# --- users and keys -------------------------------------------------------------------------------------


def keys_needed(duration: int, warmup: int, streams: int) -> tuple[int, int, int]:
    """(users, keys per user, keys) so that the busiest minute of the run stays within the pro plan."""
    from poindexter_cloud.billing.plans import PLANS

    pro = PLANS["pro"]
    per_user = max(1, pro.requests_per_minute_per_user // pro.requests_per_minute_per_key)
    requests = ASSUMED_MAX_RPS * PROXY_ROWS * len(CONCURRENCIES) * (duration + warmup)
    requests += 2 * (TTFB_REQUESTS + TTFB_WARMUP) + SAMPLE_REQUESTS + streams + BURST
    # The concurrency-1 samples and the in-process timings use SAMPLE_KEYS keys only: keep each of them
    # within half its limit, the other half being the cells' share.
    per_sample_key = (
        TTFB_REQUESTS + TTFB_WARMUP + SAMPLE_REQUESTS + 2 * (STAGE_ITERATIONS + 100)
    ) / SAMPLE_KEYS
    if per_sample_key > pro.requests_per_minute_per_key / 2:
        raise ValueError("too few SAMPLE_KEYS for the sample sizes")
    requests += 2 * (2 * STAGE_ITERATIONS + 100)  # the in-process reserve/settle timings, two clients
    rewarms = PROXY_ROWS * len(CONCURRENCIES)  # every key is sent one request before each proxy cell
    by_requests = requests / (pro.requests_per_minute_per_key - rewarms)
    tokens_each = len(SLOW_STREAM_BODY) // 3 + 1 + STREAM_WORDS + 4  # the largest estimate we reserve
    by_tokens = requests * tokens_each / pro.tokens_per_minute_per_key
    keys = math.ceil(max(by_requests, by_tokens) * KEY_HEADROOM)
    users = math.ceil(keys / per_user)
    return users, per_user, users * per_user


async def seed(database_url: str, settings: Any, users: int, per_user: int) -> tuple[list[str], list[str]]:
    """Users with a 'pro' subscription and ``per_user`` API keys each: (key secrets, user ids)."""
    from sqlalchemy import text

    from poindexter_cloud.accounts.api_keys import create_key
    from poindexter_cloud.core.db import Database

    run = uuid.uuid4().hex[:8]
    db = Database.from_url(database_url, pool_size=1)
    keys: list[str] = []
    user_ids: list[str] = []
    try:
        async with db.unit_of_work() as uow:
            for i in range(users):
                user_id = (
                    await uow.session.execute(
                        text("INSERT INTO users (email, password_hash) VALUES (:e, 'x') RETURNING id"),
                        {"e": f"bench-{run}-{i}@example.com"},
                    )
                ).scalar_one()
                await uow.session.execute(
                    text(
                        "INSERT INTO subscriptions (user_id, stripe_subscription_id, stripe_price_id, plan, "
                        "status) VALUES (:u, :s, 'price_bench', 'pro', 'active')"
                    ),
                    {"u": user_id, "s": f"sub_bench_{run}_{i}"},
                )
                for k in range(per_user):
                    keys.append((await create_key(uow.session, settings, user_id, f"bench-{k}")).secret)
                user_ids.append(str(user_id))
            await uow.commit()
    finally:
        await db.dispose()
    return keys, user_ids


# --- streaming and latency samples (aiohttp in this process) --------------------------------------------


def _headers(key: str) -> dict[str, str]:
    return {"content-type": "application/json", "anthropic-version": "2023-06-01", "x-api-key": key}


async def ttfb(url: str, keys: list[str]) -> dict[str, Any]:
    """Concurrency 1, streamed: median ms to the response head and to the first body bytes (first event)."""
    head: list[float] = []
    first: list[float] = []
    statuses: Counter[int] = Counter()
    connector = aiohttp.TCPConnector(limit=1)
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout, auto_decompress=False) as session:
        for i in range(TTFB_WARMUP + TTFB_REQUESTS):
            started = time.perf_counter()
            async with session.post(url, data=STREAM_BODY, headers=_headers(keys[i % len(keys)])) as response:
                got_head = time.perf_counter()
                chunk = await response.content.readany()
                got_first = time.perf_counter()
                await response.read()  # the rest of the stream
            statuses[response.status] += 1
            # The zero-latency sandbox may have written the whole stream before the first read: the first
            # event then comes with all the rest, and still counts.
            if i >= TTFB_WARMUP and response.status == 200 and chunk.startswith(b"event:"):
                head.append(got_head - started)
                first.append(got_first - started)
    return {
        "samples": len(first),
        "head_ms": statistics.median(head) * 1000 if head else math.nan,
        "first_event_ms": statistics.median(first) * 1000 if first else math.nan,
        "first_event_p99_ms": sorted(first)[int(len(first) * 0.99)] * 1000 if first else math.nan,
        "statuses": dict(statuses),
    }


async def warm_keys(url: str, keys: list[str]) -> None:
    """One request per key, eight at a time, so that the proxy has verified and cached every key and plan."""
    connector = aiohttp.TCPConnector(limit=8)
    async with aiohttp.ClientSession(connector=connector, auto_decompress=False) as session:

        async def one(key: str) -> None:
            async with session.post(url, data=BODY, headers=_headers(key)) as response:
                await response.read()

        await asyncio.gather(*(one(key) for key in keys))


async def latency_sample(url: str, keys: list[str]) -> dict[str, Any]:
    """Concurrency 1, non-streamed: client p50, and the medians of the server-timing entries if any."""
    total: list[float] = []
    timing: dict[str, list[float]] = {}
    connector = aiohttp.TCPConnector(limit=1)
    async with aiohttp.ClientSession(connector=connector, auto_decompress=False) as session:
        for i in range(TTFB_WARMUP + SAMPLE_REQUESTS):
            started = time.perf_counter()
            async with session.post(url, data=BODY, headers=_headers(keys[i % len(keys)])) as response:
                await response.read()
            if i < TTFB_WARMUP or response.status != 200:
                continue
            total.append(time.perf_counter() - started)
            for name, value in re.findall(r"(\w+);dur=([\d.]+)", response.headers.get("server-timing", "")):
                timing.setdefault(name, []).append(float(value))
    return {
        "samples": len(total),
        "client_p50_ms": statistics.median(total) * 1000 if total else math.nan,
        "server_timing_p50_ms": {name: statistics.median(values) for name, values in timing.items()},
    }


async def hold_streams(url: str, keys: list[str], count: int, pid: int) -> dict[str, Any]:
    """Open ``count`` slow streams, ``STREAM_WAVE`` at a time (each wave once the previous one has had its
    first events); once every stream has had its first event (or failed), sample ``pid``'s RSS."""
    process = psutil.Process(pid)
    progress: Counter[str] = Counter()  # "opened": had a first event; "settled": opened or failed
    statuses: Counter[int] = Counter()
    errors: Counter[str] = Counter()
    wave_done = asyncio.Event()
    target = 0
    connector = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=30, sock_read=60)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout, auto_decompress=False) as session:

        def settled() -> None:
            progress["settled"] += 1
            if progress["settled"] >= target:
                wave_done.set()

        async def one(i: int) -> None:
            headers = _headers(keys[i % len(keys)])
            try:
                async with session.post(url, data=SLOW_STREAM_BODY, headers=headers) as response:
                    statuses[response.status] += 1
                    if response.status == 200:
                        await response.content.readany()
                        progress["opened"] += 1
                    settled()
                    async for _ in response.content.iter_any():  # keep reading until cancelled
                        pass
            except (aiohttp.ClientError, TimeoutError) as exc:
                errors[type(exc).__name__] += 1
                settled()

        started = time.perf_counter()
        deadline = started + FIRST_EVENT_TIMEOUT
        tasks: list[asyncio.Task[None]] = []
        try:
            while len(tasks) < count and time.perf_counter() < deadline:
                target = min(count, len(tasks) + STREAM_WAVE)
                wave_done.clear()
                tasks += [asyncio.create_task(one(i)) for i in range(len(tasks), target)]
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wave_done.wait(), max(0.1, deadline - time.perf_counter()))
            open_after = time.perf_counter() - started
            samples = []
            for _ in range(5):
                samples.append(process.memory_info().rss)
                await asyncio.sleep(0.4)
            connections = len(process.net_connections(kind="tcp"))
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
    return {
        "streams": count,
        "open_with_first_event": progress["opened"],
        "seconds_to_open": round(open_after, 2),
        "rss_mb": max(samples) / MB,
        "tcp_connections": connections,
        "statuses": dict(statuses),
        "errors": dict(errors),
    }


async def burst(url: str, keys: list[str], count: int) -> dict[str, Any]:
    """``count`` non-streamed requests sent at the same moment, each on its own connection: statuses."""
    statuses: Counter[str] = Counter()
    connector = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout, auto_decompress=False) as session:

        async def one(i: int) -> None:
            try:
                async with session.post(url, data=BODY, headers=_headers(keys[i % len(keys)])) as response:
                    await response.read()
                    statuses[str(response.status)] += 1
            except (aiohttp.ClientError, TimeoutError) as exc:
                statuses[type(exc).__name__] += 1

        started = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(count)))
        return {
            "requests": count,
            "seconds": round(time.perf_counter() - started, 3),
            "statuses": dict(statuses),
        }


async def drop_floor_stream(redis_url: str) -> None:
    """The floor's usage events: nobody drains them."""
    from redis.asyncio import Redis

    client = Redis.from_url(redis_url)
    try:
        await client.delete(FLOOR_STREAM)
    finally:
        await client.aclose()


async def evalsha_stats(client: Any) -> tuple[int, int]:
    """(calls, total µs) of EVALSHA on the Redis server, from INFO commandstats."""
    stats = await client.info("commandstats")
    entry = stats.get("cmdstat_evalsha", {})
    return int(entry.get("calls", 0)), int(entry.get("usec", 0))


async def stage_timings(settings: Any, keys: list[str], stream: str) -> dict[str, float]:
    """Mean µs of each stage of the proxy's pipeline, timed in this process with the proxy's own classes:
    wall time at concurrency 1, and for the limiter also CPU time at concurrency 32, both through the
    client the proxy uses for its scripts (core/redis_scripts.py) and through redis-py."""
    from redis.asyncio import Redis

    from poindexter_cloud.accounts.api_keys import ApiKeyVerifier
    from poindexter_cloud.billing.plans import plan_named
    from poindexter_cloud.billing.pricing import TokenUsage, upstream_cost_microdollars
    from poindexter_cloud.core.db import Database
    from poindexter_cloud.core.redis_scripts import ScriptClient
    from poindexter_cloud.proxy.entitlements import Entitlements
    from poindexter_cloud.proxy.limits import Limiter, limits_for
    from poindexter_cloud.proxy.service import _head_decoder

    db = Database.from_url(settings.database_url, pool_size=2)
    redis = Redis.from_url(
        settings.redis_url, socket_connect_timeout=2, socket_timeout=5, health_check_interval=30
    )
    scripts = ScriptClient(settings.redis_url)  # what ProxyRuntime gives its Limiter
    verifier = ApiKeyVerifier(db, redis, settings)
    await verifier.start()
    results: dict[str, float] = {}
    try:
        entitlements = Entitlements(db, verifier)
        principals = [await verifier.verify(key, IP) for key in keys]
        entitlement = await entitlements.of(principals[0].user_id)
        assert entitlement.plan is not None
        limits = limits_for(plan_named(entitlement.plan), entitlement.spend_cap_microdollars)
        estimate = TokenUsage(input_tokens=len(BODY) // 3 + 1, output_tokens=16)
        used = TokenUsage(input_tokens=9, output_tokens=12)
        cost = upstream_cost_microdollars(MODEL, estimate)
        counter = iter(range(1 << 30))
        Step = Callable[[int], Coroutine[Any, Any, Any]]

        async def timed(name: str, step: Step) -> None:
            for _ in range(max(100, len(keys))):  # every key and user cached
                await step(next(counter))
            started = time.perf_counter()
            for _ in range(STAGE_ITERATIONS):
                await step(next(counter))
            results[name] = (time.perf_counter() - started) / STAGE_ITERATIONS * 1e6

        async def cpu_at_32(name: str, step: Step) -> None:
            left = iter(range(STAGE_ITERATIONS))

            async def worker() -> None:
                for _ in left:
                    await step(next(counter))

            started = time.process_time()
            await asyncio.gather(*(worker() for _ in range(32)))
            results[name] = (time.process_time() - started) / STAGE_ITERATIONS * 1e6

        async def verify(i: int) -> None:
            await verifier.verify(keys[i % len(keys)], IP)

        async def plan(i: int) -> None:
            await entitlements.of(principals[i % len(principals)].user_id)

        async def decode(i: int) -> None:
            _head_decoder.decode(BODY)

        def pair(limiter: Limiter) -> Step:
            async def reserve_and_settle(i: int) -> None:
                principal = principals[i % len(principals)]
                reservation = await limiter.reserve(principal.key_id, principal.user_id, limits, 70, cost)
                event = usage_event(principal.user_id, principal.key_id, MODEL, used)
                spent = upstream_cost_microdollars(MODEL, used)
                await limiter.settle(reservation, 21, spent, stream, {"e": event})

            return reserve_and_settle

        async def ping(i: int) -> None:
            await redis.ping()

        await timed("api_key_verify_cached", verify)
        await timed("plan_lookup_cached", plan)
        await timed("request_head_decode", decode)
        await timed("redis_ping_redis_py", ping)

        async def script_ping(i: int) -> None:
            await scripts.call("PING")

        await timed("redis_ping_script_client", script_ping)
        limiters = {"script_client": Limiter(redis, scripts=scripts), "redis_py": Limiter(redis)}
        for name, limiter in limiters.items():
            before = await evalsha_stats(redis)
            await timed(f"reserve_and_settle_{name}", pair(limiter))
            after = await evalsha_stats(redis)
            calls = after[0] - before[0]
            results[f"redis_server_us_per_evalsha_{name}"] = (
                (after[1] - before[1]) / calls if calls else math.nan
            )
            await cpu_at_32(f"reserve_and_settle_{name}_cpu_at_c32", pair(limiter))
        await redis.delete(stream)
    finally:
        await verifier.stop()
        await scripts.close()
        await redis.aclose()
        await db.dispose()
    return results


# --- metrics, usage drain, profile ----------------------------------------------------------------------


def proxy_statuses(base: str) -> Counter[str]:
    with urllib.request.urlopen(f"{base}/metrics", timeout=5) as response:
        text = response.read().decode()
    counts: Counter[str] = Counter()
    for line in text.splitlines():
        if line.startswith("http_requests_total{") and 'role="proxy"' in line and "/v1/" in line:
            match = re.search(r'status="(\d+)"\}\s+([\d.e+]+)', line)
            if match:
                counts[match.group(1)] += int(float(match.group(2)))
    return counts


async def drain_state(database_url: str, redis_url: str, stream: str, user_ids: list[str]) -> dict[str, Any]:
    """Wait (bounded) for the worker to empty the usage stream; count the usage rows it wrote."""
    from redis.asyncio import Redis
    from sqlalchemy import text

    from poindexter_cloud.core.db import Database

    redis = Redis.from_url(redis_url)
    db = Database.from_url(database_url, pool_size=1)
    try:
        deadline = time.monotonic() + DRAIN_TIMEOUT
        backlog = await redis.xlen(stream)
        while backlog and time.monotonic() < deadline:
            await asyncio.sleep(0.25)
            backlog = await redis.xlen(stream)
        async with db.sessions() as session:
            rows = (
                await session.execute(
                    text("SELECT count(*) FROM usage_events WHERE user_id = ANY(CAST(:ids AS uuid[]))"),
                    {"ids": user_ids},
                )
            ).scalar_one()
        return {"backlog": int(backlog), "usage_rows": int(rows)}
    finally:
        await redis.aclose()
        await db.dispose()


# Each py-spy sample goes to the first category whose frame text occurs in its stack, so the order runs
# from the most specific (a Redis call made by the limiter) to the most general (the event loop).
PROFILE_CATEGORIES = (
    ("API-key verification (cached)", "verify (poindexter_cloud/accounts/api_keys.py"),
    ("plan lookup (cached)", "poindexter_cloud/proxy/entitlements.py"),
    ("Redis: Limiter.reserve", "reserve (poindexter_cloud/proxy/limits.py"),
    ("Redis: Limiter.settle + usage event", "settle (poindexter_cloud/proxy/limits.py"),
    ("Redis: script client replies (hiredis)", "core/redis_scripts.py"),
    ("Redis: redis-py, other (pub/sub, pool)", "redis/"),
    ("upstream call (aiohttp client)", "aiohttp/"),
    ("PostgreSQL (last-used flush, misses)", "sqlalchemy/"),
    ("access log line (logging, JSON)", "logging/"),
    ("Prometheus metrics", "prometheus_client/"),
    ("response write (uvicorn send)", "RequestResponseCycle.send"),
    ("response write (held writes sent)", "core/http_protocol.py"),
    ("Call pipeline, own code", "poindexter_cloud/proxy/"),
    ("Litestar app and middleware", "litestar/"),
    ("Observed wrapper, own code", "poindexter_cloud/core/observe.py"),
    ("uvicorn + httptools (read, parse)", "uvicorn/"),
    ("asyncio streams (Redis socket reads)", "asyncio/streams.py"),
)
OTHER = "event loop and everything else"


def summarize_profile(raw: Path) -> dict[str, Any]:
    """Share of busy samples per category (exclusive), and the top functions by own samples."""
    total = 0
    shares: Counter[str] = Counter()
    own: Counter[str] = Counter()
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        label = next((label for label, needle in PROFILE_CATEGORIES if needle in stack), OTHER)
        shares[label] += count
        own[stack.rsplit(";", 1)[-1]] += count
    if not total:
        return {"samples": 0}
    labels = [label for label, _ in PROFILE_CATEGORIES] + [OTHER]
    return {
        "samples": total,
        "percent": {label: round(100 * shares[label] / total, 1) for label in labels},
        "top_own_percent": {frame: round(100 * n / total, 1) for frame, n in own.most_common(12)},
    }


def logged_problems(children: Children, names: list[str]) -> dict[str, Any]:
    """Warnings and errors the servers logged: a count per message (and the exception's last line)."""
    found: dict[str, Any] = {}
    for name in names:
        try:
            lines = (children.log_dir / f"{name}.log").read_text(errors="replace").splitlines()
        except OSError:
            continue
        kinds: Counter[str] = Counter()
        for index, line in enumerate(lines):
            if line.startswith("{"):
                try:
                    entry = json.loads(line)
                except ValueError:
                    continue
                if entry.get("level") not in ("warning", "error", "critical"):
                    continue
                raised = re.findall(
                    r"^([A-Za-z_][\w.]*(?:Error|Exception)\b.*)$", str(entry.get("exc", "")), re.M
                )
                cause = f" (caused by {raised[0]})" if len(raised) > 1 else ""
                last = raised[-1] if raised else ""
                kinds[f"{entry.get('level')}: {entry.get('msg')} {last}{cause}".strip()[:300]] += 1
            elif line.startswith("Traceback"):
                tail = next((x for x in lines[index + 1 : index + 200] if x and not x.startswith(" ")), "")
                kinds[f"traceback: {tail}"[:300]] += 1
        if kinds:
            found[name] = dict(kinds.most_common(5))
    return found


# --- the run --------------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--duration", type=int, default=5, help="measured seconds per cell (default 5)")
    parser.add_argument("--warmup", type=int, default=1, help="warm-up seconds per cell (default 1)")
    parser.add_argument("--streams", type=int, default=STREAMS, help="slow streams held open (default 1000)")
    parser.add_argument("--profile", action="store_true", help="also sample the proxy with py-spy")
    parser.add_argument(
        "--profile-concurrency",
        type=int,
        choices=CONCURRENCIES,
        default=CONCURRENCIES[-1],
        help=f"the concurrency --profile samples at (default {CONCURRENCIES[-1]})",
    )
    parser.add_argument("--keep-logs", action="store_true", help="copy the servers' logs to bench/results")
    parser.add_argument(
        "--py-spy",
        default=shutil.which("py-spy", path=Path(sys.executable).parent) or shutil.which("py-spy"),
        help="py-spy executable (default: beside this Python, else on PATH)",
    )
    args = parser.parse_args()
    if not 1 <= args.duration <= 60 or not 1 <= args.warmup <= 10 or not 1 <= args.streams <= 5000:
        parser.error("duration 1-60 s, warmup 1-10 s, streams 1-5000")

    def on_term(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, on_term)
    nofile = raise_file_limit()
    with tempfile.TemporaryDirectory(prefix="pdx-bench-proxy-") as tmp:
        work = Path(tmp)
        children = Children(work)
        embedded: list[Any] = []
        try:
            return run(args, work, children, embedded, nofile)
        finally:
            children.stop_all()
            for server in reversed(embedded):
                server.stop()
            if args.keep_logs:
                kept = RESULTS / f"proxy-{time.strftime('%Y%m%d-%H%M%S')}-logs"
                kept.mkdir(parents=True, exist_ok=True)
                for log in work.glob("*.log"):
                    shutil.copyfile(log, kept / log.name)
                print(f"server logs copied to {kept.relative_to(ROOT)}")


def run(args: argparse.Namespace, work: Path, children: Children, embedded: list[Any], nofile: Any) -> int:
    from poindexter_cloud.billing.usage_buffer import stream_for
    from poindexter_cloud.core import migrations
    from poindexter_cloud.core.embedded import EmbeddedPostgres, EmbeddedRedis
    from poindexter_cloud.core.settings import Role, load_or_raise

    elsewhere = busy_elsewhere()
    print(f"machine busy before start: {elsewhere:.0f} % (other processes)", flush=True)
    if elsewhere > 10:
        print("  warning: something else is using the CPU; the figures will be lower and noisier")
    started = time.monotonic()
    database_url, redis_url = os.environ.get("DATABASE_URL"), os.environ.get("REDIS_URL")
    databases = "DATABASE_URL / REDIS_URL"
    if not (database_url and redis_url):
        postgres = EmbeddedPostgres(work / "pg", durable=False)
        postgres.start()
        embedded.append(postgres)
        valkey = EmbeddedRedis(work / "valkey")
        valkey.start()
        embedded.append(valkey)
        database_url, redis_url = postgres.url, valkey.url
        databases = "embedded PostgreSQL (durable=False) and Valkey"
    print(f"databases: {databases}", flush=True)
    migrations.upgrade(database_url)

    ports = {name: free_port() for name in SERVERS}
    sandbox = f"http://{HOST}:{ports['sandbox']}"
    queue = f"bench-{uuid.uuid4().hex[:8]}"
    env = {k: v for k, v in os.environ.items() if k not in ("PROXY_UPSTREAMS", "ENVIRONMENT", "QUEUE_NAME")}
    env.update(
        ENVIRONMENT="development",
        DATABASE_URL=database_url,
        REDIS_URL=redis_url,
        SANDBOX_URL=sandbox,
        QUEUE_NAME=queue,
        SANDBOX_AI_LATENCY_MS="0",
        SANDBOX_AI_TOKENS_PER_SECOND="0",
        PYTHONUNBUFFERED="1",
    )
    settings = load_or_raise(Role.ALL, env)

    users, per_user, key_count = keys_needed(args.duration, args.warmup, args.streams)
    keys, user_ids = run_async(lambda: seed(database_url, settings, users, per_user))
    print(f"seeded {users} pro users with {per_user} keys each ({key_count} keys)", flush=True)

    py = sys.executable
    children.start("sandbox", [py, __file__, "_sandbox", str(ports["sandbox"])], env)
    passthrough = [py, str(ROOT / "bench" / "passthrough.py"), "--upstream", f"{sandbox}/anthropic"]
    thin = ["--client", "proxy"]
    for name, options in (
        ("passthrough", []),
        ("passthrough-thin", thin),
        ("passthrough-floor", [*thin, "--limits", redis_url]),
    ):
        children.start(name, [*passthrough, "--port", str(ports[name]), *options], env)
    serve = [py, "-m", "poindexter_cloud", "serve"]
    children.start("proxy", [*serve, "--role", "proxy", "--port", str(ports["proxy"])], env)
    children.start("worker", [*serve, "--role", "worker", "--port", str(ports["worker"])], env)
    wait_http(children, "sandbox", f"{sandbox}/healthz")
    wait_port(children, "passthrough", ports["passthrough"])
    wait_port(children, "passthrough-thin", ports["passthrough-thin"])
    wait_port(children, "passthrough-floor", ports["passthrough-floor"])
    proxy = f"http://{HOST}:{ports['proxy']}"
    wait_http(children, "proxy", f"{proxy}/healthz")
    wait_http(children, "worker", f"http://{HOST}:{ports['worker']}/healthz")
    proxy_pid = children.procs["proxy"].pid
    rss_idle = psutil.Process(proxy_pid).memory_info().rss / MB
    print(
        f"servers up in {time.monotonic() - started:.1f} s; "
        f"worker running (pid {children.procs['worker'].pid})"
    )

    cpu = CpuMeter()
    for name in SERVERS:
        cpu.add(name, children.procs[name].pid)
    for server in embedded:
        cpu.add("postgres" if "Postgres" in type(server).__name__ else "redis", server.pid)

    wrk = shutil.which("wrk")
    generator: Wrk | PythonClient = Wrk(wrk, work) if wrk else PythonClient(work)
    if not wrk:
        print(
            "wrk not found (apt-get install wrk): falling back to an aiohttp client; figures are lower bounds"
        )
    targets = [
        ("a", "sandbox direct", sandbox, "/anthropic/v1/messages", [SANDBOX_KEY], "sandbox"),
        (
            "b",
            "bare passthrough",
            f"http://{HOST}:{ports['passthrough']}",
            "/v1/messages",
            [SANDBOX_KEY],
            "passthrough",
        ),
        # (b) on the proxy's own upstream client instead of aiohttp's: what the rest of the proxy costs.
        (
            "b'",
            "passthrough, our client",
            f"http://{HOST}:{ports['passthrough-thin']}",
            "/v1/messages",
            [SANDBOX_KEY],
            "passthrough-thin",
        ),
        # (b') plus the prescribed Redis work, on the proxy's keys: the floor of the design.
        (
            "f",
            "floor: (b') + limits",
            f"http://{HOST}:{ports['passthrough-floor']}",
            "/v1/messages",
            keys,
            "passthrough-floor",
        ),
        ("c", "our proxy", proxy, "/v1/messages", keys, "proxy"),
        # The same, with the worker stopped (SIGSTOP) while the cell runs: on this 2-core machine the
        # usage drain competes with the proxy for CPU; in production it runs on other machines. The
        # events wait in the Redis stream and are drained once it continues.
        ("c'", "proxy, worker paused", proxy, "/v1/messages", keys, "proxy"),
    ]
    cells: list[dict[str, Any]] = []
    statuses_before = proxy_statuses(proxy)
    proxy_requests_sent = 0
    worker_pid = children.procs["worker"].pid
    for tag, label, base, path, target_keys, process in targets:
        for concurrency in CONCURRENCIES:
            if tag.startswith("c"):
                # Every key and plan in the proxy's caches, which the cells before may have outlived: a
                # 1 s warm-up at c=1 on a slow machine reaches a few hundred keys, and the cell would
                # measure the misses of the rest, which a steady service (refreshing ahead) never pays.
                run_async(lambda: warm_keys(f"{proxy}/v1/messages", keys))
                proxy_requests_sent += len(keys)
            if tag == "c'":
                os.kill(worker_pid, signal.SIGSTOP)
            try:
                warm = generator.run(base, path, target_keys, concurrency, args.warmup)
                before = cpu.snapshot()
                result = generator.run(base, path, target_keys, concurrency, args.duration)
                used = CpuMeter.delta(before, cpu.snapshot())
            finally:
                if tag == "c'":
                    os.kill(worker_pid, signal.SIGCONT)
            if tag.startswith("c"):
                proxy_requests_sent += warm["requests"] + result["requests"]
            requests = max(1, result["requests"])
            result.update(
                target=tag,
                label=label,
                concurrency=concurrency,
                cpu_seconds=used,
                cpu_us_per_request={name: round(value / requests * 1e6) for name, value in used.items()},
                server_cpu_us_per_request=used[process] / requests * 1e6,
                all_cpu_us_per_request=(sum(used.values()) - used["others"]) / requests * 1e6,
                machine_busy_percent=100 * sum(used.values()) / (psutil.cpu_count() * result["seconds"]),
                others_busy_percent=100 * used["others"] / (psutil.cpu_count() * result["seconds"]),
            )
            cells.append(result)
            print(
                f"  ({tag}) {label:<20} c={concurrency:<3} {result['rps']:>8,.0f} req/s  "
                f"p50 {result['p50_ms']:.3f} ms  p99 {result['p99_ms']:.3f} ms  "
                f"non-2xx {result['non_2xx']}",
                flush=True,
            )
    statuses_measured = proxy_statuses(proxy) - statuses_before
    for name in ("passthrough-thin", "passthrough-floor"):  # measured: out of the way of the phases below
        children.kill(name)
    run_async(lambda: drop_floor_stream(redis_url))

    print("streaming time to first byte and latency samples (concurrency 1) ...", flush=True)
    stream_urls = {
        "a": (f"{sandbox}/anthropic/v1/messages", [SANDBOX_KEY]),
        "b": (f"http://{HOST}:{ports['passthrough']}/v1/messages", [SANDBOX_KEY]),
        "c": (f"{proxy}/v1/messages", keys[:SAMPLE_KEYS]),  # few keys: all stay cached
    }
    # The throughput cells took longer than a cache entry lives: a key unused in its entry's last quarter
    # is looked up again on its next request. Steady traffic never pays that; these samples should not.
    run_async(lambda: warm_keys(f"{proxy}/v1/messages", keys[:SAMPLE_KEYS]))
    first_bytes = {tag: run_async(lambda u=url, k=k: ttfb(u, k)) for tag, (url, k) in stream_urls.items()}
    samples = {
        tag: run_async(lambda u=url, k=k: latency_sample(u, k)) for tag, (url, k) in stream_urls.items()
    }

    print("timing the pipeline's stages in this process, then a burst ...", flush=True)
    stages = run_async(lambda: stage_timings(settings, keys[:SAMPLE_KEYS], f"{queue}:bench-stages"))
    bursted = run_async(lambda: burst(f"{proxy}/v1/messages", keys, BURST))

    print(f"holding {args.streams} slow streams through the proxy, then the passthrough ...", flush=True)
    rss_before = psutil.Process(proxy_pid).memory_info().rss / MB
    configure = urllib.request.Request(
        f"{sandbox}/anthropic/_control/config",
        data=json.dumps({"tokens_per_second": STREAM_TOKENS_PER_SECOND}).encode(),
        headers={"content-type": "application/json"},
        method="POST",
    )
    urllib.request.urlopen(configure, timeout=5).close()
    held = run_async(lambda: hold_streams(f"{proxy}/v1/messages", keys, args.streams, proxy_pid))
    rss_after = psutil.Process(proxy_pid).memory_info().rss / MB
    passthrough_pid = children.procs["passthrough"].pid
    passthrough_rss_before = psutil.Process(passthrough_pid).memory_info().rss / MB
    held_passthrough = run_async(
        lambda: hold_streams(
            f"http://{HOST}:{ports['passthrough']}/v1/messages", [SANDBOX_KEY], args.streams, passthrough_pid
        )
    )
    # It keeps relaying a stream whose client left (the sandbox is still pacing 1,000 of them): kill it.
    children.kill("passthrough")
    urllib.request.urlopen(
        urllib.request.Request(f"{sandbox}/anthropic/_control/reset", data=b"", method="POST"), timeout=5
    ).close()

    profile: dict[str, Any] | None = None
    if args.profile:
        profile = run_profile(args.py_spy, generator, proxy, keys, proxy_pid, work, args.profile_concurrency)

    statuses_total = proxy_statuses(proxy) - statuses_before
    drained = run_async(lambda: drain_state(database_url, redis_url, stream_for(queue), user_ids))
    worker_alive = children.procs["worker"].poll() is None
    problems = logged_problems(children, list(SERVERS))

    report = build_report(
        args=args,
        generator=generator.name,
        databases=databases,
        busy_before_start_percent=elsewhere,
        nofile=nofile,
        keys=(users, per_user, key_count),
        cells=cells,
        first_bytes=first_bytes,
        samples=samples,
        stage_timings_us=stages,
        burst=bursted,
        memory={
            "proxy_rss_idle_mb": rss_idle,
            "proxy_rss_before_mb": rss_before,
            "proxy_during": held,
            "proxy_rss_after_close_mb": rss_after,
            "passthrough_rss_before_mb": passthrough_rss_before,
            "passthrough_during": held_passthrough,
        },
        statuses={"measured_cells": dict(statuses_measured), "whole_run": dict(statuses_total)},
        proxy_requests_sent=proxy_requests_sent,
        worker={"ran": worker_alive, **drained},
        profile=profile,
        logged_problems=problems,
        elapsed=time.monotonic() - started,
    )
    print_report(report)
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"proxy-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps(report, indent=2, default=str))
    print(f"\nwritten to {out.relative_to(ROOT)}")
    return 0


def run_profile(
    py_spy: str | None,
    generator: Wrk | PythonClient,
    proxy: str,
    keys: list[str],
    pid: int,
    work: Path,
    concurrency: int,
) -> dict[str, Any] | None:
    if not py_spy:
        print("--profile: py-spy not found (pip install py-spy, or pass --py-spy PATH); skipped")
        return None
    seconds = 8
    print(f"profiling the proxy with py-spy for {seconds} s at concurrency {concurrency} ...", flush=True)
    run_async(lambda: warm_keys(f"{proxy}/v1/messages", keys))  # so the profile shows the warm path
    raw = work / "proxy.collapsed"
    options = ["--format", "raw", "--output", str(raw), "--nonblocking"]
    spy = subprocess.Popen(
        [py_spy, "record", "--pid", str(pid), "--duration", str(seconds), "--rate", "250", *options],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        time.sleep(1.0)  # py-spy attaches
        loaded = generator.run(proxy, "/v1/messages", keys, concurrency, seconds)
        spy.wait(seconds + 30)
    finally:
        if spy.poll() is None:
            spy.kill()
            spy.wait(5)
    if not raw.exists():
        print("py-spy wrote no profile (ptrace not permitted?)")
        return None
    summary = summarize_profile(raw)
    summary["rps_while_sampled"] = loaded["rps"]
    summary["concurrency"] = concurrency
    RESULTS.mkdir(parents=True, exist_ok=True)
    kept = RESULTS / f"proxy-{time.strftime('%Y%m%d-%H%M%S')}.collapsed"
    shutil.copyfile(raw, kept)
    summary["collapsed_stacks"] = str(kept.relative_to(ROOT))
    return summary


def _cell(cells: list[dict[str, Any]], tag: str, concurrency: int) -> dict[str, Any]:
    return next(c for c in cells if c["target"] == tag and c["concurrency"] == concurrency)


def build_report(**parts: Any) -> dict[str, Any]:
    import uvicorn

    args: argparse.Namespace = parts.pop("args")
    cells = parts["cells"]
    ratios = {str(c): _cell(cells, "c", c)["rps"] / _cell(cells, "b", c)["rps"] for c in CONCURRENCIES}
    ratios_paused = {
        str(c): _cell(cells, "c'", c)["rps"] / _cell(cells, "b", c)["rps"] for c in CONCURRENCIES
    }
    ratios_thin = {str(c): _cell(cells, "c", c)["rps"] / _cell(cells, "b'", c)["rps"] for c in CONCURRENCIES}
    ratios_floor = {str(c): _cell(cells, "f", c)["rps"] / _cell(cells, "b", c)["rps"] for c in CONCURRENCIES}
    added = _cell(cells, "c", 1)["p50_ms"] - _cell(cells, "a", 1)["p50_ms"]
    during = parts["memory"]["proxy_during"]
    users, per_user, key_count = parts.pop("keys")
    try:
        import uvloop

        loop = f"uvloop {uvloop.__version__}"
    except ImportError:
        loop = "asyncio"
    return {
        "command": "python bench/proxy.py" + (" --profile" if args.profile else ""),
        "machine": {
            "cpus": psutil.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "uvicorn": uvicorn.__version__,
            "aiohttp": aiohttp.__version__,
            "loop": loop,
            "nofile_limit": list(parts.pop("nofile")),
        },
        "settings": {"duration_s": args.duration, "warmup_s": args.warmup, "streams": args.streams},
        "rate_limit_budget": {
            "plan": "pro",
            "users": users,
            "keys_per_user": per_user,
            "keys": key_count,
            "assumed_max_rps": ASSUMED_MAX_RPS,
            "proxy_requests_in_cells": parts.pop("proxy_requests_sent"),
        },
        **parts,
        "ratios_c_over_b": ratios,
        "ratios_c_paused_worker_over_b": ratios_paused,
        "ratios_c_over_b_thin_client": ratios_thin,
        "ratios_floor_over_b": ratios_floor,
        "added_p50_ms_c_minus_a_at_1": added,
        "goals": {
            "throughput_c_at_least_75pct_of_b": {c: r >= GOAL_RATIO for c, r in ratios.items()},
            "added_p50_under_0_5_ms": added < GOAL_ADDED_MS,
            "rss_under_300_mb_with_1000_streams": during["rss_mb"] < GOAL_RSS_MB
            and during["open_with_first_event"] == during["streams"],
        },
    }


def print_report(report: dict[str, Any]) -> None:
    cells = report["cells"]
    print(
        f"\nAI proxy benchmark: {report['machine']['cpus']} cores, Python {report['machine']['python']}, "
        f"{report['machine']['loop']}; load generator: {report['generator']}"
    )
    print(
        f"{report['settings']['warmup_s']} s warm-up + {report['settings']['duration_s']} s per cell; "
        "small non-streamed Messages request (max_tokens 16)\n"
    )
    header = (
        f"{'server':<27} {'conc':>4} {'req/s':>7} {'p50 ms':>7} {'p99 ms':>7} {'CPU µs/req':>10} "
        f"{'all CPU':>8} {'busy %':>6} {'others':>6} {'non-2xx':>7}"
    )
    print(header)
    print("-" * len(header))
    for cell in cells:
        name = f"({cell['target']}) {cell['label']}"
        print(
            f"{name:<27} {cell['concurrency']:>4} {cell['rps']:>7,.0f} {cell['p50_ms']:>7.3f} "
            f"{cell['p99_ms']:>7.3f} {cell['server_cpu_us_per_request']:>10.0f} "
            f"{cell['all_cpu_us_per_request']:>8.0f} {cell['machine_busy_percent']:>6.0f} "
            f"{cell['others_busy_percent']:>6.0f} {cell['non_2xx']:>7}"
        )
    print(
        "CPU µs/req: the server measured (sandbox, passthrough, proxy); all CPU: every process of the run, "
        "the load generator included; busy %: the whole machine; others: processes not ours (% of machine)"
    )
    for tag in ("f", "c", "c'"):
        used = _cell(cells, tag, CONCURRENCIES[-1])["cpu_us_per_request"]
        print(
            f"({tag}) at c={CONCURRENCIES[-1]}, CPU µs per request by process: "
            + ", ".join(f"{name} {value}" for name, value in used.items() if value and name != "others")
        )
    for key, tag in (("ratios_c_over_b", "(c)"), ("ratios_c_paused_worker_over_b", "(c')")):
        print(
            f"\n{tag} / (b): "
            + ", ".join(f"c={c}: {100 * r:.0f} %" for c, r in report[key].items())
            + f"   (goal >= {100 * GOAL_RATIO:.0f} %)",
            end="",
        )
    print(
        "\n(c) / (b'), the passthrough on the proxy's own client (not a goal, for scale): "
        + ", ".join(f"c={c}: {100 * r:.0f} %" for c, r in report["ratios_c_over_b_thin_client"].items())
    )
    print(
        "(f) / (b), the floor: (b') plus only the prescribed Redis work, which bounds (c) / (b): "
        + ", ".join(f"c={c}: {100 * r:.0f} %" for c, r in report["ratios_floor_over_b"].items())
    )
    b_minus_a = _cell(cells, "b", 1)["p50_ms"] - _cell(cells, "a", 1)["p50_ms"]
    print(
        f"added p50 at c=1: (c) - (a) = {report['added_p50_ms_c_minus_a_at_1']:.3f} ms (goal < "
        f"{GOAL_ADDED_MS} ms); (b) - (a) = {b_minus_a:.3f} ms"
    )
    samples = report["samples"]
    timing = samples["c"]["server_timing_p50_ms"]
    if timing:
        print(
            "proxy server-timing p50 (aiohttp client, c=1): "
            + ", ".join(f"{name} {value:.3f} ms" for name, value in timing.items())
        )
    stages = report["stage_timings_us"]
    print(
        "\nstages timed in-process, concurrency 1 (mean µs): "
        + ", ".join(f"{name} {value:.1f}" for name, value in stages.items())
    )
    bursted = report["burst"]
    print(f"burst: {bursted['requests']} simultaneous requests to the proxy -> {bursted['statuses']}")
    print("\nstreaming, concurrency 1 (median ms)   head    first event   p99 first event")
    for tag, label in (("a", "sandbox direct"), ("b", "bare passthrough"), ("c", "our proxy")):
        fb = report["first_bytes"][tag]
        print(
            f"  ({tag}) {label:<30} {fb['head_ms']:>6.3f}   {fb['first_event_ms']:>9.3f}   "
            f"{fb['first_event_p99_ms']:>9.3f}"
        )
    fb = report["first_bytes"]
    print(
        f"  first event: (c) - (a) = {fb['c']['first_event_ms'] - fb['a']['first_event_ms']:.3f} ms, "
        f"(c) - (b) = {fb['c']['first_event_ms'] - fb['b']['first_event_ms']:.3f} ms"
    )
    memory = report["memory"]
    during, pt = memory["proxy_during"], memory["passthrough_during"]
    print(
        f"\nproxy RSS: idle {memory['proxy_rss_idle_mb']:.0f} MB, before streams "
        f"{memory['proxy_rss_before_mb']:.0f} MB, with {during['open_with_first_event']}/{during['streams']} "
        f"streams open {during['rss_mb']:.0f} MB (goal < {GOAL_RSS_MB:.0f} MB; opened in "
        f"{during['seconds_to_open']} s; statuses {during['statuses']}, errors {during['errors']})"
    )
    print(
        f"passthrough RSS for reference: before {memory['passthrough_rss_before_mb']:.0f} MB, with "
        f"{pt['open_with_first_event']}/{pt['streams']} streams open {pt['rss_mb']:.0f} MB"
    )
    statuses = report["statuses"]
    print(
        f"\nproxy statuses during the measured cells: {statuses['measured_cells']}; whole run: "
        f"{statuses['whole_run']} (429s: {statuses['whole_run'].get('429', 0)})"
    )
    budget = report["rate_limit_budget"]
    print(
        f"rate-limit budget: {budget['keys']} keys over {budget['users']} pro users; the proxy was sent "
        f"{budget['proxy_requests_in_cells']:,} requests in its throughput cells"
    )
    worker = report["worker"]
    print(
        f"worker: {'ran' if worker['ran'] else 'NOT running'} throughout; "
        f"{worker['usage_rows']:,} usage events drained into PostgreSQL, "
        f"backlog at the end {worker['backlog']}"
    )
    if report.get("profile"):
        profile = report["profile"]
        sampled = profile["concurrency"]
        print(
            f"\npy-spy, proxy process at c={sampled} ({profile['samples']} samples, "
            f"{profile.get('rps_while_sampled', 0):,.0f} req/s while sampled), % of busy samples by category:"
        )
        proxy_cpu = _cell(cells, "c", sampled)["server_cpu_us_per_request"]
        print(f"  (µs/request: the share of the proxy's {proxy_cpu:.0f} µs CPU per request at c={sampled})")
        for label, share in profile.get("percent", {}).items():
            print(f"  {label:<46} {share:>5.1f} %  ~{share * proxy_cpu / 100:>4.0f} µs")
        print("top functions by own samples:")
        for frame, share in profile.get("top_own_percent", {}).items():
            print(f"  {share:>5.1f}  {frame}")
    for name, found in report["logged_problems"].items():
        print(f"\n{name} logged warnings/errors (count, message):")
        for message, count in found.items():
            print(f"  {count:>6}  {message}")
    goals = report["goals"]
    print(
        "\ngoals: throughput >= 75 % of (b): "
        + ", ".join(
            f"c={c} {'met' if ok else 'MISSED'}"
            for c, ok in goals["throughput_c_at_least_75pct_of_b"].items()
        )
        + f"; added p50 < 0.5 ms: {'met' if goals['added_p50_under_0_5_ms'] else 'MISSED'}"
        + f"; RSS < 300 MB: {'met' if goals['rss_under_300_mb_with_1000_streams'] else 'MISSED'}"
    )
    print(f"total time {report['elapsed']:.0f} s")


def serve_sandbox(port: int) -> None:
    import uvicorn

    from poindexter_cloud.core.runner import uvicorn_config
    from poindexter_cloud.sandbox.app import create_sandbox_app

    uvicorn.Server(uvicorn_config(create_sandbox_app(), HOST, port)).run()


if __name__ == "__main__":
    if sys.argv[1:2] == ["_sandbox"]:
        serve_sandbox(int(sys.argv[2]))
    elif sys.argv[1:2] == ["_loadgen"]:
        loadgen_main(sys.argv[2])
    else:
        sys.exit(main())
