"""Background jobs on SAQ, with every run recorded in ``job_history``.

Jobs follow a transactional outbox: ``UnitOfWork.defer_job`` writes a ``pending`` job_history row in the
caller's transaction; after the commit the row's id becomes the SAQ job key. If the process dies between
commit and enqueue, or Redis is away then (the commit stands, with a warning), the outbox sweep (the
worker's ``core.jobs.outbox_sweep``, every 10 s) finds the row still pending and enqueues it, and SAQ's key
dedupe makes the second enqueue of a live job a no-op. A rolled-back transaction leaves no row, so its job
never runs. The same sweep settles a ``running`` or ``retrying`` row whose SAQ job is no longer live and whose
outcome PostgreSQL was not told (it was down): a job SAQ completed is recorded completed, one its sweep gave
up on (its worker kept dying) failed, and one that ran out of attempts, or whose record SAQ no longer keeps,
is enqueued again.

A running job is touched every few seconds (its heartbeat), so the job of a worker that died (SIGKILL, out
of memory) is retried by the next sweep of a live worker, not only once its whole timeout has passed.

Job functions are registered with ``@job`` (or ``@cron``) in each module's ``jobs.py``; they receive the
SAQ context (``ctx["resources"]`` is the process's ``Resources``) and ids, never objects, so a retry works
from the current state of the database.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import importlib
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from saq import CronJob, Job, Status
from saq.job import TERMINAL_STATUSES
from saq.queue.redis import RedisQueue
from sqlalchemy import and_, delete, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from poindexter_cloud.core.metrics import JOB_DURATION, JOBS, cached
from poindexter_cloud.core.models import JobHistory
from poindexter_cloud.core.observe import JobTrace

log = logging.getLogger(__name__)

JobFunction = Callable[..., Awaitable[Any]]

STRANDED_AFTER = timedelta(seconds=30)
UNFINISHED = ("pending", "running", "retrying")  # job_history statuses the outbox sweep looks at
FINISHED = ("completed", "failed")
# A running job is touched every BEAT_SECONDS; one untouched for HEARTBEAT_SECONDS belongs to a dead worker,
# and a sweep (every SWEEP_SECONDS; SAQ's default is a minute) retries it. SAQ's sweep judges the jobs of
# one pass on what it read when the pass began and waits up to ABORT_WAIT_SECONDS for each abort, so the
# margin between the beat and the heartbeat keeps a pass over a few dead jobs from taking a live one for
# dead.
BEAT_SECONDS = 5
HEARTBEAT_SECONDS = 30
SWEEP_SECONDS = 5
# A sweep waits this long, one stuck job after another, for the job's worker to take its abort. SAQ's 5 s
# made a worker killed with ten jobs in flight leave the last one waiting 50 s more; a dead worker never
# answers, and a live one checks for aborts every second (SAQ's abort timer).
ABORT_WAIT_SECONDS = 1.5
ORIGIN = "origin"  # the SAQ job meta key of observe.job_origin()
MAX_RETRY_DELAY_SECONDS = 300.0
ERROR_TEXT_LIMIT = 2000


@dataclass(frozen=True, slots=True)
class JobSpec:
    function: JobFunction
    timeout_seconds: int
    cron: str | None = None

    @property
    def name(self) -> str:
        return self.function.__name__


REGISTRY: dict[str, JobSpec] = {}

# Modules whose jobs.py registers jobs; imported for their side effect of filling the registry.
JOB_MODULES = ("core", "accounts", "identity", "proxy", "billing", "provisioning", "webhooks", "admin")


def load_jobs() -> None:
    for name in JOB_MODULES:
        try:
            importlib.import_module(f"poindexter_cloud.{name}.jobs")
        except ModuleNotFoundError as exc:
            if exc.name != f"poindexter_cloud.{name}.jobs":
                raise


def job(timeout_seconds: int = 300) -> Callable[[JobFunction], JobFunction]:
    """Register a job function under its own name."""

    def register(function: JobFunction) -> JobFunction:
        _register(JobSpec(function, timeout_seconds))
        return function

    return register


def cron(schedule: str, timeout_seconds: int = 300) -> Callable[[JobFunction], JobFunction]:
    """Register a job function that the worker also runs on a cron schedule (UTC)."""

    def register(function: JobFunction) -> JobFunction:
        _register(JobSpec(function, timeout_seconds, schedule))
        return function

    return register


def _register(spec: JobSpec) -> None:
    existing = REGISTRY.get(spec.name)
    if existing is not None and existing.function is not spec.function:
        raise ValueError(f"two jobs are named {spec.name!r}")
    REGISTRY[spec.name] = spec


async def record_pending_job(
    session: AsyncSession, function: str, kwargs: dict[str, Any], origin: dict[str, str]
) -> uuid.UUID:
    if function not in REGISTRY:
        load_jobs()
    if function not in REGISTRY:
        raise KeyError(f"unknown job {function!r}")
    row = JobHistory(
        id=uuid.uuid4(),
        job_type=function,
        payload=kwargs,
        origin=origin or None,
        status="pending",
        attempts=0,
    )
    session.add(row)
    await session.flush()
    return row.id


class _RedisQueue(RedisQueue):
    """SAQ's Redis queue, its sweep waiting ``ABORT_WAIT_SECONDS`` for each abort instead of 5 s."""

    async def sweep(self, lock: int = 60, abort: float = ABORT_WAIT_SECONDS) -> list[str]:
        return await super().sweep(lock, abort)


