"""Subscriptions: an optional monthly cap on AI spend, chosen by the subscriber.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-27 16:03:57.031457
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("subscriptions", sa.Column("spend_cap_microdollars", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    op.drop_column("subscriptions", "spend_cap_microdollars")
