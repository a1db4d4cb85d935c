"""The one scoring rule and cost formula, on cases small enough to check by hand."""

import numpy as np
import pytest
from tierwise.core.policy_file import DEFAULT_POLICY_FILE, load_policy, parse_policy
from tierwise.core.scoring import (
    classification_metrics,
    confusion_matrix,
    cost_ratio,
    priced_tier,
    rate,
    reference_tiers,
    request_cost_usd,
    score_routing,
    tier_cost_usd,
    tier_serving,
)

TIERS = ("fast", "balanced", "frontier")
# Rows allow: [fast], [fast, balanced], [frontier], [balanced]
LOW = np.array([0, 0, 2, 1])
HIGH = np.array([0, 1, 2, 1])


def test_reference_is_the_choice_when_allowed_else_the_nearest_allowed_tier():
    assert reference_tiers(np.array([0, 1, 2, 1]), LOW, HIGH).tolist() == [0, 1, 2, 1]
    assert reference_tiers(np.array([2, 2, 0, 0]), LOW, HIGH).tolist() == [0, 1, 2, 1]


def test_confusion_rows_are_reference_tiers_and_columns_chosen_tiers():
    matrix = confusion_matrix(np.array([0, 0, 2, 1]), np.array([0, 2, 2, 0]), 3)
    assert matrix.tolist() == [[1, 0, 1], [1, 0, 0], [0, 0, 1]]


def test_routing_errors_by_hand():
    # fast row -> frontier (over), {fast, balanced} row -> frontier (over), frontier row -> fast (under),
    # balanced row -> balanced (right)
    score = score_routing(np.array([2, 2, 0, 1]), LOW, HIGH, 3)
    assert (score.n, score.correct, score.under, score.over) == (4, 1, 1, 2)
    assert score.accuracy == 0.25 and score.under_routing == 0.25 and score.over_routing == 0.5
    # references: fast, balanced, frontier, balanced
    assert score.confusion.tolist() == [[0, 0, 1], [0, 1, 1], [1, 0, 0]]


def test_precision_recall_f1_by_hand():
    # reference [0, 1, 2, 1], chosen [0, 0, 2, 1]: fast 1 of 2 predicted right, balanced 1 of 2 found
    score = score_routing(np.array([0, 0, 2, 1]), np.array([0, 1, 2, 1]), np.array([0, 1, 2, 1]), 3)
    assert score.precision.tolist() == [0.5, 1.0, 1.0]
    assert score.recall.tolist() == [1.0, 0.5, 1.0]
    assert score.f1.tolist() == pytest.approx([2 / 3, 2 / 3, 1.0])
    assert score.support.tolist() == [1, 2, 1]


def test_a_tier_never_seen_scores_zero_not_nan():
    score = score_routing(np.array([0, 0]), np.array([0, 0]), np.array([0, 0]), 3)
    assert score.precision.tolist() == [1.0, 0.0, 0.0] and score.f1.tolist() == [1.0, 0.0, 0.0]
    assert score.normalized_confusion().tolist() == [[1.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]]


def test_nothing_to_score_gives_zeros():
    score = score_routing(np.array([], dtype=int), np.array([], dtype=int), np.array([], dtype=int), 3)
    assert score.n == 0 and score.accuracy == 0.0 and score.under_routing == 0.0
    assert score.confusion.tolist() == [[0] * 3] * 3


def test_classification_metrics_matches_scikit_learn():
    sklearn_metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(7)
    low = rng.integers(0, 3, 300)
    high = np.minimum(2, low + rng.integers(0, 2, 300))
    chosen = rng.integers(0, 3, 300)
    m = classification_metrics(chosen, low, high, TIERS)
    ref = np.clip(chosen, low, high)
    p, r, f, support = sklearn_metrics.precision_recall_fscore_support(
        ref, chosen, labels=[0, 1, 2], zero_division=0
    )
    assert m["macro_f1"] == float(np.mean(f))  # the same formulas, so equal to the last bit
    assert [m["per_tier"][t]["precision"] for t in TIERS] == p.tolist()
    assert [m["per_tier"][t]["recall"] for t in TIERS] == r.tolist()
    assert [m["per_tier"][t]["support"] for t in TIERS] == support.tolist()
    assert m["confusion"] == sklearn_metrics.confusion_matrix(ref, chosen, labels=[0, 1, 2]).tolist()
    assert m["accuracy"] == float(np.mean(ref == chosen))
    assert m["under_routing"] == float(np.mean(chosen < low))
    assert sum(m["tier_mix"].values()) == pytest.approx(1.0)


def test_request_cost_by_hand():
    # 1,000 input tokens at 2 USD/M + 300 output tokens at 8 USD/M = 0.002 + 0.0024
    assert request_cost_usd(1000, 300, 2.0, 8.0) == pytest.approx(0.0044)
    costs = request_cost_usd(np.array([1000, 0]), 300, np.array([2.0, 15.0]), np.array([8.0, 75.0]))
    assert costs.tolist() == pytest.approx([0.0044, 0.0225])


def test_tier_cost_uses_the_policy_prices_and_falls_back_to_the_top_tier():
    policy = load_policy(DEFAULT_POLICY_FILE)
    balanced = priced_tier(policy, "balanced")
    expected = (1000 * balanced.input_price_per_million + 2 * 300 * balanced.output_price_per_million) / 1e6
    assert tier_cost_usd(policy, "balanced", 1000, requests=2) == pytest.approx(expected)
    assert priced_tier(policy, "private") == policy.private_tier
    assert priced_tier(policy, "retired-tier") == policy.tiers[-1]


def test_rates_and_ratios_without_a_denominator_are_zero():
    assert rate(1, 4) == 0.25 and rate(3, 0) == 0.0
    assert cost_ratio(1.0, 4.0) == 0.25 and cost_ratio(1.0, 0.0) == 0.0


def test_tier_serving_finds_the_tier_of_a_model_private_included():
    policy = parse_policy(
        {
            "tiers": [{"name": "cheap", "models": ["m1", "m1b"]}, {"name": "top", "models": ["m2"]}],
            "private_tier": {"name": "private", "models": ["local"]},
        }
    )
    assert [tier_serving(policy, m).name for m in ("m1b", "m2", "local")] == ["cheap", "top", "private"]
    assert tier_serving(policy, "unknown-model") is None
