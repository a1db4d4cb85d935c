"""OpenTelemetry spans per /classify (serving/tierwise/service/tracing.py), read back from an in-memory exporter."""

import json
import os
import subprocess
import sys

import pytest
from fastapi.testclient import TestClient
from tierwise.core.policy import Decision
from tierwise.service.app import create_app
from tierwise.service.tracing import decision_path, open_tracing

from tools.doubles import ControllableClassifier
from tools.tiny_model import make_settings

pytest.importorskip(
    "opentelemetry.sdk", reason="the tracing extra is not installed (pip install -e '.[tracing]')"
)
from opentelemetry.sdk.trace import TracerProvider  # noqa: E402
from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: E402
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter  # noqa: E402
from opentelemetry.trace import SpanKind, StatusCode  # noqa: E402

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_SPAN_ID = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{PARENT_SPAN_ID}-01"


@pytest.fixture(scope="module")
def exporter():
    return InMemorySpanExporter()


@pytest.fixture(scope="module")
def provider(exporter):
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield provider
    provider.shutdown()


@pytest.fixture(scope="module")
def classifier(tiny_classifier):
    return ControllableClassifier(tiny_classifier)


@pytest.fixture(scope="module")
def client(tiny_model_dir, classifier, provider):
    settings = make_settings(tiny_model_dir, tracing=True, max_batch_items=8)
    app = create_app(settings, classifier_factory=lambda _: classifier, tracer_provider=provider)
    with TestClient(app) as test_client:
        yield test_client


@pytest.fixture(autouse=True)
def fresh(exporter, classifier):
    exporter.clear()
    classifier.mode = "ok"
    yield
    classifier.mode = "ok"


def only_span(exporter):
    spans = exporter.get_finished_spans()
    assert len(spans) == 1, [s.name for s in spans]
    return spans[0]


def test_a_classify_span_continues_the_callers_trace(client, exporter):
    response = client.post(
        "/classify",
        json={"text": "please prove the theorem"},
        headers={"traceparent": TRACEPARENT, "tracestate": "vendor=abc", "X-Request-ID": "req-trace-1"},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    span = only_span(exporter)
    assert span.name == "POST /classify" and span.kind == SpanKind.SERVER
    assert format(span.context.trace_id, "032x") == TRACE_ID
    assert span.parent is not None and format(span.parent.span_id, "016x") == PARENT_SPAN_ID
    assert span.parent.is_remote
    assert span.context.trace_state.get("vendor") == "abc"
    attributes = span.attributes
    assert attributes["tierwise.request_id"] == "req-trace-1"
    assert attributes["tierwise.tier"] == body["tier"] == "frontier"
    assert list(attributes["tierwise.reasons"]) == body["reasons"]
    assert attributes["tierwise.decision_path"] == "classifier"
    assert attributes["tierwise.model_version"] == body["model_version"]
    assert attributes["tierwise.model"] == body["model"]
    assert 0 <= attributes["tierwise.queue_wait_ms"] < 5000  # micro-batching is on: its queue
    assert attributes["http.response.status_code"] == 200
    assert "tierwise.classifier_error" not in attributes
    assert not any("prove" in str(value) for value in attributes.values())  # never the prompt


def test_without_a_traceparent_the_span_starts_a_trace(client, exporter):
    assert client.post("/classify", json={"text": "hi"}).status_code == 200
    span = only_span(exporter)
    assert span.parent is None and span.attributes["tierwise.tier"] == "fast"


def test_the_fallback_shows_in_the_decision_path(client, exporter, classifier):
    classifier.mode = "raise"
    response = client.post("/classify", json={"text": "hi"}, headers={"traceparent": TRACEPARENT})
    assert response.json()["reasons"] == ["classifier_unavailable"]
    attributes = only_span(exporter).attributes
    assert attributes["tierwise.decision_path"] == "classifier_unavailable"
    assert attributes["tierwise.tier"] == "frontier"
    assert "onnxruntime exploded" in attributes["tierwise.classifier_error"]
    assert "tierwise.queue_wait_ms" not in attributes  # no score came back


def test_privacy_and_route_override_paths(client, exporter):
    private = client.post("/classify", json={"text": "hi, my card is 4111 1111 1111 1111"}).json()
    assert "private_data" in private["reasons"]
    assert only_span(exporter).attributes["tierwise.decision_path"] == "privacy"
    exporter.clear()
    routed = client.post("/classify", json={"text": "hi", "route": "legal-review"}).json()
    assert routed["tier"] == "frontier" and "route_override" in routed["reasons"]
    assert only_span(exporter).attributes["tierwise.decision_path"] == "route_override"


def test_the_span_carries_the_segment(client, exporter):
    answer = client.post("/classify", json={"text": "hello hello", "route": "checkout"}).json()
    assert answer["segment"] == "checkout"
    assert only_span(exporter).attributes["tierwise.segment"] == "checkout"
    exporter.clear()
    client.post("/classify", json={"text": "hello hello"})  # no route, and the tiny model has no segments
    assert "tierwise.segment" not in only_span(exporter).attributes


def test_decision_path_names_what_decided():
    def decision(*reasons):
        return Decision("fast", 1.0, {}, None, False, reasons, "m", ())

    assert decision_path(decision()) == "classifier"
    assert decision_path(decision("low_confidence", "min_tier")) == "classifier"
    assert decision_path(decision("classifier_unavailable")) == "classifier_unavailable"
    assert decision_path(decision("classifier_unavailable", "route_override")) == "route_override"
    assert decision_path(decision("classifier_unavailable", "private_data")) == "privacy"


def test_a_batch_has_a_span_with_a_child_per_item(client, exporter):
    response = client.post(
        "/classify/batch",
        json={"items": [{"text": "hi"}, {"text": "write an email"}]},
        headers={"traceparent": TRACEPARENT, "X-Request-ID": "req-batch"},
    )
    assert response.status_code == 200, response.text
    spans = exporter.get_finished_spans()
    [batch] = [s for s in spans if s.name == "POST /classify/batch"]
    items = sorted(
        (s for s in spans if s.name == "tierwise.decision"), key=lambda s: s.attributes["tierwise.request_id"]
    )
    assert len(spans) == 3
    assert format(batch.context.trace_id, "032x") == TRACE_ID
    assert format(batch.parent.span_id, "016x") == PARENT_SPAN_ID
    assert batch.attributes["tierwise.batch_items"] == 2
    assert [s.attributes["tierwise.request_id"] for s in items] == ["req-batch-0", "req-batch-1"]
    assert [s.attributes["tierwise.tier"] for s in items] == ["fast", "balanced"]
    for item in items:
        assert item.parent.span_id == batch.context.span_id
        assert item.context.trace_id == batch.context.trace_id
        assert item.attributes["tierwise.decision_path"] == "classifier"
        assert item.attributes["tierwise.queue_wait_ms"] >= 0


def test_a_client_error_is_traced_without_an_error_status(client, exporter):
    response = client.post("/classify", json={"text": "hi", "min_tier": "nope"})
    assert response.status_code == 422
    span = only_span(exporter)
    assert span.attributes["http.response.status_code"] == 422
    assert span.status.status_code == StatusCode.UNSET  # a 4xx is the caller's error, not ours


def test_tracing_off_makes_no_spans(tiny_model_dir, tiny_classifier, provider, exporter):
    settings = make_settings(tiny_model_dir, tracing=False)
    app = create_app(settings, classifier_factory=lambda _: tiny_classifier, tracer_provider=provider)
    with TestClient(app) as client:
        response = client.post("/classify", json={"text": "hi"}, headers={"traceparent": TRACEPARENT})
        assert response.status_code == 200
        assert client.post("/classify/batch", json={"items": [{"text": "hi"}]}).status_code == 200
        assert app.state.tracing is None
    assert exporter.get_finished_spans() == ()


def test_without_a_provider_the_service_builds_one_from_otel_variables(tiny_model_dir, monkeypatch):
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "none")
    monkeypatch.setenv("OTEL_SERVICE_NAME", "tierwise-test")
    tracing = open_tracing(make_settings(tiny_model_dir, tracing=True))
    assert tracing is not None and tracing.owns_provider
    assert tracing.provider.resource.attributes["service.name"] == "tierwise-test"
    tracing.close()


