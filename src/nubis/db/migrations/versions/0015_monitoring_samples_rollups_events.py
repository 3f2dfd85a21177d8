"""monitoring: samples, rollups, events

Revision ID: 0015
Revises: 0014
Create Date: 2026-11-23 01:02:41.468627
"""

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "events",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("project_id", sa.String(length=36), nullable=True),
        sa.Column("resource_type", sa.String(length=16), nullable=False),
        sa.Column("resource_id", sa.String(length=36), nullable=False),
        sa.Column("resource_name", sa.String(length=64), nullable=True),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("severity", sa.String(length=8), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_events_created_at"), ["created_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_events_project_id"), ["project_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_events_resource_id"), ["resource_id"], unique=False)

    op.create_table(
        "host_samples",
        sa.Column("host_id", sa.String(length=36), nullable=False),
        sa.Column("resolution", sa.Integer(), nullable=False),
        sa.Column("ts", sa.BigInteger(), nullable=False),
        sa.Column("cpu_pct", sa.Float(), nullable=True),
        sa.Column("memory_used_mib", sa.Float(), nullable=True),
        sa.Column("memory_total_mib", sa.Float(), nullable=True),
        sa.Column("memory_allocated_pct", sa.Float(), nullable=True),
        sa.Column("storage_used_gib", sa.Float(), nullable=True),
        sa.Column("storage_total_gib", sa.Float(), nullable=True),
        sa.PrimaryKeyConstraint("host_id", "resolution", "ts"),
    )
    with op.batch_alter_table("host_samples", schema=None) as batch_op:
        batch_op.create_index("ix_host_samples_age", ["resolution", "ts"], unique=False)

    op.create_table(
        "instance_samples",
        sa.Column("instance_id", sa.String(length=36), nullable=False),
        sa.Column("resolution", sa.Integer(), nullable=False),
        sa.Column("ts", sa.BigInteger(), nullable=False),
        sa.Column("cpu_pct", sa.Float(), nullable=True),
        sa.Column("memory_mib", sa.Float(), nullable=True),
        sa.Column("disk_read_bps", sa.Float(), nullable=True),
        sa.Column("disk_write_bps", sa.Float(), nullable=True),
        sa.Column("disk_read_iops", sa.Float(), nullable=True),
        sa.Column("disk_write_iops", sa.Float(), nullable=True),
        sa.Column("net_rx_bps", sa.Float(), nullable=True),
        sa.Column("net_tx_bps", sa.Float(), nullable=True),
        sa.Column("net_rx_pps", sa.Float(), nullable=True),
        sa.Column("net_tx_pps", sa.Float(), nullable=True),
        sa.PrimaryKeyConstraint("instance_id", "resolution", "ts"),
    )
    with op.batch_alter_table("instance_samples", schema=None) as batch_op:
        batch_op.create_index("ix_instance_samples_age", ["resolution", "ts"], unique=False)

    op.create_table(
        "sample_rollups",
        sa.Column("sample_table", sa.String(length=32), nullable=False),
        sa.Column("resolution", sa.Integer(), nullable=False),
        sa.Column("done_until", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("sample_table", "resolution"),
    )


def downgrade() -> None:
    op.drop_table("sample_rollups")
    with op.batch_alter_table("instance_samples", schema=None) as batch_op:
        batch_op.drop_index("ix_instance_samples_age")

    op.drop_table("instance_samples")
    with op.batch_alter_table("host_samples", schema=None) as batch_op:
        batch_op.drop_index("ix_host_samples_age")

    op.drop_table("host_samples")
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_events_resource_id"))
        batch_op.drop_index(batch_op.f("ix_events_project_id"))
        batch_op.drop_index(batch_op.f("ix_events_created_at"))

    op.drop_table("events")
