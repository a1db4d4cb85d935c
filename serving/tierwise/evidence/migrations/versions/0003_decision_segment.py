"""decision segment (the route, else the automatic segment), for per-segment risk control

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-08

"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    with op.batch_alter_table("decisions") as batch:
        batch.add_column(sa.Column("segment", sa.String(200), nullable=True))
    op.create_index("ix_decisions_segment_created_at", "decisions", ["segment", "created_at"])


def downgrade() -> None:
    op.drop_index("ix_decisions_segment_created_at", table_name="decisions")
    with op.batch_alter_table("decisions") as batch:
        batch.drop_column("segment")
