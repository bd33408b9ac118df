"""Jobs: recorded in job_history, retried with backoff, failed visibly, enqueued only after commit."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select, update

from conftest import eventually
from poindexter_cloud.core.models import JobHistory
from poindexter_cloud.core.queue import enqueue_stranded, job
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


async def test_a_job_committed_but_never_enqueued_is_picked_up_by_the_outbox_sweep(
    resources: Resources, worker: Any
) -> None:
    token = uuid.uuid4().hex
    # Commit through a unit of work with no queue: the process "died" before handing the job over.
    async with resources.db.unit_of_work(queue=None) as uow:
        job_id = await uow.defer_job("flaky_job", token=token, failures=0)
        await uow.commit()
    async with resources.db.sessions() as session:
        await session.execute(
            update(JobHistory)
            .where(JobHistory.id == job_id)
            .values(created_at=datetime.now(UTC) - timedelta(minutes=5))
        )
        await session.commit()
        assert await enqueue_stranded(session, resources.queue) >= 1
    row = await eventually(lambda: finished(resources, job_id))
    assert row.status == "completed" and RUNS[token] == 1
