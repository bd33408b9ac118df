"""Webhook delivery: each event POSTed as Telnyx's v2 envelope, signed with the sandbox's Ed25519 key.

Body: ``{"data": {"event_type", "id", "occurred_at", "payload", "record_type": "event"}, "meta": {"attempt",
"delivered_to"}}``, signed afresh for each attempt (see ``signing.py``). Deliveries run in a background task
on the sandbox's event loop, one at a time in the order events happened. As on Telnyx, a URL that does not
answer 2xx within ``timeout_seconds`` (2 s) is tried up to ``attempts_per_url`` times (3),
``retry_base_seconds`` x 2^(n-1) apart, then the next URL the same way (the failover URL; for a message with
URLs of its own, the profile's after them); ``meta.attempt`` counts every attempt of the event. Retries do
not hold back later events.

Modes (``POST /telnyx/_control/webhooks``): ``normal``; ``duplicate`` sends every delivery twice (same event
id), as receivers must tolerate; ``hold`` keeps events until ``POST /telnyx/_control/webhooks/flush``.

Events may be emitted from any thread of the sandbox's process: off the event loop, the delivery is handed
to the loop the API last served on.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

import aiohttp

from .signing import sign
from .store import iso, new_uuid

MODES: Final = ("normal", "duplicate", "hold")


@dataclass(slots=True)
class Event:
    id: str
    type: str
    occurred_at: str
    payload: dict[str, Any]
    urls: tuple[str, ...]  # tried in turn: primary, then failover (a message's own, then its profile's)


@dataclass(slots=True)
class Job:
    event: Event
    url_index: int = 0
    try_on_url: int = 1
    attempt: int = 1
    duplicate: bool = False

    @property
    def url(self) -> str:
        return self.event.urls[self.url_index]


class Dispatcher:
    def __init__(self) -> None:
        self.generation = 0
        self.tasks: set[asyncio.Task[None]] = set()
        self.timers: set[asyncio.TimerHandle] = set()
        self.loop: asyncio.AbstractEventLoop | None = None
        self.reset()

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """The loop deliveries run on when an event comes from another thread."""
        self.loop = loop

    def reset(self) -> None:
        self.generation += 1
        for timer in self.timers:
            timer.cancel()
        self.timers.clear()
        self.mode = "normal"
        self.retry_base_seconds = 1.0
        self.attempts_per_url = 3
        self.timeout_seconds = 2.0
        self.queue: deque[Job] = deque()
        self.held: list[Job] = []
        self.deliveries: deque[dict[str, Any]] = deque(maxlen=2000)
        self.events: deque[dict[str, Any]] = deque(maxlen=2000)
        self.running = False

    # -- intake

    def emit(self, event_type: str, payload: dict[str, Any], urls: Sequence[str]) -> str:
        """Record an event and queue its delivery to ``urls`` (each tried in turn until one takes it); returns
        the event id. Without a URL nothing is delivered, as on Telnyx."""
        targets = tuple(dict.fromkeys(u for u in urls if u))
        event = Event(new_uuid(), event_type, iso(), payload, targets)
        self.events.append(
            {"id": event.id, "type": event_type, "urls": list(targets), "occurred_at": event.occurred_at}
        )
        if targets:
            jobs = [Job(event), Job(event, duplicate=True)] if self.mode == "duplicate" else [Job(event)]
            if self.mode == "hold":
                self.held.extend(jobs)
            else:
                self.queue.extend(jobs)
                self.wake()
        return event.id

    def flush(self) -> int:
        """Queue the held events for delivery; returns how many there were."""
        jobs, self.held = self.held, []
        self.queue.extend(jobs)
        self.wake()
        return len({job.event.id for job in jobs})

    # -- the worker

    def wake(self) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            if self.loop is not None and not self.loop.is_closed():
                self.loop.call_soon_threadsafe(self.wake)
            return  # without a loop the deliveries wait for the next wake
        self.loop = loop
        if self.running or not self.queue:
            return
        self.running = True
        task = loop.create_task(self.work(self.generation))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def work(self, generation: int) -> None:
        try:
            timeout = aiohttp.ClientTimeout(total=self.timeout_seconds)
            async with aiohttp.ClientSession(timeout=timeout) as session:
                while self.queue and generation == self.generation:
                    await self.deliver(session, self.queue.popleft(), generation)
        finally:
            if generation == self.generation:
                self.running = False
                if self.queue:
                    self.wake()

    def body(self, job: Job) -> str:
        event = job.event
        return json.dumps(
            {
                "data": {
                    "event_type": event.type,
                    "id": event.id,
                    "occurred_at": event.occurred_at,
                    "payload": event.payload,
                    "record_type": "event",
                },
                "meta": {"attempt": job.attempt, "delivered_to": job.url},
            }
        )

    async def deliver(self, session: aiohttp.ClientSession, job: Job, generation: int) -> None:
        body = self.body(job)
        signature = sign(body)
        headers = {"Content-Type": "application/json", **signature}
        status: int | None = None
        error: str | None = None
        started = time.time()
        try:
            async with session.post(job.url, data=body.encode(), headers=headers) as response:
                status = response.status
                await response.read()
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            error = f"{type(exc).__name__}: {exc}"
        if generation != self.generation:
            return  # the sandbox was reset meanwhile
        self.deliveries.append(
            {
                "event": job.event.id,
                "type": job.event.type,
                "url": job.url,
                "failover": job.url_index > 0,
                "attempt": job.attempt,
                "duplicate": job.duplicate,
                "status": status,
                "error": error,
                "signed_at": int(signature["telnyx-timestamp"]),
                "seconds": round(time.time() - started, 4),
            }
        )
        if (status is not None and 200 <= status < 300) or job.duplicate:
            return
        if job.try_on_url < self.attempts_per_url:
            retry = Job(job.event, job.url_index, job.try_on_url + 1, job.attempt + 1)
            self.later(self.retry_base_seconds * 2 ** (job.try_on_url - 1), retry)
        elif job.url_index + 1 < len(job.event.urls):
            self.queue.append(Job(job.event, job.url_index + 1, 1, job.attempt + 1))
            self.wake()

    def later(self, delay: float, job: Job) -> None:
        loop = asyncio.get_running_loop()
        handle: asyncio.TimerHandle | None = None

        def requeue() -> None:
            if handle is not None:
                self.timers.discard(handle)
            self.queue.append(job)
            self.wake()

        handle = loop.call_later(delay, requeue)
        self.timers.add(handle)

    # -- controls

    def status(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "queued": len(self.queue),
            "held": len(self.held),
            "retrying": len(self.timers),
            "retry_base_seconds": self.retry_base_seconds,
            "attempts_per_url": self.attempts_per_url,
            "timeout_seconds": self.timeout_seconds,
        }

    def idle(self) -> bool:
        """Nothing being delivered or waiting for a retry (held events aside)."""
        return not self.queue and not self.timers and not self.running


DISPATCHER: Final = Dispatcher()
