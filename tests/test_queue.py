"""Jobs: recorded in job_history, retried with backoff, failed visibly, enqueued only after commit, and
settled by the outbox sweep when PostgreSQL missed their outcome."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from saq import Status
from sqlalchemy import select, update

from conftest import eventually
from poindexter_cloud.core.embedded import free_port
from poindexter_cloud.core.jobs import OUTBOX_SWEEP_SECONDS
from poindexter_cloud.core.models import JobHistory
from poindexter_cloud.core.queue import JobQueue, enqueue_stranded, job
from poindexter_cloud.core.resources import Resources

RUNS: dict[str, int] = {}


@job(timeout_seconds=10)
async def flaky_job(ctx: dict[str, Any], token: str, failures: int) -> None:
    RUNS[token] = RUNS.get(token, 0) + 1
    if RUNS[token] <= failures:
        raise RuntimeError(f"failure {RUNS[token]} of {failures}")


async def history(resources: Resources, job_id: uuid.UUID) -> JobHistory:
    async with resources.db.sessions() as session:
        return (await session.execute(select(JobHistory).where(JobHistory.id == job_id))).scalar_one()


async def finished(resources: Resources, job_id: uuid.UUID) -> JobHistory | None:
    row = await history(resources, job_id)
    return row if row.status in {"completed", "failed"} else None


async def defer(resources: Resources, failures: int) -> tuple[str, uuid.UUID]:
    token = uuid.uuid4().hex
    async with resources.unit_of_work() as uow:
        job_id = await uow.defer_job("flaky_job", token=token, failures=failures)
        await uow.commit()
    return token, job_id


async def test_a_job_that_fails_twice_then_succeeds_is_recorded_with_three_attempts(
    resources: Resources, worker: Any
) -> None:
    token, job_id = await defer(resources, failures=2)
    row = await eventually(lambda: finished(resources, job_id))
    assert (row.status, row.attempts, RUNS[token]) == ("completed", 3, 3)
    assert row.completed_at is not None


async def test_a_job_that_always_fails_ends_failed_with_its_error(resources: Resources, worker: Any) -> None:
    token, job_id = await defer(resources, failures=100)
    row = await eventually(lambda: finished(resources, job_id), within=20)
    assert row.status == "failed"
    assert row.attempts == resources.settings.job_max_attempts == RUNS[token]
    assert "RuntimeError: failure 5 of 100" in (row.last_error or "")


async def test_a_job_deferred_in_a_rolled_back_transaction_never_runs(
    resources: Resources, worker: Any
) -> None:
    token = uuid.uuid4().hex
    with pytest.raises(RuntimeError):
        async with resources.unit_of_work() as uow:
            await uow.defer_job("flaky_job", token=token, failures=0)
            raise RuntimeError("the request failed after asking for the job")
    # A committed job deferred afterwards has run, so the rolled-back one had every chance to.
    _, later = await defer(resources, failures=0)
    await eventually(lambda: finished(resources, later))
    assert token not in RUNS
    async with resources.db.sessions() as session:
        rows = (
            await session.execute(select(JobHistory).where(JobHistory.payload["token"].astext == token))
        ).all()
    assert rows == []


async def strand(resources: Resources, job_id: uuid.UUID) -> None:
    """Age a job's row past the outbox sweep's STRANDED_AFTER. The worker's own sweep then finds it:
    the tests that use this never call enqueue_stranded themselves."""
    async with resources.db.sessions() as session:
        await session.execute(
            update(JobHistory)
            .where(JobHistory.id == job_id)
            .values(created_at=datetime.now(UTC) - timedelta(minutes=5))
        )
        await session.commit()


async def runs_once_from_the_sweep(resources: Resources, job_id: uuid.UUID, token: str) -> None:
    """Strand the job's row; the worker's own sweep must then run it, once."""
    await strand(resources, job_id)
    row = await eventually(lambda: finished(resources, job_id), within=OUTBOX_SWEEP_SECONDS * 2)
    assert row.status == "completed" and RUNS[token] == 1


async def test_a_job_committed_but_never_enqueued_is_picked_up_by_the_outbox_sweep(
    resources: Resources, worker: Any
) -> None:
    token = uuid.uuid4().hex
    # Commit through a unit of work with no queue: the process "died" before handing the job over.
    async with resources.db.unit_of_work(queue=None) as uow:
        job_id = await uow.defer_job("flaky_job", token=token, failures=0)
        await uow.commit()
    await runs_once_from_the_sweep(resources, job_id, token)


async def test_a_job_committed_while_redis_is_away_still_commits_and_the_sweep_runs_it(
    resources: Resources, worker: Any
) -> None:
    token = uuid.uuid4().hex
    away = JobQueue(f"redis://127.0.0.1:{free_port()}", max_attempts=5, retry_delay_seconds=1.0)
    try:
        async with resources.db.unit_of_work(queue=away) as uow:
            job_id = await uow.defer_job("flaky_job", token=token, failures=0)
            await uow.commit()  # no error: what committed is done, and the job is safe in job_history
    finally:
        await away.saq.redis.aclose()  # not disconnect(): that would unsubscribe on a server never reached
    assert (await history(resources, job_id)).status == "pending"
    await runs_once_from_the_sweep(resources, job_id, token)


async def test_a_stranded_job_no_version_knows_fails_and_the_others_still_run(
    resources: Resources, worker: Any
) -> None:
    token = uuid.uuid4().hex
    async with resources.db.unit_of_work(queue=None) as uow:
        gone = await uow.defer_job("flaky_job", token=uuid.uuid4().hex, failures=0)
        job_id = await uow.defer_job("flaky_job", token=token, failures=0)
        await uow.session.execute(
            update(JobHistory).where(JobHistory.id == gone).values(job_type="a_job_since_removed")
        )
        await uow.commit()
    await strand(resources, gone)
    await runs_once_from_the_sweep(resources, job_id, token)
    removed = await eventually(lambda: finished(resources, gone), within=OUTBOX_SWEEP_SECONDS * 2)
    assert removed.status == "failed"
    assert removed.last_error == "no job named 'a_job_since_removed' in this version"


async def sweep(resources: Resources) -> None:
    async with resources.db.sessions() as session:
        await enqueue_stranded(session, resources.queue)
        await session.commit()


async def outcome_missed(resources: Resources, job_id: uuid.UUID, row_status: str, ended_ago: float) -> None:
    """As if PostgreSQL had been away when SAQ ended the job ``ended_ago`` seconds ago: its row still says
    ``row_status``."""
    async with resources.db.sessions() as session:
        await session.execute(
            update(JobHistory)
            .where(JobHistory.id == job_id)
            .values(status=row_status, created_at=datetime.now(UTC) - timedelta(minutes=5))
        )
        await session.commit()
    saq_job = await resources.queue.saq.job(str(job_id))
    assert saq_job is not None and saq_job.status in {Status.COMPLETE, Status.FAILED}
    await resources.queue.saq.update(saq_job, completed=int((time.time() - ended_ago) * 1000))


async def saq_status(resources: Resources, job_id: uuid.UUID) -> Status | None:
    saq_job = await resources.queue.saq.job(str(job_id))
    return None if saq_job is None else saq_job.status


async def test_a_job_completed_while_its_outcome_was_not_recorded_is_recorded_by_the_sweep_and_never_rerun(
    resources: Resources, worker: Any
) -> None:
    token, job_id = await defer(resources, failures=0)
    await eventually(lambda: finished(resources, job_id))

    # Just ended: after_job may still be writing, so the sweep leaves the row to it.
    await outcome_missed(resources, job_id, "running", ended_ago=1)
    await sweep(resources)
    assert (await history(resources, job_id)).status == "running"
    assert await saq_status(resources, job_id) == Status.COMPLETE

    # Ended long ago, PostgreSQL never told: the sweep records what SAQ knows.
    await outcome_missed(resources, job_id, "running", ended_ago=120)
    await sweep(resources)
    row = await history(resources, job_id)
    assert (row.status, row.attempts) == ("completed", 1) and row.completed_at is not None
    assert await saq_status(resources, job_id) == Status.COMPLETE
    assert RUNS[token] == 1


async def test_a_job_its_worker_kept_dying_under_is_recorded_failed_not_run_again(
    resources: Resources, worker: Any
) -> None:
    token, job_id = await defer(resources, failures=0)
    await eventually(lambda: finished(resources, job_id))
    await outcome_missed(resources, job_id, "running", ended_ago=120)
    # What SAQ's sweep leaves of a job whose last attempt's worker died: aborted, no retry left.
    saq_job = await resources.queue.saq.job(str(job_id))
    assert saq_job is not None
    await resources.queue.saq.update(saq_job, status=Status.ABORTED, error="swept")

    await sweep(resources)
    row = await history(resources, job_id)
    assert (row.status, row.last_error) == ("failed", "swept")
    assert await saq_status(resources, job_id) == Status.ABORTED
    assert RUNS[token] == 1


async def test_a_job_that_ran_out_of_attempts_while_its_outcome_was_not_recorded_runs_again(
    resources: Resources, worker: Any
) -> None:
    attempts = resources.settings.job_max_attempts
    token, job_id = await defer(resources, failures=attempts)  # every attempt fails (an outage, say)
    assert (await eventually(lambda: finished(resources, job_id), within=20)).status == "failed"
    await outcome_missed(resources, job_id, "retrying", ended_ago=120)

    await sweep(resources)
    row = await eventually(lambda: finished(resources, job_id))
    assert row.status == "completed" and RUNS[token] == attempts + 1


async def test_a_job_a_dying_sweep_left_half_aborted_runs_again(resources: Resources, worker: Any) -> None:
    token, job_id = await defer(resources, failures=0)
    await eventually(lambda: finished(resources, job_id))
    await outcome_missed(resources, job_id, "retrying", ended_ago=120)
    # What SAQ's sweep leaves when its worker dies between aborting a stuck job and retrying it: the job
    # marked aborting, in none of SAQ's lists, so nothing in SAQ runs it any more.
    saq_job = await resources.queue.saq.job(str(job_id))
    assert saq_job is not None
    await resources.queue.saq.update(saq_job, status=Status.ABORTING, error="swept")

    await sweep(resources)
    row = await eventually(lambda: finished(resources, job_id))
    assert row.status == "completed" and RUNS[token] == 2
