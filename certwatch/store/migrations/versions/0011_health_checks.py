"""health checks: a server group's HealthCheckConfig

Revision ID: 0011_health_checks
Revises: 0008_revocation
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011_health_checks"
down_revision = "0008_revocation"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Apply this revision."""
    with op.batch_alter_table("server_groups") as batch:
        batch.add_column(sa.Column("health_check", sa.JSON(), nullable=True))


def downgrade() -> None:
    """Revert this revision."""
    with op.batch_alter_table("server_groups") as batch:
        batch.drop_column("health_check")
