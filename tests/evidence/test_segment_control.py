"""The per-segment controller (tierwise.evidence.segment_control): its policy section, evidence from
the decision log (SQLite, and PostgreSQL when a server can be started), aging, restarts and several
workers reading the same evidence. Clocks are injected: nothing here waits on wall time."""

from datetime import UTC, datetime, timedelta
from functools import partial

import pytest
import yaml
from tierwise.core.segment_guard import PATH, GuardConfig, GuardSetting, clopper_pearson_upper
from tierwise.evidence.decision_log import DecisionRecord, DecisionStore, FeedbackRecord
from tierwise.evidence.segment_control import (
    TIER_VERDICTS,
    JudgedRow,
    SegmentControlConfig,
    SegmentControlError,
    SegmentController,
    load_segment_control,
    parse_segment_control,
    segment_evidence,
)
from tierwise.evidence.segment_evidence import judged_in_segments

from tools import reliability

TIERS = ("fast", "balanced", "frontier")
Q = 0.7
NOW = datetime(2026, 12, 1, 12, tzinfo=UTC)
MIDDLE = {"fast": 0.6, "balanced": 0.3, "frontier": 0.1}  # fast at q <= 0.6, balanced up to 0.9
SURE_FAST = {"fast": 0.97, "balanced": 0.02, "frontier": 0.01}  # fast under every shift on the path
GOOD = {"fast": True, "balanced": True}
BAD = {"fast": False, "balanced": False}


def config(**changes):
    values = {"guard": GuardConfig(), "refresh_seconds": 0.0}
    values.update(changes)
    return SegmentControlConfig(**values)


class Clock:
    def __init__(self, now=NOW):
        self.now = now

    def __call__(self):
        return self.now


class MemoryEvidence:
    """read_evidence over a list of (decided at, JudgedRow): honours `since` and the per-segment cap."""

    def __init__(self):
        self.rows = []
        self.calls = []
        self.fail = False

    def add(self, at, segment, probabilities, verdicts=None, high_tier=None, count=1):
        for _ in range(count):
            self.rows.append((at, JudgedRow(segment, probabilities, high_tier, verdicts)))

    def __call__(self, since, max_judged, model_version=None):
        self.calls.append((since, max_judged))
        if self.fail:
            raise ConnectionError("database away")
        taken, out = {}, []
        for at, row in sorted(self.rows, key=lambda r: r[0], reverse=True):
            if at >= since and taken.get(row.segment, 0) < max_judged:
                taken[row.segment] = taken.get(row.segment, 0) + 1
                out.append(row)
        return out


def controller(read, clock=None, **changes):
    made = SegmentController(config(**changes), read, TIERS, clock=clock or Clock())
    made.set_model(Q, None)
    return made


# --- the policy section -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"max_under_routing": 0.05, "alpah": 1}, r"unknown key\(s\) \['alpah'\]"),
        ({"max_under_routing": 0.9}, "segment_control.max_under_routing must be from"),
        ({"max_under_routing": "lots"}, "segment_control.max_under_routing must be a number"),
        ({"max_under_routing": 0.05, "routes": ["checkout"]}, "segment_control.routes must map"),
        ({"routes": {"a": 0.01}}, "needs `max_under_routing`"),
        ({"max_under_routing": 0.05, "routes": {"checkout": 0.7}}, "checkout"),
        ({"max_under_routing": 0.05, "confidence": 1.5}, "segment_control.confidence"),
        ({"max_under_routing": 0.05, "judge_error_rate": 0.5}, "segment_control.judge_error_rate"),
        ({"max_under_routing": 0.05, "max_judged": 5}, "segment_control.max_judged"),
        ("on", "needs `max_under_routing`"),
    ],
)
def test_section_errors_name_the_key(raw, message):
    with pytest.raises(SegmentControlError, match=message):
        parse_segment_control(raw, "policy.yaml")


