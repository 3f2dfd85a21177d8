"""storage pools of kind rbd: the Ceph monitors, the cephx user and its key

Revision ID: 0027
Revises: 0026
Create Date: 2026-12-06 18:30:00.000000
"""

import sqlalchemy as sa
from alembic import op

revision = "0027"
down_revision = "0026"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("storage_pools") as batch:
        batch.add_column(sa.Column("monitors", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("auth_user", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("auth_key", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("storage_pools") as batch:
        batch.drop_column("auth_key")
        batch.drop_column("auth_user")
        batch.drop_column("monitors")
