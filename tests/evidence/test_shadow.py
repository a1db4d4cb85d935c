"""Shadow evaluation in the service, its policy section, and the report's shadow section."""

import threading
from datetime import UTC, datetime, timedelta

import pytest
import yaml
from fastapi.testclient import TestClient
from tierwise.cli.main import main as tierwise
from tierwise.core.policy_file import DEFAULT_POLICY_FILE
from tierwise.evidence.decision_log import DecisionRecord, DecisionStore, FeedbackRecord
from tierwise.evidence.shadow import HourlySpend, sampled, wilson_interval
from tierwise.evidence.shadow_config import ShadowConfigError, parse_shadow
from tierwise.ops.shadow_report import render_shadow, shadow_outcomes, shadow_summary
from tierwise.service.app import create_app

from tools.fake_llm import FakeScript, FakeServer, policy_strengths
from tools.tiny_model import make_settings

TIERS = ("fast", "balanced", "frontier")


@pytest.fixture(scope="module")
def server():
    fake = FakeServer(FakeScript(policy_strengths(DEFAULT_POLICY_FILE))).start()
    yield fake
    fake.stop()


def shadow_policy(tmp_path, **shadow):
    raw = yaml.safe_load(DEFAULT_POLICY_FILE.read_text())
    raw["shadow"] = {"share": 1.0, "judge_model": "o3", **shadow}
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def shadow_app(tmp_path, tiny_model_dir, tiny_classifier, **shadow):
    settings = make_settings(
        tiny_model_dir,
        record_decisions=True,
        decision_db=f"sqlite:///{tmp_path / 'd.sqlite'}",
        policy_file=shadow_policy(tmp_path, **shadow),
    )
    return create_app(settings, classifier_factory=lambda _: tiny_classifier)


def test_sampled_requests_are_judged_in_the_background_and_logged(
    server, tmp_path, tiny_model_dir, tiny_classifier
):
    app = shadow_app(tmp_path, tiny_model_dir, tiny_classifier, base_url=server.base_url)
    with TestClient(app) as client:
        easy = client.post("/classify", json={"text": "hello hello hello needs=0", "route": "chat"}).json()
        hard = client.post(
            "/classify", json={"messages": [{"role": "user", "content": "hi hi hi needs=2"}]}
        ).json()
        top = client.post("/classify", json={"text": "prove the theorem", "min_tier": "frontier"}).json()
        assert top["tier"] == "frontier" and {easy["tier"], hard["tier"]} <= {"fast", "balanced"}
        assert client.app.state.shadow.wait_idle(10)
        metrics = client.get("/metrics").text
        counts = dict(client.app.state.shadow.counts)
    store = DecisionStore(f"sqlite:///{tmp_path / 'd.sqlite'}")
    verdicts = {o.route: o for o in shadow_outcomes(store, None, None)}
    store.close()
    assert counts == {"judged": 2}  # the top-tier request is not shadowed
    assert verdicts["chat"].passed is True and verdicts[None].passed is False
    assert (
        f'tierwise_shadow_under_routing_ratio{{route="-",tier="{hard["tier"]}"}} 1' in metrics
    )  # labels sorted
    assert 'tierwise_shadow_evaluations_total{outcome="judged"} 2' in metrics


def test_the_hourly_cap_skips_evaluations(server, tmp_path, tiny_model_dir, tiny_classifier):
    app = shadow_app(tmp_path, tiny_model_dir, tiny_classifier, base_url=server.base_url, max_usd_per_hour=0)
    with TestClient(app) as client:
        for _ in range(3):
            assert client.post("/classify", json={"text": "hello"}).status_code == 200
        assert client.app.state.shadow.wait_idle(10)
        assert client.app.state.shadow.counts == {"over_budget": 3}


def test_a_full_queue_drops_and_never_delays_classify(server, tmp_path, tiny_model_dir, tiny_classifier):
    server.script.hold = threading.Event()  # every shadow call waits until the requests are answered
    try:
        app = shadow_app(
            tmp_path, tiny_model_dir, tiny_classifier, base_url=server.base_url, queue_size=1, concurrency=1
        )
        with TestClient(app) as client:
            for index in range(6):  # answered while no shadow evaluation can finish
                assert client.post("/classify", json={"text": f"hello {index}"}).status_code == 200
            server.script.hold.set()
            assert client.app.state.shadow.wait_idle(15)
            counts = client.app.state.shadow.counts
    finally:
        server.script.hold.set()
        server.script.hold = None
    # at most one evaluation in flight and one queued: the other requests are dropped
    assert counts["dropped"] >= 4 and 1 <= counts["judged"] <= 2 and sum(counts.values()) == 6


def test_hourly_spend_window():
    now = [0.0]
    spend = HourlySpend(1.0, clock=lambda: now[0])
    spend.add(0.6)
    spend.add(0.5)
    assert not spend.allows()
    now[0] = 3601
    assert spend.allows() and spend.total() == 0


