"""POST /feedback from a gateway's cascade: the tier whose answer failed, the reason and evidence are
stored, the outcome is placed from that tier, retries are counted, and export-feedback keeps them."""

import pytest
from fastapi.testclient import TestClient
from tierwise.evidence.decision_log import DecisionStore
from tierwise.ops.feedback_report import feedback_rows
from tierwise.service.app import create_app
from tierwise.service.feedback import MAX_EVIDENCE_DEPTH, evidence_problem

from tests.helpers.gateway import sync_client
from tools.tiny_model import make_settings

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


def nested(levels):
    value = "x"
    for _ in range(levels):
        value = [value]
    return value


@pytest.mark.parametrize(
    ("raw", "field", "says"),
    [
        ('{"evidence": {"a": ' + "[" * 500 + "1" + "]" * 500 + "}}", "evidence", "nested more than 8"),
        ('{"evidence": ' + "[" * 100_000 + "]" * 100_000 + "}", "body", "nested too deeply"),
        ('{"evidence": {"n": ' + "9" * 5000 + "}}", "body", "digits"),
        ('{"evidence": {"cost_usd": NaN}}', "body", "NaN is not a JSON number"),
        ('{"evidence": {"cost_usd": -Infinity}}', "body", "-Infinity is not a JSON number"),
    ],
    ids=["500 levels", "100000 levels", "a 5000-digit integer", "NaN", "-Infinity"],
)
def test_unstorable_evidence_is_a_422_never_a_503(app, raw, field, says):
    request_id = classified(app[1])
    head = f'{{"request_id": "{request_id}", "outcome": {{"passed": false}}, "source": "cascade", '
    response = app[1].post("/feedback", content=head + raw[1:], headers={"content-type": "application/json"})
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["field"] == field and says in error["message"], error


def test_evidence_up_to_the_depth_limit_is_stored_and_non_finite_numbers_are_refused(app, db_url):
    request_id = classified(app[1])
    deepest = {"trace": nested(MAX_EVIDENCE_DEPTH - 1)}  # the object and 7 lists: 8 levels
    body = {"request_id": request_id, "outcome": {"passed": False}, "evidence": deepest}
    assert app[1].post("/feedback", json=body).status_code == 200
    assert app[1].post("/feedback", json={**body, "evidence": {"t": nested(8)}}).status_code == 422
    assert evidence_problem({"cost_usd": float("nan")}) == "numbers must be finite (no NaN or Infinity)"
    assert evidence_problem({"x": nested(10**5)}) is not None  # stops at the limit: no deep recursion


def test_a_reporters_own_reason_is_counted_as_other_so_the_metric_stays_bounded(app):
    client = sync_client(app)
    for reason in ("invalid_json", "made-up-1", "made-up-2"):
        request_id = classified(app[1])
        evidence = {"next_tier": "balanced"}
        client.feedback(
            request_id, passed=False, source="cascade", tier="fast", reason=reason, evidence=evidence
        )
    metrics = app[1].get("/metrics").text
    assert 'tierwise_cascade_retries_total{from_tier="fast",reason="invalid_json"} 1' in metrics
    assert 'tierwise_cascade_retries_total{from_tier="fast",reason="other"} 2' in metrics
    assert "made-up" not in metrics


@pytest.mark.parametrize("next_tier", [["balanced"], {"tier": "balanced"}, 3, "turbo", "private", ""])
def test_next_tier_is_null_or_a_tier_of_the_policy(app, next_tier):
    request_id = classified(app[1])
    body = {"request_id": request_id, "outcome": {"passed": False}, "source": "cascade", "tier": "fast"}
    response = app[1].post("/feedback", json={**body, "evidence": {"next_tier": next_tier}})
    assert response.status_code == 422, response.text
    assert response.json()["error"]["field"] == "evidence.next_tier"
    for good in (None, "balanced"):
        assert app[1].post("/feedback", json={**body, "evidence": {"next_tier": good}}).status_code == 200
