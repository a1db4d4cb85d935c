import json
import logging

import pytest
from fastapi.testclient import TestClient
from tierwise.core.model_folder import ModelFolderError
from tierwise.service.app import create_app

from tools.doubles import ControllableClassifier
from tools.tiny_model import make_settings


@pytest.fixture(scope="module")
def classifier(tiny_classifier):
    return ControllableClassifier(tiny_classifier)


@pytest.fixture(scope="module")
def client(tiny_model_dir, classifier):
    settings = make_settings(tiny_model_dir, max_batch_items=8, max_body_bytes=64 * 1024)
    app = create_app(settings, classifier_factory=lambda _: classifier)
    with TestClient(app) as test_client:
        yield test_client


@pytest.fixture(autouse=True)
def healthy_classifier(classifier):
    classifier.mode = "ok"
    yield
    classifier.mode = "ok"


def assert_error(response, status, field=None, *words):
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error", "request_id"}
    assert body["request_id"] == response.headers["x-request-id"]
    if field is not None:
        assert body["error"]["field"] == field
    for word in words:
        assert word in body["error"]["message"], body["error"]["message"]
    return body["error"]


# The endpoints


def test_classify_text(client):
    response = client.post("/classify", json={"text": "hello hello"})
    assert response.status_code == 200
    body = response.json()
    assert body["tier"] == "fast" and body["predicted_tier"] == "fast"
    assert body["model"] == "gpt-4o-mini"
    assert body["fallbacks"] == [
        "claude-3-5-haiku",
        "gemini-2.0-flash",
        "gpt-4.1",
        "claude-sonnet-4",
        "o3",
        "claude-opus-4-1",
    ]
    assert set(body["probabilities"]) == {"fast", "balanced", "frontier"}
    assert body["confidence"] == pytest.approx(body["probabilities"]["fast"])
    assert body["escalated"] is False and body["reasons"] == []
    assert body["model_version"] == "tiny@test-test"
    assert body["request_id"] == response.headers["x-request-id"]


def test_classify_escalates_when_unsure(client):
    body = client.post("/classify", json={"text": "the word of the day"}).json()
    assert body["tier"] == "frontier" and body["escalated"] and body["reasons"] == ["low_confidence"]


def test_classify_messages_reads_the_last_user_turn(client):
    messages = [
        {"role": "system", "content": "You are helpful."},
        {"role": "user", "content": "my word"},
        {"role": "assistant", "content": "a word"},
        {"role": "user", "content": [{"type": "text", "text": "prove the theorem"}]},
    ]
    body = client.post("/classify", json={"messages": messages}).json()
    assert body["tier"] == "frontier" and body["predicted_tier"] == "frontier"


def test_classify_policy_fields(client):
    assert client.post("/classify", json={"text": "hello", "min_tier": "balanced"}).json()["reasons"] == [
        "min_tier"
    ]
    capped = client.post("/classify", json={"text": "prove theorem", "max_tier": "balanced"}).json()
    assert capped["tier"] == "balanced" and capped["reasons"] == ["max_tier"]
    pinned = client.post("/classify", json={"text": "hello", "route": "legal-review"}).json()
    assert pinned["tier"] == "frontier" and pinned["reasons"] == ["route_override"]
    private = client.post("/classify", json={"text": "hello, my email is jane@example.com"}).json()
    assert private["tier"] == "private" and "private_data" in private["reasons"]
    assert private["model"] == "llama-3.3-70b-selfhosted" and private["fallbacks"] == []


def test_request_id_and_traceparent_are_carried(client, caplog):
    traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    with caplog.at_level(logging.INFO, logger="tierwise"):
        response = client.post(
            "/classify",
            json={"text": "hello", "metadata": {"tenant": "acme"}, "route": "support"},
            headers={"X-Request-ID": "req-123", "traceparent": traceparent},
        )
    assert response.json()["request_id"] == "req-123"
    assert response.headers["x-request-id"] == "req-123"
    record = next(r for r in caplog.records if r.getMessage() == "classified")
    assert record.request_id == "req-123"
    assert record.trace_id == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert record.tier == "fast" and record.metadata == {"tenant": "acme"}
    assert record.route == "support" and record.segment == "support"  # the route is the segment
    assert record.latency_ms >= 0
    assert not hasattr(record, "text")  # no prompt text unless log_prompts


