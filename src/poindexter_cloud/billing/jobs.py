"""Billing's background jobs."""

from __future__ import annotations

import os
import socket
from typing import Any

from poindexter_cloud.billing import service
from poindexter_cloud.billing.usage_buffer import UsageDrainer, stream_for
from poindexter_cloud.core.queue import background, cron
from poindexter_cloud.core.resources import Resources


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


@background
def usage_drainer(resources: Resources) -> UsageDrainer:
    """Moves usage events from the Redis buffer into usage_events, exactly once."""
    return UsageDrainer(
        resources.redis,
        resources.db,
        f"{socket.gethostname()}-{os.getpid()}",
        stream=stream_for(resources.settings.queue_name),
    )
