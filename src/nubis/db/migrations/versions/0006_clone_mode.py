"""instance clone mode

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-22 02:12:13.454976
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("instances", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("clone_mode", sa.String(length=8), nullable=False, server_default="linked")
        )


def downgrade() -> None:
    with op.batch_alter_table("instances", schema=None) as batch_op:
        batch_op.drop_column("clone_mode")
