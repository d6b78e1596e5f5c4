"""task_previews (WebSocket previews while sampling) and worker_presence (live workers, for
the queue's start-time estimate)

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-29 19:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "task_previews",
        sa.Column("task_id", sa.Integer(), nullable=False),
        sa.Column("step", sa.Integer(), nullable=False),
        sa.Column("image", sa.Text(), nullable=False),
        sa.Column("requested_at", sa.Float(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=True),
        sa.ForeignKeyConstraint(["task_id"], ["tasks.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("task_id"),
    )
    op.create_table(
        "worker_presence",
        sa.Column("worker_id", sa.String(length=128), nullable=False),
        sa.Column("started_at", sa.Float(), nullable=False),
        sa.Column("seen_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("worker_id"),
    )
    op.create_index(
        op.f("ix_worker_presence_seen_at"), "worker_presence", ["seen_at"], unique=False
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_worker_presence_seen_at"), table_name="worker_presence")
    op.drop_table("worker_presence")
    op.drop_table("task_previews")