def test_a_bad_request_id_is_replaced(client):
    response = client.post("/classify", json={"text": "hi"}, headers={"X-Request-ID": "bad id\twith spaces"})
    assert response.json()["request_id"] != "bad id\twith spaces"
    assert len(response.json()["request_id"]) == 32


def test_log_lines_are_json(client, caplog):
    from tierwise.service.logs import JsonFormatter

    with caplog.at_level(logging.INFO, logger="tierwise"):
        client.post("/classify", json={"text": "hello"})
    record = next(r for r in caplog.records if r.getMessage() == "classified")
    entry = json.loads(JsonFormatter().format(record))
    assert entry["event"] == "classified" and entry["tier"] == "fast" and "text" not in entry


def test_batch(client):
    items = [{"text": "hello"}, {"text": "prove theorem"}, {"text": "write email", "min_tier": "frontier"}]
    response = client.post("/classify/batch", json={"items": items}, headers={"X-Request-ID": "b1"})
    assert response.status_code == 200
    body = response.json()
    assert [r["tier"] for r in body["results"]] == ["fast", "frontier", "frontier"]
    assert [r["request_id"] for r in body["results"]] == ["b1-0", "b1-1", "b1-2"]
    assert body["request_id"] == "b1"


def test_health_ready_model_metrics(client):
    assert client.get("/healthz").json() == {"status": "ok", "model_version": None}
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["status"] == "ready"
    model = client.get("/model").json()
    assert model["manifest"]["name"] == "tiny" and model["tiers"] == ["fast", "balanced", "frontier"]
    assert model["escalation_q"] == 0.7 and model["deadline_ms"] == 5_000  # make_settings sets it
    client.post("/classify", json={"text": "hello"})
    metrics = client.get("/metrics")
    assert metrics.headers["content-type"].startswith("text/plain")
    text = metrics.text
    assert 'tierwise_decisions_total{tier="fast"}' in text
    assert "tierwise_decision_reasons_total" in text
    assert 'tierwise_request_latency_seconds_bucket{endpoint="/classify",le="+Inf"}' in text
    assert "tierwise_classifier_batch_size_count" in text
    assert 'tierwise_model_info{tiers="fast,balanced,frontier",version="tiny@test-test"} 1' in text
    assert client.get("/docs").status_code == 200
    assert client.get("/openapi.json").json()["paths"]["/classify"]


# Fail upward


def test_a_raising_classifier_routes_to_the_top_tier(client, classifier):
    classifier.mode = "raise"
    response = client.post("/classify", json={"text": "hello"})
    assert response.status_code == 200
    body = response.json()
    assert body["tier"] == "frontier" and body["reasons"] == ["classifier_unavailable"]
    assert body["predicted_tier"] is None and body["probabilities"] == {}
    batch = client.post("/classify/batch", json={"items": [{"text": "hi"}, {"text": "ok"}]})
    assert [r["tier"] for r in batch.json()["results"]] == ["frontier", "frontier"]


def test_a_slow_classifier_routes_to_the_top_tier(tiny_model_dir, tiny_classifier):
    slow = ControllableClassifier(tiny_classifier)
    settings = make_settings(tiny_model_dir, deadline_ms=20)
    with TestClient(create_app(settings, classifier_factory=lambda _: slow)) as test_client:
        slow.mode = "hang"  # released after the answer: the answer cannot have waited for it
        try:
            body = test_client.post("/classify", json={"text": "hello"}).json()
        finally:
            slow.release.set()
    assert body["tier"] == "frontier" and body["reasons"] == ["classifier_unavailable"]


def test_without_micro_batching(tiny_model_dir, tiny_classifier):
    settings = make_settings(tiny_model_dir, micro_batching=False)
    with TestClient(create_app(settings, classifier_factory=lambda _: tiny_classifier)) as test_client:
        assert test_client.post("/classify", json={"text": "hello"}).json()["tier"] == "fast"


def test_real_model_folder_loads_through_settings(tiny_model_dir):
    with TestClient(create_app(make_settings(tiny_model_dir))) as test_client:
        assert test_client.post("/classify", json={"text": "write email"}).json()["tier"] == "balanced"


def test_a_bad_model_folder_stops_start_up(tmp_path):
    with (
        pytest.raises(ModelFolderError, match="does not exist"),
        TestClient(create_app(make_settings(tmp_path / "no"))),
    ):
        pass


