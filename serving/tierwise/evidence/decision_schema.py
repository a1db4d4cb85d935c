"""The decision log's two tables, `decisions` and `feedback`, as SQLAlchemy metadata.

The migrations in `serving/tierwise/evidence/migrations` own how the tables evolve (their env.py compares
against this metadata); tierwise.evidence.decision_log reads and writes rows through them.
"""

from __future__ import annotations

import sqlalchemy as sa

ALEMBIC_VERSION_TABLE = "tierwise_alembic_version"

metadata = sa.MetaData()

decisions_table = sa.Table(
    "decisions",
    metadata,
    sa.Column("request_id", sa.String(128), primary_key=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, index=True),
    sa.Column("model_version", sa.String(200), nullable=False, index=True),
    sa.Column("tier", sa.String(64), nullable=False),
    sa.Column("predicted_tier", sa.String(64), nullable=True),
    sa.Column("confidence", sa.Float(), nullable=False),
    sa.Column("probabilities", sa.JSON(), nullable=False),
    sa.Column("reasons", sa.JSON(), nullable=False),
    sa.Column("escalated", sa.Boolean(), nullable=False),
    sa.Column("model", sa.String(200), nullable=False),
    sa.Column("token_count", sa.Integer(), nullable=True),
    sa.Column("text_chars", sa.Integer(), nullable=False),
    sa.Column("route", sa.String(200), nullable=True),
    sa.Column("prompt_sha256", sa.String(64), nullable=False),
    sa.Column("prompt_text", sa.Text(), nullable=True),
    sa.Column("latency_ms", sa.Float(), nullable=True),
    sa.Column("segment", sa.String(200), nullable=True),  # the route, else the automatic segment
    sa.Index("ix_decisions_segment_created_at", "segment", "created_at"),
)

feedback_table = sa.Table(
    "feedback",
    metadata,
    sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
    sa.Column(
        "request_id",
        sa.String(128),
        sa.ForeignKey("decisions.request_id", ondelete="CASCADE"),
        nullable=False,
        index=True,
    ),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("needed_tier", sa.String(64), nullable=True),
    sa.Column("passed", sa.Boolean(), nullable=True),
    sa.Column("source", sa.String(64), nullable=True),
    sa.Column("low_tier", sa.String(64), nullable=True),
    sa.Column("high_tier", sa.String(64), nullable=True),
    sa.Column("evidence", sa.JSON(), nullable=True),  # e.g. a shadow judge's verdicts, models and cost
    sa.Index("ix_feedback_source_created_at", "source", "created_at"),
)