def test_section_values_and_defaults(tmp_path):
    assert parse_segment_control(None, "p") is None
    parsed = parse_segment_control({"max_under_routing": 0.05, "routes": {"checkout": 0.02}}, "p")
    assert parsed.guard == GuardConfig(alpha=0.05, confidence=0.95, cold_start_margin=0.05)
    assert parsed.alpha_for("checkout") == 0.02 and parsed.alpha_for("chat") == 0.05
    assert (parsed.window_hours, parsed.max_judged, parsed.refresh_seconds) == (336.0, 2000, 10.0)
    path = tmp_path / "policy.yaml"
    path.write_text(
        yaml.safe_dump({"tiers": [], "segment_control": {"max_under_routing": 0.1, "min_judged": 30}})
    )
    loaded = load_segment_control(path)
    assert loaded.guard.alpha == 0.1 and loaded.guard.min_judged == 30
    path.write_text(yaml.safe_dump({"tiers": []}))
    assert load_segment_control(path) is None


# --- evidence rows ---------------------------------------------------------------------------------------


def test_evidence_rows_encode_verdicts_and_ranges():
    rows = [
        JudgedRow("a", MIDDLE, None, {"fast": False, "balanced": True}),  # shadow: noisy
        JudgedRow("a", MIDDLE, "balanced", None),  # explicit: passed on balanced, fast not placed
        JudgedRow("a", MIDDLE, "frontier", None),  # explicit: failed on fast, range balanced..frontier
        JudgedRow("a", MIDDLE, "fast", None),  # explicit: fast sufficed
        JudgedRow("a", MIDDLE, None, None),  # nothing placeable: skipped
        JudgedRow("a", {}, "fast", None),  # no probabilities: skipped
        JudgedRow("a", {"fast": 1.0}, "fast", None),  # probabilities of other tiers: skipped
        JudgedRow("a", MIDDLE, None, {"fast": True}),  # a verdict missing for balanced: skipped
        JudgedRow("b", SURE_FAST, "private", None),  # not an ordered tier: skipped
    ]
    evidence = segment_evidence(rows, TIERS)
    assert set(evidence) == {"a"}
    a = evidence["a"]
    assert a.judged == 4 and a.probabilities[0].tolist() == [0.6, 0.3, 0.1]
    assert a.under.tolist() == [[True, False], [True, False], [True, True], [False, False]]
    assert a.noisy.tolist() == [True, False, False, False]


def test_a_range_that_cannot_place_the_tier_counts_as_under_routed():
    # failed on fast: the need is balanced or frontier, so balanced cannot be shown to suffice
    read = MemoryEvidence()
    read.add(NOW - timedelta(hours=1), "s", MIDDLE, high_tier="frontier", count=100)
    read.add(NOW - timedelta(hours=1), "t", SURE_FAST, high_tier="frontier", count=100)
    states = controller(read).refresh()
    # balanced (and fast) count as under-routed: only settings that send every row to the top pass
    assert states["s"].status == "certified" and states["s"].setting == GuardSetting(delta=0.225)
    assert states["t"].status == "top_only"


def test_per_route_alpha_is_used_for_that_segment():
    read = MemoryEvidence()
    for segment in ("chat", "checkout"):
        read.add(NOW, segment, MIDDLE, {"fast": False, "balanced": True}, count=2)
        read.add(NOW, segment, MIDDLE, GOOD, count=198)
    states = controller(read, route_alpha={"checkout": 0.02}).refresh()
    assert states["chat"].alpha == 0.05 and states["chat"].setting == PATH[-1]
    assert states["checkout"].alpha == 0.02 and states["checkout"].setting == GuardSetting(delta=-0.075)
    assert states["checkout"].bound <= 0.02 < clopper_pearson_upper(2, 200)


# --- aging, failures, exploration ----------------------------------------------------------------------------


def test_evidence_older_than_the_window_ages_out():
    clock, read = Clock(), MemoryEvidence()
    read.add(NOW - timedelta(hours=2), "s", SURE_FAST, BAD, count=100)
    made = controller(read, clock, window_hours=24.0)
    assert made.refresh()["s"].status == "top_only"
    assert read.calls[-1] == (NOW - timedelta(hours=24), 2000)
    assert made.guard("s").setting.top_only
    clock.now = NOW + timedelta(hours=23)  # the bad rows are 25 hours old now
    assert made.refresh() == {} and made.state("s") is None
    assert (
        made.guard("s").setting == GuardSetting(delta=0.05, floor=True) and made.guard("s").bound is None
    )  # cold start
    read.add(NOW + timedelta(hours=22), "s", SURE_FAST, GOOD, count=100)  # fresh, clean evidence
    state = made.refresh()["s"]
    assert state.status == "certified" and state.setting == PATH[-1] and made.refreshed_at == clock.now
    assert made.guard("s").bound == state.bound