# Bad input: 4xx naming the field and the limit, never a 500


@pytest.mark.parametrize(
    ("payload", "field", "words"),
    [
        ({"text": ""}, "text", ["non-whitespace"]),
        ({"text": "   \n"}, "text", ["non-whitespace"]),
        ({}, "body", ["'text'", "'messages'"]),
        ({"text": "a", "messages": [{"role": "user", "content": "b"}]}, "body", ["not both"]),
        ({"text": 42}, "text", ["string"]),
        ({"text": ["a"]}, "text", ["string"]),
        ({"messages": []}, "messages", ["at least 1"]),
        ({"messages": "hello"}, "messages", ["list"]),
        ({"messages": [{"content": "hi"}]}, "messages.0.role", ["required"]),
        ({"messages": [{"role": "user", "content": ""}]}, "messages", ["no text"]),
        ({"text": "hi", "min_tier": 3}, "min_tier", ["string"]),
        ({"text": "hi", "colour": "red"}, "colour", ["unknown field"]),
        ({"text": "hi", "metadata": "x"}, "metadata", ["dictionary"]),
        ({"text": "hi", "route": "r" * 201}, "route", ["200"]),
    ],
)
def test_invalid_classify_bodies(client, payload, field, words):
    assert_error(client.post("/classify", json=payload), 422, field, *words)


def test_unknown_tier_names(client):
    error = assert_error(client.post("/classify", json={"text": "hi", "min_tier": "huge"}), 422, "min_tier")
    assert error["type"] == "unknown_tier" and "fast, balanced, frontier" in error["message"]
    assert_error(client.post("/classify", json={"text": "hi", "max_tier": "private"}), 422, "max_tier")
    assert_error(
        client.post("/classify", json={"text": "hi", "min_tier": "frontier", "max_tier": "fast"}),
        422,
        None,
        "above",
    )
    batch = {"items": [{"text": "hi"}, {"text": "hi", "max_tier": "nope"}]}
    assert_error(client.post("/classify/batch", json=batch), 422, "items.1.max_tier", "nope")


def test_invalid_json(client):
    response = client.post(
        "/classify", content=b'{"text": "hi"', headers={"content-type": "application/json"}
    )
    assert_error(response, 400, "body", "not valid JSON")


def test_not_json_at_all(client):
    response = client.post("/classify", content=b"hello", headers={"content-type": "text/plain"})
    assert response.status_code in (400, 415, 422)
    assert response.json()["error"]["field"] == "body"


def test_non_utf8_body(client):
    response = client.post(
        "/classify", content=b'{"text": "caf\xe9"}', headers={"content-type": "application/json"}
    )
    assert_error(response, 400, "body", "UTF-8")


def test_body_over_the_limit_by_content_length(client):
    big = json.dumps({"text": "a " * 40_000}).encode()  # client limit is 64 KiB
    response = client.post("/classify", content=big, headers={"content-type": "application/json"})
    assert_error(response, 413, "body", "65536 bytes")


@pytest.mark.slow
def test_body_over_the_limit_by_actual_bytes(client):
    def chunks():
        for _ in range(20):
            yield b"a" * 4096

    response = client.post("/classify", content=chunks(), headers={"content-type": "application/json"})
    assert_error(response, 413, "body", "65536 bytes")


def test_batch_over_the_limit(client):
    response = client.post("/classify/batch", json={"items": [{"text": "hi"}] * 9})
    error = assert_error(response, 413, "items", "9 items", "limit is 8")
    assert error["type"] == "batch_too_large"


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"items": []}, "items"),
        ({"items": "x"}, "items"),
        ({}, "items"),
        ({"items": [{"text": ""}]}, "items.0.text"),
    ],
)
def test_invalid_batch_bodies(client, payload, field):
    assert_error(client.post("/classify/batch", json=payload), 422, field)


def test_unknown_path_and_method(client):
    assert_error(client.get("/nope"), 404)
    assert_error(client.get("/classify"), 405)


def test_unexpected_errors_are_json_503(client, monkeypatch):
    import tierwise.service.routes.classify

    def broken(*args, **kwargs):
        raise KeyError("boom")

    monkeypatch.setattr(tierwise.service.routes.classify, "to_response", broken)
    error = assert_error(client.post("/classify", json={"text": "hi"}), 503)
    assert error["type"] == "internal_error"
