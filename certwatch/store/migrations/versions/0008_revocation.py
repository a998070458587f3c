"""revocation: the last revocation check of each certificate in use, and the CRL cache

Revision ID: 0008_revocation
Revises: 0007_listener_revision
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import certwatch.store.models

revision = "0008_revocation"
down_revision = "0007_listener_revision"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Apply this revision."""
    op.create_table(
        "revocation_states",
        sa.Column("certificate_id", sa.String(), nullable=False),
        sa.Column("position", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("common_name", sa.String(), nullable=False),
        sa.Column("source", sa.String(), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("status", sa.String(), nullable=False),
        sa.Column("revoked_at", certwatch.store.models.UtcDateTime(), nullable=True),
        sa.Column("reason", sa.String(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("checked_at", certwatch.store.models.UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("certificate_id", "position"),
    )
    op.create_table(
        "crl_cache",
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("der", sa.LargeBinary(), nullable=False),
        sa.Column("this_update", certwatch.store.models.UtcDateTime(), nullable=False),
        sa.Column("next_update", certwatch.store.models.UtcDateTime(), nullable=False),
        sa.Column("fetched_at", certwatch.store.models.UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("url"),
    )
    op.create_index("ix_crl_cache_next_update", "crl_cache", ["next_update"])


def downgrade() -> None:
    """Revert this revision."""
    op.drop_index("ix_crl_cache_next_update", table_name="crl_cache")
    op.drop_table("crl_cache")
    op.drop_table("revocation_states")
