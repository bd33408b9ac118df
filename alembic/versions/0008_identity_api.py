"""The identity API: the SMS identities send, one sequence ordering the SMS they receive and send (the
messages list's cursor), and the received emails already counted as usage.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02 10:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

NEXT_SMS = sa.text("nextval('sms_seq'::regclass)")


def upgrade() -> None:
    op.execute("CREATE SEQUENCE sms_seq")
    # Rows stored before get their numbers in the order they arrived.
    op.add_column("incoming_sms", sa.Column("seq", sa.BigInteger(), nullable=True))
    op.execute(
        "UPDATE incoming_sms SET seq = numbered.seq FROM ("
        " SELECT id, nextval('sms_seq') AS seq FROM (SELECT id FROM incoming_sms ORDER BY created_at, id) o"
        ") numbered WHERE incoming_sms.id = numbered.id"
    )
    op.alter_column("incoming_sms", "seq", nullable=False, server_default=NEXT_SMS)
    op.create_index("ix_incoming_sms_identity_id_seq", "incoming_sms", ["identity_id", "seq"], unique=False)

    op.create_table(
        "outgoing_sms",
        sa.Column("id", sa.UUID(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("seq", sa.BigInteger(), server_default=NEXT_SMS, nullable=False),
        sa.Column("identity_id", sa.UUID(), nullable=False),
        sa.Column("from_number", sa.Text(), nullable=False),
        sa.Column("to_number", sa.Text(), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("media_urls", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("telnyx_message_id", sa.Text(), nullable=False),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("parts", sa.Integer(), server_default="1", nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(
            ["identity_id"],
            ["identities.id"],
            name=op.f("fk_outgoing_sms_identity_id_identities"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_outgoing_sms")),
        sa.UniqueConstraint("telnyx_message_id", name=op.f("uq_outgoing_sms_telnyx_message_id")),
    )
    op.create_index("ix_outgoing_sms_identity_id_seq", "outgoing_sms", ["identity_id", "seq"], unique=False)

    op.create_table(
        "counted_emails",
        sa.Column("identity_id", sa.UUID(), nullable=False),
        sa.Column("message_id", sa.Text(), nullable=False),
        sa.Column("counted_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(
            ["identity_id"],
            ["identities.id"],
            name=op.f("fk_counted_emails_identity_id_identities"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("identity_id", "message_id", name=op.f("pk_counted_emails")),
    )


def downgrade() -> None:
    op.drop_table("counted_emails")
    op.drop_index("ix_outgoing_sms_identity_id_seq", table_name="outgoing_sms")
    op.drop_table("outgoing_sms")
    op.drop_index("ix_incoming_sms_identity_id_seq", table_name="incoming_sms")
    op.drop_column("incoming_sms", "seq")
    op.execute("DROP SEQUENCE sms_seq")
