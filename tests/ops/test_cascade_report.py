"""The cascade section of `tierwise report`, on a known decision log with cascade feedback rows."""

import json
from datetime import UTC, datetime

import pytest
from tierwise.cli.main import main as cli_main
from tierwise.core.policy_file import DEFAULT_POLICY_FILE, load_policy
from tierwise.core.scoring import request_cost_usd
from tierwise.evidence.decision_log import DecisionRecord, DecisionStore, FeedbackRecord, outcome_range
from tierwise.ops.cascade_report import cascade_checks, cascade_summary, render_cascade

POLICY = load_policy(DEFAULT_POLICY_FILE)
TIERS = POLICY.tier_names
WHEN = datetime(2026, 11, 20, tzinfo=UTC)


def decision(request_id, tier):
    return DecisionRecord(
        request_id=request_id,
        created_at=WHEN,
        model_version="v1",
        tier=tier,
        predicted_tier=tier,
        confidence=0.9,
        probabilities={},
        reasons=[],
        escalated=False,
        model="m",
        token_count=1000,
        text_chars=4000,
        route=None,
        prompt_sha256="0" * 64,
        prompt_text=f"prompt {request_id}",
    )


def failed(request_id, tier, reason, next_tier, **summary):
    low_high = outcome_range(TIERS, tier, None, False)
    evidence = {"tier": tier, "reason": reason, "next_tier": next_tier, **summary}
    return FeedbackRecord(request_id, WHEN, None, False, "cascade", *(low_high or (None, None)), evidence)


@pytest.fixture()
def db(tmp_path):
    url = f"sqlite:///{tmp_path / 'decisions.sqlite'}"
    store = DecisionStore(url)
    store.upgrade()
    store.insert_decisions([decision(f"r{i}", "fast") for i in range(8)] + [decision("r8", "balanced")])
    for record in (
        failed("r0", "fast", "invalid_json", "balanced", final_passed=True, added_ms=30.0),
        failed("r1", "fast", "truncated", "balanced"),
        failed("r1", "balanced", "truncated", None, final_passed=False, added_ms=50.0, stop="max_retries"),
        failed("r2", "fast", "refusal", None, final_passed=False, added_ms=0.2, stop="cost_cap"),
    ):
        store.insert_feedback(record)
    store.close()
    return url


def test_the_section_counts_retries_rates_cost_and_latency(db):
    store = DecisionStore(db)
    rows, checks = store.labeled_decisions(), cascade_checks(store, None, None)
    store.close()
    section = cascade_summary(rows, checks, POLICY)
    assert section["failed_checks"] == 4 and section["requests_with_failed_checks"] == 3
    assert section["retries_by_tier_reason"] == {"fast:invalid_json": 1, "fast:truncated": 1}
    assert section["per_tier"]["fast"] == {
        "checked": 8,
        "failed": 3,
        "fallback_rate": 3 / 8,
        "success_rate": 5 / 8,
    }
    assert section["per_tier"]["balanced"]["checked"] == 3  # r8 served there, r0 and r1 retried there
    assert section["final_failures"] == 2
    tiers = {t.name: t for t in POLICY.tiers}

    def cost(tier):
        return request_cost_usd(
            1000, 300, tiers[tier].input_price_per_million, tiers[tier].output_price_per_million
        )

    spend = 8 * cost("fast") + cost("balanced") + 2 * cost("balanced")  # decisions, then the two retries
    assert section["cost_per_success_usd"] == pytest.approx(spend / 7)  # 9 decisions, 2 final failures
    assert section["all_frontier_cost_per_response_usd"] == pytest.approx(cost("frontier"))
    assert section["added_ms_retried_p50"] == pytest.approx(40.0)  # r0 and r1; r2 was not retried
    text = "\n".join(render_cascade(section))
    assert "| fast | 8 | 3 | 37.5% | 62.5% |" in text and "| fast:invalid_json | 1 |" in text


def test_no_section_without_cascade_feedback():
    assert cascade_summary([], [], POLICY) is None and render_cascade(None) == []


def test_tierwise_report_shows_the_section(db, tmp_path, tiny_model_dir):
    out = tmp_path / "report"
    args = ["report", "--since", "2026-11-01", "--until", "2026-12-01", "--db", db, "--out-dir", str(out)]
    assert cli_main([*args, "--model", str(tiny_model_dir), "--no-plots"]) == 0
    saved = json.loads((out / "report.json").read_text())
    assert saved["cascade"]["retries"] == 2
    assert "## Cascade: answer checks and retries at the gateway" in (out / "report.md").read_text()


def test_rows_with_values_of_the_wrong_type_read_as_unknown_not_a_crash(tmp_path):
    """Rows stored before the service checked `next_tier` (or by another writer): the report runs."""
    url = f"sqlite:///{tmp_path / 'decisions.sqlite'}"
    store = DecisionStore(url)
    store.upgrade()
    store.insert_decisions([decision("r0", "fast"), decision("r1", "fast")])
    bad = {"next_tier": ["balanced"], "tier": {"a": 1}, "reason": 7, "final_passed": "no", "added_ms": "9"}
    worse = {"next_tier": {"t": 1}, "added_ms": float("inf"), "final_passed": 0}
    for request_id, evidence in (("r0", bad), ("r1", worse)):
        store.insert_feedback(FeedbackRecord(request_id, WHEN, None, False, "cascade", None, None, evidence))
    checks = cascade_checks(store, None, None)
    section = cascade_summary(store.labeled_decisions(), checks, POLICY)
    store.close()
    assert [(c.tier, c.reason, c.next_tier, c.final_passed, c.added_ms) for c in checks] == [
        ("unknown", "unknown", None, None, None)
    ] * 2
    assert section["retries"] == 0 and section["final_failures"] == 0
    assert render_cascade(section)
