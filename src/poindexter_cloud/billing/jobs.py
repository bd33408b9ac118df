"""Billing's background jobs."""

from __future__ import annotations

import os
import socket
import uuid
from datetime import UTC, date, datetime
from typing import Any

from poindexter_cloud.accounts.api_keys import ApiKeyVerifier
from poindexter_cloud.accounts.service import Accounts
from poindexter_cloud.billing import service, usage_sync
from poindexter_cloud.billing.stripe_adapter import StripeAdapter
from poindexter_cloud.billing.usage_buffer import UsageBuffer, UsageDrainer, stream_for
from poindexter_cloud.core.db import UnitOfWork
from poindexter_cloud.core.jobs import GAUGE_SECONDS
from poindexter_cloud.core.metrics import STRIPE_METER_EVENTS_UNSENT, USAGE_BUFFER_DEPTH, USAGE_BUFFER_LAG
from poindexter_cloud.core.queue import Every, background, cron, job
from poindexter_cloud.core.resources import Resources
from poindexter_cloud.webhooks import service as webhooks


@cron("17 3 * * *", timeout_seconds=300)
async def ensure_usage_partitions(ctx: dict[str, Any]) -> int:
    """Keep monthly usage_events partitions created ahead, so an insert never lands in the default one."""
    resources = ctx["resources"]
    async with resources.unit_of_work() as uow:
        created = await service.ensure_usage_partitions(
            uow.session, resources.settings.usage_partitions_ahead
        )
        await uow.commit()
    return created


@cron("*/5 * * * *", timeout_seconds=900)
async def sync_usage(ctx: dict[str, Any], user_id: str | None = None) -> dict[str, int]:
    """Roll usage_events into usage_monthly, and send each Stripe-billed subscription's new overage to
    Stripe's meters exactly once (``billing.usage_sync``); every user, or just ``user_id``. Idempotent."""
    resources: Resources = ctx["resources"]
    stats = await usage_sync.run(resources, uuid.UUID(user_id) if user_id else None)
    return stats.as_dict()


@background
def usage_drainer(resources: Resources) -> UsageDrainer:
    """Moves usage events from the Redis buffer into usage_events, exactly once."""
    return UsageDrainer(
        resources.redis,
        resources.db,
        f"{socket.gethostname()}-{os.getpid()}",
        stream=stream_for(resources.settings.queue_name),
    )


@cron("23 3 * * *", timeout_seconds=600)
async def drop_old_usage_events(ctx: dict[str, Any]) -> list[str]:
    """Drop the usage_events partitions older than USAGE_EVENTS_RETENTION_MONTHS whole months (their totals
    stay in usage_monthly, what was billed in meter_event_records)."""
    resources: Resources = ctx["resources"]
    this_month = datetime.now(UTC).date().replace(day=1)
    months = resources.settings.usage_events_retention_months
    index = this_month.year * 12 + this_month.month - 1 - months
    cutoff = date(index // 12, index % 12 + 1, 1)
    async with resources.unit_of_work() as uow:
        dropped = await service.drop_usage_partitions_before(uow.session, cutoff)
        await uow.commit()
    return dropped


@job(timeout_seconds=120)
async def process_stripe_event(ctx: dict[str, Any], event_id: str) -> str:
    """Act on one stored Stripe webhook event (``webhooks.service``): read its subscription's current state
    from Stripe, mirror it into ``subscriptions``, mark the event processed, all in one transaction; then
    tell every proxy replica. Idempotent: a processed event is skipped, and reading current state makes
    duplicates and reordered deliveries converge on Stripe's state."""
    resources: Resources = ctx["resources"]
    verifier = ApiKeyVerifier(resources.db, resources.redis, resources.settings)

    async def act(uow: UnitOfWork, event: webhooks.ProviderEvent) -> tuple[service.Applied, dict[str, Any]]:
        async with StripeAdapter.from_settings(resources.settings) as stripe:
            applied = await service.apply_stripe_event(
                uow, Accounts(resources.settings), stripe, resources.settings, event.type, event.payload
            )
        user_id = applied.user_id
        if applied.changed and user_id is not None:
            uow.after_commit(lambda: verifier.announce_user_changed(user_id))  # proxies re-read the plan
        return applied, service.stripe_event_summary(event.payload)

    applied = await webhooks.process_stored_event(resources, webhooks.STRIPE, event_id, act)
    if applied is None:
        return "already processed"
    return applied.note


@background
def billing_gauges(resources: Resources) -> Every:
    """Samples the usage buffer's depth and lag and the overage meter events Stripe has not accepted yet."""
    buffer = UsageBuffer(resources.redis, stream_for(resources.settings.queue_name))

    async def sample() -> None:
        USAGE_BUFFER_DEPTH.set(await buffer.depth())
        USAGE_BUFFER_LAG.set(await buffer.oldest_pending_age_seconds() or 0)
        async with resources.db.sessions() as session:
            unsent = await usage_sync.unsent_counts(session)
        for status in ("pending", "stale"):
            STRIPE_METER_EVENTS_UNSENT.labels(status).set(unsent.get(status, 0))

    return Every(GAUGE_SECONDS, sample, "billing gauges sampling")
