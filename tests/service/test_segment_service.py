"""Per-segment risk control in the service: answers carry the segment and its bound, the controller reads
its evidence from the decision log, the decision row keeps the segment, /metrics shows the segments,
a hot reload keeps the states, and the section needs the decision log."""

import re
from datetime import timedelta

import pytest
import yaml
from fastapi.testclient import TestClient
from tierwise.core.policy_file import DEFAULT_POLICY_FILE
from tierwise.core.segment_guard import SEGMENT_GUARD, clopper_pearson_upper
from tierwise.evidence.decision_log import DecisionRecord, DecisionStore, FeedbackRecord, utc_now
from tierwise.evidence.segment_control import TIER_VERDICTS, SegmentControlError
from tierwise.service.app import create_app

from tools.tiny_model import make_settings

SURE_FAST = {"fast": 0.97, "balanced": 0.02, "frontier": 0.01}  # fast under every setting on the path


def policy_file(tmp_path, segment_control):
    raw = yaml.safe_load(DEFAULT_POLICY_FILE.read_text())
    if segment_control is not None:
        raw["segment_control"] = segment_control
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


SECTION = {"max_under_routing": 0.05, "refresh_seconds": 0}  # refreshed by the test only


def app_for(tmp_path, tiny_model_dir, tiny_classifier, segment_control=SECTION, **settings):
    values = {
        "record_decisions": True,
        "decision_db": f"sqlite:///{tmp_path / 'd.sqlite'}",
        "policy_file": policy_file(tmp_path, segment_control),
        "admin_token": "t0ken",
    }
    values.update(settings)
    return create_app(make_settings(tiny_model_dir, **values), classifier_factory=lambda _: tiny_classifier)


def add_evidence(url, segment, verdicts, count, version):
    """`count` judged decisions of `segment` by model `version`, decided a minute ago, with a shadow
    verdict each."""
    store = DecisionStore(url)
    now = utc_now()
    for i in range(count):
        request_id = f"{segment}-evidence-{i}"
        at = now - timedelta(minutes=1, seconds=i)
        record = DecisionRecord(
            request_id, at, version, "fast", "fast", 0.97, SURE_FAST, [], False, "gpt-4o-mini", 5, 20, segment,
            "0" * 64, segment=segment,
        )  # fmt: skip
        store.insert_decisions([record])
        store.insert_feedback(
            FeedbackRecord(request_id, at, None, None, "shadow", None, None, {TIER_VERDICTS: verdicts})
        )
    store.close()


def test_answers_carry_the_segment_and_the_guard_follows_the_evidence(
    tmp_path, tiny_model_dir, tiny_classifier
):
    url = f"sqlite:///{tmp_path / 'd.sqlite'}"
    with TestClient(app_for(tmp_path, tiny_model_dir, tiny_classifier)) as client:
        controller = client.app.state.segment_control
        assert controller is not None and controller.states == {}
        cold = client.post("/classify", json={"text": "hello", "route": "bad"}).json()
        assert cold["segment"] == "bad" and cold["segment_bound"] is None and cold["tier"] == "fast"
        assert (
            client.post("/classify", json={"text": "hello"}).json()["segment"] is None
        )  # no route, no segments

        add_evidence(url, "bad", {"fast": False, "balanced": False}, 80, tiny_classifier.version)
        add_evidence(url, "good", {"fast": True, "balanced": True}, 80, tiny_classifier.version)
        states = controller.refresh()
        assert states["bad"].status == "top_only" and states["good"].status == "certified"

        bad = client.post("/classify", json={"text": "hello", "route": "bad"}).json()
        assert bad["tier"] == "frontier" and bad["reasons"] == [SEGMENT_GUARD]
        assert bad["segment"] == "bad" and bad["segment_bound"] == 0.0
        good = client.post("/classify", json={"text": "hello", "route": "good"}).json()
        assert good["tier"] == "fast" and SEGMENT_GUARD not in good["reasons"]
        assert good["segment_bound"] == pytest.approx(clopper_pearson_upper(0, 80))

        assert client.app.state.decision_recorder.wait_idle(5.0)
        store = DecisionStore(url)
        stored = store.get_decision(bad["request_id"])
        store.close()
        assert stored.segment == "bad" and stored.route == "bad" and stored.tier == "frontier"
        assert SEGMENT_GUARD in stored.reasons

        metrics = client.get("/metrics").text
        assert re.search(r'^tierwise_segment_judged\{segment="bad"\} 80(\.0)?$', metrics, re.M)
        assert re.search(r'^tierwise_segment_q_shift\{segment="bad"\} 1(\.0)?$', metrics, re.M)
        assert re.search(
            r'^tierwise_segment_decisions_total\{segment="bad",tier="frontier"\} 1(\.0)?$', metrics, re.M
        )


def test_a_hot_reload_keeps_the_controller_states(tmp_path, tiny_model_dir, tiny_classifier):
    url = f"sqlite:///{tmp_path / 'd.sqlite'}"
    with TestClient(app_for(tmp_path, tiny_model_dir, tiny_classifier)) as client:
        add_evidence(url, "bad", {"fast": False, "balanced": False}, 80, tiny_classifier.version)
        controller = client.app.state.segment_control
        before = controller.refresh()
        response = client.post("/admin/reload", json={}, headers={"X-Admin-Token": "t0ken"})
        assert response.status_code == 200, response.text
        assert client.app.state.segment_control is controller and controller.states == before
        body = client.post("/classify", json={"text": "hello", "route": "bad"}).json()
        assert body["tier"] == "frontier" and body["reasons"] == [SEGMENT_GUARD]


def test_without_the_section_answers_carry_the_route_and_no_guard(tmp_path, tiny_model_dir, tiny_classifier):
    with TestClient(app_for(tmp_path, tiny_model_dir, tiny_classifier, segment_control=None)) as client:
        assert client.app.state.segment_control is None
        body = client.post("/classify", json={"text": "hello", "route": "chat"}).json()
        assert body["segment"] == "chat" and body["segment_bound"] is None
        assert body["tier"] == "fast" and SEGMENT_GUARD not in body["reasons"]
        assert "tierwise_segment_judged{" not in client.get("/metrics").text


def test_the_section_without_the_decision_log_stops_start_up(tmp_path, tiny_model_dir, tiny_classifier):
    app = app_for(tmp_path, tiny_model_dir, tiny_classifier, record_decisions=False)
    with pytest.raises(SegmentControlError, match="TIERWISE_RECORD_DECISIONS"), TestClient(app):
        pass
