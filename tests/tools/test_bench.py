"""The pure helpers of the paired overhead comparisons in `make bench`, shadow and per-segment
controller (no load is run here)."""

import json

import pytest
from tierwise.core.policy_file import DEFAULT_POLICY_FILE, load_policy
from tierwise.evidence.segment_control import load_segment_control
from tierwise.evidence.shadow_config import load_shadow_config

from tools.bench.cli import comparisons, parse_args
from tools.bench.http_load import LoadRow
from tools.bench.report import markdown_report
from tools.bench.shadow import (
    BENCH_ROUTES,
    CONTROLLER,
    REQUEST_PATH,
    SHADOW,
    PairedLevel,
    PairedOverhead,
    label_value,
    metric_samples,
    modes_of,
    pair_order,
    paired_difference,
    policy_files,
    routed_body,
)

SCRAPE = """# HELP tierwise_shadow_evaluations_total Shadow evaluations by outcome
# TYPE tierwise_shadow_evaluations_total counter
tierwise_shadow_evaluations_total{outcome="judged"} 12.0
tierwise_shadow_evaluations_created{outcome="judged"} 1.7e+09
tierwise_shadow_evaluations_total{outcome="dropped"} 3.0
tierwise_decisions_total{tier="fast"} 40.0
tierwise_decisions_total{tier="frontier"} 5.0
tierwise_in_flight 2.0
"""


def test_metric_samples_reads_one_metric_by_label_set():
    shadow = metric_samples(SCRAPE, "tierwise_shadow_evaluations_total")
    assert shadow == {'outcome="judged"': 12.0, 'outcome="dropped"': 3.0}
    assert metric_samples(SCRAPE, "tierwise_in_flight") == {"": 2.0}
    assert metric_samples(SCRAPE, "tierwise_missing") == {}
    assert label_value('outcome="judged",tier="fast"', "tier") == "fast"
    assert label_value('outcome="judged"', "tier") is None


def test_paired_difference_and_noise():
    diff = paired_difference([10.0, 12.0, 11.0], [10.5, 11.0, 13.0])
    assert diff.mean == pytest.approx(0.5)
    assert (diff.low, diff.high, diff.noise) == (-1.0, 2.0, 2.0)
    assert diff.within_noise
    assert not paired_difference([10.0, 10.5], [14.0, 15.0]).within_noise
    assert paired_difference([10.0, 10.5], [5.0, 5.0]).within_noise  # faster is no overhead
    with pytest.raises(ValueError):
        paired_difference([1.0], [1.0, 2.0])


def test_pairs_alternate_abba():
    assert [pair_order(p) for p in range(3)] == [("off", "on"), ("on", "off"), ("off", "on")]
    assert [pair_order(p, CONTROLLER) for p in range(2)] == [("on", "control"), ("control", "on")]


def test_modes_of_the_comparisons():
    assert modes_of([SHADOW, CONTROLLER]) == ["off", "on", "control"]
    assert modes_of([CONTROLLER]) == ["on", "control"]
    assert modes_of([SHADOW]) == ["off", "on"]


def test_half_the_bodies_carry_a_route():
    texts = [f"prompt number {i}" for i in range(400)]
    bodies = [json.loads(routed_body(text)) for text in texts]
    assert [b["text"] for b in bodies] == texts
    routes = [b["route"] for b in bodies if "route" in b]
    assert 150 < len(routes) < 250
    assert set(routes) == set(BENCH_ROUTES) and len(BENCH_ROUTES) == 8
    assert routed_body(texts[0]) == routed_body(texts[0])  # stable across runs (no hash seed)
    assert not set(BENCH_ROUTES) & set(load_policy(DEFAULT_POLICY_FILE).routes)  # no override hit


def test_policy_copies_per_mode(tmp_path):
    paths = policy_files(tmp_path, DEFAULT_POLICY_FILE, "http://127.0.0.1:9/v1", 0.1)
    assert set(paths) == {"off", "on", "guarded", "control"}
    tiers = load_policy(paths["on"]).tier_names
    assert tiers == load_policy(DEFAULT_POLICY_FILE).tier_names == load_policy(paths["control"]).tier_names
    assert load_shadow_config(paths["off"], tiers) is None
    config = load_shadow_config(paths["on"], tiers)
    assert config is not None and config.share == 0.1 and config.base_url == "http://127.0.0.1:9/v1"
    assert config.judge_model == load_policy(DEFAULT_POLICY_FILE).tiers[-1].models[0]
    assert load_shadow_config(paths["control"], tiers) == config
    assert load_segment_control(paths["off"]) is None and load_segment_control(paths["on"]) is None
    control = load_segment_control(paths["control"])
    assert control is not None and control.refresh_seconds == 1.0
    assert control.guard.alpha == 0.05 and control.guard.judge_error_rate == 0.1
    guarded = load_segment_control(paths["guarded"])
    assert guarded == control and load_shadow_config(paths["guarded"], tiers) is None  # no shadow
    only = policy_files(tmp_path, DEFAULT_POLICY_FILE, "http://h/v1", 0.1, ["on", "control"])
    assert set(only) == {"on", "control"}


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        ([], [SHADOW, REQUEST_PATH, CONTROLLER]),
        (["--shadow-overhead"], [SHADOW, REQUEST_PATH, CONTROLLER]),
        (["--controller-overhead"], [REQUEST_PATH, CONTROLLER]),
        (["--shadow-overhead", "--controller-overhead"], [SHADOW, REQUEST_PATH, CONTROLLER]),
        (["--skip-shadow"], []),
        (["--skip-http"], []),
    ],
)
def test_flags_pick_the_comparisons(flags, expected):
    assert comparisons(parse_args(flags)) == expected


