"""Alembic migrations for the decision log (`tierwise.ops.decision_log`); run by `tierwise db upgrade`."""
