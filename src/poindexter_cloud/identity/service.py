"""Identity's rules and queries: finding identities, their status, the messages they receive, their views.

Provisioning writes the progress columns of an identity (``Identity``, the row these functions hand out, so
this module exports it) on a row it has locked through ``get(..., for_update=True)``; everything else about
identities goes through the functions here. Never commits: the caller's unit of work does.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from sqlalchemy import delete, or_, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from poindexter_cloud.core.db import UnitOfWork
from poindexter_cloud.core.resources import Resources
from poindexter_cloud.identity import usage
from poindexter_cloud.identity.models import CountedEmail, IncomingSms, OutgoingSms, SignalMessage
from poindexter_cloud.identity.models import Identity as Identity
from poindexter_cloud.identity.schemas import IdentityView, ProvisioningIssue, StepView

# Statuses in which the identity's resources exist (or are being made) for its subscriber.
LIVE_STATUSES: Final = frozenset({"provisioning", "active", "suspended"})
# Signal states in which a registration is under way.
SIGNAL_IN_PROGRESS: Final = frozenset({"pending", "retrying", "awaiting_code", "captcha_required"})
# Provisioning that made no progress for this long is stuck: the sweeper resumes it, the admin views list it.
STUCK_AFTER_MINUTES: Final = 15
STUCK_AFTER: Final = timedelta(minutes=STUCK_AFTER_MINUTES)


def now() -> datetime:
    return datetime.now(UTC)


async def ensure(session: AsyncSession, user_id: uuid.UUID) -> Identity:
    """The user's identity, created (``provisioning``) if they have none; locked for this transaction."""
    await session.execute(
        insert(Identity).values(user_id=user_id).on_conflict_do_nothing(index_elements=["user_id"])
    )
    found = await get(session, user_id, for_update=True)
    assert found is not None
    return found


async def get(session: AsyncSession, user_id: uuid.UUID, *, for_update: bool = False) -> Identity | None:
    query = select(Identity).where(Identity.user_id == user_id)
    if for_update:
        query = query.with_for_update().execution_options(populate_existing=True)
    return (await session.execute(query)).scalar_one_or_none()


async def by_phone_number(
    session: AsyncSession, phone_number: str, *, for_update: bool = False
) -> Identity | None:
    query = select(Identity).where(Identity.phone_number == phone_number)
    if for_update:
        query = query.with_for_update().execution_options(populate_existing=True)
    return (await session.execute(query)).scalar_one_or_none()


def set_status(identity: Identity, status: str) -> None:
    if identity.status != status:
        identity.status, identity.status_changed_at = status, now()


async def _user_ids(session: AsyncSession, *conditions: Any) -> list[uuid.UUID]:
    return list((await session.execute(select(Identity.user_id).where(*conditions))).scalars())


async def retention_over(session: AsyncSession, at: datetime) -> list[uuid.UUID]:
    """Users whose deprovisioned mailbox has waited out its retention by ``at``: it can be deleted."""
    return await _user_ids(
        session, Identity.status == "deprovisioning", Identity.workspace_delete_after <= at
    )


async def provisioning_idle_since(session: AsyncSession, since: datetime) -> list[uuid.UUID]:
    """Users whose identity is provisioning with nothing recorded about it since ``since``."""
    return await _user_ids(session, Identity.status == "provisioning", Identity.updated_at < since)


async def signal_codes_overdue(session: AsyncSession, requested_before: datetime) -> list[uuid.UUID]:
    """Users of live identities still awaiting a Signal code asked for before ``requested_before``."""
    return await _user_ids(
        session,
        Identity.status.in_(LIVE_STATUSES),
        Identity.signal_state == "awaiting_code",
        Identity.signal_code_requested_at < requested_before,
    )


async def signal_attempts_due(session: AsyncSession, at: datetime) -> list[uuid.UUID]:
    """Users of live identities whose next Signal registration attempt (first or retry) is due by ``at``."""
    return await _user_ids(
        session,
        Identity.status.in_(LIVE_STATUSES),
        Identity.signal_state.in_(("pending", "retrying")),
        Identity.signal_next_attempt_at <= at,
    )


@dataclass(frozen=True, slots=True)
class SignalAccount:
    identity_id: uuid.UUID
    user_id: uuid.UUID
    number: str


