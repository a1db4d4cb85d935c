"""Alembic migrations for the decision log (`serving.decision_log`); run by `tierwise db upgrade`."""
