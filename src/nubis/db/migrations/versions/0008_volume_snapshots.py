"""volume snapshots, volume file generations

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-22 08:40:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("volumes", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("generation", sa.Integer(), nullable=False, server_default="0")
        )
    op.create_table(
        "volume_snapshots",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("project_id", sa.String(length=36), nullable=False),
        sa.Column("volume_id", sa.String(length=36), nullable=False),
        sa.Column("size_gib", sa.Integer(), nullable=False),
        sa.Column("live_instance_id", sa.String(length=36), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("task_state", sa.String(length=16), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["project_id"], ["projects.id"]),
        sa.ForeignKeyConstraint(["volume_id"], ["volumes.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("volume_id", "name"),
    )
    with op.batch_alter_table("volume_snapshots", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_volume_snapshots_volume_id"), ["volume_id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("volume_snapshots", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_volume_snapshots_volume_id"))
    op.drop_table("volume_snapshots")
    with op.batch_alter_table("volumes", schema=None) as batch_op:
        batch_op.drop_column("generation")