def test_a_failing_read_keeps_the_last_states_and_counts():
    read, seen = MemoryEvidence(), []
    read.add(NOW, "s", SURE_FAST, BAD, count=100)
    made = SegmentController(config(), read, TIERS, clock=Clock(), on_refresh=seen.append)
    made.set_model(Q, None)
    made.start()  # refresh_seconds 0: one refresh now, no thread
    assert made._thread is None and made.states["s"].status == "top_only" and len(seen) == 1
    read.fail = True
    made.refresh_safely()
    made.refresh_safely()
    assert made.refresh_errors == 2 and made.states["s"].status == "top_only" and len(seen) == 1
    with pytest.raises(ConnectionError):
        made.refresh()
    made.close()


def test_shadow_share_boosts_cold_and_wide_segments_only():
    read = MemoryEvidence()
    read.add(NOW, "cold", SURE_FAST, GOOD, count=20)
    read.add(NOW, "wide", SURE_FAST, GOOD, count=59)
    read.add(NOW, "tight", SURE_FAST, GOOD, count=2000)
    made = controller(read, explore_boost=4.0)
    states = made.refresh()
    assert states["cold"].status == "cold_start"
    assert made.shadow_share("cold", 0.05) == pytest.approx(0.2)
    assert made.shadow_share("unknown", 0.05) == pytest.approx(0.2) and made.shadow_share(None, 0.05) == 0.2
    assert made.shadow_share("unknown", 0.5) == 1.0  # never above 1
    width = states["wide"].bound - states["wide"].estimate  # ~0.0495 > alpha / 2
    assert made.shadow_share("wide", 0.05) == pytest.approx(0.05 * width / 0.025)
    assert made.shadow_share("tight", 0.05) == 0.05


def test_guard_without_a_segment():
    made = controller(MemoryEvidence())
    assert made.guard(None).segment is None and made.guard(None).setting is None


# --- the decision log: persistence, restarts, several workers ---------------------------------------------------


def decision(request_id, at, segment, probabilities, tier="fast"):
    return DecisionRecord(
        request_id, at, "v1", tier, "fast", 0.9, probabilities, [], False, "m", 10, 40, segment, "0" * 64,
        segment=segment,
    )  # fmt: skip


def shadow_row(request_id, at, verdicts):
    return FeedbackRecord(request_id, at, None, None, "shadow", None, None, {TIER_VERDICTS: verdicts})


def explicit_row(request_id, at, low, high, passed=None):
    return FeedbackRecord(request_id, at, None, passed, "user", low, high)


def write_evidence(store):
    """Segment `bad`: cheap tiers fail (top_only); `good`: fast suffices (certified at the cheapest);
    `mixed`: fast fails and balanced suffices, half shadow and half explicit feedback;
    `old`: aged out of a 24 hour window; a decision without a segment and one without feedback."""
    store.upgrade()
    decisions, feedback = [], []
    for i in range(80):
        at = NOW - timedelta(hours=1, minutes=i)
        decisions += [
            decision(f"bad-{i}", at, "bad", SURE_FAST),
            decision(f"good-{i}", at, "good", MIDDLE),
            decision(f"mixed-{i}", at, "mixed", MIDDLE),
            decision(f"old-{i}", NOW - timedelta(hours=30, minutes=i), "old", SURE_FAST),
        ]
        feedback += [
            shadow_row(f"bad-{i}", at, BAD),
            shadow_row(f"good-{i}", at, GOOD),
            shadow_row(f"old-{i}", at, BAD),
            shadow_row(f"mixed-{i}", at, {"fast": False, "balanced": True})
            if i % 2
            else explicit_row(f"mixed-{i}", at, "balanced", "balanced"),
        ]
    decisions += [decision("none", NOW, None, MIDDLE), decision("unjudged", NOW, "good", MIDDLE)]
    feedback.append(shadow_row("none", NOW, BAD))
    assert store.insert_decisions(decisions) == (len(decisions), 0)
    for row in feedback:
        store.insert_feedback(row)


def db_controller(url, **changes):
    store = DecisionStore(url)
    made = SegmentController(
        config(window_hours=24.0, **changes), partial(judged_in_segments, store), TIERS, clock=Clock()
    )
    made.set_model(Q, None)
    return made, store


