"""Choosing q and the tier offsets on val (tierwise.training.thresholds)."""

import numpy as np
import pytest
from tierwise.core.escalation import most_likely_tier, route_upward
from tierwise.training.thresholds import (
    choose_q,
    choose_q_above_cheapest,
    choose_q_for_hard_rows,
    choose_tier_offsets,
    under_routing_rate,
)

PROBS = np.array(
    [
        [0.70, 0.20, 0.10],  # cum 0.70, 0.90, 1
        [0.40, 0.35, 0.25],  # cum 0.40, 0.75, 1
        [0.10, 0.30, 0.60],  # cum 0.10, 0.40, 1
    ]
)


def test_choose_q_is_the_cheapest_meeting_the_target():
    lowest_allowed = np.array([1, 1, 2])  # row 0 really needs balanced
    q = choose_q(PROBS, lowest_allowed, target_under_routing=0.0)
    assert under_routing_rate(route_upward(PROBS, q), lowest_allowed) == 0.0
    assert q == pytest.approx(0.75)  # the smallest observed cumulative value that escalates row 0 (cum 0.70)
    # Allowing one row in three to be under-routed: only row 1 (cum 0.40 at fast) must move up.
    assert choose_q(PROBS, lowest_allowed, target_under_routing=0.34) == pytest.approx(0.70)
    # Allowing everything needs no escalation at all.
    assert choose_q(PROBS, lowest_allowed, target_under_routing=1.0) == 0.0


def test_chosen_offsets_recover_a_tier_the_argmax_never_picks():
    # Balanced rows whose balanced probability is always second: the argmax never says balanced.
    rng = np.random.default_rng(0)
    fast_rows = np.column_stack([rng.uniform(0.7, 0.9, 60), rng.uniform(0.05, 0.1, 60)])
    balanced_rows = np.column_stack([rng.uniform(0.5, 0.6, 30), rng.uniform(0.3, 0.4, 30)])
    two = np.vstack([fast_rows, balanced_rows])
    probs = np.column_stack([two, 1.0 - two.sum(axis=1)])
    low = high = np.array([0] * 60 + [1] * 30)
    tiers = ("fast", "balanced", "frontier")
    assert (most_likely_tier(probs) == 1).sum() == 0
    offsets = choose_tier_offsets(probs, low, high, tiers)
    assert offsets[0] == 0.0
    chosen = most_likely_tier(probs, offsets)
    assert (chosen == low).mean() == 1.0  # the two groups separate once balanced is favoured
    # Nothing to gain: the offsets stay at zero (ties keep the offset nearest 0).
    assert choose_tier_offsets(probs[:60], low[:60], high[:60], tiers).tolist() == [0.0, 0.0, 0.0]


def test_choose_q_honours_the_offsets():
    probs = np.array([[0.55, 0.40, 0.05]])
    # Needs balanced: with the offsets the most likely tier already is balanced, so q may stay 0.
    assert choose_q(probs, np.array([1]), 0.0, offsets=[0.0, 0.5, 0.0]) == 0.0
    assert choose_q(probs, np.array([1]), 0.0) == pytest.approx(0.95)


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
