"""Identity's background jobs: keeping received messages only as long as the retention period says."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from poindexter_cloud.core.queue import cron
from poindexter_cloud.core.resources import Resources
from poindexter_cloud.identity import service


@cron("41 4 * * *", timeout_seconds=600)
async def drop_old_messages(ctx: dict[str, Any]) -> int:
    """Delete SMS (received and sent) and received Signal messages older than MESSAGE_RETENTION_DAYS."""
    resources: Resources = ctx["resources"]
    cutoff = datetime.now(UTC) - timedelta(days=resources.settings.message_retention_days)
    async with resources.unit_of_work() as uow:
        deleted = await service.drop_messages_before(uow.session, cutoff)
        await uow.commit()
    return deleted
