"""uploads (File/Upload) and the uploads each task used; tasks indexed by tool

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-22 03:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "uploads",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("project_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("content_type", sa.String(length=100), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("accesskey", sa.String(length=64), nullable=False),
        sa.Column("storage_key", sa.String(length=500), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(["project_id"], ["projects.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("accesskey"),
    )
    op.create_index(op.f("ix_uploads_project_id"), "uploads", ["project_id"], unique=False)
    op.create_table(
        "task_uploads",
        sa.Column("task_id", sa.Integer(), nullable=False),
        sa.Column("upload_id", sa.String(length=32), nullable=False),
        sa.ForeignKeyConstraint(["task_id"], ["tasks.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["upload_id"], ["uploads.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("task_id", "upload_id"),
    )
    op.create_index(op.f("ix_task_uploads_upload_id"), "task_uploads", ["upload_id"], unique=False)
    op.create_index("ix_tasks_tool", "tasks", ["tool_key", "id"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_tasks_tool", table_name="tasks")
    op.drop_index(op.f("ix_task_uploads_upload_id"), table_name="task_uploads")
    op.drop_table("task_uploads")
    op.drop_index(op.f("ix_uploads_project_id"), table_name="uploads")
    op.drop_table("uploads")