def level_of(comparison, concurrency, bases):
    level = PairedLevel(concurrency, comparison)
    for mode, base in zip(comparison, bases, strict=True):
        for pair in range(2):
            level.rows[mode].append(
                LoadRow(mode, concurrency, 3, 0, 0, 1.0, [base + pair, base + pair + 1, 30.0])
            )
    return level


def test_report_has_the_shadow_table():
    level = level_of(SHADOW, 8, (10.0, 10.2))
    level.evaluations = {"on": {"judged": 4.0, "dropped": 1.0}}
    level.below_top = {"on": 50.0}
    report = markdown_report("m", "p", [], [], 5.0, "", PairedOverhead(0.1, 2, 5.0, 20.0, [level]))
    row = next(line for line in report.splitlines() if line.startswith("| 8 |"))
    assert "4 judged (1 dropped); 10.0% of 50 below-top requests" in row
    assert "+0.20 [+0.20, +0.20]" in row and row.endswith("| within noise |")
    assert "Per-segment controller overhead" not in report


def test_report_has_the_controller_table():
    shadow = level_of(SHADOW, 1, (10.0, 10.1))
    control = level_of(CONTROLLER, 1, (10.0, 13.0))
    control.evaluations = {"on": {"judged": 7.0}, "control": {"judged": 21.0, "failed": 1.0}}
    segments = {"bench-route-0": 30.0, "bench-route-5": 10.0, "auto-03": 25.0}
    overhead = PairedOverhead(0.1, 2, 5.0, 20.0, [shadow, control], segments)
    report = markdown_report("m", "p", [], [], 5.0, "", overhead)
    lines = report.splitlines()
    heading = lines.index("**Per-segment controller overhead on POST /classify: on vs control**")
    assert lines.index("**Shadow evaluation overhead on POST /classify: off vs on at share 0.1**") < heading
    assert "segment_control: {max_under_routing: 0.05, judge_error_rate: 0.1, refresh_seconds: 1}" in report
    header = next(line for line in lines[heading:] if line.startswith("| clients"))
    assert "| p50 on ms | p50 control ms | Δp50 ms | p50 noise ms |" in header
    assert "| p99 on ms | p99 control ms | Δp99 ms | p99 noise ms |" in header
    row = next(line for line in lines[heading:] if line.startswith("| 1 |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert len(cells) == len(header.strip("|").split("|"))
    assert cells[3:7] == ["11.50", "14.50", "+3.00 [+3.00, +3.00]", "1.00"]
    assert cells[-2:] == ["7/21", "above noise"]
    assert "40 in 2 routes, 25 in 1 automatic segments." in report


def test_controller_note_without_automatic_segments():
    control = level_of(CONTROLLER, 8, (10.0, 10.0))
    overhead = PairedOverhead(0.1, 2, 5.0, 20.0, [control], {"bench-route-1": 12.0})
    report = markdown_report("m", "p", [], [], 5.0, "", overhead)
    assert "Shadow evaluation overhead" not in report
    assert "12 in 1 routes, 0 in 0 automatic segments (the model folder has no `segments.npz`" in report
    row = next(line for line in report.splitlines() if line.startswith("| 8 |"))
    assert row.endswith("| 0/0 | within noise |")


def test_report_has_the_request_path_table_between_the_shadow_and_controller_tables():
    levels = [level_of(SHADOW, 1, (10.0, 10.1)), level_of(REQUEST_PATH, 1, (10.0, 10.2))]
    levels.append(level_of(CONTROLLER, 1, (10.0, 13.0)))
    lines = markdown_report("m", "p", [], [], 5.0, "", PairedOverhead(0.1, 2, 5.0, 20.0, levels)).splitlines()
    heading = lines.index(
        "**Per-segment controller on the request path of POST /classify: off vs guarded (no shadow)**"
    )
    assert lines.index("**Shadow evaluation overhead on POST /classify: off vs on at share 0.1**") < heading
    assert heading < lines.index("**Per-segment controller overhead on POST /classify: on vs control**")
    header = next(line for line in lines[heading:] if line.startswith("| clients"))
    row = next(line for line in lines[heading:] if line.startswith("| 1 |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert len(cells) == len(header.strip("|").split("|"))
    assert cells[5] == "+0.20 [+0.20, +0.20]" and cells[-1] == "within noise"
