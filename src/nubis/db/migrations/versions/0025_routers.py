"""routers, floating IPs and port forwardings; ports that belong to a router or a
floating IP (device_owner, router_id)

Revision ID: 0025
Revises: 0024
Create Date: 2026-12-06 15:40:00.000000
"""

import sqlalchemy as sa
from alembic import op

revision = "0025"
down_revision = "0024"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "routers",
        sa.Column("id", sa.String(length=36), primary_key=True),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("project_id", sa.String(length=36), sa.ForeignKey("projects.id"), nullable=False),
        sa.Column("cluster_id", sa.String(length=36), sa.ForeignKey("clusters.id"), nullable=False),
        sa.Column("host_id", sa.String(length=36), sa.ForeignKey("hosts.id"), nullable=False),
        sa.Column("tag", sa.String(length=8), nullable=False, unique=True),
        sa.Column("external_network_id", sa.String(length=36), sa.ForeignKey("networks.id")),
        sa.Column("snat", sa.Boolean(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("error", sa.Text()),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("project_id", "name"),
    )
    op.create_index("ix_routers_cluster_id", "routers", ["cluster_id"])
    op.create_index("ix_routers_host_id", "routers", ["host_id"])
    with op.batch_alter_table("ports") as batch:
        batch.add_column(sa.Column("device_owner", sa.String(length=32), nullable=True))
        batch.add_column(sa.Column("router_id", sa.String(length=36), nullable=True))
        batch.create_foreign_key("fk_ports_router_id", "routers", ["router_id"], ["id"])
        batch.create_index("ix_ports_router_id", ["router_id"])
    op.create_table(
        "floating_ips",
        sa.Column("id", sa.String(length=36), primary_key=True),
        sa.Column("project_id", sa.String(length=36), sa.ForeignKey("projects.id"), nullable=False),
        sa.Column("network_id", sa.String(length=36), sa.ForeignKey("networks.id"), nullable=False),
        sa.Column(
            "port_id", sa.String(length=36), sa.ForeignKey("ports.id"), nullable=False, unique=True
        ),
        sa.Column("address", sa.String(length=15), nullable=False),
        sa.Column("fixed_port_id", sa.String(length=36), sa.ForeignKey("ports.id"), unique=True),
        sa.Column("description", sa.String(length=255), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_floating_ips_project_id", "floating_ips", ["project_id"])
    op.create_index("ix_floating_ips_network_id", "floating_ips", ["network_id"])
    op.create_table(
        "port_forwardings",
        sa.Column("id", sa.String(length=36), primary_key=True),
        sa.Column(
            "floating_ip_id",
            sa.String(length=36),
            sa.ForeignKey("floating_ips.id"),
            nullable=False,
        ),
        sa.Column("protocol", sa.String(length=8), nullable=False),
        sa.Column("external_port", sa.Integer(), nullable=False),
        sa.Column("port_id", sa.String(length=36), sa.ForeignKey("ports.id"), nullable=False),
        sa.Column("internal_ip", sa.String(length=15), nullable=False),
        sa.Column("internal_port", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("floating_ip_id", "protocol", "external_port"),
    )
    op.create_index("ix_port_forwardings_floating_ip_id", "port_forwardings", ["floating_ip_id"])
    op.create_index("ix_port_forwardings_port_id", "port_forwardings", ["port_id"])


def downgrade() -> None:
    op.drop_table("port_forwardings")
    op.drop_table("floating_ips")
    with op.batch_alter_table("ports") as batch:
        batch.drop_index("ix_ports_router_id")
        batch.drop_constraint("fk_ports_router_id", type_="foreignkey")
        batch.drop_column("router_id")
        batch.drop_column("device_owner")
    op.drop_index("ix_routers_host_id", "routers")
    op.drop_index("ix_routers_cluster_id", "routers")
    op.drop_table("routers")