async def signal_accounts(session: AsyncSession) -> list[SignalAccount]:
    """Every live identity registered on Signal: what the keep-alive receives for."""
    rows = await session.execute(
        select(Identity.id, Identity.user_id, Identity.phone_number).where(
            Identity.signal_state == "registered",
            Identity.status.in_(LIVE_STATUSES),
            Identity.phone_number.is_not(None),
        )
    )
    return [SignalAccount(row[0], row[1], row[2] or "") for row in rows]


# --- what identities receive -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ReceivedSms:
    telnyx_message_id: str
    from_number: str
    to_number: str
    text: str
    media_urls: list[str]
    received_at: datetime | None


async def store_incoming_sms(session: AsyncSession, identity: Identity, sms: ReceivedSms) -> bool:
    """Store an SMS for the identity once (by Telnyx's message id); True if it is new."""
    inserted = await session.execute(
        insert(IncomingSms)
        .values(
            phone_number=sms.to_number,
            from_number=sms.from_number,
            body=sms.text,
            identity_id=identity.id,
            telnyx_message_id=sms.telnyx_message_id,
            media_urls=sms.media_urls or None,
            received_at=sms.received_at,
        )
        .on_conflict_do_nothing(index_elements=["telnyx_message_id"])
        .returning(IncomingSms.id)
    )
    return inserted.scalar_one_or_none() is not None


_KINDS: Final = (
    ("dataMessage", "message"),
    ("receiptMessage", "receipt"),
    ("typingMessage", "typing"),
    ("syncMessage", "sync"),
    ("callMessage", "call"),
)


@dataclass(frozen=True, slots=True)
class StoredSignalMessage:
    id: int
    kind: str
    source: str
    signal_timestamp: int


def _signal_row(identity_id: uuid.UUID, item: dict[str, Any]) -> dict[str, Any] | None:
    envelope = item.get("envelope")
    if not isinstance(envelope, dict) or not isinstance(envelope.get("timestamp"), int):
        return None
    kind = next((name for key, name in _KINDS if key in envelope), "other")
    found = envelope.get("dataMessage")
    data: dict[str, Any] = found if isinstance(found, dict) else {}
    group_info = data.get("groupInfo")
    group: dict[str, Any] = group_info if isinstance(group_info, dict) else {}
    attachments = data.get("attachments")
    return {
        "identity_id": identity_id,
        "kind": kind,
        "source": str(
            envelope.get("sourceNumber") or envelope.get("source") or envelope.get("sourceUuid") or ""
        ),
        "source_uuid": envelope.get("sourceUuid"),
        "source_name": envelope.get("sourceName") or None,
        "signal_timestamp": envelope["timestamp"],
        "group_id": group.get("groupId"),
        "body": data.get("message") if isinstance(data.get("message"), str) else None,
        "attachments": attachments if isinstance(attachments, list) and attachments else None,
        "envelope": envelope,
    }


async def store_signal_envelopes(
    uow: UnitOfWork,
    resources: Resources,
    identity_id: uuid.UUID,
    user_id: uuid.UUID,
    items: Sequence[dict[str, Any]],
) -> list[StoredSignalMessage]:
    """Store what signal-cli handed out for the identity (each envelope once), and count each new message as
    ``signal_received`` once the transaction commits (whoever stores a row counts it: the poll or the
    keep-alive); the new rows, in order."""
    rows = [row for row in (_signal_row(identity_id, item) for item in items) if row is not None]
    if not rows:
        return []
    inserted = await uow.session.execute(
        insert(SignalMessage)
        .values(rows)
        .on_conflict_do_nothing(index_elements=["identity_id", "kind", "source", "signal_timestamp"])
        .returning(SignalMessage.id, SignalMessage.kind, SignalMessage.source, SignalMessage.signal_timestamp)
    )
    stored = sorted((StoredSignalMessage(*row) for row in inserted), key=lambda found: found.id)
    records = [
        usage.record(user_id, None, usage.SIGNAL_RECEIVED, f"signal:{m.id}", "signal")
        for m in stored
        if m.kind == "message"
    ]
    if records:
        uow.after_commit(functools.partial(usage.push, resources, records))
    return stored


