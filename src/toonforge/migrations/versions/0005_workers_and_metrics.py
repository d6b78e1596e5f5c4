"""workers (each worker's heartbeat: host, device, tools, loaded parts) and task_metrics
(aggregates for /metrics); callback deliveries indexed by state

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-29 19:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "workers",
        sa.Column("id", sa.String(length=128), nullable=False),
        sa.Column("host", sa.String(length=255), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("device", sa.String(length=64), nullable=False),
        sa.Column("started_at", sa.Float(), nullable=False),
        sa.Column("heartbeat_at", sa.Float(), nullable=False),
        sa.Column("tools", sa.JSON(), nullable=False),
        sa.Column("loaded", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("task_id", sa.Integer(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(op.f("ix_workers_heartbeat_at"), "workers", ["heartbeat_at"], unique=False)
    op.create_table(
        "task_metrics",
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("tool_key", sa.String(length=300), nullable=False),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("bucket", sa.Integer(), nullable=False),
        sa.Column("count", sa.BigInteger(), nullable=False),
        sa.Column("total", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("kind", "tool_key", "outcome", "bucket"),
    )
    op.create_index("ix_callback_deliveries_state", "callback_deliveries", ["state"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_callback_deliveries_state", table_name="callback_deliveries")
    op.drop_table("task_metrics")
    op.drop_index(op.f("ix_workers_heartbeat_at"), table_name="workers")
    op.drop_table("workers")
