"""indexes for a page of the instance list at scale

Revision ID: 0036
Revises: 0035
Create Date: 2026-12-07 14:40:00.000000
"""

from alembic import op

revision = "0036"
down_revision = "0035"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_instances_created", "instances", ["created_at", "id"])
    op.create_index("ix_instances_status_created", "instances", ["status", "created_at", "id"])


def downgrade() -> None:
    op.drop_index("ix_instances_status_created", table_name="instances")
    op.drop_index("ix_instances_created", table_name="instances")
