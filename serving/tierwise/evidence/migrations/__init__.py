"""Alembic migrations for the decision log (`tierwise.evidence.decision_log`); run by `tierwise db upgrade`."""
