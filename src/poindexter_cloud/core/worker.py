"""The worker role: SAQ's worker running every registered job and cron job, with job_history recording."""

from __future__ import annotations

import asyncio
from typing import Any

from saq import Worker

from poindexter_cloud.core import queue
from poindexter_cloud.core.resources import Resources
from poindexter_cloud.core.settings import Settings


def build_worker(settings: Settings, resources: Resources | None = None, **options: Any) -> Worker[Any]:
    """A SAQ worker over the deployment's queue. Without ``resources`` it opens and closes its own. It
    sweeps every ``queue.SWEEP_SECONDS`` (unless ``timers`` says otherwise): a dead worker's jobs are
    retried once their heartbeat is overdue."""
    queue.load_jobs()
    options["timers"] = {"sweep": queue.SWEEP_SECONDS, **options.get("timers", {})}
    owned: list[Resources] = []
    running: list[tuple[queue.BackgroundService, asyncio.Task[None]]] = []

    async def startup(ctx: dict[str, Any]) -> None:
        if resources is None:
            owned.append(await Resources.open(settings))
        ctx["resources"] = resources or owned[0]
        for factory in queue.SERVICES:
            service = factory(ctx["resources"])
            running.append((service, asyncio.create_task(service.run())))

    async def shutdown(ctx: dict[str, Any]) -> None:
        for service, task in running:
            await service.stop()
            await asyncio.gather(task, return_exceptions=True)
        for opened in owned:
            await opened.close()

    job_queue = (
        resources.queue
        if resources is not None
        else queue.JobQueue(
            settings.redis_url,
            max_attempts=settings.job_max_attempts,
            retry_delay_seconds=settings.job_retry_delay_seconds,
            name=settings.queue_name,
        )
    )
    return Worker(
        job_queue.saq,
        functions=queue.job_functions(),
        cron_jobs=queue.cron_jobs(),
        concurrency=settings.worker_concurrency,
        startup=startup,
        shutdown=shutdown,
        before_process=queue.before_job,
        after_process=queue.after_job,
        **options,
    )
