"""deleted routers whose namespace may still be on their host (stale_routers)

Revision ID: 0032
Revises: 0031
Create Date: 2026-12-07 09:35:00.000000
"""

import sqlalchemy as sa
from alembic import op

revision = "0032"
down_revision = "0031"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "stale_routers",
        sa.Column("host_id", sa.String(length=36), nullable=False),
        sa.Column("namespace", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["host_id"], ["hosts.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("host_id", "namespace"),
    )


def downgrade() -> None:
    op.drop_table("stale_routers")
