"""volumes made in an RBD pool from a volume snapshot are clones of it (base_snapshot_id)

Revision ID: 0033
Revises: 0032
Create Date: 2026-12-07 11:00:00.000000
"""

import sqlalchemy as sa
from alembic import op

revision = "0033"
down_revision = "0032"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("volumes") as batch:
        batch.add_column(sa.Column("base_snapshot_id", sa.String(36), nullable=True))
        batch.create_index("ix_volumes_base_snapshot_id", ["base_snapshot_id"])


def downgrade() -> None:
    with op.batch_alter_table("volumes") as batch:
        batch.drop_index("ix_volumes_base_snapshot_id")
        batch.drop_column("base_snapshot_id")
