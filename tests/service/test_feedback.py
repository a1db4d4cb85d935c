"""Decision log, POST /feedback, the report's numbers and export-feedback."""

import json
from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient
from tierwise.cli.main import main as cli_main
from tierwise.core.policy import TierConfig
from tierwise.core.policy_file import DEFAULT_POLICY_FILE, load_policy
from tierwise.core.scoring import request_cost_usd
from tierwise.evidence.decision_log import (
    DecisionRecord,
    DecisionRecorder,
    DecisionStore,
    FeedbackRecord,
    LabeledDecision,
    outcome_range,
)
from tierwise.ops.feedback_report import build_report, feedback_rows, parse_since
from tierwise.service.app import create_app
from tierwise.training.user_data import parse_user_row

from tools.tiny_model import make_settings

TIERS = ("fast", "balanced", "frontier")


def request_cost(tier: TierConfig, tokens: int, output_tokens: int) -> float:
    """USD for one request on `tier`, priced by the one cost formula of tierwise.core.scoring."""
    return request_cost_usd(
        tokens, output_tokens, tier.input_price_per_million, tier.output_price_per_million
    )


@pytest.fixture()
def db_url(tmp_path):
    return f"sqlite:///{tmp_path / 'decisions.sqlite'}"


@pytest.fixture()
def client(tiny_model_dir, tiny_classifier, db_url):
    settings = make_settings(tiny_model_dir, record_decisions=True, decision_db=db_url, record_prompts=True)
    app = create_app(settings, classifier_factory=lambda _: tiny_classifier)
    with TestClient(app) as test_client:
        yield test_client


def flush(client):
    assert client.app.state.decision_recorder.wait_idle(5.0)


def test_classify_is_recorded_and_feedback_accepted(client, db_url):
    response = client.post("/classify", json={"text": "hello hello", "route": "chat"})
    request_id = response.json()["request_id"]
    flush(client)
    stored = DecisionStore(db_url).get_decision(request_id)
    assert stored.tier == "fast" and stored.predicted_tier == "fast" and stored.route == "chat"
    assert stored.model_version == "tiny@test-test" and stored.prompt_text == "hello hello"
    assert set(stored.probabilities) == set(TIERS) and stored.token_count == 2
    assert len(stored.prompt_sha256) == 64

    body = client.post(
        "/feedback",
        json={"request_id": request_id, "outcome": {"needed_tier": "balanced"}, "source": "grader"},
    )
    assert body.status_code == 200, body.text
    assert body.json()["outcome_tiers"] == ["balanced"] and body.json()["tier"] == "fast"
    passed = client.post("/feedback", json={"request_id": request_id, "outcome": "passed"}).json()
    assert passed["outcome_tiers"] == ["fast"] and passed["passed"] is True
    metrics = client.get("/metrics").text
    assert 'tierwise_decision_log_records_total{outcome="written"} 1' in metrics
    assert 'tierwise_feedback_total{kind="needed_tier"} 1' in metrics
    assert 'tierwise_decisions_by_version_total{model_version="tiny@test-test",tier="fast"} 1' in metrics


def test_feedback_for_a_batch_item_right_after_classify(client):
    results = client.post("/classify/batch", json={"items": [{"text": "hi"}, {"text": "prove it"}]}).json()
    second = results["results"][1]["request_id"]
    assert second.endswith("-1")
    # no flush: the endpoint waits for the write queue before saying the id is unknown
    response = client.post("/feedback", json={"request_id": second, "outcome": {"passed": False}})
    assert response.status_code == 200, response.text
    assert response.json()["outcome_tiers"] == []  # the top tier failed: nothing to place


@pytest.mark.parametrize(
    ("body", "status", "error_type", "field"),
    [
        ({"request_id": "nope", "outcome": "balanced"}, 404, "unknown_request_id", "request_id"),
        ({"request_id": "X", "outcome": {}}, 422, "invalid_outcome", "outcome"),
        (
            {"request_id": "X", "outcome": {"needed_tier": "fast", "passed": True}},
            422,
            "invalid_outcome",
            "outcome",
        ),
        ({"request_id": "X", "outcome": {"passed": "yes"}}, 422, "invalid_outcome", "outcome.passed"),
        ({"request_id": "X", "outcome": "huge"}, 422, "unknown_tier", "outcome.needed_tier"),
        ({"request_id": "X", "outcome": {"tier": "fast"}}, 422, "invalid_outcome", "outcome.tier"),
        ({"request_id": "X"}, 422, "invalid_outcome", "outcome"),
        ({"outcome": "fast"}, 422, "invalid_request", "request_id"),
        ({"request_id": "X", "outcome": "fast", "extra": 1}, 422, "invalid_request", "extra"),
        (["X"], 422, "invalid_request", "body"),
    ],
)
def test_feedback_errors_are_clear_4xx(client, body, status, error_type, field):
    client.post("/classify", json={"text": "hi"}, headers={"X-Request-ID": "X"})
    response = client.post("/feedback", json=body)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["type"] == error_type and error["field"] == field
    assert error["message"]