def test_without_the_sdk_tracing_is_off_with_a_warning(tiny_model_dir, monkeypatch, caplog):
    # A serve-only install: opentelemetry-api (a FastAPI dependency) but no SDK.
    for name in [m for m in sys.modules if m == "opentelemetry.sdk" or m.startswith("opentelemetry.sdk.")]:
        monkeypatch.setitem(sys.modules, name, None)  # importing it now raises ImportError
    monkeypatch.setitem(sys.modules, "opentelemetry.sdk", None)
    assert open_tracing(make_settings(tiny_model_dir, tracing=True)) is None
    assert "pip install 'tierwise[tracing]'" in caplog.text


def test_probes_and_scrapes_are_not_traced(client, exporter):
    for path in ("/healthz", "/readyz", "/metrics"):
        assert client.get(path).status_code == 200
    assert exporter.get_finished_spans() == ()


# In a fresh process: tracing off imports no OpenTelemetry SDK and makes no span even where the process
# has set up a global tracer provider (FastAPI's own telemetry would use it); tracing on uses that one.
FRESH_PROCESS = """
import json, sys
from fastapi.testclient import TestClient
from tierwise.service.app import create_app
from tierwise.service.settings import Settings

def serve(tracing):
    settings = Settings(model_dir=sys.argv[1], onnx_threads=1, record_decisions=False, tracing=tracing)
    app = create_app(settings)
    with TestClient(app) as client:
        headers = {"traceparent": sys.argv[2]}
        assert client.post("/classify", json={"text": "hi"}, headers=headers).status_code == 200
    return app

serve(False)
sdk_imported = "opentelemetry.sdk" in sys.modules
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
exporter = InMemorySpanExporter()
provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(exporter))
trace.set_tracer_provider(provider)
serve(False)
spans_off = len(exporter.get_finished_spans())
app = serve(True)
spans_on = [dict(s.attributes) for s in exporter.get_finished_spans()]
print(json.dumps({
    "sdk_imported": sdk_imported,
    "spans_off": spans_off,
    "spans_on": spans_on,
    "owns_provider": app.state.tracing.owns_provider,
}))
"""


def test_tracing_off_imports_no_sdk_and_makes_no_span_even_with_a_global_provider(tiny_model_dir):
    result = subprocess.run(
        [sys.executable, "-c", FRESH_PROCESS, str(tiny_model_dir), TRACEPARENT],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "OTEL_TRACES_EXPORTER": "none"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    found = json.loads(result.stdout.strip().splitlines()[-1])
    assert found["sdk_imported"] is False
    assert found["spans_off"] == 0
    [span] = found["spans_on"]  # the process's provider, used as it is
    assert span["tierwise.decision_path"] == "classifier" and found["owns_provider"] is False
