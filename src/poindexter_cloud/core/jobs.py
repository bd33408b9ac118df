"""Jobs of the shared infrastructure."""

from __future__ import annotations

from sqlalchemy import func, select

from poindexter_cloud.core.metrics import QUEUE_DEPTH
from poindexter_cloud.core.queue import Every, background, enqueue_stranded
from poindexter_cloud.core.resources import Resources

GAUGE_SECONDS = 15
# How often each worker looks for stranded jobs: after Redis lost its data, or PostgreSQL missed outcomes,
# the work resumes within STRANDED_AFTER plus this, not at the next whole minute.
OUTBOX_SWEEP_SECONDS = 10


@background
def outbox_sweep(resources: Resources) -> Every:
    """The outbox sweep: enqueue jobs whose transaction committed but whose enqueue never happened, and
    settle the runs whose outcome PostgreSQL missed (``queue.enqueue_stranded``). Every worker runs it; a
    transaction-level advisory lock lets one sweep at a time, so two never enqueue the same row."""

    async def sweep() -> None:
        async with resources.db.sessions() as session:
            locked = select(func.pg_try_advisory_xact_lock(func.hashtextextended("outbox-sweep", 0)))
            if (await session.execute(locked)).scalar_one():
                await enqueue_stranded(session, resources.queue)
            await session.commit()

    return Every(OUTBOX_SWEEP_SECONDS, sweep, "outbox sweep")


@background
def queue_gauges(resources: Resources) -> Every:
    """Samples the jobs waiting in the queue for ``job_queue_depth``."""

    async def sample() -> None:
        QUEUE_DEPTH.set(await resources.queue.saq.count("queued"))

    return Every(GAUGE_SECONDS, sample, "queue depth sampling")
