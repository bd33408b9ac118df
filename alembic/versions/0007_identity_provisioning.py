"""Identity provisioning: each step's record on the identity, inbound SMS stored once by Telnyx's message id,
and the Signal messages the keep-alive receives.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01 19:20:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

NEW_IDENTITY_COLUMNS = (
    sa.Column(
        "status_changed_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
    ),
    sa.Column("failure_step", sa.Text(), nullable=True),
    sa.Column("failure_reason", sa.Text(), nullable=True),
    sa.Column("last_error", sa.Text(), nullable=True),
    sa.Column("deprovision_reason", sa.Text(), nullable=True),
    sa.Column("purge", sa.Boolean(), server_default="false", nullable=False),
    sa.Column("workspace_suspended", sa.Boolean(), server_default="false", nullable=False),
    sa.Column("workspace_delete_after", sa.DateTime(timezone=True), nullable=True),
    sa.Column("phone_order_id", sa.Text(), nullable=True),
    sa.Column("phone_attached", sa.Boolean(), server_default="false", nullable=False),
    sa.Column("signal_state", sa.Text(), server_default="none", nullable=False),
    sa.Column("signal_started_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("signal_attempts", sa.Integer(), server_default="0", nullable=False),
    sa.Column("signal_next_attempt_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("signal_code_requested_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("signal_profile_name", sa.Text(), nullable=True),
    sa.Column("signal_error", sa.Text(), nullable=True),
)


def upgrade() -> None:
    for column in NEW_IDENTITY_COLUMNS:
        op.add_column("identities", column)
    op.create_index(
        "ix_identities_status_status_changed_at", "identities", ["status", "status_changed_at"], unique=False
    )

    op.add_column("incoming_sms", sa.Column("telnyx_message_id", sa.Text(), nullable=True))
    op.add_column(
        "incoming_sms", sa.Column("media_urls", postgresql.JSONB(astext_type=sa.Text()), nullable=True)
    )
    op.add_column("incoming_sms", sa.Column("received_at", sa.DateTime(timezone=True), nullable=True))
    op.create_unique_constraint(
        op.f("uq_incoming_sms_telnyx_message_id"), "incoming_sms", ["telnyx_message_id"]
    )

    op.create_table(
        "signal_messages",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=True), nullable=False),
        sa.Column("identity_id", sa.UUID(), nullable=False),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("source_uuid", sa.Text(), nullable=True),
        sa.Column("source_name", sa.Text(), nullable=True),
        sa.Column("signal_timestamp", sa.BigInteger(), nullable=False),
        sa.Column("group_id", sa.Text(), nullable=True),
        sa.Column("body", sa.Text(), nullable=True),
        sa.Column("attachments", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("envelope", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(
            ["identity_id"],
            ["identities.id"],
            name=op.f("fk_signal_messages_identity_id_identities"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_signal_messages")),
        sa.UniqueConstraint(
            "identity_id", "kind", "source", "signal_timestamp", name=op.f("uq_signal_messages_identity_id")
        ),
    )
    op.create_index(
        "ix_signal_messages_identity_id_id", "signal_messages", ["identity_id", "id"], unique=False
    )


def downgrade() -> None:
    op.drop_index("ix_signal_messages_identity_id_id", table_name="signal_messages")
    op.drop_table("signal_messages")
    op.drop_constraint(op.f("uq_incoming_sms_telnyx_message_id"), "incoming_sms", type_="unique")
    for name in ("received_at", "media_urls", "telnyx_message_id"):
        op.drop_column("incoming_sms", name)
    op.drop_index("ix_identities_status_status_changed_at", table_name="identities")
    for column in reversed(NEW_IDENTITY_COLUMNS):
        op.drop_column("identities", column.name)
