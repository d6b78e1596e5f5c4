"""object storage: where each private model's file is stored; outputs indexed by age (for
the retention sweep)

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-29 19:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # "" for models stored before: their file is in the data folder of the API's host.
    with op.batch_alter_table("private_models") as batch:
        batch.add_column(
            sa.Column("storage_key", sa.String(length=500), nullable=False, server_default="")
        )
    op.create_index("ix_task_outputs_added_at", "task_outputs", ["added_at"])


def downgrade() -> None:
    op.drop_index("ix_task_outputs_added_at", table_name="task_outputs")
    with op.batch_alter_table("private_models") as batch:
        batch.drop_column("storage_key")
