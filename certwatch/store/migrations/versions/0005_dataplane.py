"""session_ticket_keys: the data plane's session ticket keys, sealed, one per 12-hour epoch

Revision ID: 0005_dataplane
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import certwatch.store.models

revision = "0005_dataplane"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Apply this revision."""
    op.create_table(
        "session_ticket_keys",
        sa.Column("epoch", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("key_sealed", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", certwatch.store.models.UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("epoch"),
    )


def downgrade() -> None:
    """Revert this revision."""
    op.drop_table("session_ticket_keys")
