"""Tables owned by webhooks: each provider event received, stored once by its id before it is acknowledged."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import Text, UniqueConstraint, func
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from poindexter_cloud.core.db import Base, uuid_pk


class WebhookEvent(Base):
    """One delivery-deduplicated provider event. A redelivery of the same ``event_id`` finds its row and
    adds nothing; ``processed_at`` is set in the transaction that acted on it."""

    __tablename__ = "webhook_events"
    __table_args__ = (UniqueConstraint("provider", "event_id"),)

    id: Mapped[uuid.UUID] = uuid_pk()
    provider: Mapped[str] = mapped_column(Text)  # stripe, telnyx, ...
    event_id: Mapped[str] = mapped_column(Text)  # the provider's id, e.g. evt_...
    type: Mapped[str] = mapped_column(Text)  # e.g. customer.subscription.updated
    payload: Mapped[dict[str, Any]] = mapped_column(JSONB)
    received_at: Mapped[datetime] = mapped_column(server_default=func.now())
    processed_at: Mapped[datetime | None]
    attempts: Mapped[int] = mapped_column(server_default="0")  # processing attempts started
    last_error: Mapped[str | None] = mapped_column(Text)
