"""The segments section of `tierwise report`, on hand-made decision logs in SQLite."""

import json
from datetime import UTC, datetime, timedelta

import pytest
from tierwise.cli.main import main as cli_main
from tierwise.core.model_folder import load_manifest
from tierwise.core.policy_file import DEFAULT_POLICY_FILE, load_policy
from tierwise.core.scoring import request_cost_usd
from tierwise.evidence.decision_log import DecisionRecord, DecisionStore, FeedbackRecord, outcome_range
from tierwise.evidence.segment_control import TIER_VERDICTS
from tierwise.evidence.shadow import wilson_interval
from tierwise.ops.segment_report import (
    controller_settings,
    render_segments,
    segment_summary,
    under_routed,
)

POLICY = load_policy(DEFAULT_POLICY_FILE)

TIERS = POLICY.tier_names  # fast, balanced, frontier (+ the private tier)
WHEN = datetime(2026, 11, 20, tzinfo=UTC)
EASY = {"fast": 0.9, "balanced": 0.08, "frontier": 0.02}


def tiny_version(model_dir):
    """The tiny model's version: the controller counts only the serving model's decisions."""
    return load_manifest(model_dir).version


def decision(request_id, tier, segment, when=WHEN, probabilities=None, token_count=1000, version=None):
    return DecisionRecord(
        request_id=request_id,
        created_at=when,
        model_version=version or "v1",
        tier=tier,
        predicted_tier=tier,
        confidence=0.9,
        probabilities=probabilities or {},
        reasons=[],
        escalated=False,
        model="m",
        token_count=token_count,
        text_chars=4 * token_count,
        route=segment if segment and not segment.startswith("auto-") else None,
        prompt_sha256="0" * 64,
        segment=segment,
    )


def outcome(request_id, served, needed=None, passed=None, when=WHEN):
    """Explicit feedback, placed on the tiers as the service places it."""
    low_high = outcome_range(TIERS, served, needed, passed) or (None, None)
    return FeedbackRecord(request_id, when, needed, passed, "api", *low_high)


def verdicts(request_id, served, judged, when=WHEN):
    """A shadow verdict for every tier below the top (`judged`: {tier: passed})."""
    needed = next((t for t in ("fast", "balanced") if judged[t]), "frontier")
    low_high = outcome_range(TIERS, served, needed, judged.get(served))
    evidence = {TIER_VERDICTS: judged, "judge_model": "judge"}
    return FeedbackRecord(request_id, when, needed, judged.get(served), "shadow", *low_high, evidence)


def make_db(tmp_path, decisions, feedback):
    url = f"sqlite:///{tmp_path / 'decisions.sqlite'}"
    store = DecisionStore(url)
    store.upgrade()
    store.insert_decisions(decisions)
    for record in feedback:
        store.insert_feedback(record)
    return store


# checkout (a route): 5 requests, 4 judged, 2 of them under-routed
# auto-07: 3 requests, 2 judged, 1 of them placeable (the private tier's cannot be), not under-routed
# auto-01: 1 request, not judged
DECISIONS = [
    decision("c0", "fast", "checkout"),
    decision("c1", "fast", "checkout"),
    decision("c2", "balanced", "checkout"),
    decision("c3", "frontier", "checkout"),
    decision("c4", "fast", "checkout", token_count=3000),
    decision("a0", "fast", "auto-07"),
    decision("a1", "private", "auto-07"),
    decision("a2", "balanced", "auto-07"),
    decision("z0", "frontier", "auto-01"),
]
FEEDBACK = [
    verdicts("c0", "fast", {"fast": False, "balanced": True}),  # the judge failed the served tier
    verdicts("c1", "fast", {"fast": True, "balanced": True}),
    outcome("c2", "balanced", needed="frontier"),  # served below the outcome's low tier
    outcome("c3", "frontier", passed=False),  # the top tier failed: not under-routing
    outcome("a0", "fast", passed=True),
    outcome("a1", "private", passed=True),  # the private tier is not on the ordered tiers
]


def cost(tier, tokens=1000):
    priced = {t.name: t for t in (*POLICY.tiers, POLICY.private_tier)}[tier]
    return request_cost_usd(tokens, 300, priced.input_price_per_million, priced.output_price_per_million)


@pytest.fixture()
def store(tmp_path):
    store = make_db(tmp_path, DECISIONS, FEEDBACK)
    yield store
    store.close()


