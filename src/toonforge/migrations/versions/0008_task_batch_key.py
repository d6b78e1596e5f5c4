"""tasks.batch_key: queued tasks that can share one denoising run

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-29 19:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("tasks") as batch:
        batch.add_column(sa.Column("batch_key", sa.String(length=64), nullable=True))
    op.create_index("ix_tasks_batch", "tasks", ["batch_key", "status", "id"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_tasks_batch", table_name="tasks")
    with op.batch_alter_table("tasks") as batch:
        batch.drop_column("batch_key")
