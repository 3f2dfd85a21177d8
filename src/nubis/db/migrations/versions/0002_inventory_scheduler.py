"""zones clusters rule groups and host claims

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22 00:04:10.436879
"""

import uuid
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "zones",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("name"),
    )
    op.create_table(
        "clusters",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("zone_id", sa.String(length=36), nullable=False),
        sa.Column("cpu_ratio", sa.Float(), nullable=False),
        sa.Column("memory_ratio", sa.Float(), nullable=False),
        sa.Column("disk_ratio", sa.Float(), nullable=False),
        sa.Column("disable_threshold", sa.Float(), nullable=False),
        sa.Column("max_instances_per_host", sa.Integer(), nullable=True),
        sa.Column("weigher", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["zone_id"],
            ["zones.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("name"),
    )
    op.create_table(
        "rule_groups",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("project_id", sa.String(length=36), nullable=False),
        sa.Column("policy", sa.String(length=16), nullable=False),
        sa.Column("strict", sa.Boolean(), nullable=False),
        sa.Column("host_ids", sa.JSON(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["project_id"],
            ["projects.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("project_id", "name"),
    )
    with op.batch_alter_table("hosts", schema=None) as batch_op:
        batch_op.add_column(sa.Column("cluster_id", sa.String(length=36), nullable=True))
        batch_op.add_column(
            sa.Column("maintenance", sa.String(length=16), nullable=False, server_default="none")
        )
        batch_op.add_column(
            sa.Column("alloc_vcpus", sa.Integer(), nullable=False, server_default="0")
        )
        batch_op.add_column(
            sa.Column("alloc_memory_mib", sa.Integer(), nullable=False, server_default="0")
        )
        batch_op.add_column(
            sa.Column("alloc_disk_gib", sa.Integer(), nullable=False, server_default="0")
        )
        batch_op.add_column(
            sa.Column("instance_count", sa.Integer(), nullable=False, server_default="0")
        )
        batch_op.add_column(sa.Column("disk_gib", sa.Integer(), nullable=False, server_default="0"))
        batch_op.create_index(batch_op.f("ix_hosts_cluster_id"), ["cluster_id"], unique=False)
        batch_op.create_foreign_key("fk_hosts_cluster_id", "clusters", ["cluster_id"], ["id"])

    with op.batch_alter_table("instances", schema=None) as batch_op:
        batch_op.add_column(sa.Column("rule_group_id", sa.String(length=36), nullable=True))
        batch_op.create_index(batch_op.f("ix_instances_host_id"), ["host_id"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_instances_rule_group_id"), ["rule_group_id"], unique=False
        )
        batch_op.create_foreign_key(
            "fk_instances_rule_group_id", "rule_groups", ["rule_group_id"], ["id"]
        )

    _existing_hosts_join_the_default_cluster()


def _existing_hosts_join_the_default_cluster() -> None:
    """Hosts registered before clusters existed go to zone/cluster "default", and
    their claim counters are computed from the instances placed on them."""
    conn = op.get_bind()
    if conn.execute(sa.text("SELECT count(*) FROM hosts")).scalar() == 0:
        return
    now = datetime.now(UTC)
    zone_id, cluster_id = str(uuid.uuid4()), str(uuid.uuid4())
    conn.execute(
        sa.text("INSERT INTO zones (id, name, created_at) VALUES (:id, 'default', :now)"),
        {"id": zone_id, "now": now},
    )
    conn.execute(
        sa.text(
            "INSERT INTO clusters (id, name, zone_id, cpu_ratio, memory_ratio, disk_ratio, "
            "disable_threshold, weigher, created_at) "
            "VALUES (:id, 'default', :zone, 3.0, 1.0, 1.0, 0.85, 'spread', :now)"
        ),
        {"id": cluster_id, "zone": zone_id, "now": now},
    )
    conn.execute(sa.text("UPDATE hosts SET cluster_id = :c"), {"c": cluster_id})
    for column, expr in (
        ("alloc_vcpus", "sum(vcpus)"),
        ("alloc_memory_mib", "sum(memory_mib)"),
        ("alloc_disk_gib", "sum(disk_gib)"),
        ("instance_count", "count(*)"),
    ):
        conn.execute(
            sa.text(
                f"UPDATE hosts SET {column} = (SELECT coalesce({expr}, 0) FROM instances "
                "WHERE instances.host_id = hosts.id)"
            )
        )


def downgrade() -> None:
    with op.batch_alter_table("instances", schema=None) as batch_op:
        batch_op.drop_constraint("fk_instances_rule_group_id", type_="foreignkey")
        batch_op.drop_index(batch_op.f("ix_instances_rule_group_id"))
        batch_op.drop_index(batch_op.f("ix_instances_host_id"))
        batch_op.drop_column("rule_group_id")

    with op.batch_alter_table("hosts", schema=None) as batch_op:
        batch_op.drop_constraint("fk_hosts_cluster_id", type_="foreignkey")
        batch_op.drop_index(batch_op.f("ix_hosts_cluster_id"))
        batch_op.drop_column("disk_gib")
        batch_op.drop_column("instance_count")
        batch_op.drop_column("alloc_disk_gib")
        batch_op.drop_column("alloc_memory_mib")
        batch_op.drop_column("alloc_vcpus")
        batch_op.drop_column("maintenance")
        batch_op.drop_column("cluster_id")

    op.drop_table("rule_groups")
    op.drop_table("clusters")
    op.drop_table("zones")
