"""image names unique per project (and among public images), not across projects

Revision ID: 0022
Revises: 0021
Create Date: 2026-12-06 08:00:00.000000
"""

import sqlalchemy as sa
from alembic import op

revision = "0022"
down_revision = "0021"
branch_labels = None
depends_on = None

PUBLIC = sa.text("project_id IS NULL")


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        # SQLite's unique constraint has no name: the table is rebuilt without it
        with op.batch_alter_table(
            "images", naming_convention={"uq": "uq_%(table_name)s_%(column_0_name)s"}
        ) as batch_op:
            batch_op.drop_constraint("uq_images_name", type_="unique")
    else:
        op.drop_constraint("images_name_key", "images", type_="unique")
    op.create_index("ix_images_project_name", "images", ["project_id", "name"], unique=True)
    op.create_index(
        "ix_images_public_name",
        "images",
        ["name"],
        unique=True,
        sqlite_where=PUBLIC,
        postgresql_where=PUBLIC,
    )


def downgrade() -> None:
    op.drop_index("ix_images_public_name", "images")
    op.drop_index("ix_images_project_name", "images")
    with op.batch_alter_table("images") as batch_op:
        batch_op.create_unique_constraint("images_name_key", ["name"])
