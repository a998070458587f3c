"""listener revision: the revision of the last change to what each listener serves

Revision ID: 0007_listener_revision
Revises: 0006_acme
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007_listener_revision"
down_revision = "0006_acme"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Apply this revision."""
    with op.batch_alter_table("listeners") as batch:
        batch.add_column(sa.Column("revision", sa.Integer(), nullable=False, server_default="0"))


def downgrade() -> None:
    """Revert this revision."""
    with op.batch_alter_table("listeners") as batch:
        batch.drop_column("revision")
