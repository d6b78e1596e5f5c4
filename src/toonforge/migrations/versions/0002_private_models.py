"""private models (a project's own SD1.5 base checkpoints)

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22 01:30:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "private_models",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("project_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("family", sa.String(length=32), nullable=False),
        sa.Column("file_name", sa.String(length=255), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(["project_id"], ["projects.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("project_id", "name", name="uq_private_model_name"),
        sqlite_autoincrement=True,
    )
    op.create_index(
        op.f("ix_private_models_project_id"), "private_models", ["project_id"], unique=False
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_private_models_project_id"), table_name="private_models")
    op.drop_table("private_models")
