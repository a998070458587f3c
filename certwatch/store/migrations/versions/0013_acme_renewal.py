"""acme renewal: the renewal window each managed certificate's ACME server suggested (ARI)

Revision ID: 0013_acme_renewal
Revises: 0009_listener_options
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import certwatch.store.models

revision = "0013_acme_renewal"
down_revision = "0009_listener_options"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Apply this revision."""
    op.create_table(
        "acme_renewal_info",
        sa.Column("certificate_id", sa.String(), nullable=False),
        sa.Column("window_start", certwatch.store.models.UtcDateTime(), nullable=False),
        sa.Column("window_end", certwatch.store.models.UtcDateTime(), nullable=False),
        sa.Column("renew_at", certwatch.store.models.UtcDateTime(), nullable=False),
        sa.Column("next_check_at", certwatch.store.models.UtcDateTime(), nullable=False),
        sa.Column("updated_at", certwatch.store.models.UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("certificate_id"),
    )


def downgrade() -> None:
    """Revert this revision."""
    op.drop_table("acme_renewal_info")
