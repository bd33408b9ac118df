"""Billing's background jobs."""

from __future__ import annotations

from typing import Any

from poindexter_cloud.billing import service
from poindexter_cloud.core.queue import cron


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
