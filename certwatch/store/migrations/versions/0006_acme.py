"""acme: the ACME account, certificate requests, and which certificates certwatch manages

Revision ID: 0006_acme
Revises: 0004_trust
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import certwatch.store.models

revision = "0006_acme"
down_revision = "0004_trust"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Apply this revision."""
    with op.batch_alter_table("certificates") as batch:
        batch.add_column(
            sa.Column("managed", sa.Boolean(), nullable=False, server_default=sa.false())
        )
    op.create_table(
        "acme_accounts",
        sa.Column("directory_url", sa.String(), nullable=False),
        sa.Column("key_sealed", sa.LargeBinary(), nullable=False),
        sa.Column("registration", sa.Text(), nullable=False),
        sa.Column("created_at", certwatch.store.models.UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("directory_url"),
    )
    op.create_table(
        "certificate_requests",
        sa.Column("id", sa.String(), nullable=False),
        sa.Column("domain_names", sa.JSON(), nullable=False),
        sa.Column("certificate_name", sa.String(), nullable=True),
        sa.Column("key_type", sa.String(), nullable=False),
        sa.Column("listener_id", sa.String(), nullable=True),
        sa.Column("role", sa.String(), nullable=False),
        sa.Column("renews_certificate_id", sa.String(), nullable=True),
        sa.Column("status", sa.String(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("certificate_id", sa.String(), nullable=True),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", certwatch.store.models.UtcDateTime(), nullable=False),
        sa.Column("created_at", certwatch.store.models.UtcDateTime(), nullable=False),
        sa.Column("updated_at", certwatch.store.models.UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    for column in ("renews_certificate_id", "status", "next_attempt_at"):
        op.create_index(
            f"ix_certificate_requests_{column}", "certificate_requests", [column]
        )


def downgrade() -> None:
    """Revert this revision."""
    op.drop_table("certificate_requests")
    op.drop_table("acme_accounts")
    with op.batch_alter_table("certificates") as batch:
        batch.drop_column("managed")