def test_feedback_invalid_json(client):
    response = client.post("/feedback", content=b"{nope", headers={"content-type": "application/json"})
    assert response.status_code == 400 and response.json()["error"]["type"] == "invalid_json"


def test_feedback_without_decision_log_is_403(tiny_model_dir, tiny_classifier):
    app = create_app(make_settings(tiny_model_dir), classifier_factory=lambda _: tiny_classifier)
    with TestClient(app) as test_client:
        assert test_client.post("/classify", json={"text": "hi"}).status_code == 200
        response = test_client.post("/feedback", json={"request_id": "a", "outcome": "fast"})
    assert response.status_code == 403
    assert "TIERWISE_RECORD_DECISIONS" in response.json()["error"]["message"]


def test_a_broken_database_never_fails_classify(client):
    recorder = client.app.state.decision_recorder

    def explode(records):
        raise RuntimeError("disk full")

    recorder.store.insert_decisions = explode
    response = client.post("/classify", json={"text": "hello"})
    assert response.status_code == 200
    flush(client)
    assert recorder.counts["failed"] == 1


def record(request_id, tier, predicted, *, version="v1", escalated=False, tokens=100, probs=None, reasons=()):
    return DecisionRecord(
        request_id=request_id,
        created_at=datetime(2026, 11, 20, tzinfo=UTC),
        model_version=version,
        tier=tier,
        predicted_tier=predicted,
        confidence=0.9,
        probabilities=probs
        or ({} if predicted is None else {t: (0.8 if t == predicted else 0.1) for t in TIERS}),
        reasons=list(reasons),
        escalated=escalated,
        model="m",
        token_count=tokens,
        text_chars=400,
        route=None,
        prompt_sha256="0" * 64,
        prompt_text=f"prompt {request_id}",
    )


def test_full_queue_drops_and_counts(tmp_path):
    store = DecisionStore(f"sqlite:///{tmp_path / 'd.sqlite'}")
    store.upgrade()
    recorder = DecisionRecorder(store, max_queue=1)  # not started: nothing drains the queue
    assert recorder.submit(record("a", "fast", "fast"))
    assert not recorder.submit(record("b", "fast", "fast"))
    assert recorder.counts["dropped"] == 1
    recorder.start()
    recorder.close()
    assert recorder.counts["written"] == 1


def test_duplicate_request_ids_keep_the_rest_of_the_batch(tmp_path):
    store = DecisionStore(f"sqlite:///{tmp_path / 'd.sqlite'}")
    store.upgrade()
    store.upgrade()  # idempotent
    assert store.current_revision() == "0003"
    assert store.insert_decisions([record("a", "fast", "fast")]) == (1, 0)
    assert store.insert_decisions([record("a", "fast", "fast"), record("b", "fast", "fast")]) == (1, 1)


def test_outcome_range():
    assert outcome_range(TIERS, "fast", "frontier", None) == ("frontier", "frontier")
    assert outcome_range(TIERS, "balanced", None, True) == ("fast", "balanced")
    assert outcome_range(TIERS, "balanced", None, False) == ("frontier", "frontier")
    assert outcome_range(TIERS, "fast", None, False) == ("balanced", "frontier")
    assert outcome_range(TIERS, "frontier", None, False) is None
    assert outcome_range(TIERS, "private", None, True) is None


def labeled(decision, needed=None, passed=None):
    bounds = outcome_range(TIERS, decision.tier, needed, passed) if (needed or passed is not None) else None
    feedback = None
    if needed is not None or passed is not None:
        feedback = FeedbackRecord(
            decision.request_id,
            decision.created_at,
            needed,
            passed,
            "grader",
            bounds[0] if bounds else None,
            bounds[1] if bounds else None,
        )
    return LabeledDecision(decision, feedback)


