"""overlay and VLAN networks: a network's segment id (the VXLAN VNI or the VLAN id)
and host interface (VLAN); each host's network agent (its URL and its token, kept
encrypted)

Revision ID: 0024
Revises: 0023
Create Date: 2026-12-06 12:30:00.000000
"""

import sqlalchemy as sa
from alembic import op

revision = "0024"
down_revision = "0023"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("networks") as batch:
        batch.add_column(sa.Column("segment_id", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("host_interface", sa.String(length=15), nullable=True))
        batch.create_unique_constraint("uq_networks_cluster_segment", ["cluster_id", "segment_id"])
    with op.batch_alter_table("hosts") as batch:
        batch.add_column(sa.Column("agent_url", sa.String(length=255), nullable=True))
        batch.add_column(sa.Column("agent_token", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("hosts") as batch:
        batch.drop_column("agent_token")
        batch.drop_column("agent_url")
    with op.batch_alter_table("networks") as batch:
        batch.drop_constraint("uq_networks_cluster_segment", type_="unique")
        batch.drop_column("host_interface")
        batch.drop_column("segment_id")
