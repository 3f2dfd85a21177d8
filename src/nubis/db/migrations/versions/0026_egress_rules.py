"""security group rules get a direction (ingress, egress); every existing group gets
the rule "anything out to anywhere", so its ports keep the open outbound they had

Revision ID: 0026
Revises: 0025
Create Date: 2026-12-06 15:40:00.000000
"""

import uuid
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision = "0026"
down_revision = "0025"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("security_group_rules") as batch:
        batch.add_column(
            sa.Column("direction", sa.String(length=8), nullable=False, server_default="ingress")
        )
    groups = sa.table("security_groups", sa.column("id", sa.String))
    rules = sa.table(
        "security_group_rules",
        sa.column("id", sa.String),
        sa.column("group_id", sa.String),
        sa.column("direction", sa.String),
        sa.column("protocol", sa.String),
        sa.column("created_at", sa.DateTime(timezone=True)),
    )
    conn = op.get_bind()
    now = datetime.now(UTC)
    rows = [
        {"id": str(uuid.uuid4()), "group_id": gid, "direction": "egress", "protocol": "any",
         "created_at": now}
        for (gid,) in conn.execute(sa.select(groups.c.id))
    ]  # fmt: skip
    if rows:
        op.bulk_insert(rules, rows)


def downgrade() -> None:
    op.execute("DELETE FROM security_group_rules WHERE direction = 'egress'")
    with op.batch_alter_table("security_group_rules") as batch:
        batch.drop_column("direction")