KNOWN_LOG = [
    # (served, predicted, feedback) -> expected (outcome tier for predicted, outcome tier for served)
    labeled(record("r1", "fast", "fast"), needed="fast"),  # right
    labeled(record("r2", "fast", "fast"), needed="balanced"),  # under by one
    labeled(record("r3", "frontier", "fast", escalated=True, reasons=["low_confidence"]), needed="frontier"),
    labeled(record("r4", "balanced", "balanced"), passed=True),  # [fast, balanced]: both right
    labeled(record("r5", "balanced", "balanced"), passed=False),  # needs frontier
    labeled(record("r6", "frontier", "frontier"), needed="fast"),  # over by two
    labeled(record("r7", "frontier", "frontier"), passed=False),  # unplaceable
    labeled(record("r8", "frontier", None, tokens=None, reasons=["classifier_unavailable"], escalated=True)),
    labeled(
        record("r9", "balanced", "fast", version="v2", escalated=True, reasons=["low_confidence"]),
        needed="fast",
    ),
    labeled(record("r10", "fast", "fast", version="v2")),  # no feedback
]


def test_report_numbers_on_a_known_log():
    policy = load_policy(DEFAULT_POLICY_FILE)
    report = build_report(KNOWN_LOG, policy)
    quality = report["quality"]
    # rows: outcome tier, columns: predicted tier
    assert quality["confusion_predicted"] == [
        [2, 0, 1],  # r1 fast/fast, r9 fast/fast, r6 fast->frontier
        [1, 1, 0],  # r2 needed balanced, predicted fast; r4 balanced in [fast, balanced]
        [1, 1, 0],  # r3 needed frontier, predicted fast; r5 needed frontier, predicted balanced
    ]
    assert quality["labeled"] == 7 and quality["accuracy_predicted"] == pytest.approx(3 / 7)
    assert quality["confusion_routed"] == [
        [1, 1, 1],  # r1 fast; r9 served balanced (needed fast); r6 served frontier
        [1, 1, 0],  # r2 served fast; r4 served balanced
        [0, 1, 1],  # r5 served balanced; r3 served frontier
    ]
    assert quality["under_routing_count"] == 2 and quality["over_routing_count"] == 2
    assert quality["under_routing"] == pytest.approx(2 / 7) and quality["over_routing"] == pytest.approx(
        2 / 7
    )
    assert report["decisions"] == 10 and report["with_feedback"] == 8 and report["feedback_unplaceable"] == 1
    assert report["escalations"] == 3 and report["escalation_rate"] == pytest.approx(0.3)
    assert report["reasons"] == {"classifier_unavailable": 1, "low_confidence": 2}
    assert report["classifier_unavailable_rate"] == pytest.approx(0.1)

    spend = report["spend"]
    tiers = {t.name: t for t in policy.tiers}
    assert spend["per_tier"]["fast"]["requests"] == 3 and spend["per_tier"]["frontier"]["requests"] == 4
    assert spend["estimated_token_counts"] == 1  # r8: 400 chars -> 100 tokens
    expected_routed = 3 * request_cost(tiers["fast"], 100, 300) + 3 * request_cost(
        tiers["balanced"], 100, 300
    )
    expected_routed += 4 * request_cost(tiers["frontier"], 100, 300)
    assert spend["routed_usd"] == pytest.approx(expected_routed)
    assert spend["all_frontier_usd"] == pytest.approx(10 * request_cost(tiers["frontier"], 100, 300))

    v1, v2 = report["versions"]["v1"], report["versions"]["v2"]
    assert (v1["decisions"], v1["with_feedback"], v1["labeled"]) == (8, 7, 6)
    assert (v2["decisions"], v2["with_feedback"], v2["labeled"]) == (2, 1, 1)
    assert v2["confusion_predicted"] == [[1, 0, 0], [0, 0, 0], [0, 0, 0]]
    assert v2["over_routing_count"] == 1


