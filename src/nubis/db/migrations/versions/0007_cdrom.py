"""instance CD-ROM media and boot order

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-22 08:10:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("instances", schema=None) as batch_op:
        batch_op.add_column(sa.Column("cdrom_image_id", sa.String(length=36), nullable=True))
        batch_op.add_column(
            sa.Column(
                "boot_order", sa.String(length=32), nullable=False, server_default="disk,cdrom"
            )
        )
        batch_op.create_index(
            batch_op.f("ix_instances_cdrom_image_id"), ["cdrom_image_id"], unique=False
        )
        batch_op.create_foreign_key(
            "fk_instances_cdrom_image_id_images", "images", ["cdrom_image_id"], ["id"]
        )
    # instances booted from an ISO have it in their drive, and boot from it first
    op.execute(
        "UPDATE instances SET cdrom_image_id = image_id, boot_order = 'cdrom,disk' "
        "WHERE image_id IN (SELECT id FROM images WHERE disk_format = 'iso')"
    )


def downgrade() -> None:
    with op.batch_alter_table("instances", schema=None) as batch_op:
        batch_op.drop_constraint("fk_instances_cdrom_image_id_images", type_="foreignkey")
        batch_op.drop_index(batch_op.f("ix_instances_cdrom_image_id"))
        batch_op.drop_column("boot_order")
        batch_op.drop_column("cdrom_image_id")
