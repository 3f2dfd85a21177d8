"""Identity: password policy and history, lockout, API keys, used signatures, quotas,
audit log; the bootstrap admin (system role "admin") becomes a system administrator.

Revision ID: 0013
Revises: 0012
Create Date: 2026-11-22 21:58:37.482382
"""

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "audit_records",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("user_id", sa.String(length=36), nullable=True),
        sa.Column("username", sa.String(length=64), nullable=True),
        sa.Column("project_id", sa.String(length=36), nullable=True),
        sa.Column("roles", sa.String(length=128), nullable=False),
        sa.Column("api_key_id", sa.String(length=36), nullable=True),
        sa.Column("action", sa.String(length=128), nullable=False),
        sa.Column("method", sa.String(length=8), nullable=False),
        sa.Column("path", sa.String(length=512), nullable=False),
        sa.Column("resource_type", sa.String(length=32), nullable=True),
        sa.Column("resource_id", sa.String(length=255), nullable=True),
        sa.Column("params", sa.JSON(), nullable=True),
        sa.Column("source_ip", sa.String(length=64), nullable=True),
        sa.Column("success", sa.Boolean(), nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("audit_records", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_audit_records_action"), ["action"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_audit_records_created_at"), ["created_at"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_audit_records_username"), ["username"], unique=False)

    op.create_table(
        "password_policy",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("min_length", sa.Integer(), nullable=False),
        sa.Column("history", sa.Integer(), nullable=False),
        sa.Column("max_failed_logins", sa.Integer(), nullable=False),
        sa.Column("lockout_seconds", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "used_signatures",
        sa.Column("signature", sa.String(length=64), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("signature"),
    )
    with op.batch_alter_table("used_signatures", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_used_signatures_expires_at"), ["expires_at"], unique=False
        )

    op.create_table(
        "api_keys",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("user_id", sa.String(length=36), nullable=False),
        sa.Column("project_id", sa.String(length=36), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("secret_encrypted", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["project_id"], ["projects.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_api_keys_user_id"), ["user_id"], unique=False)

    op.create_table(
        "password_history",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("user_id", sa.String(length=36), nullable=False),
        sa.Column("password_hash", sa.String(length=255), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("password_history", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_password_history_user_id"), ["user_id"], unique=False)

    op.create_table(
        "quotas",
        sa.Column("project_id", sa.String(length=36), nullable=False),
        sa.Column("resource", sa.String(length=32), nullable=False),
        sa.Column("limit", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(["project_id"], ["projects.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("project_id", "resource"),
    )
    with op.batch_alter_table("projects", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("description", sa.String(length=255), nullable=False, server_default="")
        )
        batch_op.add_column(
            sa.Column("quota_serial", sa.BigInteger(), nullable=False, server_default="0")
        )

    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("failed_logins", sa.Integer(), nullable=False, server_default="0")
        )
        batch_op.add_column(sa.Column("locked_until", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(
            sa.Column(
                "password_changed_at",
                sa.DateTime(timezone=True),
                nullable=False,
                server_default=sa.func.current_timestamp(),
            )
        )

    op.execute("UPDATE users SET system_role = 'system_admin' WHERE system_role = 'admin'")


def downgrade() -> None:
    op.execute("UPDATE users SET system_role = NULL WHERE system_role <> 'system_admin'")
    op.execute("UPDATE users SET system_role = 'admin' WHERE system_role = 'system_admin'")
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.drop_column("password_changed_at")
        batch_op.drop_column("locked_until")
        batch_op.drop_column("failed_logins")

    with op.batch_alter_table("projects", schema=None) as batch_op:
        batch_op.drop_column("quota_serial")
        batch_op.drop_column("description")

    op.drop_table("quotas")
    with op.batch_alter_table("password_history", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_password_history_user_id"))

    op.drop_table("password_history")
    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_api_keys_user_id"))

    op.drop_table("api_keys")
    with op.batch_alter_table("used_signatures", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_used_signatures_expires_at"))

    op.drop_table("used_signatures")
    op.drop_table("password_policy")
    with op.batch_alter_table("audit_records", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_audit_records_username"))
        batch_op.drop_index(batch_op.f("ix_audit_records_created_at"))
        batch_op.drop_index(batch_op.f("ix_audit_records_action"))

    op.drop_table("audit_records")
