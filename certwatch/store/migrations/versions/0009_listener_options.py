"""listener options: ALPN, PROXY protocol and connection limits of each listener

Revision ID: 0009_listener_options
Revises: 0011_health_checks
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009_listener_options"
down_revision = "0011_health_checks"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Apply this revision."""
    with op.batch_alter_table("listeners") as batch:
        batch.add_column(
            sa.Column("alpn_enabled", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        batch.add_column(sa.Column("alpn_policy", sa.String(), nullable=True))
        batch.add_column(
            sa.Column(
                "proxy_protocol_enabled", sa.Boolean(), nullable=False, server_default=sa.false()
            )
        )
        batch.add_column(sa.Column("cps", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(
            sa.Column("max_connections", sa.Integer(), nullable=False, server_default="0")
        )


def downgrade() -> None:
    """Revert this revision."""
    with op.batch_alter_table("listeners") as batch:
        for name in ("max_connections", "cps", "proxy_protocol_enabled", "alpn_policy",
                     "alpn_enabled"):
            batch.drop_column(name)
