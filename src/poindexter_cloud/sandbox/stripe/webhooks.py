"""Webhook delivery: every event POSTed to each endpoint that wants it, signed the way Stripe signs.

The body is the event's JSON; the ``Stripe-Signature`` header is ``t=<unix time>,v1=<hex HMAC-SHA256 of
"<t>.<body>" keyed with the endpoint's whsec_ secret>``, computed afresh for each attempt, so
``stripe.Webhook.construct_event(body, header, secret)`` accepts it. Deliveries run one at a time in event
creation order (the queue, its worker and its timers: ``sandbox/webhook_delivery.py``); a non-2xx answer or
a connection error is retried after ``retry_base_seconds`` x 2^(attempt-1), up to ``max_attempts`` attempts
in all (Stripe retries for days; the sandbox keeps it short). Retries do not hold back later events, so (as
with Stripe) order is only kept while endpoints answer.

Modes (``POST /stripe/_control/webhooks``): ``normal`` delivers at once; ``duplicate`` delivers every event
twice; ``hold`` keeps events until ``POST /stripe/_control/webhooks/flush``; ``reverse`` holds them too and
the flush delivers them newest first.

``SANDBOX_STRIPE_WEBHOOK_URL`` (+ ``SANDBOX_STRIPE_WEBHOOK_SECRET``, else a generated one shown by ``GET
/stripe/_control/webhooks``) adds an endpoint for every event type without an API call, like ``stripe listen
--forward-to``; it is not listed by ``GET /v1/webhook_endpoints``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from dataclasses import dataclass
from typing import Any, Final

from ..webhook_delivery import DeliveryQueue, SignedPost
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


class Dispatcher(DeliveryQueue[Job, Event]):
    default_timeout_seconds = 10.0

    def __init__(self, state: State) -> None:
        self.state = state
        state.listeners.append(self.on_event)
        super().__init__()

    def reset(self) -> None:
        super().reset()
        self.max_attempts = 4
        self.succeeded: set[tuple[str, str]] = set()
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
        if self.holding():
            self.held.append(event)
        else:
            self.enqueue(event, endpoints)

    def endpoints_for(self, event: Event) -> list[WebhookEndpoint]:
        self.sync_environment()
        return [w for w in self.state.webhook_endpoints.values() if w.wants(event.type)]

    def enqueue(self, event: Event, endpoints: list[WebhookEndpoint]) -> None:
        self.submit(job for endpoint in endpoints for job in self.copies(Job(event, endpoint)))

    def flush(self) -> int:
        held = self.release()
        for event in held:
            self.enqueue(event, self.endpoints_for(event))
        return len(held)

    # -- attempts

    def signed_post(self, job: Job) -> SignedPost:
        payload = json.dumps(render.event(job.event), indent=2)
        timestamp = real_now()
        headers = {
            "Content-Type": "application/json; charset=utf-8",
            "User-Agent": USER_AGENT,
            "Stripe-Signature": sign(payload, job.endpoint.secret, timestamp),
        }
        return SignedPost(job.endpoint.url, payload, headers, timestamp)

    def describe(self, job: Job) -> dict[str, Any]:
        return {
            "event": job.event.id,
            "type": job.event.type,
            "endpoint": job.endpoint.id,
            "url": job.endpoint.url,
            "attempt": job.attempt,
            "duplicate": job.duplicate,
        }

    def delivered(self, job: Job) -> None:
        key = (job.event.id, job.endpoint.id)
        if key not in self.succeeded:
            self.succeeded.add(key)
            job.event.pending_webhooks = max(0, job.event.pending_webhooks - 1)

    def failed(self, job: Job) -> None:
        if job.attempt < self.max_attempts:
            self.later(self.backoff(job.attempt), Job(job.event, job.endpoint, job.attempt + 1))

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


DISPATCHER: Final = Dispatcher(STATE)
