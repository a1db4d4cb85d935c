"""What a load level counts (tools/load_levels.py): how every answer was decided, and what failed."""

import json

from tools.load_levels import Level


def answer(decided_by: str | None, tier: str, reasons=()) -> bytes:
    body = {"tier": tier, "reasons": list(reasons)}
    if decided_by is not None:
        body["decided_by"] = decided_by
    return json.dumps(body).encode()


def test_a_level_counts_how_every_answer_was_decided():
    level = Level("open", 100)
    level.record(200, answer("encoder", "fast"), 5.0)
    level.record(200, answer("estimator", "balanced"), 40.0)
    level.record(200, answer(None, "frontier", ["classifier_unavailable"]), 50.0)  # an older service
    level.record(200, answer(None, "fast"), 4.0)
    level.record(503, b"{}", 1.0)
    level.seconds = 2.0
    assert level.answered == 4 and level.errors == 1 and level.rate == 2.0
    assert level.describe_errors() == "1 (HTTP 503 x1)" and Level("open", 1).describe_errors() == "0"
    assert (
        level.share("encoder") == 0.5 and level.share("estimator") == 0.25 and level.share("fallback") == 0.25
    )
    assert level.tiers == {"fast": 2, "balanced": 1, "frontier": 1}
