"""Usage-event metering: the columns the AI proxy's events carry, and idempotent inserts from the buffer.

The worker drains the Redis usage buffer with ``INSERT ... ON CONFLICT DO NOTHING``; the unique index on
(request_id, attempt, created_at) is what makes a re-delivered event a no-op. usage_events is partitioned by
created_at, and PostgreSQL requires the partition key in a unique index on a partitioned table; the producer
fixes created_at, so a re-delivered event carries the same one, lands in the same partition and conflicts.
Creating the index on the parent creates it on every partition (the default one included), and partitions
the ``ensure_usage_events_partitions`` function attaches later get it automatically.

Building the index takes a SHARE lock on usage_events (CONCURRENTLY is not possible on a partitioned table),
so inserts wait while it builds; the drain retries them from Redis, so no event is lost meanwhile.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28 10:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("usage_events", sa.Column("provider", sa.Text(), nullable=True))
    op.add_column("usage_events", sa.Column("attempt", sa.Integer(), server_default="0", nullable=False))
    op.add_column("usage_events", sa.Column("cache_read_tokens", sa.Integer(), nullable=True))
    op.add_column("usage_events", sa.Column("cache_write_5m_tokens", sa.Integer(), nullable=True))
    op.add_column("usage_events", sa.Column("cache_write_1h_tokens", sa.Integer(), nullable=True))
    op.add_column("usage_events", sa.Column("status", sa.Integer(), nullable=True))
    op.add_column(
        "usage_events", sa.Column("estimated", sa.Boolean(), server_default="false", nullable=False)
    )
    op.add_column("usage_events", sa.Column("price_version", sa.Text(), nullable=True))
    op.create_index(
        "uq_usage_events_request_attempt",
        "usage_events",
        ["request_id", "attempt", "created_at"],
        unique=True,
    )


def downgrade() -> None:
    op.drop_index("uq_usage_events_request_attempt", table_name="usage_events")
    op.drop_column("usage_events", "price_version")
    op.drop_column("usage_events", "estimated")
    op.drop_column("usage_events", "status")
    op.drop_column("usage_events", "cache_write_1h_tokens")
    op.drop_column("usage_events", "cache_write_5m_tokens")
    op.drop_column("usage_events", "cache_read_tokens")
    op.drop_column("usage_events", "attempt")
    op.drop_column("usage_events", "provider")
