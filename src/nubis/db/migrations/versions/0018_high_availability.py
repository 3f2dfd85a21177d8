"""high availability: host health and fencing, HA instances, cluster HA reserve,
stale domains of hosts that failed

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-02 02:15:20.030746
"""

import sqlalchemy as sa
from alembic import op

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "stale_domains",
        sa.Column("host_id", sa.String(length=36), nullable=False),
        sa.Column("instance_id", sa.String(length=36), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["host_id"], ["hosts.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("host_id", "instance_id"),
    )
    with op.batch_alter_table("clusters", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("ha_reserve", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        batch_op.add_column(sa.Column("ha_lockspace", sa.String(length=255), nullable=True))

    with op.batch_alter_table("hosts", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("unreachable_since", sa.DateTime(timezone=True), nullable=True)
        )
        batch_op.add_column(
            sa.Column("fence_method", sa.String(length=16), nullable=False, server_default="none")
        )
        batch_op.add_column(sa.Column("fence_params", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("fenced_at", sa.DateTime(timezone=True), nullable=True))

    with op.batch_alter_table("instances", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("ha_enabled", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        batch_op.add_column(
            sa.Column("ha_priority", sa.Integer(), nullable=False, server_default="0")
        )


def downgrade() -> None:
    with op.batch_alter_table("instances", schema=None) as batch_op:
        batch_op.drop_column("ha_priority")
        batch_op.drop_column("ha_enabled")

    with op.batch_alter_table("hosts", schema=None) as batch_op:
        batch_op.drop_column("fenced_at")
        batch_op.drop_column("fence_params")
        batch_op.drop_column("fence_method")
        batch_op.drop_column("unreachable_since")

    with op.batch_alter_table("clusters", schema=None) as batch_op:
        batch_op.drop_column("ha_lockspace")
        batch_op.drop_column("ha_reserve")

    op.drop_table("stale_domains")
