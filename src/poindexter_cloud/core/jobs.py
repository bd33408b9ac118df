"""Jobs of the shared infrastructure."""

from __future__ import annotations

from typing import Any

from poindexter_cloud.core.queue import cron, enqueue_stranded


@cron("* * * * *", timeout_seconds=60)
async def enqueue_stranded_jobs(ctx: dict[str, Any]) -> int:
    """Enqueue jobs whose transaction committed but whose enqueue never happened (the outbox sweep)."""
    resources = ctx["resources"]
    async with resources.db.sessions() as session:
        return await enqueue_stranded(session, resources.queue)