def test_sampling_is_deterministic_and_near_the_share():
    chosen = [sampled(f"req-{i}", 0.1) for i in range(5000)]
    assert chosen == [sampled(f"req-{i}", 0.1) for i in range(5000)]
    assert 400 < sum(chosen) < 600


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"judge_model": "j"}, "needs `share`"),
        ({"share": 2, "judge_model": "j"}, "from 0 to 1"),
        ({"share": 0.1}, "judge_model"),
        ({"share": 0.1, "judge_model": "j", "tiers": ["frontier"]}, "below the top"),
        ({"share": 0.1, "judge_model": "j", "sharee": 1}, "unknown key"),
    ],
)
def test_shadow_config_errors_name_the_key(raw, message):
    with pytest.raises(ShadowConfigError, match=message):
        parse_shadow(raw, "policy.yaml", TIERS)


def test_shadow_is_off_by_default_and_at_share_zero():
    assert parse_shadow(None, "p", TIERS) is None and parse_shadow({"share": 0}, "p", TIERS) is None
    config = parse_shadow({"share": 0.1, "judge_model": "j"}, "p", TIERS)
    assert config.tiers == ("fast", "balanced") and config.max_usd_per_hour == 1.0


def test_wilson_interval_known_values():
    assert wilson_interval(0, 10) == pytest.approx((0.0, 0.2775), abs=1e-4)
    assert wilson_interval(5, 10) == pytest.approx((0.2366, 0.7634), abs=1e-4)
    assert wilson_interval(0, 0) == (0.0, 1.0)


START = datetime(2026, 11, 20, tzinfo=UTC)
# (day, tier, route, passed): fast under-routes 1 in 4 on day 0 and 3 in 4 on day 4 (a regression)
SCRIPTED = [
    *[(0, "fast", "chat", p) for p in (True, True, True, False)],
    *[(4, "fast", "chat", p) for p in (False, False, False, True)],
    *[(0, "balanced", "code", p) for p in (True, True, False, True, True)],
]


def scripted_log(db_url):
    store = DecisionStore(db_url)
    store.upgrade()
    for index, (day, tier, route, passed) in enumerate(SCRIPTED):
        at = START + timedelta(days=day, minutes=index)
        store.insert_decisions(
            [
                DecisionRecord(
                    f"r{index}", at, "v1", tier, tier, 0.9, {}, [], False, "m", 10, 40, route, "0" * 64
                )
            ]
        )
        store.insert_feedback(
            FeedbackRecord(
                f"r{index}",
                at + timedelta(seconds=5),
                None,
                passed,
                "shadow",
                None,
                None,
                {"judge_model": "j"},
            )
        )
    store.insert_feedback(FeedbackRecord("r0", START, None, False, "user", None, None))  # not shadow
    return store


def test_shadow_summary_on_a_scripted_log(tmp_path):
    store = scripted_log(f"sqlite:///{tmp_path / 'd.sqlite'}")
    summary = shadow_summary(shadow_outcomes(store, None, None), TIERS)
    store.close()
    assert summary["judged"] == 13 and summary["trend_bucket"] == "day"
    per_tier = {c["key"][0]: c for c in summary["per_tier"]}
    assert per_tier["fast"]["under_routed"] == 4 and per_tier["fast"]["judged"] == 8
    assert per_tier["fast"]["low"] == pytest.approx(wilson_interval(4, 8)[0])
    assert [c["key"][0] for c in summary["per_tier"]] == ["fast", "balanced"]
    trend = {tuple(c["key"]): c["rate"] for c in summary["trend"]}
    assert trend[("2026-11-20", "fast")] == 0.25 and trend[("2026-11-24", "fast")] == 0.75
    assert "| chat / fast | 8 | 4 | **50.0%** |" in "\n".join(render_shadow(summary))


def test_report_command_shows_the_shadow_section(tmp_path, capsys):
    url = f"sqlite:///{tmp_path / 'd.sqlite'}"
    scripted_log(url).close()
    out = tmp_path / "report"
    code = tierwise(
        [
            "report",
            "--db",
            url,
            "--since",
            "2026-11-01",
            "--out-dir",
            str(out),
            "--no-plots",
            "--model",
            str(tmp_path),
        ]
    )
    assert code == 0
    text = (out / "report.md").read_text()
    assert "## Shadow evaluation: judge-estimated under-routing" in text
    assert "| fast | 8 | 4 | **50.0%** | 21.5% - 78.5% |" in text
    assert "| 2026-11-24 / fast | 4 | 3 | **75.0%** |" in text


# With the per-segment controller: every public tier is sampled, every tier below the top is judged.


def controlled_app(tmp_path, tiny_model_dir, tiny_classifier, base_url, segment_control=True, **shadow):
    raw = yaml.safe_load(DEFAULT_POLICY_FILE.read_text())
    raw["shadow"] = {"share": 1.0, "judge_model": "o3", "base_url": base_url, **shadow}
    if segment_control:
        raw["segment_control"] = {"max_under_routing": 0.05, "refresh_seconds": 0}
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump(raw))
    settings = make_settings(
        tiny_model_dir,
        record_decisions=True,
        decision_db=f"sqlite:///{tmp_path / 'd.sqlite'}",
        policy_file=path,
    )
    return create_app(settings, classifier_factory=lambda _: tiny_classifier)