def test_the_table_counts_requests_judged_under_routing_and_cost(store):
    section = segment_summary(store.labeled_decisions(), POLICY)
    rows = {s["segment"]: s for s in section["segments"]}
    assert [s["segment"] for s in section["segments"]] == ["checkout", "auto-07", "auto-01"]  # by requests

    checkout = rows["checkout"]
    assert (checkout["requests"], checkout["judged"], checkout["placed"], checkout["under_routed"]) == (
        5,
        4,
        4,
        2,
    )
    assert checkout["under_routing"] == pytest.approx(0.5)
    assert (checkout["low"], checkout["high"]) == pytest.approx(wilson_interval(2, 4))
    assert checkout["tier_mix"] == pytest.approx({"fast": 0.6, "balanced": 0.2, "frontier": 0.2})

    auto = rows["auto-07"]
    assert (auto["requests"], auto["judged"], auto["placed"], auto["under_routed"]) == (3, 2, 1, 0)
    assert list(auto["tier_mix"]) == ["fast", "balanced", "private"]  # the policy's order
    assert rows["auto-01"]["judged"] == 0 and rows["auto-01"]["placed"] == 0

    spend = {
        "checkout": 2 * cost("fast") + cost("balanced") + cost("frontier") + cost("fast", 3000),
        "auto-07": cost("fast") + cost("private") + cost("balanced"),
        "auto-01": cost("frontier"),
    }
    total = sum(spend.values())
    assert section["routed_usd"] == pytest.approx(total)
    for segment, usd in spend.items():
        assert rows[segment]["cost_share"] == pytest.approx(usd / total)
    assert sum(s["cost_share"] for s in section["segments"]) == pytest.approx(1.0)
    assert section["unsegmented"] == {"requests": 0, "cost_share": 0.0}


def test_decisions_without_a_segment_are_the_rest_of_the_cost(tmp_path):
    store = make_db(tmp_path, [*DECISIONS, decision("u0", "frontier", None)], FEEDBACK)
    section = segment_summary(store.labeled_decisions(), POLICY)
    store.close()
    assert [s["segment"] for s in section["segments"]] == ["checkout", "auto-07", "auto-01"]
    rest = section["unsegmented"]
    assert rest["requests"] == 1
    assert rest["cost_share"] + sum(s["cost_share"] for s in section["segments"]) == pytest.approx(1.0)
    assert "Decisions without a segment: 1" in "\n".join(render_segments(section))


def test_under_routing_of_one_judged_decision(store):
    by_id = {r.decision.request_id: r for r in store.labeled_decisions()}
    assert [under_routed(by_id[i], TIERS) for i in ("c0", "c1", "c2", "c3", "c4", "a0", "a1")] == [
        True,
        False,
        True,
        False,
        None,  # no feedback
        False,
        None,  # the private tier cannot be placed
    ]


def test_no_segments_no_section(tmp_path):
    store = make_db(tmp_path, [decision("u0", "fast", None)], [outcome("u0", "fast", passed=True)])
    rows = store.labeled_decisions()
    store.close()
    assert segment_summary(rows, POLICY) is None
    assert render_segments(None) == []


def test_setting_columns_without_a_policy_section(store, tiny_model_dir):
    controller = controller_settings(store, DEFAULT_POLICY_FILE, tiny_model_dir, POLICY, ["checkout"])
    assert controller["on"] is False and "segment_control" in controller["note"]
    section = segment_summary(store.labeled_decisions(), POLICY, controller)
    assert all(s["setting"] is None for s in section["segments"])
    text = "\n".join(render_segments(section))
    assert "## Segments" in text
    assert "Setting columns are -: the policy" in text and "no `segment_control` section" in text
    assert "| `checkout` | 5 | 4 | **50.0%** (2/4) |" in text
    checkout = next(line for line in text.splitlines() if line.startswith("| `checkout`"))
    assert "| 15.0% - 85.0% | - | - | - | - | fast 60.0%, balanced 20.0%, frontier 20.0% |" in checkout


SECTION = """
segment_control:
  max_under_routing: 0.1
  min_judged: 3
  routes: {risky: 0.02}
"""


@pytest.fixture()
def policy_with_control(tmp_path):
    path = tmp_path / "policy.yaml"
    path.write_text(DEFAULT_POLICY_FILE.read_text(encoding="utf-8") + SECTION, encoding="utf-8")
    return path


def controlled_log(tmp_path, when, version):
    """clean: 30 verdicts, all passing; risky: 30, all failing; new: 2 (cold start)."""
    decisions, feedback = [], []
    for segment, n, passed in (("clean", 30, True), ("risky", 30, False), ("new", 2, True)):
        for i in range(n):
            request_id = f"{segment}-{i}"
            decisions.append(decision(request_id, "fast", segment, when, EASY, version=version))
            feedback.append(verdicts(request_id, "fast", {"fast": passed, "balanced": passed}, when=when))
    return make_db(tmp_path, decisions, feedback)


