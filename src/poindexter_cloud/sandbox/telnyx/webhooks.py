"""Webhook delivery: each event POSTed as Telnyx's v2 envelope, signed with the sandbox's Ed25519 key.

Body: ``{"data": {"event_type", "id", "occurred_at", "payload", "record_type": "event"}, "meta": {"attempt",
"delivered_to"}}``, signed afresh for each attempt (see ``signing.py``). Deliveries run one at a time in the
order events happened (the queue, its worker and its timers: ``sandbox/webhook_delivery.py``). As on Telnyx,
a URL that does not answer 2xx within ``timeout_seconds`` (2 s) is tried up to ``attempts_per_url`` times
(3), ``retry_base_seconds`` x 2^(n-1) apart, then the next URL the same way (the failover URL; for a message
with URLs of its own, the profile's after them); ``meta.attempt`` counts every attempt of the event. Retries
do not hold back later events.

Modes (``POST /telnyx/_control/webhooks``): ``normal``; ``duplicate`` sends every delivery twice (same event
id), as receivers must tolerate; ``hold`` keeps events until ``POST /telnyx/_control/webhooks/flush``.

Events may be emitted from any thread of the sandbox's process: off the event loop, the delivery is handed
to the loop the API last served on.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from ..webhook_delivery import DeliveryQueue, SignedPost
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


class Dispatcher(DeliveryQueue[Job, Job]):
    default_timeout_seconds = 2.0

    def reset(self) -> None:
        super().reset()
        self.attempts_per_url = 3
        self.events: deque[dict[str, Any]] = deque(maxlen=2000)

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
            jobs = self.copies(Job(event))
            if self.holding():
                self.held.extend(jobs)
            else:
                self.submit(jobs)
        return event.id

    def flush(self) -> int:
        """Queue the held events for delivery; returns how many there were."""
        jobs = self.release()
        self.submit(jobs)
        return len({job.event.id for job in jobs})

    # -- attempts

    def signed_post(self, job: Job) -> SignedPost:
        event = job.event
        body = json.dumps(
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
        signature = sign(body)
        headers = {"Content-Type": "application/json", **signature}
        return SignedPost(job.url, body, headers, int(signature["telnyx-timestamp"]))

    def describe(self, job: Job) -> dict[str, Any]:
        return {
            "event": job.event.id,
            "type": job.event.type,
            "url": job.url,
            "failover": job.url_index > 0,
            "attempt": job.attempt,
            "duplicate": job.duplicate,
        }

    def failed(self, job: Job) -> None:
        """Try the same URL again after a while, else the next URL at once."""
        if job.try_on_url < self.attempts_per_url:
            retry = Job(job.event, job.url_index, job.try_on_url + 1, job.attempt + 1)
            self.later(self.backoff(job.try_on_url), retry)
        elif job.url_index + 1 < len(job.event.urls):
            self.submit([Job(job.event, job.url_index + 1, 1, job.attempt + 1)])

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


DISPATCHER: Final = Dispatcher()
