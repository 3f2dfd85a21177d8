"""volumes made in an RBD pool from an image are clones of its base there (base_image_id)

Revision ID: 0030
Revises: 0029
Create Date: 2026-12-07 07:50:00.000000
"""

import sqlalchemy as sa
from alembic import op

revision = "0030"
down_revision = "0029"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("volumes") as batch:
        batch.add_column(sa.Column("base_image_id", sa.String(36), nullable=True))
        batch.create_index("ix_volumes_base_image_id", ["base_image_id"])


def downgrade() -> None:
    with op.batch_alter_table("volumes") as batch:
        batch.drop_index("ix_volumes_base_image_id")
        batch.drop_column("base_image_id")
