"""The pure helpers of the shadow overhead comparison in `make bench` (no load is run here)."""

import pytest
from tierwise.core.policy_file import DEFAULT_POLICY_FILE, load_policy
from tierwise.evidence.shadow_config import load_shadow_config

from tools.bench.http_load import LoadRow
from tools.bench.report import markdown_report
from tools.bench.shadow import (
    ShadowLevel,
    ShadowOverhead,
    label_value,
    metric_samples,
    pair_order,
    paired_difference,
    shadow_policy_files,
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


def test_policy_copies_turn_shadow_off_and_on(tmp_path):
    paths = shadow_policy_files(tmp_path, DEFAULT_POLICY_FILE, "http://127.0.0.1:9/v1", 0.1)
    tiers = load_policy(paths["on"]).tier_names
    assert tiers == load_policy(DEFAULT_POLICY_FILE).tier_names
    assert load_shadow_config(paths["off"], tiers) is None
    config = load_shadow_config(paths["on"], tiers)
    assert config is not None and config.share == 0.1 and config.base_url == "http://127.0.0.1:9/v1"
    assert config.judge_model == load_policy(DEFAULT_POLICY_FILE).tiers[-1].models[0]


def test_report_has_the_shadow_table():
    level = ShadowLevel(8)
    for mode, base in (("off", 10.0), ("on", 10.2)):
        for pair in range(2):
            level.rows[mode].append(
                LoadRow(f"shadow {mode}", 8, 3, 0, 0, 1.0, [base + pair, base + pair + 1, 30.0])
            )
    level.evaluations = {"judged": 4.0, "dropped": 1.0}
    level.below_top = 50.0
    report = markdown_report("m", "p", [], [], 5.0, "", ShadowOverhead(0.1, 2, 5.0, 20.0, [level]))
    row = next(line for line in report.splitlines() if line.startswith("| 8 |"))
    assert "4 judged (1 dropped); 10.0% of 50 below-top requests" in row
    assert "+0.20 [+0.20, +0.20]" in row and row.endswith("| within noise |")
