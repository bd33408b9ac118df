"""Drop the identity columns nothing reads: ``incoming_sms.processed`` (received SMS are read past a cursor,
never marked), ``identities.signal_registered`` (``signal_state`` says it), ``identities.signal_device_id``
and ``identities.workspace_refresh_token_encrypted`` (the mailbox is used through domain-wide delegation, so
no per-user token is kept).

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02 12:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.drop_column("incoming_sms", "processed")
    op.drop_column("identities", "signal_registered")
    op.drop_column("identities", "signal_device_id")
    op.drop_column("identities", "workspace_refresh_token_encrypted")


def downgrade() -> None:
    op.add_column("identities", sa.Column("workspace_refresh_token_encrypted", sa.Text(), nullable=True))
    op.add_column("identities", sa.Column("signal_device_id", sa.Integer(), nullable=True))
    op.add_column(
        "identities",
        sa.Column(
            "signal_registered",
            sa.Boolean(),
            server_default="false",
            nullable=False,
        ),
    )
    op.execute("UPDATE identities SET signal_registered = (signal_state = 'registered')")
    op.add_column(
        "incoming_sms", sa.Column("processed", sa.Boolean(), server_default="false", nullable=False)
    )