def check_states(states):
    assert set(states) == {"bad", "good", "mixed"}  # `old` aged out; no segment, no feedback: not evidence
    assert states["bad"].status == "top_only" and states["bad"].judged == 80
    assert states["good"].status == "certified" and states["good"].setting == PATH[-1]
    assert states["good"].bound == pytest.approx(clopper_pearson_upper(0, 80))
    assert states["mixed"].setting == GuardSetting(delta=-0.075) and states["mixed"].judged == 80


def persistence_across_workers_and_restart(url):
    setup = DecisionStore(url)
    write_evidence(setup)
    setup.close()
    first, first_store = db_controller(url)
    second, second_store = db_controller(url)  # another worker: its own store on the same database
    states = first.refresh()
    check_states(states)
    assert second.refresh() == states
    first.close()
    first_store.close()  # a restart: nothing is carried over but the database
    restarted, restarted_store = db_controller(url)
    assert restarted.refresh() == states
    for store in (second_store, restarted_store):
        store.close()


def test_states_persist_across_workers_and_restarts_on_sqlite(tmp_path):
    persistence_across_workers_and_restart(f"sqlite:///{tmp_path / 'd.sqlite'}")


@pytest.mark.slow
def test_states_persist_across_workers_and_restarts_on_postgres():
    binaries = reliability.postgres_binaries()
    if binaries is None:
        pytest.skip(
            "no PostgreSQL server binaries (initdb, pg_ctl) on PATH or in /usr/lib/postgresql/*/bin: "
            "install them with `apt-get install -y postgresql` (.ci/run does)"
        )
    pytest.importorskip("psycopg", reason="the postgres extra is not installed: make install")
    from tools.reliability.database import throwaway_postgres

    with throwaway_postgres(binaries) as url:
        persistence_across_workers_and_restart(url)


def test_the_latest_feedback_of_a_decision_counts(tmp_path):
    store = DecisionStore(f"sqlite:///{tmp_path / 'd.sqlite'}")
    store.upgrade()
    store.insert_decisions([decision("r", NOW, "s", MIDDLE)])
    store.insert_feedback(shadow_row("r", NOW, BAD))
    store.insert_feedback(explicit_row("r", NOW, "fast", "fast"))
    rows = judged_in_segments(store, NOW - timedelta(hours=1), 10)
    store.close()
    assert rows == [JudgedRow("s", MIDDLE, "fast", None)]


def test_max_judged_keeps_the_newest_rows_per_segment(tmp_path):
    url = f"sqlite:///{tmp_path / 'd.sqlite'}"
    store = DecisionStore(url)
    store.upgrade()
    for i in range(40):  # the 20 oldest fail, the 20 newest are clean
        at = NOW - timedelta(minutes=40 - i)
        store.insert_decisions(
            [decision(f"r{i}", at, "s", SURE_FAST), decision(f"o{i}", at, "other", SURE_FAST)]
        )
        store.insert_feedback(shadow_row(f"r{i}", at, BAD if i < 20 else GOOD))
        store.insert_feedback(shadow_row(f"o{i}", at, BAD))
    rows = judged_in_segments(store, NOW - timedelta(hours=1), 20)
    assert sum(r.segment == "s" for r in rows) == 20 and sum(r.segment == "other" for r in rows) == 20
    assert all(r.tier_verdicts == GOOD for r in rows if r.segment == "s")
    made, reader = db_controller(url, max_judged=20, guard=GuardConfig(alpha=0.2, min_judged=10))
    state = made.refresh()["s"]
    assert state.judged == 20 and state.status == "certified" and state.under_routed == 0
    for opened in (store, reader):
        opened.close()


def test_a_segment_whose_evidence_did_not_change_keeps_its_state_without_recomputing(monkeypatch):
    import tierwise.evidence.segment_control as segment_control

    read = MemoryEvidence()
    read.add(NOW - timedelta(hours=1), "s", SURE_FAST, GOOD, count=100)
    read.add(NOW - timedelta(hours=1), "t", SURE_FAST, BAD, count=100)
    made = controller(read)
    calls = []
    real = segment_control.choose_setting
    monkeypatch.setattr(
        segment_control,
        "choose_setting",
        lambda segment, *a, **k: calls.append(segment) or real(segment, *a, **k),
    )
    first = made.refresh()
    assert sorted(calls) == ["s", "t"]
    assert made.refresh() == first and sorted(calls) == ["s", "t"]  # nothing new: nothing recomputed
    read.add(NOW - timedelta(minutes=1), "s", SURE_FAST, GOOD)  # one new verdict in "s"
    made.refresh()
    assert sorted(calls) == ["s", "s", "t"]
    made.set_model(0.9, None)  # a reload with another q: every segment again
    made.refresh()
    assert sorted(calls) == ["s", "s", "s", "t", "t"]


