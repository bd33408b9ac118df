"""Initial schema: the original plan's tables, in valid PostgreSQL, with usage_events partitioned by month.

Revision ID: 0001
Revises:
Create Date: 2026-11-27 15:32:37.651513
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

# Creates the monthly partitions of usage_events from `months_behind` months ago to `months_ahead` months
# ahead (UTC months), moving any rows the default partition already holds for a new month into it. Called
# here and by the worker's `ensure_usage_partitions` cron job; the advisory lock makes concurrent calls safe.
ENSURE_PARTITIONS = """
CREATE OR REPLACE FUNCTION ensure_usage_events_partitions(
    months_ahead integer, months_behind integer DEFAULT 1
)
RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    month_start date;
    lower_bound timestamptz;
    upper_bound timestamptz;
    partition_name text;
    created integer := 0;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('ensure_usage_events_partitions'));
    FOR i IN -months_behind..months_ahead LOOP
        month_start := (date_trunc('month', now() AT TIME ZONE 'UTC') + make_interval(months => i))::date;
        lower_bound := month_start::timestamp AT TIME ZONE 'UTC';
        upper_bound := (month_start + interval '1 month')::timestamp AT TIME ZONE 'UTC';
        partition_name := format('usage_events_%s', to_char(month_start, 'YYYY_MM'));
        CONTINUE WHEN to_regclass(partition_name) IS NOT NULL;
        EXECUTE format('CREATE TABLE %I (LIKE usage_events INCLUDING DEFAULTS INCLUDING CONSTRAINTS)',
                       partition_name);
        EXECUTE format('WITH moved AS (DELETE FROM usage_events_default WHERE created_at >= %L '
                       'AND created_at < %L RETURNING *) INSERT INTO %I SELECT * FROM moved',
                       lower_bound, upper_bound, partition_name);
        EXECUTE format('ALTER TABLE usage_events ATTACH PARTITION %I FOR VALUES FROM (%L) TO (%L)',
                       partition_name, lower_bound, upper_bound);
        created := created + 1;
    END LOOP;
    RETURN created;