class JobQueue:
    """The SAQ queue of this deployment, plus the retry policy every job gets."""

    def __init__(
        self, redis_url: str, *, max_attempts: int, retry_delay_seconds: float, name: str = "poindexter"
    ) -> None:
        self.saq = _RedisQueue.from_url(redis_url, name=name)
        self.max_attempts = max_attempts
        self.retry_delay_seconds = retry_delay_seconds

    async def connect(self) -> None:
        await self.saq.connect()

    async def disconnect(self) -> None:
        await self.saq.disconnect()

    def _job(self, key: str, function: str, kwargs: dict[str, Any], origin: dict[str, str]) -> Job:
        spec = REGISTRY[function]
        return Job(
            function=function,
            kwargs=kwargs,
            meta={ORIGIN: origin} if origin else {},
            key=key,
            timeout=spec.timeout_seconds,
            heartbeat=HEARTBEAT_SECONDS,
            retries=self.max_attempts,
            retry_delay=self.retry_delay_seconds,
            retry_backoff=MAX_RETRY_DELAY_SECONDS,
        )

    async def enqueue(
        self,
        history_id: uuid.UUID,
        function: str,
        kwargs: dict[str, Any],
        origin: dict[str, str] | None = None,
    ) -> bool:
        """Hand one recorded job to SAQ; its job_history id is the SAQ key, so a repeat while the job is
        live is a no-op (False). ``origin`` (``observe.job_origin``) is the asking request's id and trace
        context."""
        job = self._job(str(history_id), function, kwargs, origin or {})
        return await self.saq.enqueue(job) is not None


