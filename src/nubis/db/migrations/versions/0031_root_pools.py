"""a flavor's and a cluster's storage pool for root disks (root_pool_id)

Revision ID: 0031
Revises: 0030
Create Date: 2026-12-07 08:00:00.000000
"""

import sqlalchemy as sa
from alembic import op

revision = "0031"
down_revision = "0030"
branch_labels = None
depends_on = None


def upgrade() -> None:
    for table in ("flavors", "clusters"):
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column("root_pool_id", sa.String(36), nullable=True))
            batch.create_foreign_key(
                f"fk_{table}_root_pool_id", "storage_pools", ["root_pool_id"], ["id"]
            )


def downgrade() -> None:
    for table in ("flavors", "clusters"):
        with op.batch_alter_table(table) as batch:
            batch.drop_constraint(f"fk_{table}_root_pool_id", type_="foreignkey")
            batch.drop_column("root_pool_id")
