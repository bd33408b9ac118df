"""``job_history.origin``: the request id and trace context of the request that asked for the job, so a job
the outbox sweep enqueues (its process died before the post-commit enqueue) still joins that request's
trace and logs.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-02 06:45:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("job_history", sa.Column("origin", JSONB(), nullable=True))


def downgrade() -> None:
    op.drop_column("job_history", "origin")
