import numpy as np
import pytest
from tierwise.core.classifier import softmax
from tierwise.core.escalation import route_upward
from tierwise.training.calibration import TemperatureScaler, choose_q_above_cheapest, choose_q_for_hard_rows
from tierwise.training.evaluation import expected_calibration_error


def synthetic(n: int, true_temperature: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Logits that are overconfident by `true_temperature`; labels sampled from the calibrated model."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 3, size=(n, 3))
    probs = softmax(logits / true_temperature)
    labels = np.array([rng.choice(3, p=p) for p in probs])
    allowed = np.eye(3)[labels]
    return logits, allowed


def test_temperature_scaling_recovers_the_overconfidence():
    logits, allowed = synthetic(4000, true_temperature=2.5)
    scaler = TemperatureScaler().fit(logits, allowed)
    assert scaler.temperature_ == pytest.approx(2.5, rel=0.15)
    assert scaler.nll_after_ < scaler.nll_before_
    labels = allowed.argmax(axis=1)
    ece_before = expected_calibration_error(softmax(logits), labels, labels)
    ece_after = expected_calibration_error(scaler.transform(logits), labels, labels)
    assert ece_after < ece_before / 2


def test_unfitted_scaler_says_what_to_do():
    with pytest.raises(RuntimeError, match="fit"):
        TemperatureScaler().transform(np.zeros((1, 3)))


def test_empty_val_is_refused():
    with pytest.raises(ValueError, match="val"):
        TemperatureScaler().fit(np.zeros((0, 3)), np.zeros((0, 3)))


def test_q_for_hard_rows_sends_at_most_the_target_share_of_each_groups_hard_rows_to_fast():
    # P(fast) of 10 hard math rows 0.05..0.95, 10 hard knowledge rows all 0.2, easy rows 0.99
    math = np.linspace(0.05, 0.95, 10)
    p_fast = np.concatenate([math, np.full(10, 0.2), np.full(5, 0.99)])
    probs = np.stack([p_fast, (1 - p_fast) / 2, (1 - p_fast) / 2], axis=1)
    hard = np.array([True] * 20 + [False] * 5)
    groups = ["math"] * 10 + ["knowledge"] * 10 + ["chat"] * 5
    # at most 10%: one math row (0.95) may stay fast, so q must pass 0.85 (the ninth) and no more
    q = choose_q_for_hard_rows(probs, hard, groups, target_hard_fast=0.1, min_hard_rows=5)
    assert 0.85 < q < 0.85 + 1e-6
    # none: q passes the highest hard P(fast); the easy rows (0.99) still go fast
    q0 = choose_q_for_hard_rows(probs, hard, groups, target_hard_fast=0.0, min_hard_rows=5)
    assert 0.95 < q0 < 0.99
    assert (route_upward(probs, q0, None) == 0).tolist() == [False] * 20 + [True] * 5
    # a group with fewer hard rows than min_hard_rows does not constrain q
    assert choose_q_for_hard_rows(probs, hard, groups, 0.0, min_hard_rows=11) == 0.0
    with pytest.raises(ValueError, match="target_hard_fast"):
        choose_q_for_hard_rows(probs, hard, groups, 1.5, 5)


def test_q_above_cheapest_keeps_the_strict_fast_threshold_and_meets_the_target_above_it():
    probs = np.array([[0.70, 0.20, 0.10], [0.40, 0.35, 0.25], [0.10, 0.50, 0.40], [0.05, 0.90, 0.05]])
    low = np.array([1, 1, 2, 1])  # rows 0, 1, 3 need balanced, row 2 frontier
    q = choose_q_above_cheapest(probs, low, target_under_routing=0.0, cheapest_q=0.8)
    # leaving fast at 0.8 moves rows 0 and 1 up; the cheapest q above keeping row 2 off balanced is
    # just above its cum 0.60, which still lets rows 0 (0.90), 1 (0.75) and 3 (0.95) stay at balanced
    assert q[0] == 0.8 and 0.60 < q[1] < 0.60 + 1e-6
    assert route_upward(probs, q).tolist() == [1, 1, 2, 1]
    assert route_upward(probs, 0.8).tolist() == [1, 2, 2, 1]  # one q would send row 1 to frontier
