"""feedback evidence (shadow evaluation verdicts, models, cost)

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01

"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    with op.batch_alter_table("feedback") as batch:
        batch.add_column(sa.Column("evidence", sa.JSON(), nullable=True))
    op.create_index("ix_feedback_source_created_at", "feedback", ["source", "created_at"])


def downgrade() -> None:
    op.drop_index("ix_feedback_source_created_at", table_name="feedback")
    with op.batch_alter_table("feedback") as batch:
        batch.drop_column("evidence")