END
$$;
"""
revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "job_history",
        sa.Column("id", sa.UUID(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("job_type", sa.Text(), nullable=False),
        sa.Column("payload", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("completed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_job_history")),
    )
    op.create_index(
        "ix_job_history_job_type_created_at", "job_history", ["job_type", "created_at"], unique=False
    )
    op.create_index("ix_job_history_status_created_at", "job_history", ["status", "created_at"], unique=False)
    op.create_table(
        "usage_events",
        sa.Column("id", sa.UUID(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("user_id", sa.UUID(), nullable=False),
        sa.Column("api_key_id", sa.UUID(), nullable=True),
        sa.Column("event_type", sa.Text(), nullable=False),
        sa.Column("model", sa.Text(), nullable=True),
        sa.Column("input_tokens", sa.Integer(), nullable=True),
        sa.Column("output_tokens", sa.Integer(), nullable=True),
        sa.Column("cost_microdollars", sa.BigInteger(), nullable=True),
        sa.Column("request_id", sa.Text(), nullable=True),
        sa.Column("latency_ms", sa.Integer(), nullable=True),
        sa.PrimaryKeyConstraint("id", "created_at", name=op.f("pk_usage_events")),
        postgresql_partition_by="RANGE (created_at)",
    )
    op.create_index(
        "ix_usage_events_user_id_created_at", "usage_events", ["user_id", "created_at"], unique=False
    )
    op.execute("CREATE TABLE usage_events_default PARTITION OF usage_events DEFAULT")
    op.execute(ENSURE_PARTITIONS)
    op.execute("SELECT ensure_usage_events_partitions(3)")
    op.create_table(
        "users",
        sa.Column("id", sa.UUID(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("email", sa.Text(), nullable=False),
        sa.Column("password_hash", sa.Text(), nullable=False),
        sa.Column("name", sa.Text(), nullable=True),
        sa.Column("stripe_customer_id", sa.Text(), nullable=True),
        sa.Column("status", sa.Text(), server_default="pending", nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_users")),
        sa.UniqueConstraint("stripe_customer_id", name=op.f("uq_users_stripe_customer_id")),
    )
    op.create_index("uq_users_email_lower", "users", [sa.literal_column("lower(email)")], unique=True)
    op.create_table(
        "api_keys",
        sa.Column("id", sa.UUID(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("user_id", sa.UUID(), nullable=False),
        sa.Column("key_hash", sa.Text(), nullable=False),
        sa.Column("key_prefix", sa.Text(), nullable=False),
        sa.Column("name", sa.Text(), nullable=True),
        sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_used_ip", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_api_keys_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_keys")),
        sa.UniqueConstraint("key_hash", name=op.f("uq_api_keys_key_hash")),
    )
    op.create_index(op.f("ix_api_keys_user_id"), "api_keys", ["user_id"], unique=False)
    op.create_table(
        "identities",
        sa.Column("id", sa.UUID(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("user_id", sa.UUID(), nullable=False),
        sa.Column("workspace_email", sa.Text(), nullable=True),
        sa.Column("workspace_user_id", sa.Text(), nullable=True),
        sa.Column("workspace_refresh_token_encrypted", sa.Text(), nullable=True),
        sa.Column("phone_number", sa.Text(), nullable=True),
        sa.Column("phone_telnyx_id", sa.Text(), nullable=True),
        sa.Column("signal_registered", sa.Boolean(), server_default="false", nullable=False),
        sa.Column("signal_device_id", sa.Integer(), nullable=True),
        sa.Column("status", sa.Text(), server_default="provisioning", nullable=False),
        sa.Column("provisioned_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_identities_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_identities")),
        sa.UniqueConstraint("phone_number", name=op.f("uq_identities_phone_number")),
        sa.UniqueConstraint("user_id", name=op.f("uq_identities_user_id")),
        sa.UniqueConstraint("workspace_email", name=op.f("uq_identities_workspace_email")),
    )
    op.create_table(
        "subscriptions",
        sa.Column("id", sa.UUID(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("user_id", sa.UUID(), nullable=False),
        sa.Column("stripe_subscription_id", sa.Text(), nullable=False),
        sa.Column("stripe_price_id", sa.Text(), nullable=False),
        sa.Column("plan", sa.Text(), nullable=False),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("current_period_start", sa.DateTime(timezone=True), nullable=True),
        sa.Column("current_period_end", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_subscriptions_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_subscriptions")),
        sa.UniqueConstraint("stripe_subscription_id", name=op.f("uq_subscriptions_stripe_subscription_id")),
        sa.UniqueConstraint("user_id", name=op.f("uq_subscriptions_user_id")),
    )
    op.create_table(
        "usage_monthly",
        sa.Column("id", sa.UUID(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("user_id", sa.UUID(), nullable=False),
        sa.Column("month", sa.Date(), nullable=False),
        sa.Column("ai_input_tokens", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("ai_output_tokens", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("ai_cost_microdollars", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("emails_sent", sa.Integer(), server_default="0", nullable=False),
        sa.Column("emails_received", sa.Integer(), server_default="0", nullable=False),
        sa.Column("signal_messages_sent", sa.Integer(), server_default="0", nullable=False),
        sa.Column("signal_messages_received", sa.Integer(), server_default="0", nullable=False),
        sa.Column("sms_sent", sa.Integer(), server_default="0", nullable=False),
        sa.Column("sms_received", sa.Integer(), server_default="0", nullable=False),
        sa.Column("synced_to_stripe", sa.Boolean(), server_default="false", nullable=False),
        sa.Column("synced_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name=op.f("fk_usage_monthly_user_id_users")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_usage_monthly")),
        sa.UniqueConstraint("user_id", "month", name=op.f("uq_usage_monthly_user_id")),
    )
    op.create_table(
        "incoming_sms",
        sa.Column("id", sa.UUID(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("phone_number", sa.Text(), nullable=False),
        sa.Column("from_number", sa.Text(), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("identity_id", sa.UUID(), nullable=True),
        sa.Column("processed", sa.Boolean(), server_default="false", nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(
            ["identity_id"], ["identities.id"], name=op.f("fk_incoming_sms_identity_id_identities")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_incoming_sms")),
    )
    op.create_index(
        "ix_incoming_sms_phone_number_created_at",
        "incoming_sms",
        ["phone_number", "created_at"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index("ix_incoming_sms_phone_number_created_at", table_name="incoming_sms")
    op.drop_table("incoming_sms")
    op.drop_table("usage_monthly")
    op.drop_table("subscriptions")
    op.drop_table("identities")
    op.drop_index(op.f("ix_api_keys_user_id"), table_name="api_keys")
    op.drop_table("api_keys")
    op.drop_index("uq_users_email_lower", table_name="users")
    op.drop_table("users")
    op.drop_index("ix_usage_events_user_id_created_at", table_name="usage_events")
    op.drop_table("usage_events")  # drops every partition with it
    op.execute("DROP FUNCTION ensure_usage_events_partitions(integer, integer)")
    op.drop_index("ix_job_history_status_created_at", table_name="job_history")
    op.drop_index("ix_job_history_job_type_created_at", table_name="job_history")
    op.drop_table("job_history")
