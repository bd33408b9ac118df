"""Drop ``usage_monthly.synced_to_stripe``, which nothing reads or writes: overage reaches Stripe per billing
period (``usage_syncs``), not per calendar month.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-02 03:30:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.drop_column("usage_monthly", "synced_to_stripe")


def downgrade() -> None:
    op.add_column(
        "usage_monthly",
        sa.Column("synced_to_stripe", sa.Boolean(), server_default="false", nullable=False),
    )
