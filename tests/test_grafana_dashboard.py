"""deploy/grafana/tierwise-dashboard.json: every panel query names a metric the service exports."""

import json
import re
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from tierwise.service.app import create_app

from tools.tiny_model import make_settings

DASHBOARD = Path(__file__).resolve().parents[1] / "deploy" / "grafana" / "tierwise-dashboard.json"
METRIC_NAME = re.compile(r"\btierwise_[a-z_]+\b")
QUOTED = re.compile(r'"(?:[^"\\]|\\.)*"')  # label values in a PromQL selector: not metric names
ABSOLUTE_PATH = re.compile(r"^(/[A-Za-z0-9_.-]+/|[A-Za-z]:\\|~/)")
# The series names a metric family of each type exposes, in the Prometheus text format.
SERIES_SUFFIXES = {
    "counter": ("_total",),
    "gauge": ("",),
    "histogram": ("_bucket", "_sum", "_count"),
    "summary": ("_sum", "_count", ""),
    "info": ("_info",),
}


def load_dashboard() -> dict:
    return json.loads(DASHBOARD.read_text(encoding="utf-8"))


def all_panels(dashboard: dict) -> list[dict]:
    """Every panel, those inside collapsed rows included."""
    found = []
    for panel in dashboard["panels"]:
        found.append(panel)
        found.extend(panel.get("panels", []))
    return found


def dashboard_metric_names(dashboard: dict) -> set[str]:
    """The series names in every panel target's PromQL expression (label values skipped)."""
    names: set[str] = set()
    for panel in all_panels(dashboard):
        for target in panel.get("targets", []):
            names.update(METRIC_NAME.findall(QUOTED.sub('""', target["expr"])))
    return names


def exported_series_names(exposition: str) -> dict[str, str]:
    """Series name -> metric type, for every family in a /metrics exposition (with or without samples)."""
    names: dict[str, str] = {}
    for family in text_string_to_metric_families(exposition):
        for suffix in SERIES_SUFFIXES.get(family.type, ("",)):
            names[family.name + suffix] = family.type
    return names


def string_values(node: object) -> list[str]:
    if isinstance(node, dict):
        return [s for key, value in node.items() for s in (key, *string_values(value))]
    if isinstance(node, list):
        return [s for item in node for s in string_values(item)]
    return [node] if isinstance(node, str) else []


@pytest.fixture()
def client(tiny_model_dir, tiny_classifier, tmp_path):
    settings = make_settings(
        tiny_model_dir, record_decisions=True, decision_db=f"sqlite:///{tmp_path / 'decisions.sqlite'}"
    )
    app = create_app(settings, classifier_factory=lambda _: tiny_classifier)
    with TestClient(app) as test_client:
        yield test_client


def send_traffic(client: TestClient) -> None:
    request_id = client.post("/classify", json={"text": "hello hello"}).json()["request_id"]
    assert (
        client.post("/classify/batch", json={"items": [{"text": "hi"}, {"text": "prove it"}]}).status_code
        == 200
    )
    feedback = client.post(
        "/feedback", json={"request_id": request_id, "outcome": {"needed_tier": "balanced"}}
    )
    assert feedback.status_code == 200, feedback.text


def test_every_dashboard_query_names_an_exported_metric(client):
    dashboard = load_dashboard()
    send_traffic(client)
    exported = exported_series_names(client.get("/metrics").text)
    used = dashboard_metric_names(dashboard)
    assert len(used) >= 10, used
    missing = sorted(name for name in used if name not in exported)
    assert not missing, f"the dashboard queries metrics /metrics does not export: {missing}"


def test_an_unknown_metric_in_a_query_is_caught(client):
    dashboard = load_dashboard()
    panel = next(p for p in all_panels(dashboard) if p.get("targets"))
    panel["targets"][0]["expr"] = 'sum(rate(tierwise_decisions_bucket{tier="tierwise_fast"}[5m]))'
    exported = exported_series_names(client.get("/metrics").text)
    assert "tierwise_decisions_total" in exported  # a counter's series; no _bucket of it exists
    assert "tierwise_decisions_bucket" in dashboard_metric_names(dashboard) - set(exported)
    assert "tierwise_fast" not in dashboard_metric_names(dashboard)  # a label value, not a metric


def test_panels_have_a_title_a_datasource_and_a_query():
    dashboard = load_dashboard()
    assert dashboard["schemaVersion"] >= 36
    assert [i["name"] for i in dashboard["__inputs"]] == ["DS_PROMETHEUS"]
    panels = all_panels(dashboard)
    assert len(panels) >= 10
    for panel in panels:
        assert panel.get("title"), panel
        if panel["type"] == "row":
            continue
        assert panel.get("datasource") == {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}, panel["title"]
        assert panel.get("targets"), panel["title"]
        for target in panel["targets"]:
            assert target.get("expr") and target.get("refId"), panel["title"]
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids))


def test_the_dashboard_has_no_absolute_paths():
    bad = [s for s in string_values(load_dashboard()) if ABSOLUTE_PATH.search(s) or "/home/" in s]
    assert not bad, bad


def test_the_confusion_matrix_panel_reads_the_feedback_metric():
    panel = next(p for p in all_panels(load_dashboard()) if "onfusion matrix" in p["title"])
    assert "tierwise_feedback_outcomes_total" in panel["targets"][0]["expr"]
    assert panel["transformations"][0]["options"]["rowField"] == "routed_tier"


def test_feedback_fills_the_confusion_matrix(client):
    fast_id = client.post("/classify", json={"text": "hello hello"}).json()["request_id"]
    frontier_id = client.post("/classify", json={"text": "prove the theorem"}).json()["request_id"]
    outcomes = [
        (fast_id, {"needed_tier": "balanced"}),  # under-routed: fast -> balanced
        (fast_id, {"passed": True}),  # a pass on the cheapest tier pins it: fast -> fast
        (frontier_id, {"passed": True}),  # fast..frontier: not one tier, not counted
        (frontier_id, "balanced"),  # over-routed: frontier -> balanced
    ]
    for request_id, outcome in outcomes:
        response = client.post("/feedback", json={"request_id": request_id, "outcome": outcome})
        assert response.status_code == 200, response.text
    metrics = client.get("/metrics").text
    assert 'tierwise_feedback_outcomes_total{needed_tier="balanced",routed_tier="fast"} 1.0' in metrics
    assert 'tierwise_feedback_outcomes_total{needed_tier="fast",routed_tier="fast"} 1.0' in metrics
    assert 'tierwise_feedback_outcomes_total{needed_tier="balanced",routed_tier="frontier"} 1.0' in metrics
    samples = [line for line in metrics.splitlines() if line.startswith("tierwise_feedback_outcomes_total{")]
    assert len(samples) == 3, samples
