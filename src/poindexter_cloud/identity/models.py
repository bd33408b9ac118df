"""Tables owned by identity: each subscriber's provisioned identity and the SMS it receives."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import ForeignKey, Index, Text
from sqlalchemy.orm import Mapped, mapped_column

from poindexter_cloud.core.db import Base, created_at, updated_at, uuid_pk


class Identity(Base):
    __tablename__ = "identities"

    id: Mapped[uuid.UUID] = uuid_pk()
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), unique=True)
    workspace_email: Mapped[str | None] = mapped_column(Text, unique=True)
    workspace_user_id: Mapped[str | None] = mapped_column(Text)
    workspace_refresh_token_encrypted: Mapped[str | None] = mapped_column(Text)
    phone_number: Mapped[str | None] = mapped_column(Text, unique=True)
    phone_telnyx_id: Mapped[str | None] = mapped_column(Text)
    signal_registered: Mapped[bool] = mapped_column(server_default="false")
    signal_device_id: Mapped[int | None]
    # provisioning, active, suspended, deprovisioning, deleted
    status: Mapped[str] = mapped_column(Text, server_default="provisioning")
    provisioned_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = created_at()
    updated_at: Mapped[datetime] = updated_at()


class IncomingSms(Base):
    __tablename__ = "incoming_sms"
    __table_args__ = (Index("ix_incoming_sms_phone_number_created_at", "phone_number", "created_at"),)

    id: Mapped[uuid.UUID] = uuid_pk()
    phone_number: Mapped[str] = mapped_column(Text)
    from_number: Mapped[str] = mapped_column(Text)
    body: Mapped[str] = mapped_column(Text)
    identity_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("identities.id"))
    processed: Mapped[bool] = mapped_column(server_default="false")
    created_at: Mapped[datetime] = created_at()