def test_with_the_controller_a_top_tier_request_is_judged_at_every_tier_below(
    server, tmp_path, tiny_model_dir, tiny_classifier
):
    app = controlled_app(tmp_path, tiny_model_dir, tiny_classifier, server.base_url)
    before = len(server.script.calls)
    with TestClient(app) as client:
        assert client.app.state.segment_control is not None
        top = client.post("/classify", json={"text": "prove the theorem needs=1", "route": "math"}).json()
        assert top["tier"] == "frontier" and top["segment"] == "math"
        assert client.app.state.shadow.wait_idle(10)
        counts = dict(client.app.state.shadow.counts)
    calls = server.script.calls[before:]
    store = DecisionStore(f"sqlite:///{tmp_path / 'd.sqlite'}")
    labeled = store.labeled_decisions()
    store.close()
    assert counts == {"judged": 1}
    # one answer per tier (fast, balanced, and the top as the reference), both orders judged per cheaper tier
    assert sorted(m for m, kind in calls if kind == "answer") == ["gpt-4.1", "gpt-4o-mini", "o3"]
    assert sum(kind == "judge" for _, kind in calls) == 4
    [row] = labeled
    assert row.decision.segment == "math" and row.feedback.source == "shadow"
    assert row.feedback.evidence["tier_verdicts"] == {"fast": False, "balanced": True}
    # the needed tier is the cheapest one the judge passed; the served top tier has no pass/fail of its own
    assert row.feedback.needed_tier == "balanced" and row.feedback.passed is None
    assert (row.feedback.low_tier, row.feedback.high_tier) == ("balanced", "balanced")


def test_with_the_controller_the_needed_tier_is_the_cheapest_passing_one(
    server, tmp_path, tiny_model_dir, tiny_classifier
):
    app = controlled_app(tmp_path, tiny_model_dir, tiny_classifier, server.base_url)
    with TestClient(app) as client:
        easy = client.post("/classify", json={"text": "hello hello needs=0", "route": "chat"}).json()
        hard = client.post("/classify", json={"text": "hello hello needs=2", "route": "chat"}).json()
        assert {easy["tier"], hard["tier"]} <= {"fast", "balanced"}
        assert client.app.state.shadow.wait_idle(10)
    store = DecisionStore(f"sqlite:///{tmp_path / 'd.sqlite'}")
    feedback = {row.decision.request_id: row.feedback for row in store.labeled_decisions()}
    store.close()
    easy_row, hard_row = feedback[easy["request_id"]], feedback[hard["request_id"]]
    assert easy_row.evidence["tier_verdicts"] == {"fast": True, "balanced": True}
    assert easy_row.needed_tier == "fast" and easy_row.passed is True
    assert hard_row.evidence["tier_verdicts"] == {"fast": False, "balanced": False}
    assert hard_row.needed_tier == "frontier" and hard_row.passed is False  # no cheaper tier passed
    assert hard_row.evidence["verdicts"]  # the served tier's own verdicts are kept as before


@pytest.mark.parametrize("segment_control", [True, False])
def test_a_private_request_never_reaches_the_judge(
    server, tmp_path, tiny_model_dir, tiny_classifier, segment_control
):
    app = controlled_app(tmp_path, tiny_model_dir, tiny_classifier, server.base_url, segment_control)
    before = len(server.script.calls)
    with TestClient(app) as client:
        for text in ("hello, mail jane.doe@example.com", "hello, card 4111 1111 1111 1111"):
            body = client.post("/classify", json={"text": text, "route": "chat"}).json()
            assert body["tier"] == "private" and "private_data" in body["reasons"]
        assert client.app.state.shadow.wait_idle(10)
        assert client.app.state.shadow.counts == {}
        assert server.script.calls[before:] == []
        # the same app does judge a public request (the sampling share is 1)
        assert client.post("/classify", json={"text": "hello needs=0"}).json()["tier"] != "private"
        assert client.app.state.shadow.wait_idle(10)
        assert client.app.state.shadow.counts == {"judged": 1}


def test_with_the_controller_a_pinned_route_is_not_judged(server, tmp_path, tiny_model_dir, tiny_classifier):
    app = controlled_app(tmp_path, tiny_model_dir, tiny_classifier, server.base_url)
    before = len(server.script.calls)
    with TestClient(app) as client:
        body = client.post("/classify", json={"text": "hello hello", "route": "legal-review"}).json()
        assert body["tier"] == "frontier" and "route_override" in body["reasons"]
        assert client.app.state.shadow.wait_idle(10)
        assert client.app.state.shadow.counts == {}
    assert server.script.calls[before:] == []


def test_with_the_controller_shadow_tiers_must_be_every_tier_below_the_top(
    tmp_path, tiny_model_dir, tiny_classifier
):
    app = controlled_app(tmp_path, tiny_model_dir, tiny_classifier, "http://127.0.0.1:9/v1", tiers=["fast"])
    with pytest.raises(ValueError, match=r"shadow.tiers must be \['fast', 'balanced'\]"), TestClient(app):
        pass
