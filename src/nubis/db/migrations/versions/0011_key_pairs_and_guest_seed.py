"""key pairs and guest seed

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-22 12:13:54.068724
"""

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "key_pairs",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("project_id", sa.String(length=36), nullable=False),
        sa.Column("public_key", sa.Text(), nullable=False),
        sa.Column("key_type", sa.String(length=32), nullable=False),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["project_id"],
            ["projects.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("project_id", "name"),
    )
    with op.batch_alter_table("instances", schema=None) as batch_op:
        batch_op.add_column(sa.Column("hostname", sa.String(length=63), nullable=True))
        batch_op.add_column(sa.Column("key_name", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("public_key", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("user_data", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("seed_format", sa.String(length=12), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("instances", schema=None) as batch_op:
        batch_op.drop_column("seed_format")
        batch_op.drop_column("user_data")
        batch_op.drop_column("public_key")
        batch_op.drop_column("key_name")
        batch_op.drop_column("hostname")

    op.drop_table("key_pairs")