async def enqueue_stranded(
    session: AsyncSession, queue: JobQueue, older_than: timedelta = STRANDED_AFTER
) -> int:
    """Settle the unfinished rows older than ``older_than`` by what SAQ knows of their job. One SAQ ended
    more than ``older_than`` ago (so ``after_job`` could not record it) is recorded completed, or failed if
    SAQ's sweep gave up on it, or enqueued again if it ran out of attempts (to an outage, perhaps). Any
    other is enqueued: a pending one whose post-commit enqueue never happened (the process died in between),
    one whose SAQ record has expired (``Job.ttl`` after its end) or that SAQ left unfinished; SAQ refuses a
    key it still holds, so a live job is left alone. The caller commits; returns how many were enqueued."""
    cutoff = datetime.now(UTC) - older_than
    # A periodic job's run left "running" is not run again out of turn: its next scheduled run does the same
    # work, and a cron run's row id is not its SAQ key, so SAQ could not tell it is still live.
    periodic = [name for name, spec in REGISTRY.items() if spec.cron is not None]
    unfinished = or_(
        JobHistory.status == "pending",
        and_(JobHistory.status.in_(UNFINISHED), JobHistory.job_type.not_in(periodic)),
    )
    rows = (
        (
            await session.execute(
                select(JobHistory)
                .where(unfinished, JobHistory.created_at < cutoff)
                .order_by(JobHistory.created_at)
                .limit(500)
            )
        )
        .scalars()
        .all()
    )
    held = await queue.saq.jobs([str(row.id) for row in rows]) if rows else []
    ended_before = cutoff.timestamp() * 1000  # SAQ's times are epoch milliseconds
    enqueued = 0
    for row, saq_job in zip(rows, held, strict=True):
        if saq_job is not None and saq_job.status in TERMINAL_STATUSES:
            if saq_job.completed >= ended_before:
                continue  # it has just ended: after_job is recording it
            if saq_job.status != Status.FAILED:
                status = _STATUS_NAMES[saq_job.status]
                if status == "failed":  # SAQ's sweep gave up on it: no after_job counted it
                    _failed_for_good(saq_job, row.id)
                await session.execute(
                    update(JobHistory)
                    .where(JobHistory.id == row.id, JobHistory.status.in_(UNFINISHED))
                    .values(**_outcome(saq_job, status, _error_text(saq_job, None)))
                )
                continue
        if row.job_type not in REGISTRY:  # renamed or removed since it was asked for: nothing can run it
            log.error("stranded job of an unknown type", extra={"job": row.job_type, "job_id": str(row.id)})
            await session.execute(
                update(JobHistory)
                .where(JobHistory.id == row.id)
                .values(status="failed", last_error=f"no job named {row.job_type!r} in this version")
            )
            continue
        # Never enqueued, its record expired, out of attempts (to the outage itself, perhaps) or left
        # unfinished (a sweep that died between its abort and its retry): SAQ refuses a key it still holds.
        enqueued += await queue.enqueue(row.id, row.job_type, dict(row.payload), row.origin)
    return enqueued


async def drop_finished_jobs_before(session: AsyncSession, cutoff: datetime) -> int:
    """Delete the records of jobs asked for before ``cutoff`` that have finished (completed or failed);
    the caller commits. Unfinished ones stay: the outbox sweep still needs them. Returns how many went."""
    result = await session.execute(
        delete(JobHistory).where(JobHistory.status.in_(FINISHED), JobHistory.created_at < cutoff)
    )
    return int(getattr(result, "rowcount", 0) or 0)


def _history_id(job: Job) -> uuid.UUID | None:
    try:
        return uuid.UUID(job.key)
    except ValueError:
        return None


def _error_text(job: Job, exc: BaseException | None) -> str | None:
    if exc is None:
        return (job.error or "")[-ERROR_TEXT_LIMIT:] or None
    return f"{type(exc).__name__}: {exc}"[:ERROR_TEXT_LIMIT]


def _outcome(job: Job, status: str, error: str | None) -> dict[str, Any]:
    """The job_history columns of a run's outcome (``status`` is ours: completed, retrying or failed)."""
    values: dict[str, Any] = {"status": status, "attempts": job.attempts}
    if status == "completed":
        values["completed_at"] = datetime.fromtimestamp(job.completed / 1000, UTC)
    else:
        values["last_error"] = error
    return values


_STATUS_NAMES = {Status.COMPLETE: "completed", Status.FAILED: "failed", Status.ABORTED: "failed"}


async def before_job(ctx: dict[str, Any]) -> None:
    """Mark the job's history row running (cron runs get a row of their own here), and carry on the asking
    request's id and trace: the job's log lines and span join the request's."""
    job: Job = ctx["job"]
    resources = ctx["resources"]
    now = datetime.now(UTC)
    history_id = _history_id(job)
    ctx["trace"] = JobTrace(job.function, (job.meta or {}).get(ORIGIN) or {}, f"job-{job.key}")
    async with resources.db.sessions() as session:
        if history_id is None:
            history_id = uuid.uuid4()
            session.add(
                JobHistory(
                    id=history_id,
                    job_type=job.function,
                    payload=job.kwargs or {},
                    status="running",
                    attempts=job.attempts,
                    started_at=now,
                )
            )
        else:
            await session.execute(
                update(JobHistory)
                .where(JobHistory.id == history_id)
                .values(status="running", attempts=job.attempts, started_at=now)
            )
        await session.commit()
    ctx["history_id"] = history_id
    ctx["started"] = time.monotonic()


