"""Usage to Stripe exactly once: per-period sync state, the meter events decided, and every token field in
the monthly rollup.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01 18:50:17.453528
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "usage_syncs",
        sa.Column("id", sa.UUID(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("user_id", sa.UUID(), nullable=False),
        sa.Column("stripe_subscription_id", sa.Text(), nullable=False),
        sa.Column("stripe_customer_id", sa.Text(), nullable=False),
        sa.Column("plan", sa.Text(), nullable=False),
        sa.Column("period_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("period_end", sa.DateTime(timezone=True), nullable=False),
        sa.Column("events", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("tokens", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("included_used", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("input_units", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("output_units", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("watermark_created_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("watermark_request_id", sa.Text(), nullable=True),
        sa.Column("watermark_attempt", sa.Integer(), nullable=True),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name=op.f("fk_usage_syncs_user_id_users")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_usage_syncs")),
        sa.UniqueConstraint(
            "stripe_subscription_id", "period_start", name=op.f("uq_usage_syncs_stripe_subscription_id")
        ),
    )
    op.create_index(
        "ix_usage_syncs_user_id_period_end", "usage_syncs", ["user_id", "period_end"], unique=False
    )
    op.create_table(
        "meter_event_records",
        sa.Column("id", sa.UUID(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("usage_sync_id", sa.UUID(), nullable=False),
        sa.Column("user_id", sa.UUID(), nullable=False),
        sa.Column("stripe_customer_id", sa.Text(), nullable=False),
        sa.Column("meter", sa.Text(), nullable=False),
        sa.Column("event_name", sa.Text(), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("units", sa.BigInteger(), nullable=False),
        sa.Column("identifier", sa.Text(), nullable=False),
        sa.Column("timestamp", sa.DateTime(timezone=True), nullable=False),
        sa.Column("watermark_created_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("watermark_request_id", sa.Text(), nullable=True),
        sa.Column("watermark_attempt", sa.Integer(), nullable=True),
        sa.Column("status", sa.Text(), server_default="pending", nullable=False),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["usage_sync_id"],
            ["usage_syncs.id"],
            name=op.f("fk_meter_event_records_usage_sync_id_usage_syncs"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_meter_event_records")),
        sa.UniqueConstraint("identifier", name=op.f("uq_meter_event_records_identifier")),
        sa.UniqueConstraint(
            "usage_sync_id", "meter", "seq", name=op.f("uq_meter_event_records_usage_sync_id")
        ),
    )
    op.create_index(
        "ix_meter_event_records_status_user_id", "meter_event_records", ["status", "user_id"], unique=False
    )
    op.create_index(
        "ix_meter_event_records_stripe_customer_id_timestamp",
        "meter_event_records",
        ["stripe_customer_id", "timestamp"],
        unique=False,
    )
    op.add_column(
        "usage_monthly",
        sa.Column("ai_cache_read_tokens", sa.BigInteger(), server_default="0", nullable=False),
    )
    op.add_column(
        "usage_monthly",
        sa.Column("ai_cache_write_5m_tokens", sa.BigInteger(), server_default="0", nullable=False),
    )
    op.add_column(
        "usage_monthly",
        sa.Column("ai_cache_write_1h_tokens", sa.BigInteger(), server_default="0", nullable=False),
    )
    op.add_column(
        "usage_monthly", sa.Column("ai_requests", sa.BigInteger(), server_default="0", nullable=False)
    )


def downgrade() -> None:
    op.drop_column("usage_monthly", "ai_requests")
    op.drop_column("usage_monthly", "ai_cache_write_1h_tokens")
    op.drop_column("usage_monthly", "ai_cache_write_5m_tokens")
    op.drop_column("usage_monthly", "ai_cache_read_tokens")
    op.drop_index("ix_meter_event_records_stripe_customer_id_timestamp", table_name="meter_event_records")
    op.drop_index("ix_meter_event_records_status_user_id", table_name="meter_event_records")
    op.drop_table("meter_event_records")
    op.drop_index("ix_usage_syncs_user_id_period_end", table_name="usage_syncs")
    op.drop_table("usage_syncs")
