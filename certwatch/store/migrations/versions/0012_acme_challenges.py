"""acme challenges: the pending tls-alpn-01 challenges every node's proxy answers

Revision ID: 0012_acme_challenges
Revises: 0013_acme_renewal
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import certwatch.store.models

revision = "0012_acme_challenges"
down_revision = "0013_acme_renewal"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Apply this revision."""
    op.create_table(
        "acme_challenges",
        sa.Column("domain_name", sa.String(), nullable=False),
        sa.Column("chain_pem", sa.Text(), nullable=False),
        sa.Column("key_sealed", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", certwatch.store.models.UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("domain_name"),
    )


def downgrade() -> None:
    """Revert this revision."""
    op.drop_table("acme_challenges")