def test_setting_columns_with_a_policy_section(tmp_path, policy_with_control, tiny_model_dir):
    store = controlled_log(tmp_path, WHEN, tiny_version(tiny_model_dir))
    rows = store.labeled_decisions()
    controller = controller_settings(
        store,
        policy_with_control,
        tiny_model_dir,
        POLICY,
        ["clean", "risky", "new"],
        now=WHEN + timedelta(hours=1),
    )
    store.close()
    assert controller["on"] is True and controller["model_q"] == 0.7  # the tiny model's q
    settings = controller["settings"]
    clean, risky, new = settings["clean"], settings["risky"], settings["new"]
    # 30 clean verdicts bound every setting by 1 - 0.05 ** (1 / 30) = 9.5% <= 10%: the cheapest holds
    assert clean["status"] == "certified" and clean["setting"] == "q-0.750" and clean["q"] == [0.0, 0.0]
    assert clean["bound"] == pytest.approx(1 - 0.05 ** (1 / 30), abs=1e-6) and clean["alpha"] == 0.1
    assert risky["status"] == "top_only" and risky["q"] is None and risky["alpha"] == 0.02
    assert new["status"] == "cold_start" and new["bound"] is None
    assert new["q"] == pytest.approx([0.75, 0.75])  # the model's q + the cold-start margin
    assert new["evidence_judged"] == 2

    text = "\n".join(render_segments(segment_summary(rows, POLICY, controller)))
    assert "recomputed as of 2026-11-20T01:00:00+00:00" in text and "336-hour window" in text
    lines = {line.split(" | ")[0]: line for line in text.splitlines() if line.startswith("| `")}
    assert "| certified | 0.000 / 0.000 | 9.5% | 10.0% |" in lines["| `clean`"]
    assert "| top_only | top only | 0.0% | 2.0% |" in lines["| `risky`"]
    assert "| cold_start | 0.750 / 0.750 | - | 10.0% |" in lines["| `new`"]
    assert "| **100.0%** (30/30) |" in lines["| `risky`"]


def test_the_evidence_window_ends_now(tmp_path, policy_with_control, tiny_model_dir):
    """Verdicts older than the controller's window do not count: every segment is back in cold start."""
    store = controlled_log(tmp_path, WHEN, tiny_version(tiny_model_dir))
    controller = controller_settings(
        store, policy_with_control, tiny_model_dir, POLICY, ["clean"], now=WHEN + timedelta(days=30)
    )
    store.close()
    assert controller["settings"]["clean"]["status"] == "cold_start"
    assert controller["settings"]["clean"]["evidence_judged"] == 0


def test_no_model_folder_shows_no_setting(store, policy_with_control, tmp_path):
    controller = controller_settings(store, policy_with_control, tmp_path / "missing", POLICY, ["checkout"])
    assert controller["on"] is False and "model folder" in controller["note"]


def test_tierwise_report_writes_the_section(tmp_path, policy_with_control, tiny_model_dir):
    now = datetime.now(UTC)
    store = controlled_log(tmp_path, now - timedelta(hours=1), tiny_version(tiny_model_dir))
    store.close()
    out = tmp_path / "report"
    db = f"sqlite:///{tmp_path / 'decisions.sqlite'}"
    args = ["report", "--since", "1d", "--db", db, "--out-dir", str(out), "--no-plots"]
    assert cli_main([*args, "--policy", str(policy_with_control), "--model", str(tiny_model_dir)]) == 0
    saved = json.loads((out / "report.json").read_text())["segments"]
    assert [s["segment"] for s in saved["segments"]] == ["clean", "risky", "new"]  # 30, 30, 2; ties by name
    assert saved["controller"]["on"] is True
    assert saved["segments"][0]["setting"]["status"] == "certified"
    markdown = (out / "report.md").read_text()
    assert "## Segments" in markdown and "| `risky` | 30 | 30 | **100.0%** (30/30) |" in markdown

    # the packaged policy has no section: the setting columns are "-", with the reason
    assert cli_main([*args, "--model", str(tiny_model_dir)]) == 0
    saved = json.loads((out / "report.json").read_text())["segments"]
    assert saved["controller"]["on"] is False and saved["segments"][0]["setting"] is None
    assert "Setting columns are -:" in (out / "report.md").read_text()


def test_tierwise_report_without_segments_has_no_section(tmp_path, tiny_model_dir):
    make_db(tmp_path, [decision("u0", "fast", None, when=datetime.now(UTC) - timedelta(hours=1))], []).close()
    out = tmp_path / "report"
    db = f"sqlite:///{tmp_path / 'decisions.sqlite'}"
    args = ["report", "--since", "1d", "--db", db, "--out-dir", str(out), "--no-plots"]
    assert cli_main([*args, "--model", str(tiny_model_dir)]) == 0
    assert json.loads((out / "report.json").read_text())["segments"] is None
    assert "## Segments" not in (out / "report.md").read_text()


def test_a_route_cannot_break_the_table():
    from tierwise.ops.segment_report import markdown_cell

    assert markdown_cell("a|b`c") == "a/b'c"
