"""Webhook delivery: every event POSTed to each endpoint that wants it, signed the way Stripe signs.

The body is the event's JSON; the ``Stripe-Signature`` header is ``t=<unix time>,v1=<hex HMAC-SHA256 of
"<t>.<body>" keyed with the endpoint's whsec_ secret>``, computed afresh for each attempt, so
``stripe.Webhook.construct_event(body, header, secret)`` accepts it. Deliveries run in a background task on
the server's event loop, one at a time in event creation order; a non-2xx answer or a connection error is
retried after ``retry_base_seconds`` x 2^(attempt-1), up to ``max_attempts`` attempts in all (Stripe retries
for days; the sandbox keeps it short). Retries do not hold back later events, so (as with Stripe) order is
only kept while endpoints answer.

Modes (``POST /stripe/_control/webhooks``): ``normal`` delivers at once; ``duplicate`` delivers every event
twice; ``hold`` keeps events until ``POST /stripe/_control/webhooks/flush``; ``reverse`` holds them too and
the flush delivers them newest first.

``SANDBOX_STRIPE_WEBHOOK_URL`` (+ ``SANDBOX_STRIPE_WEBHOOK_SECRET``, else a generated one shown by ``GET
/stripe/_control/webhooks``) adds an endpoint for every event type without an API call, like ``stripe listen
--forward-to``; it is not listed by ``GET /v1/webhook_endpoints``.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import os
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Final

import aiohttp

from . import render
from .store import STATE, Event, State, WebhookEndpoint, new_id, real_now

MODES: Final = ("normal", "reverse", "duplicate", "hold")
ENV_ENDPOINT_ID: Final = "we_sandbox_environment"
USER_AGENT: Final = "Stripe/1.0 (+https://stripe.com/docs/webhooks)"


def sign(payload: str, secret: str, timestamp: int) -> str:
    mac = hmac.new(secret.encode("utf-8"), f"{timestamp}.{payload}".encode(), hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


def new_secret() -> str:
    return new_id("whsec_", 32)


@dataclass(slots=True)
class Job:
    event: Event
    endpoint: WebhookEndpoint
    attempt: int = 1
    duplicate: bool = False


class Dispatcher:
    def __init__(self, state: State) -> None:
        self.state = state
        self.generation = 0
        self.tasks: set[asyncio.Task[None]] = set()
        self.timers: set[asyncio.TimerHandle] = set()
        state.listeners.append(self.on_event)
        self.reset()

    def reset(self) -> None:
        self.generation += 1
        for timer in self.timers:
            timer.cancel()
        self.timers.clear()
        self.mode = "normal"
        self.retry_base_seconds = 1.0
        self.max_attempts = 4
        self.timeout_seconds = 10.0
        self.queue: deque[Job] = deque()
        self.held: list[Event] = []
        self.deliveries: deque[dict[str, Any]] = deque(maxlen=2000)
        self.succeeded: set[tuple[str, str]] = set()
        self.running = False
        self.generated_secret = new_secret()
        self.sync_environment()

    def sync_environment(self) -> None:
        """Keep the environment's endpoint in step with ``SANDBOX_STRIPE_WEBHOOK_URL``/``_SECRET`` (read on
        every event, so a process that sets them after import is honoured too)."""
        url = os.environ.get("SANDBOX_STRIPE_WEBHOOK_URL", "").strip()
        endpoints = self.state.webhook_endpoints
        if not url:
            endpoints.pop(ENV_ENDPOINT_ID, None)
            return
        secret = os.environ.get("SANDBOX_STRIPE_WEBHOOK_SECRET", "").strip() or self.generated_secret
        current = endpoints.get(ENV_ENDPOINT_ID)
        if current is None:
            endpoints[ENV_ENDPOINT_ID] = WebhookEndpoint(
                ENV_ENDPOINT_ID, real_now(), url, ["*"], secret, listed=False
            )
        else:
            current.url, current.secret = url, secret

    # -- intake

    def on_event(self, event: Event) -> None:
        endpoints = self.endpoints_for(event)
        event.pending_webhooks = len(endpoints)
        if not endpoints:
            return
        if self.mode in ("hold", "reverse"):
            self.held.append(event)
        else:
            self.enqueue(event, endpoints)

    def endpoints_for(self, event: Event) -> list[WebhookEndpoint]:
        self.sync_environment()
        return [w for w in self.state.webhook_endpoints.values() if w.wants(event.type)]

    def enqueue(self, event: Event, endpoints: list[WebhookEndpoint]) -> None:
        for endpoint in endpoints:
            self.queue.append(Job(event, endpoint))
            if self.mode == "duplicate":
                self.queue.append(Job(event, endpoint, duplicate=True))
        self.wake()

    def flush(self) -> int:
        held, self.held = self.held, []
        if self.mode == "reverse":
            held.reverse()
        for event in held:
            self.enqueue(event, self.endpoints_for(event))
        return len(held)

    # -- the worker

    def wake(self) -> None:
        if self.running or not self.queue:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # no loop (e.g. state used from a plain function): deliveries wait for the next wake
        self.running = True
        task = loop.create_task(self.work(self.generation))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def work(self, generation: int) -> None:
        try:
            timeout = aiohttp.ClientTimeout(total=self.timeout_seconds)
            async with aiohttp.ClientSession(timeout=timeout) as session:
                while self.queue and generation == self.generation:
                    job = self.queue.popleft()
                    await self.deliver(session, job)
        finally:
            if generation == self.generation:
                self.running = False
                if self.queue:
                    self.wake()

    async def deliver(self, session: aiohttp.ClientSession, job: Job) -> None:
        payload = json.dumps(render.event(job.event), indent=2)
        timestamp = real_now()
        headers = {
            "Content-Type": "application/json; charset=utf-8",
            "User-Agent": USER_AGENT,
            "Stripe-Signature": sign(payload, job.endpoint.secret, timestamp),
        }
        status: int | None = None
        error: str | None = None
        started = time.time()
        try:
            async with session.post(job.endpoint.url, data=payload.encode(), headers=headers) as response:
                status = response.status
                await response.read()
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            error = f"{type(exc).__name__}: {exc}"
        ok = status is not None and 200 <= status < 300
        self.deliveries.append(
            {
                "event": job.event.id,
                "type": job.event.type,
                "endpoint": job.endpoint.id,
                "url": job.endpoint.url,
                "attempt": job.attempt,
                "duplicate": job.duplicate,
                "status": status,
                "error": error,
                "signed_at": timestamp,
                "seconds": round(time.time() - started, 4),
            }
        )
        key = (job.event.id, job.endpoint.id)
        if ok:
            if key not in self.succeeded:
                self.succeeded.add(key)
                job.event.pending_webhooks = max(0, job.event.pending_webhooks - 1)
            return
        if job.attempt < self.max_attempts and not job.duplicate:
            delay = self.retry_base_seconds * 2 ** (job.attempt - 1)
            retry = Job(job.event, job.endpoint, job.attempt + 1)
            loop = asyncio.get_running_loop()
            handle: asyncio.TimerHandle | None = None

            def requeue() -> None:
                if handle is not None:
                    self.timers.discard(handle)
                self.queue.append(retry)
                self.wake()

            handle = loop.call_later(delay, requeue)
            self.timers.add(handle)

    # -- controls

    def status(self) -> dict[str, Any]:
        self.sync_environment()
        env = self.state.webhook_endpoints.get(ENV_ENDPOINT_ID)
        return {
            "mode": self.mode,
            "held": len(self.held),
            "queued": len(self.queue),
            "retrying": len(self.timers),
            "retry_base_seconds": self.retry_base_seconds,
            "max_attempts": self.max_attempts,
            "environment_endpoint": ({"url": env.url, "secret": env.secret} if env is not None else None),
        }

    def idle(self) -> bool:
        return not self.queue and not self.timers and not self.running


DISPATCHER: Final = Dispatcher(STATE)