async def signal_messages_after(
    session: AsyncSession, identity_id: uuid.UUID, after: int, limit: int, kinds: Sequence[str] | None
) -> list[SignalMessage]:
    """The identity's stored Signal envelopes past the cursor ``after``, oldest first (``kinds``: only
    those kinds)."""
    query = select(SignalMessage).where(SignalMessage.identity_id == identity_id, SignalMessage.id > after)
    if kinds is not None:
        query = query.where(SignalMessage.kind.in_(kinds))
    rows = await session.execute(query.order_by(SignalMessage.id).limit(limit))
    return list(rows.scalars())


async def signal_attachment(
    session: AsyncSession, identity_id: uuid.UUID, attachment_id: str
) -> dict[str, Any] | None:
    """The metadata of an attachment the identity received (signal-cli keeps every account's attachments in
    one place, so this is what makes one an identity's to read)."""
    found = await session.execute(
        select(SignalMessage.attachments)
        .where(
            SignalMessage.identity_id == identity_id,
            SignalMessage.attachments.contains([{"id": attachment_id}]),
        )
        .limit(1)
    )
    attachments = found.scalar_one_or_none() or []
    return next((a for a in attachments if isinstance(a, dict) and a.get("id") == attachment_id), None)


@dataclass(frozen=True, slots=True)
class SentSmsRecord:
    telnyx_message_id: str
    from_number: str
    to_number: str
    text: str
    media_urls: list[str]
    status: str
    parts: int


async def store_outgoing_sms(
    session: AsyncSession, identity_id: uuid.UUID, sms: SentSmsRecord
) -> OutgoingSms:
    """Record an SMS the identity sent. The caller holds the identity's row lock (``get(...,
    for_update=True)``), as the webhook does storing an inbound one, so the sequence appears in order."""
    row = OutgoingSms(
        identity_id=identity_id,
        from_number=sms.from_number,
        to_number=sms.to_number,
        body=sms.text,
        media_urls=sms.media_urls or None,
        telnyx_message_id=sms.telnyx_message_id,
        status=sms.status,
        parts=sms.parts,
    )
    session.add(row)
    await session.flush()
    await session.refresh(row)
    return row


# Telnyx's statuses of an outbound message, in the order they come; every other one is final (delivered,
# sending_failed, delivery_failed, delivery_unconfirmed).
_SMS_PROGRESS: Final = {"queued": 0, "sending": 1, "sent": 2}
_SMS_FINAL: Final = len(_SMS_PROGRESS)


async def record_sms_status(
    session: AsyncSession, identity_id: uuid.UUID, telnyx_message_id: str, status: str
) -> bool | None:
    """Move a sent SMS's status on to what a Telnyx delivery report says. Reports can arrive in any order,
    so an older one changes nothing (False); None if the identity sent no such SMS."""
    row = (
        await session.execute(
            select(OutgoingSms).where(
                OutgoingSms.identity_id == identity_id, OutgoingSms.telnyx_message_id == telnyx_message_id
            )
        )
    ).scalar_one_or_none()
    if row is None:
        return None
    if _SMS_PROGRESS.get(status, _SMS_FINAL) <= _SMS_PROGRESS.get(row.status, _SMS_FINAL):
        return False
    row.status = status
    return True


async def sms_after(
    session: AsyncSession, identity_id: uuid.UUID, after: int, limit: int, direction: str
) -> list[IncomingSms | OutgoingSms]:
    """The identity's SMS (``inbound``, ``outbound`` or ``all``) past the cursor ``after``, oldest first."""
    found: list[IncomingSms | OutgoingSms] = []
    if direction in ("inbound", "all"):
        rows = await session.execute(
            select(IncomingSms)
            .where(IncomingSms.identity_id == identity_id, IncomingSms.seq > after)
            .order_by(IncomingSms.seq)
            .limit(limit)
        )
        found += rows.scalars()
    if direction in ("outbound", "all"):
        rows = await session.execute(
            select(OutgoingSms)
            .where(OutgoingSms.identity_id == identity_id, OutgoingSms.seq > after)
            .order_by(OutgoingSms.seq)
            .limit(limit)
        )
        found += rows.scalars()
    return sorted(found, key=lambda sms: sms.seq)[:limit]


