"""Retention: the worker's daily jobs drop raw usage events past USAGE_EVENTS_RETENTION_MONTHS (whole
monthly partitions) and SMS (received and sent) and received Signal messages past MESSAGE_RETENTION_DAYS, and
keep everything younger."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import func, select, text

from conftest import eventually
from poindexter_cloud.billing.models import UsageEvent
from poindexter_cloud.billing.pricing import PRICE_TABLE_VERSION, TokenUsage
from poindexter_cloud.billing.usage import insert_usage_records
from poindexter_cloud.billing.usage_buffer import UsageRecord
from poindexter_cloud.core.models import JobHistory
from poindexter_cloud.core.resources import Resources
from poindexter_cloud.identity import service as identities
from poindexter_cloud.identity.models import IncomingSms, OutgoingSms, SignalMessage
from test_accounts import register


def event(user_id: uuid.UUID, at: datetime) -> UsageRecord:
    return UsageRecord(
        request_id=f"req_{uuid.uuid4().hex}",
        attempt=0,
        user_id=user_id,
        api_key_id=None,
        event_type="ai_request",
        model="claude-sonnet-4-5",
        provider="anthropic",
        usage=TokenUsage(input_tokens=10, output_tokens=5),
        cost_microdollars=1,
        latency_ms=1,
        status=200,
        estimated=False,
        created_at_us=int(at.timestamp() * 1_000_000),
        price_version=PRICE_TABLE_VERSION,
    )


async def run_job(resources: Resources, function: str) -> Any:
    async with resources.unit_of_work() as uow:
        job_id = await uow.defer_job(function)
        await uow.commit()

    async def finished() -> JobHistory | None:
        async with resources.db.sessions() as session:
            row = await session.get(JobHistory, job_id)
        return row if row is not None and row.status == "completed" else None

    return await eventually(finished, within=15)


async def events_of(resources: Resources, user_id: uuid.UUID) -> list[datetime]:
    async with resources.db.sessions() as session:
        rows = await session.execute(
            select(UsageEvent.created_at).where(UsageEvent.user_id == user_id).order_by(UsageEvent.created_at)
        )
        return list(rows.scalars())


async def test_usage_events_past_the_retention_are_dropped_with_their_partitions(
    resources: Resources, worker: Any
) -> None:
    user_id = uuid.uuid4()
    now = datetime.now(UTC)
    old_month = datetime(now.year - 3, now.month, 1, tzinfo=UTC)  # 36 months back: past the 25 kept
    partition = f"usage_events_{old_month:%Y_%m}"
    stray = old_month - timedelta(days=40)  # a month with no partition of its own: in the default one
    recent = now - timedelta(days=3)
    async with resources.unit_of_work() as uow:
        await uow.session.execute(
            text(
                f'CREATE TABLE IF NOT EXISTS "{partition}" PARTITION OF usage_events '
                f"FOR VALUES FROM ('{old_month:%Y-%m-%d}') TO ('{old_month + timedelta(days=32):%Y-%m-01}')"
            )
        )
        await insert_usage_records(
            uow.session,
            [event(user_id, old_month + timedelta(days=2)), event(user_id, stray), event(user_id, recent)],
        )
        await uow.commit()
    assert len(await events_of(resources, user_id)) == 3

    await run_job(resources, "drop_old_usage_events")

    assert await events_of(resources, user_id) == [
        datetime.fromtimestamp(int(recent.timestamp() * 1e6) / 1e6, UTC)
    ]
    async with resources.db.sessions() as session:
        exists = await session.scalar(select(func.to_regclass(partition)))
    assert exists is None


async def test_messages_past_the_retention_are_deleted(
    web: httpx.AsyncClient, resources: Resources, worker: Any
) -> None:
    user = await register(web)
    long_ago = datetime.now(UTC) - timedelta(days=resources.settings.message_retention_days + 1)
    async with resources.unit_of_work() as uow:
        identity = await identities.ensure(uow.session, uuid.UUID(user["user_id"]))
        for created, marker in ((long_ago, "old"), (datetime.now(UTC), "new")):
            uow.session.add(
                IncomingSms(
                    phone_number="+15555550100",
                    from_number="+15555550199",
                    body=f"{marker} sms",
                    identity_id=identity.id,
                    created_at=created,
                )
            )
            uow.session.add(
                OutgoingSms(
                    from_number="+15555550100",
                    to_number="+15555550199",
                    body=f"{marker} sent sms",
                    telnyx_message_id=f"msg_{uuid.uuid4().hex}",
                    status="queued",
                    identity_id=identity.id,
                    created_at=created,
                )
            )
            uow.session.add(
                SignalMessage(
                    identity_id=identity.id,
                    kind="message",
                    source="+15555550198",
                    signal_timestamp=int(created.timestamp() * 1000),
                    body=f"{marker} signal",
                    envelope={},
                    received_at=created,
                )
            )
        await uow.commit()
        identity_id = identity.id

    await run_job(resources, "drop_old_messages")

    async with resources.db.sessions() as session:
        sms = (
            await session.execute(select(IncomingSms.body).where(IncomingSms.identity_id == identity_id))
        ).scalars()
        sent = (
            await session.execute(select(OutgoingSms.body).where(OutgoingSms.identity_id == identity_id))
        ).scalars()
        signal = (
            await session.execute(select(SignalMessage.body).where(SignalMessage.identity_id == identity_id))
        ).scalars()
        assert (list(sms), list(sent), list(signal)) == (["new sms"], ["new sent sms"], ["new signal"])


async def test_finished_job_records_past_the_retention_are_deleted_and_unfinished_ones_stay(
    resources: Resources, worker: Any
) -> None:
    long_ago = datetime.now(UTC) - timedelta(days=resources.settings.job_history_retention_days + 1)
    marker = uuid.uuid4().hex
    # Unfinished runs of a periodic job: the outbox sweep leaves those alone, so only retention acts here.
    kept = {("completed", False), ("running", True), ("retrying", True)}
    async with resources.unit_of_work() as uow:
        for status, old in {("completed", True), ("failed", True), *kept}:
            uow.session.add(
                JobHistory(
                    job_type="keep_signal_alive",
                    payload={"marker": marker, "status": status, "old": old},
                    status=status,
                    created_at=long_ago if old else datetime.now(UTC),
                )
            )
        await uow.commit()

    await run_job(resources, "drop_old_job_history")

    async with resources.db.sessions() as session:
        left = (
            await session.execute(
                select(JobHistory.payload).where(JobHistory.payload["marker"].astext == marker)
            )
        ).scalars()
        assert {(payload["status"], payload["old"]) for payload in left} == kept