def test_report_drift_against_training_metrics():
    policy = load_policy(DEFAULT_POLICY_FILE)
    training = {
        "splits": {
            "test": {
                "n": 100,
                "before": {"tier_mix": {"fast": 0.2, "balanced": 0.3, "frontier": 0.5}},
                "after": {"tier_mix": {"fast": 0.1, "balanced": 0.3, "frontier": 0.6}},
                "reliability_after": [
                    {"confidence": 0.55, "count": 50, "accuracy": 0.5},
                    {"confidence": 0.95, "count": 50, "accuracy": 0.9},
                ],
            }
        }
    }
    drift = build_report(KNOWN_LOG, policy, training)["drift"]
    # live predicted: fast r1 r2 r3 r9 r10 = 5, balanced r4 r5 = 2, frontier r6 r7 = 2 (r8 none) -> of 9
    assert drift["predicted_mix_live"] == pytest.approx({"fast": 5 / 9, "balanced": 2 / 9, "frontier": 2 / 9})
    assert drift["tvd_predicted_mix"] == pytest.approx(5 / 9 - 0.2)
    assert drift["confidence_train_mean"] == pytest.approx(0.75)
    assert drift["confidence_live_histogram"][7] == 9  # every live top probability is 0.8
    assert drift["confidence_psi"] > 0.2 and len(drift["alerts"]) == 2


def test_export_feedback_rows_are_accepted_by_make_data():
    rows, skipped = feedback_rows(KNOWN_LOG, TIERS, "production-feedback")
    assert skipped == {"no_feedback": 2, "unplaceable": 1, "no_prompt_text": 0}
    assert len(rows) == 7
    parsed = [parse_user_row(r, "x") for r in rows]
    assert sorted(parsed[3].allowed) == ["balanced", "fast"]  # r4 passed on balanced
    assert parsed[0].source == "production-feedback:grader"


def test_report_and_export_commands(client, db_url, tmp_path, tiny_model_dir, capsys):
    ids = []
    for text in ["hello", "write an email", "prove the theorem"]:
        ids.append(client.post("/classify", json={"text": text}).json()["request_id"])
    for request_id, needed in zip(ids, ["fast", "frontier", "frontier"], strict=True):
        assert client.post("/feedback", json={"request_id": request_id, "outcome": needed}).status_code == 200
    out = tmp_path / "report"
    code = cli_main(
        ["report", "--since", "1h", "--db", db_url, "--out-dir", str(out), "--model", str(tiny_model_dir)]
    )
    assert code == 0
    saved = json.loads((out / "report.json").read_text())
    assert saved["decisions"] == 3 and saved["with_feedback"] == 3
    assert saved["quality"]["confusion_predicted"] == [[1, 0, 0], [0, 0, 0], [0, 1, 1]]
    assert {p.name for p in out.iterdir()} == {
        "report.md",
        "report.json",
        "confusion.png",
        "drift.png",
        "spend.png",
    }
    assert "Live confusion matrix" in (out / "report.md").read_text()

    exported = tmp_path / "feedback.jsonl"
    assert cli_main(["export-feedback", "--db", db_url, "--output", str(exported)]) == 0
    lines = [json.loads(line) for line in exported.read_text().splitlines()]
    assert [r["allowed_tiers"] for r in lines] == [["fast"], ["frontier"], ["frontier"]]
    assert "make data USER_DATA=" in capsys.readouterr().err


def test_parse_since():
    now = datetime(2026, 11, 22, tzinfo=UTC)
    assert parse_since("7d", now) == now - timedelta(days=7)
    assert parse_since("90m", now) == now - timedelta(minutes=90)
    assert parse_since("2026-11-01", now) == datetime(2026, 11, 1, tzinfo=UTC)
    with pytest.raises(ValueError, match="duration"):
        parse_since("last week", now)


MIGRATE = (
    "import sys; from tierwise.evidence.decision_log import DecisionStore; "
    "store = DecisionStore(sys.argv[1]); store.upgrade(); print(store.current_revision())"
)


@pytest.mark.slow
def test_workers_starting_together_migrate_once(tmp_path):
    import subprocess
    import sys

    url = f"sqlite:///{tmp_path / 'shared.sqlite'}"
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", MIGRATE, url], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for _ in range(3)
    ]
    outputs = [worker.communicate(timeout=120) for worker in workers]
    assert [out.strip() for out, _ in outputs] == ["0003"] * 3, [err for _, err in outputs]


def test_db_upgrade_command_and_bad_urls(tmp_path, capsys):
    url = f"sqlite:///{tmp_path / 'cli.sqlite'}"
    assert cli_main(["db", "upgrade", "--db", url]) == 0
    assert "revision 0003" in capsys.readouterr().err
    from tierwise.evidence.decision_log import DecisionLogError

    with pytest.raises(DecisionLogError, match="TIERWISE_DECISION_DB"):
        DecisionStore("not a url")
