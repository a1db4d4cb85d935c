"""The names a gateway's cascade and the service share: the feedback source of a failed check and the
reasons a check gives (serving/tierwise/gateway/cascade.py), one definition for the gateway that sends
them, the service that counts them (a Prometheus label: only these values, so its series stay bounded)
and `tierwise report`, which reads them back."""

from __future__ import annotations

CASCADE_SOURCE = "cascade"  # POST /feedback `source` of a cascade's failed check

TRUNCATED = "truncated"
EMPTY = "empty"
REFUSAL = "refusal"
INVALID_JSON = "invalid_json"
SCHEMA_MISMATCH = "schema_mismatch"
INVALID_TOOL_CALL = "invalid_tool_call"
JUDGE_LOW = "judge_low"
REASONS = (TRUNCATED, EMPTY, REFUSAL, INVALID_JSON, SCHEMA_MISMATCH, INVALID_TOOL_CALL, JUDGE_LOW)
OTHER_REASON = "other"  # any reason a reporter sends that is not one of REASONS


def known_reason(reason: str | None) -> str:
    """`reason` when it is one of REASONS, else OTHER_REASON: a value fit for a metric label."""
    return reason if reason in REASONS else OTHER_REASON
