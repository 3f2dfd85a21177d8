"""nic bandwidth

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-22 12:28:57.623034
"""

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("flavors", schema=None) as batch_op:
        batch_op.add_column(sa.Column("bandwidth", sa.JSON(), nullable=True))

    with op.batch_alter_table("ports", schema=None) as batch_op:
        batch_op.add_column(sa.Column("bandwidth", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("ports", schema=None) as batch_op:
        batch_op.drop_column("bandwidth")

    with op.batch_alter_table("flavors", schema=None) as batch_op:
        batch_op.drop_column("bandwidth")
