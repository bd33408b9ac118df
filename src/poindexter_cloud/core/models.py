"""Tables owned by the shared infrastructure."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import Index, Text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from poindexter_cloud.core.db import Base, created_at, uuid_pk


class JobHistory(Base):
    """One row per background job: the outbox record before it is enqueued, then its run history."""

    __tablename__ = "job_history"
    __table_args__ = (
        Index("ix_job_history_status_created_at", "status", "created_at"),
        Index("ix_job_history_job_type_created_at", "job_type", "created_at"),
    )

    id: Mapped[uuid.UUID] = uuid_pk()
    job_type: Mapped[str] = mapped_column(Text)
    payload: Mapped[dict[str, Any]] = mapped_column(JSONB)
    # the asking request's id and trace context (observe.job_origin), for a run the outbox sweep enqueues
    origin: Mapped[dict[str, str] | None] = mapped_column(JSONB)
    # pending (recorded, maybe not yet enqueued), running, retrying, completed, failed
    status: Mapped[str] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(default=0, server_default="0")
    last_error: Mapped[str | None] = mapped_column(Text)
    started_at: Mapped[datetime | None]
    completed_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = created_at()


class AuditEvent(Base):
    """Security-relevant events, append-only: who did what to whom, from where, in which request."""

    __tablename__ = "audit_events"
    __table_args__ = (
        Index("ix_audit_events_subject_user_id_created_at", "subject_user_id", "created_at"),
        Index("ix_audit_events_created_at", "created_at"),
    )

    id: Mapped[uuid.UUID] = uuid_pk()
    action: Mapped[str] = mapped_column(Text)  # e.g. auth.login_failed, api_key.revoked, admin.user_suspended
    actor_user_id: Mapped[uuid.UUID | None]
    subject_user_id: Mapped[uuid.UUID | None]
    ip: Mapped[str | None] = mapped_column(Text)
    request_id: Mapped[str | None] = mapped_column(Text)
    details: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default="{}")
    created_at: Mapped[datetime] = created_at()
