"""The per-segment controller's evidence in the decision log: each judged decision of a segment with
its latest feedback (tierwise.evidence.segment_control reads it through `judged_in_segments`; the
report too). Kept apart from the store so that the controller imports SQLAlchemy only when the
decision log is on."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa

from tierwise.core.policy import ESTIMATED
from tierwise.evidence.decision_log import DecisionStore
from tierwise.evidence.decision_schema import decisions_table, feedback_table
from tierwise.evidence.segment_control import TIER_VERDICTS, JudgedRow


def judged_in_segments(
    store: DecisionStore, since: datetime, max_per_segment: int, model_version: str | None = None
) -> list[JudgedRow]:
    """Decisions with a segment made since `since` that have feedback, each with its latest
    feedback: the newest `max_per_segment` per segment (the per-segment controller's evidence).
    With `model_version`, only that model's decisions: another model's probabilities (a canary,
    the model before a reload) cannot say what this one would have routed."""
    latest = (
        sa.select(feedback_table.c.request_id, sa.func.max(feedback_table.c.id).label("id"))
        .where(feedback_table.c.created_at >= since)  # feedback comes after its decision
        .group_by(feedback_table.c.request_id)
        .subquery()
    )
    newest = sa.func.row_number().over(
        partition_by=decisions_table.c.segment,
        order_by=(decisions_table.c.created_at.desc(), decisions_table.c.request_id),
    )
    inner = (
        sa.select(
            decisions_table.c.segment,
            decisions_table.c.probabilities,
            decisions_table.c.reasons,
            feedback_table.c.high_tier,
            feedback_table.c.evidence,
            newest.label("newest"),
        )
        .join(latest, latest.c.request_id == decisions_table.c.request_id)
        .join(feedback_table, feedback_table.c.id == latest.c.id)
        .where(decisions_table.c.segment.is_not(None), decisions_table.c.created_at >= since)
    )
    if model_version is not None:
        inner = inner.where(decisions_table.c.model_version == model_version)
    ranked = inner.subquery()
    query = sa.select(
        ranked.c.segment, ranked.c.probabilities, ranked.c.reasons, ranked.c.high_tier, ranked.c.evidence
    ).where(ranked.c.newest <= max_per_segment)  # the newest per segment, counted in the database
    query = query.order_by(ranked.c.segment, ranked.c.newest)
    with store.engine.connect() as connection:
        return [
            JudgedRow(segment, probabilities or {}, high_tier, (evidence or {}).get(TIER_VERDICTS))
            for segment, probabilities, reasons, high_tier, evidence in connection.execute(query)
            if ESTIMATED not in (reasons or ())  # the estimator's probabilities, not the encoder's
        ]
