"""Webhooks' rules: verify a provider's delivery, store each event once by its id, hand it to a job.

The receiving request does only that, so it can acknowledge within the provider's timeout and never loses
an event: the row and the job that processes it are written in one transaction, and the 2xx goes out after
it commits. A redelivery (same event id) finds the row, writes nothing and is acknowledged again. The
processing job (``billing.jobs.process_stripe_event``, ``provisioning.jobs.process_telnyx_event``) claims
the row, acts, and marks it processed in its own transaction. Never commits: the caller's unit of work does.
With PostgreSQL unreachable the receiver keeps the verified event in Redis instead (``webhooks.inbox``) and
still acknowledges it: Telnyx tries a URL only three times.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, TypeVar

from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from poindexter_cloud.billing.stripe_adapter import verify_webhook
from poindexter_cloud.core.db import UnitOfWork
from poindexter_cloud.core.metrics import WEBHOOK_EVENTS_PROCESSED, WEBHOOK_EVENTS_RECEIVED, cached
from poindexter_cloud.core.resources import Resources
from poindexter_cloud.integrations.telnyx import verify_webhook as verify_telnyx_webhook
from poindexter_cloud.webhooks.models import WebhookEvent

STRIPE: Final = "stripe"
TELNYX: Final = "telnyx"
ERROR_TEXT_LIMIT: Final = 2000
# The Telnyx events we act on: SMS reaching one of our numbers, and the delivery reports of those we send.
TELNYX_EVENTS: Final = frozenset({"message.received", "message.sent", "message.finalized"})

_received = cached(WEBHOOK_EVENTS_RECEIVED)
_processed = cached(WEBHOOK_EVENTS_PROCESSED)


@dataclass(frozen=True, slots=True)
class Received:
    event_id: str
    type: str
    duplicate: bool


async def record_event(
    session: AsyncSession, provider: str, event_id: str, event_type: str, payload: dict[str, Any]
) -> bool:
    """Store the event unless its id is already stored; True if it is new."""
    inserted = await session.execute(
        insert(WebhookEvent)
        .values(provider=provider, event_id=event_id, type=event_type, payload=payload)
        .on_conflict_do_nothing(index_elements=["provider", "event_id"])
        .returning(WebhookEvent.id)
    )
    new = inserted.scalar_one_or_none() is not None
    _received(provider, event_type, "false" if new else "true").inc()
    return new


# Each provider's processing job, deferred with a newly stored event.
PROCESSING_JOBS: Final = {STRIPE: "process_stripe_event", TELNYX: "process_telnyx_event"}


@dataclass(frozen=True, slots=True)
class ProviderEvent:
    """One event of a provider: a delivery whose signature verified (stored now, or held in the inbox,
    ``webhooks.inbox``, while PostgreSQL is away), or a stored one its processing job claimed."""

    provider: str
    event_id: str
    type: str
    payload: dict[str, Any]


def verify_stripe(body: bytes, signature: str | None, secret: str) -> ProviderEvent:
    """``InvalidWebhookSignature`` if the delivery is forged or stale: nothing is written."""
    event = verify_webhook(body, signature, secret)
    return ProviderEvent(STRIPE, event.id, event.type, event.payload)


def verify_telnyx(body: bytes, headers: Mapping[str, str], public_key: str) -> ProviderEvent | None:
    """``InvalidTelnyxSignature`` if the delivery is forged or stale: nothing is written. An inbound SMS or a
    delivery report of one we sent is kept; other events are acknowledged and dropped (None)."""
    event = verify_telnyx_webhook(body, headers, public_key)
    if event.type not in TELNYX_EVENTS:
        return None
    return ProviderEvent(TELNYX, event.id, event.type, event.payload)


async def store(uow: UnitOfWork, event: ProviderEvent) -> Received:
    """Store the event once by its id and defer its processing in the same transaction."""
    new = await record_event(uow.session, event.provider, event.event_id, event.type, event.payload)
    if new:
        await uow.defer_job(PROCESSING_JOBS[event.provider], event_id=event.event_id)
    return Received(event.event_id, event.type, duplicate=not new)


async def start_attempt(session: AsyncSession, provider: str, event_id: str) -> bool:
    """Count a processing attempt; False if the event is unknown or already processed."""
    counted = await session.execute(
        update(WebhookEvent)
        .where(
            WebhookEvent.provider == provider,
            WebhookEvent.event_id == event_id,
            WebhookEvent.processed_at.is_(None),
        )
        .values(attempts=WebhookEvent.attempts + 1)
        .returning(WebhookEvent.id)
    )
    return counted.one_or_none() is not None


async def claim(session: AsyncSession, provider: str, event_id: str) -> ProviderEvent | None:
    """Lock the unprocessed event for this transaction; None if it is unknown or was processed meanwhile."""
    row = (
        await session.execute(
            select(WebhookEvent)
            .where(
                WebhookEvent.provider == provider,
                WebhookEvent.event_id == event_id,
                WebhookEvent.processed_at.is_(None),
            )
            .with_for_update()
        )
    ).scalar_one_or_none()
    return None if row is None else ProviderEvent(provider, event_id, row.type, row.payload)


async def mark_processed(
    session: AsyncSession, provider: str, event_id: str, payload: dict[str, Any] | None = None
) -> None:
    """Mark the event processed; ``payload`` replaces the stored one (to keep less than was received)."""
    values: dict[str, Any] = {"processed_at": datetime.now(UTC), "last_error": None}
    if payload is not None:
        values["payload"] = payload
    await _update(session, provider, event_id, "processed", **values)


async def record_failure(session: AsyncSession, provider: str, event_id: str, error: str) -> None:
    await _update(session, provider, event_id, "failed", last_error=error[:ERROR_TEXT_LIMIT])


async def _update(session: AsyncSession, provider: str, event_id: str, outcome: str, **values: Any) -> None:
    updated = await session.execute(
        update(WebhookEvent)
        .where(WebhookEvent.provider == provider, WebhookEvent.event_id == event_id)
        .values(**values)
        .returning(WebhookEvent.type)
    )
    for event_type in updated.scalars():
        _processed(provider, event_type, outcome).inc()


Outcome = TypeVar("Outcome")
# Acts on one claimed event in the processing transaction: what it did, and what the stored payload becomes.
Act = Callable[[UnitOfWork, ProviderEvent], Awaitable[tuple[Outcome, dict[str, Any]]]]


async def process_stored_event(
    resources: Resources, provider: str, event_id: str, act: Act[Outcome]
) -> Outcome | None:
    """Process one stored event at most once (the processing jobs of every provider): count the attempt,
    claim the event, let ``act`` do the provider's work and mark the event processed (keeping what ``act``
    says) in one transaction. On an error, record it and re-raise so the job retries. None if the event
    was already processed."""
    async with resources.unit_of_work() as uow:
        started = await start_attempt(uow.session, provider, event_id)
        await uow.commit()
    if not started:
        return None
    try:
        async with resources.unit_of_work() as uow:
            claimed = await claim(uow.session, provider, event_id)
            if claimed is None:
                return None
            outcome, kept = await act(uow, claimed)
            await mark_processed(uow.session, provider, event_id, kept)
            await uow.commit()
    except Exception as exc:
        async with resources.unit_of_work() as uow:
            await record_failure(uow.session, provider, event_id, f"{type(exc).__name__}: {exc}")
            await uow.commit()
        raise
    return outcome
