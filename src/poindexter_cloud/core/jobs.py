"""Jobs of the shared infrastructure."""

from __future__ import annotations

from typing import Any

from poindexter_cloud.core.metrics import QUEUE_DEPTH
from poindexter_cloud.core.queue import Every, background, cron, enqueue_stranded
from poindexter_cloud.core.resources import Resources

GAUGE_SECONDS = 15


@cron("* * * * *", timeout_seconds=60)
async def enqueue_stranded_jobs(ctx: dict[str, Any]) -> int:
    """The outbox sweep: enqueue jobs whose transaction committed but whose enqueue never happened, and
    settle the runs whose outcome PostgreSQL missed (``queue.enqueue_stranded``)."""
    resources = ctx["resources"]
    async with resources.db.sessions() as session:
        enqueued = await enqueue_stranded(session, resources.queue)
        await session.commit()
    return enqueued


@background
def queue_gauges(resources: Resources) -> Every:
    """Samples the jobs waiting in the queue for ``job_queue_depth``."""

    async def sample() -> None:
        QUEUE_DEPTH.set(await resources.queue.saq.count("queued"))

    return Every(GAUGE_SECONDS, sample, "queue depth sampling")