_job_runs = cached(JOBS)
_job_duration = cached(JOB_DURATION)


def _failed_for_good(job: Job, history_id: uuid.UUID) -> None:
    _job_runs(job.function, "failed").inc()
    log.error(
        "job failed for good",
        extra={"job": job.function, "job_id": str(history_id), "attempts": job.attempts},
    )


async def after_job(ctx: dict[str, Any]) -> None:
    """Record the outcome: completed, failed for good, or waiting for a retry."""
    job: Job = ctx["job"]
    status = _STATUS_NAMES.get(job.status, "retrying")
    try:
        await _record_outcome(ctx, job, status)
    finally:
        if "trace" in ctx:
            ctx.pop("trace").end(status)


async def _record_outcome(ctx: dict[str, Any], job: Job, status: str) -> None:
    history_id = ctx.get("history_id")
    if history_id is None:
        return
    if status == "failed":
        _failed_for_good(job, history_id)
    else:
        _job_runs(job.function, status).inc()
    if "started" in ctx:
        _job_duration(job.function).observe(time.monotonic() - ctx["started"])
    values = _outcome(job, status, _error_text(job, ctx.get("exception")))
    async with ctx["resources"].db.sessions() as session:
        await session.execute(update(JobHistory).where(JobHistory.id == history_id).values(**values))
        await session.commit()


class BackgroundService(Protocol):
    """A loop the worker role runs beside its jobs (e.g. draining the usage buffer)."""

    async def run(self) -> None: ...

    async def stop(self) -> None: ...


SERVICES: list[Callable[[Any], BackgroundService]] = []


def background(factory: Callable[[Any], BackgroundService]) -> Callable[[Any], BackgroundService]:
    """Register a factory taking the worker's Resources and returning a service to run while it runs."""
    if factory not in SERVICES:
        SERVICES.append(factory)
    return factory


class Every:
    """A background service that runs ``action`` every ``seconds`` (first at once) until stopped; an
    error is logged and the next round comes anyway. For sampling gauges, mostly."""

    def __init__(self, seconds: float, action: Callable[[], Awaitable[Any]], name: str) -> None:
        self.seconds = seconds
        self.action = action
        self.name = name
        self._stopping = asyncio.Event()

    async def run(self) -> None:
        while not self._stopping.is_set():
            try:
                await self.action()
            except Exception:
                log.warning("%s failed; next try in %.0f s", self.name, self.seconds, exc_info=True)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self.seconds)

    async def stop(self) -> None:
        self._stopping.set()


@functools.cache
def _with_heartbeat(function: JobFunction) -> JobFunction:
    """``function`` as the worker runs it: touching its job every ``BEAT_SECONDS`` while it runs. The beat
    stops before the function returns, so it never races SAQ's recording of the outcome."""

    @functools.wraps(function)
    async def run(ctx: dict[str, Any], **kwargs: Any) -> Any:
        beat = asyncio.create_task(_beat(ctx["job"]))
        try:
            return await function(ctx, **kwargs)
        finally:
            beat.cancel()
            await asyncio.gather(beat, return_exceptions=True)

    return run


async def _beat(job: Job) -> None:
    while True:
        await asyncio.sleep(BEAT_SECONDS)
        try:
            await job.update()  # SAQ's heartbeat: sets ``touched``, keeps the stored status
        except Exception as exc:  # Redis away for a moment: the next beat tries again
            log.warning("job heartbeat failed (%s: %s)", type(exc).__name__, exc, extra={"job": job.function})


def cron_jobs() -> list[CronJob[Any]]:
    return [
        CronJob(
            _with_heartbeat(spec.function),
            cron=spec.cron,
            timeout=spec.timeout_seconds,
            heartbeat=HEARTBEAT_SECONDS,
        )
        for spec in REGISTRY.values()
        if spec.cron is not None
    ]


def job_functions() -> list[tuple[str, JobFunction]]:
    return [(name, _with_heartbeat(spec.function)) for name, spec in REGISTRY.items()]
