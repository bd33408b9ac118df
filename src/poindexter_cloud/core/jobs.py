"""Jobs of the shared infrastructure."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, select

from poindexter_cloud.core.db import advisory_lock_key
from poindexter_cloud.core.metrics import QUEUE_DEPTH
from poindexter_cloud.core.queue import Every, background, cron, drop_finished_jobs_before, enqueue_stranded
from poindexter_cloud.core.resources import Resources

GAUGE_SECONDS = 15
# How often each worker looks for stranded jobs: after Redis lost its data, or PostgreSQL missed outcomes,
# the work resumes within STRANDED_AFTER plus this, not at the next whole minute.
OUTBOX_SWEEP_SECONDS = 10


@cron("53 3 * * *", timeout_seconds=600)
async def drop_old_job_history(ctx: dict[str, Any]) -> int:
    """Delete the records of finished jobs older than JOB_HISTORY_RETENTION_DAYS: every cron run adds one,
    and a payload names the user it worked for."""
    resources: Resources = ctx["resources"]
    cutoff = datetime.now(UTC) - timedelta(days=resources.settings.job_history_retention_days)
    async with resources.unit_of_work() as uow:
        deleted = await drop_finished_jobs_before(uow.session, cutoff)
        await uow.commit()
    return deleted


@background
def outbox_sweep(resources: Resources) -> Every:
    """The outbox sweep: enqueue jobs whose transaction committed but whose enqueue never happened, and
    settle the runs whose outcome PostgreSQL missed (``queue.enqueue_stranded``). Every worker runs it; a
    transaction-level advisory lock lets one sweep at a time, so two never enqueue the same row."""

    async def sweep() -> None:
        async with resources.db.sessions() as session:
            locked = select(func.pg_try_advisory_xact_lock(advisory_lock_key("outbox-sweep")))
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
