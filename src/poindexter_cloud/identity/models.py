"""Tables owned by identity: each subscriber's provisioned identity, the SMS and Signal messages it receives,
the SMS it sends, and which of its emails have been counted as received.

An identity row is also the record of its provisioning: each external resource (mailbox, number, Signal
account) has columns saying how far its creation (or removal) got, written in the same transaction as the
step that did it, so a crashed or retried job resumes where the last one stopped (``provisioning``).
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, ForeignKey, Index, Sequence, Text, UniqueConstraint, func
from sqlalchemy import Identity as IdentityColumn
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from poindexter_cloud.core.db import Base, created_at, updated_at, uuid_pk


class Identity(Base):
    __tablename__ = "identities"
    __table_args__ = (Index("ix_identities_status_status_changed_at", "status", "status_changed_at"),)

    id: Mapped[uuid.UUID] = uuid_pk()
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), unique=True)
    # provisioning, active, suspended (payment failing), failed (a step failed for good: see failure_*),
    # deprovisioning (removal under way, or the mailbox waiting out its retention), deleted
    status: Mapped[str] = mapped_column(Text, server_default="provisioning")
    status_changed_at: Mapped[datetime] = mapped_column(server_default=func.now())
    provisioned_at: Mapped[datetime | None]
    failure_step: Mapped[str | None] = mapped_column(Text)
    failure_reason: Mapped[str | None] = mapped_column(Text)
    last_error: Mapped[str | None] = mapped_column(Text)  # the latest transient failure (being retried)
    # Why it is being deprovisioned (subscription ended, account deleted, operator) and whether everything
    # goes at once with the personal data erased afterwards (account deletion).
    deprovision_reason: Mapped[str | None] = mapped_column(Text)
    purge: Mapped[bool] = mapped_column(server_default="false")

    # Google Workspace: the address is reserved (committed) before the user is created, so a retry creates
    # the same address and finds the user made by an earlier attempt instead of a second one.
    workspace_email: Mapped[str | None] = mapped_column(Text, unique=True)
    workspace_user_id: Mapped[str | None] = mapped_column(Text)
    workspace_suspended: Mapped[bool] = mapped_column(server_default="false")
    workspace_delete_after: Mapped[datetime | None]  # a deprovisioned mailbox's end of retention

    # Telnyx: the order (customer_reference = this row's id), then the number it bought and its profile.
    phone_order_id: Mapped[str | None] = mapped_column(Text)
    phone_number: Mapped[str | None] = mapped_column(Text, unique=True)
    phone_telnyx_id: Mapped[str | None] = mapped_column(Text)
    phone_attached: Mapped[bool] = mapped_column(server_default="false")  # in our messaging profile

    # Signal: none, pending (to request a code), retrying (after a transient failure, at
    # signal_next_attempt_at), awaiting_code, captcha_required, registered, failed, unregistered
    signal_state: Mapped[str] = mapped_column(Text, server_default="none")
    signal_started_at: Mapped[datetime | None]  # the registration's time limit counts from here
    signal_attempts: Mapped[int] = mapped_column(server_default="0")
    signal_next_attempt_at: Mapped[datetime | None]
    signal_code_requested_at: Mapped[datetime | None]
    signal_profile_name: Mapped[str | None] = mapped_column(Text)  # as last set on Signal
    signal_error: Mapped[str | None] = mapped_column(Text)

    created_at: Mapped[datetime] = created_at()
    updated_at: Mapped[datetime] = updated_at()


# One sequence numbers the SMS an identity receives and sends, in the order they were stored: the cursor of
# ``GET /v1/sms/messages``. Both tables are written under the identity's row lock (``FOR UPDATE``), so an
# identity's numbers become visible in increasing order and a reader past a cursor misses nothing.
SMS_SEQUENCE = Sequence("sms_seq", metadata=Base.metadata)


class IncomingSms(Base):
    """An SMS one of our numbers received (Signal's verification codes excepted), stored once by Telnyx's
    message id."""

    __tablename__ = "incoming_sms"
    __table_args__ = (
        Index("ix_incoming_sms_phone_number_created_at", "phone_number", "created_at"),
        Index("ix_incoming_sms_identity_id_seq", "identity_id", "seq"),
    )

    id: Mapped[uuid.UUID] = uuid_pk()
    seq: Mapped[int] = mapped_column(BigInteger, server_default=SMS_SEQUENCE.next_value())
    phone_number: Mapped[str] = mapped_column(Text)
    from_number: Mapped[str] = mapped_column(Text)
    body: Mapped[str] = mapped_column(Text)
    identity_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("identities.id"))
    telnyx_message_id: Mapped[str | None] = mapped_column(Text, unique=True)
    media_urls: Mapped[list[str] | None] = mapped_column(JSONB)
    received_at: Mapped[datetime | None]  # when Telnyx received it
    created_at: Mapped[datetime] = created_at()


class OutgoingSms(Base):
    """An SMS the identity sent through the identity API, as Telnyx accepted it."""

    __tablename__ = "outgoing_sms"
    __table_args__ = (Index("ix_outgoing_sms_identity_id_seq", "identity_id", "seq"),)

    id: Mapped[uuid.UUID] = uuid_pk()
    seq: Mapped[int] = mapped_column(BigInteger, server_default=SMS_SEQUENCE.next_value())
    identity_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("identities.id", ondelete="CASCADE"))
    from_number: Mapped[str] = mapped_column(Text)
    to_number: Mapped[str] = mapped_column(Text)
    body: Mapped[str] = mapped_column(Text)
    media_urls: Mapped[list[str] | None] = mapped_column(JSONB)
    telnyx_message_id: Mapped[str] = mapped_column(Text, unique=True)
    status: Mapped[str] = mapped_column(Text)  # as Telnyx answered the send (queued)
    parts: Mapped[int] = mapped_column(server_default="1")
    created_at: Mapped[datetime] = created_at()


class CountedEmail(Base):
    """A received email Dex has seen (listed or fetched), so it is counted as ``email_received`` once."""

    __tablename__ = "counted_emails"

    identity_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("identities.id", ondelete="CASCADE"), primary_key=True
    )
    message_id: Mapped[str] = mapped_column(Text, primary_key=True)  # Gmail's id in the identity's mailbox
    counted_at: Mapped[datetime] = created_at()


class SignalMessage(Base):
    """An envelope signal-cli handed us for an identity's account (``GET /v1/receive`` gives each once, so
    it is stored before anything else happens). ``id`` only grows: readers page with it as a cursor."""

    __tablename__ = "signal_messages"
    __table_args__ = (
        UniqueConstraint("identity_id", "kind", "source", "signal_timestamp"),
        Index("ix_signal_messages_identity_id_id", "identity_id", "id"),
    )

    id: Mapped[int] = mapped_column(BigInteger, IdentityColumn(always=True), primary_key=True)
    identity_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("identities.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(Text)  # message, receipt, typing, sync, call, other
    source: Mapped[str] = mapped_column(Text)  # the sender's number, else its ACI
    source_uuid: Mapped[str | None] = mapped_column(Text)
    source_name: Mapped[str | None] = mapped_column(Text)
    signal_timestamp: Mapped[int] = mapped_column(BigInteger)  # the sender's timestamp (ms): Signal's id
    group_id: Mapped[str | None] = mapped_column(Text)
    body: Mapped[str | None] = mapped_column(Text)
    attachments: Mapped[list[dict[str, Any]] | None] = mapped_column(JSONB)
    envelope: Mapped[dict[str, Any]] = mapped_column(JSONB)  # as signal-cli printed it
    received_at: Mapped[datetime] = created_at()