def test_only_the_serving_models_encoder_decisions_are_evidence(tmp_path):
    """Another model's probabilities (a canary, the model before a reload) and the estimator's cannot
    say what the serving encoder would route: those rows are left out."""
    from dataclasses import replace as with_fields

    store = DecisionStore(f"sqlite:///{tmp_path / 'd.sqlite'}")
    store.upgrade()
    ours = decision("ours", NOW, "s", MIDDLE)
    canary = with_fields(decision("canary", NOW, "s", MIDDLE), model_version="candidate")
    estimated = with_fields(decision("estimated", NOW, "s", MIDDLE), reasons=["estimated"])
    store.insert_decisions([ours, canary, estimated])
    for request_id in ("ours", "canary", "estimated"):
        store.insert_feedback(shadow_row(request_id, NOW, GOOD))
    since = NOW - timedelta(hours=1)
    assert len(judged_in_segments(store, since, 10, "v1")) == 1
    assert len(judged_in_segments(store, since, 10, "candidate")) == 1
    assert len(judged_in_segments(store, since, 10)) == 2  # any version; never the estimator's
    store.close()


def test_the_controller_reads_the_version_set_with_the_model():
    read = MemoryEvidence()
    seen = []
    made = SegmentController(
        config(), lambda since, n, version: seen.append(version) or read(since, n), TIERS
    )
    made.set_model(Q, None, "default@abc")
    made.refresh()
    assert seen == ["default@abc"]


def test_an_uneven_judge_is_corrected_on_each_side():
    from tierwise.core.segment_guard import corrected

    # a lenient judge (passes 10% of bad answers, never fails a good one): failures are under-counted
    assert corrected(0.09, 1.0, 0.0, 0.1) == pytest.approx(0.1)
    lenient = parse_segment_control({"max_under_routing": 0.05, "judge_false_pass_rate": 0.1}, "p.yaml")
    assert lenient.guard.false_pass == 0.1 and lenient.guard.false_fail == 0.0
    both = parse_segment_control(
        {"max_under_routing": 0.05, "judge_error_rate": 0.1, "judge_false_fail_rate": 0.02}, "p.yaml"
    )
    assert both.guard.false_pass == 0.1 and both.guard.false_fail == 0.02
    with pytest.raises(SegmentControlError, match="segment_control.judge_false_pass_rate"):
        parse_segment_control({"max_under_routing": 0.05, "judge_false_pass_rate": 0.6}, "p.yaml")


def test_the_most_judged_segments_get_a_state_up_to_max_segments():
    read = MemoryEvidence()
    for index, count in enumerate((30, 20, 10)):
        read.add(NOW - timedelta(hours=1), f"s{index}", SURE_FAST, GOOD, count=count)
    made = controller(read, max_segments=2)
    assert sorted(made.refresh()) == ["s0", "s1"]
    assert made.guard("s2").setting == made.config.guard.cold_start()


def test_the_metrics_show_the_most_judged_segments_and_clear_those_that_leave():
    from tierwise.service.metrics import ServiceMetrics

    read = MemoryEvidence()
    read.add(NOW - timedelta(hours=1), "a", SURE_FAST, GOOD, count=70)
    read.add(NOW - timedelta(hours=1), "b", SURE_FAST, BAD, count=70)
    metrics = ServiceMetrics()
    made = SegmentController(config(), read, TIERS, clock=Clock(), on_refresh=metrics.observe_segments)
    made.set_model(Q, None)
    made.refresh()
    assert metrics.segment_judged.value("a") == 70 and metrics.segment_q_shift.value("b") == 1.0
    read.rows = [row for row in read.rows if row[1].segment == "a"]  # b ages out
    made.refresh()
    assert metrics.segment_judged.value("b") is None and metrics.segment_judged.value("a") == 70
