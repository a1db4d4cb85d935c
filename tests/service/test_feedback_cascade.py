"""POST /feedback from a gateway's cascade: the tier whose answer failed, the reason and evidence are
stored, the outcome is placed from that tier, retries are counted, and export-feedback keeps them."""

import pytest
from fastapi.testclient import TestClient
from tierwise.ops.decision_log import DecisionStore
from tierwise.ops.feedback_report import feedback_rows
from tierwise.service.app import create_app

from tests.helpers.gateway import sync_client
from tests.helpers.tiny_model import make_settings

TIERS = ("fast", "balanced", "frontier")


@pytest.fixture()
def db_url(tmp_path):
    return f"sqlite:///{tmp_path / 'decisions.sqlite'}"


@pytest.fixture()
def app(tiny_model_dir, tiny_classifier, db_url):
    settings = make_settings(tiny_model_dir, record_decisions=True, decision_db=db_url, record_prompts=True)
    application = create_app(settings, classifier_factory=lambda _: tiny_classifier)
    with TestClient(application) as test_client:
        yield application, test_client


def classified(client, text="hello hello"):
    request_id = client.post("/classify", json={"text": text}).json()["request_id"]
    assert client.app.state.decision_recorder.wait_idle(5.0)
    return request_id


def test_each_failed_tier_of_a_cascade_is_stored_and_placed(app, db_url):
    client = sync_client(app)
    request_id = classified(app[1])
    first = client.feedback(
        request_id,
        passed=False,
        source="cascade",
        tier="fast",
        reason="invalid_json",
        evidence={"next_tier": "balanced", "cost_usd": 0.0002},
    )
    assert first["outcome_tiers"] == ["balanced", "frontier"]
    second = client.feedback(
        request_id,
        passed=False,
        source="cascade",
        tier="balanced",
        reason="truncated",
        evidence={"next_tier": None, "stop": "max_retries", "final_passed": False},
    )
    assert second["outcome_tiers"] == ["frontier"] and second["tier"] == "fast"  # the served tier
    [row] = DecisionStore(db_url).labeled_decisions()
    assert row.feedback.source == "cascade" and (row.feedback.low_tier, row.feedback.high_tier) == (
        "frontier",
        "frontier",
    )
    assert row.feedback.evidence == {
        "next_tier": None,
        "stop": "max_retries",
        "final_passed": False,
        "tier": "balanced",
        "reason": "truncated",
    }
    exported, _ = feedback_rows([row], TIERS, "production")
    assert exported[0]["allowed_tiers"] == ["frontier"] and exported[0]["source"] == "production:cascade"
    metrics = app[1].get("/metrics").text
    assert 'tierwise_cascade_retries_total{from_tier="fast",reason="invalid_json"} 1' in metrics
    assert 'from_tier="balanced"' not in metrics  # balanced's failure was not followed by a retry


def test_a_failed_private_check_is_kept_but_not_placed(app, db_url):
    request_id = classified(app[1], "write an email to jane.doe@example.com")
    body = {
        "request_id": request_id,
        "outcome": {"passed": False},
        "source": "cascade",
        "tier": "private",
        "reason": "refusal",
    }
    response = app[1].post("/feedback", json=body)
    assert response.status_code == 200, response.text
    assert response.json()["tier"] == "private" and response.json()["outcome_tiers"] == []
    [row] = DecisionStore(db_url).labeled_decisions()
    assert row.feedback.evidence == {"tier": "private", "reason": "refusal"}


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ({"tier": "turbo"}, "tier"),
        ({"reason": "x" * 65}, "reason"),
        ({"evidence": {"blob": "x" * 5000}}, "evidence"),
        ({"evidence": ["not", "an", "object"]}, "evidence"),
    ],
)
def test_bad_cascade_fields_are_named(app, extra, field):
    request_id = classified(app[1])
    body = {"request_id": request_id, "outcome": {"passed": False}, "source": "cascade", **extra}
    response = app[1].post("/feedback", json=body)
    assert response.status_code == 422 and response.json()["error"]["field"] == field, response.text