async def erase_personal_data(session: AsyncSession, user_id: uuid.UUID) -> None:
    """Delete what the identity received and forget its address (account erasure). Idempotent."""
    identity = await get(session, user_id, for_update=True)
    if identity is None:
        return
    for table in (IncomingSms, OutgoingSms, SignalMessage, CountedEmail):
        await session.execute(delete(table).where(table.identity_id == identity.id))
    await session.execute(
        update(Identity)
        .where(Identity.id == identity.id)
        .values(workspace_email=None, signal_profile_name=None, last_error=None, signal_error=None)
    )


# --- views -----------------------------------------------------------------------------------------------


def steps(identity: Identity) -> list[StepView]:
    removing = identity.status in ("deprovisioning", "deleted")

    def state(done: bool) -> str:
        if removing:
            return "pending" if done else "removed"
        return "done" if done else "pending"

    if identity.workspace_user_id is None:
        mailbox = state(False)
    elif removing and identity.workspace_suspended:
        mailbox = "suspended"  # waiting out its retention before deletion
    else:
        mailbox = state(True)
    return [
        StepView("mailbox", mailbox),
        StepView("number", state(identity.phone_telnyx_id is not None)),
        StepView("messaging", state(identity.phone_attached)),
        StepView("signal", identity.signal_state),
    ]


def view(identity: Identity) -> IdentityView:
    parts = steps(identity)
    return IdentityView(
        user_id=identity.user_id,
        status=identity.status,
        email=identity.workspace_email if identity.workspace_user_id else None,
        phone_number=identity.phone_number,
        signal=identity.signal_state,
        steps=parts,
        pending=[step.name for step in parts if step.state not in ("done", "registered", "removed")],
        failure_step=identity.failure_step,
        failure_reason=identity.failure_reason,
        last_error=identity.last_error,
        signal_error=identity.signal_error,
        provisioned_at=identity.provisioned_at,
        status_changed_at=identity.status_changed_at,
        updated_at=identity.updated_at,
    )


async def issues(session: AsyncSession, stuck_after: timedelta) -> list[ProvisioningIssue]:
    """Identities an operator should look at: failed, stuck (provisioning, or removing without a mailbox
    retention to wait for, for longer than ``stuck_after``), or whose Signal needs a captcha or failed."""
    cutoff = now() - stuck_after
    stuck = (Identity.status.in_(("provisioning", "deprovisioning"))) & (Identity.status_changed_at < cutoff)
    waiting_retention = (Identity.status == "deprovisioning") & (Identity.workspace_delete_after > now())
    signal_stuck = Identity.signal_state.in_(("pending", "retrying", "awaiting_code")) & (
        Identity.signal_started_at < cutoff
    )
    rows = (
        (
            await session.execute(
                select(Identity)
                .where(
                    or_(
                        Identity.status == "failed",
                        stuck & ~waiting_retention,
                        Identity.signal_state.in_(("captcha_required", "failed")),
                        signal_stuck & Identity.status.in_(LIVE_STATUSES),
                    )
                )
                .order_by(Identity.updated_at)
                .limit(500)
            )
        )
        .scalars()
        .all()
    )
    found = []
    for identity in rows:
        if identity.status == "failed":
            problem = "failed"
        elif identity.signal_state == "captcha_required":
            problem = "signal_captcha"
        elif identity.signal_state == "failed" and identity.status in LIVE_STATUSES:
            problem = "signal_failed"
        else:
            problem = "stuck"
        found.append(ProvisioningIssue(problem, view(identity)))
    return found


async def drop_messages_before(session: AsyncSession, cutoff: datetime) -> int:
    """Delete inbound and sent SMS and received Signal messages stored before ``cutoff`` (the retention
    period); how many. Never commits. (``counted_emails`` stays: it holds ids only, and dropping a row would
    count its email again.)"""
    deleted = 0
    stamps = (
        (IncomingSms, IncomingSms.created_at),
        (OutgoingSms, OutgoingSms.created_at),
        (SignalMessage, SignalMessage.received_at),
    )
    for table, stored in stamps:
        result = await session.execute(delete(table).where(stored < cutoff))
        deleted += int(getattr(result, "rowcount", 0) or 0)
    return deleted
