"""Several nodes that stay right: the revision each node serves, one default per listener
and one history number per listener, enforced by the database.

Revision ID: 0003
Revises: 0002

Stores written before this revision may hold what the races it closes left behind; they are
repaired first, keeping everything stored: repeated or missing history numbers of a listener
are renumbered in their order (seq, time, id), and of two default links of one listener the
newer one stays the default (the older certificate stays in the inventory).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import certwatch.store.models

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Apply this revision."""
    op.create_table(
        "node_states",
        sa.Column("node_id", sa.String(), nullable=False),
        sa.Column("revision", sa.Integer(), nullable=False),
        sa.Column("serves", sa.Boolean(), nullable=False),
        sa.Column("heartbeat_at", certwatch.store.models.UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("node_id"),
    )
    op.execute(
        """
        UPDATE rotation_events SET seq = (
            SELECT numbered.n FROM (
                SELECT id, ROW_NUMBER() OVER (
                    PARTITION BY listener_id ORDER BY seq, time, id
                ) AS n FROM rotation_events
            ) AS numbered WHERE numbered.id = rotation_events.id
        )
        """
    )
    op.execute(
        """
        DELETE FROM listener_certificates WHERE role = 'default' AND EXISTS (
            SELECT 1 FROM listener_certificates AS newer
            WHERE newer.listener_id = listener_certificates.listener_id
              AND newer.role = 'default'
              AND (newer.created_at > listener_certificates.created_at
                   OR (newer.created_at = listener_certificates.created_at
                       AND newer.certificate_id > listener_certificates.certificate_id))
        )
        """
    )
    op.execute(
        "INSERT INTO state_revision (id, revision) "
        "SELECT 1, 0 WHERE NOT EXISTS (SELECT 1 FROM state_revision WHERE id = 1)"
    )
    op.create_index(
        "uq_rotation_events_listener_seq", "rotation_events", ["listener_id", "seq"], unique=True
    )
    op.create_index(
        "uq_listener_one_default",
        "listener_certificates",
        ["listener_id"],
        unique=True,
        sqlite_where=sa.text("role = 'default'"),
        postgresql_where=sa.text("role = 'default'"),
    )


def downgrade() -> None:
    """Revert this revision."""
    op.drop_index("uq_listener_one_default", table_name="listener_certificates")
    op.drop_index("uq_rotation_events_listener_seq", table_name="rotation_events")
    op.drop_table("node_states")
