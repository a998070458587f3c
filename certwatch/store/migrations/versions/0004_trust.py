"""probe_results.warnings: the strict-profile findings of a served chain that verifies

Revision ID: 0004_trust
Revises: 0005_dataplane
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004_trust"
down_revision = "0005_dataplane"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Apply this revision."""
    with op.batch_alter_table("probe_results", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("warnings", sa.JSON(), nullable=False, server_default=sa.text("'[]'"))
        )


def downgrade() -> None:
    """Revert this revision."""
    with op.batch_alter_table("probe_results", schema=None) as batch_op:
        batch_op.drop_column("warnings")
