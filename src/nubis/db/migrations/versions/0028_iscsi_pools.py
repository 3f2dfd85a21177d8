"""storage pools of kind iscsi (portal, initiator IQN); volumes that are a LUN

Revision ID: 0028
Revises: 0027
Create Date: 2026-12-06 19:15:00.000000
"""

import sqlalchemy as sa
from alembic import op

revision = "0028"
down_revision = "0027"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("storage_pools") as batch:
        batch.add_column(sa.Column("portal", sa.String(length=255), nullable=True))
        batch.add_column(sa.Column("initiator", sa.String(length=223), nullable=True))
    with op.batch_alter_table("volumes") as batch:
        batch.add_column(sa.Column("lun", sa.Integer(), nullable=True))
        batch.create_index("ix_volumes_pool_lun", ["pool_id", "lun"], unique=True)


def downgrade() -> None:
    with op.batch_alter_table("volumes") as batch:
        batch.drop_index("ix_volumes_pool_lun")
        batch.drop_column("lun")
    with op.batch_alter_table("storage_pools") as batch:
        batch.drop_column("initiator")
        batch.drop_column("portal")
