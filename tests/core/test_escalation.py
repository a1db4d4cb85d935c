import numpy as np
import pytest
from tierwise.core.escalation import (
    choose_q,
    choose_tier_offsets,
    cumulative_confidence,
    describe_q,
    most_likely_tier,
    route_upward,
    under_routing_rate,
)

PROBS = np.array(
    [
        [0.70, 0.20, 0.10],  # cum 0.70, 0.90, 1
        [0.40, 0.35, 0.25],  # cum 0.40, 0.75, 1
        [0.10, 0.30, 0.60],  # cum 0.10, 0.40, 1
    ]
)


def test_cumulative_confidence_ends_at_one():
    cum = cumulative_confidence(PROBS)
    assert cum[:, -1].tolist() == [1.0, 1.0, 1.0]
    assert cum[1, 1] == pytest.approx(0.75)


def test_lowest_tier_reaching_q():
    assert route_upward(PROBS, 0.5).tolist() == [0, 1, 2]
    assert route_upward(PROBS, 0.7).tolist() == [0, 1, 2]
    assert route_upward(PROBS, 0.8).tolist() == [1, 2, 2]
    assert route_upward(PROBS, 1.0).tolist() == [2, 2, 2]


def test_never_below_the_most_likely_tier():
    # Cumulative rule alone would say fast (0.5 >= 0.3), but balanced is the most likely tier.
    assert route_upward(np.array([[0.3, 0.5, 0.2]]), 0.3).tolist() == [1]


def test_q_zero_is_argmax():
    assert route_upward(PROBS, 0.0).tolist() == PROBS.argmax(axis=1).tolist()


def test_choose_q_is_the_cheapest_meeting_the_target():
    lowest_allowed = np.array([1, 1, 2])  # row 0 really needs balanced
    q = choose_q(PROBS, lowest_allowed, target_under_routing=0.0)
    assert under_routing_rate(route_upward(PROBS, q), lowest_allowed) == 0.0
    assert q == pytest.approx(0.75)  # the smallest observed cumulative value that escalates row 0 (cum 0.70)
    # Allowing one row in three to be under-routed: only row 1 (cum 0.40 at fast) must move up.
    assert choose_q(PROBS, lowest_allowed, target_under_routing=0.34) == pytest.approx(0.70)
    # Allowing everything needs no escalation at all.
    assert choose_q(PROBS, lowest_allowed, target_under_routing=1.0) == 0.0


def test_invalid_q_is_rejected():
    with pytest.raises(ValueError):
        route_upward(PROBS, 1.5)
    with pytest.raises(ValueError, match="one per tier boundary"):
        route_upward(PROBS, (0.9, 0.5, 0.5))  # three tiers have two boundaries
    with pytest.raises(ValueError):
        route_upward(PROBS, (0.9, 1.2))


def test_a_threshold_per_boundary_leaves_fast_strictly_without_sending_everything_to_the_top():
    # One q of 0.8 sends row 1 (cum 0.40, 0.75) to frontier; leaving fast at 0.8 but balanced at 0.7
    # keeps it at balanced, and row 0 (cum 0.70 at fast) now leaves fast for balanced (cum 0.90).
    assert route_upward(PROBS, 0.8).tolist() == [1, 2, 2]
    assert route_upward(PROBS, (0.8, 0.7)).tolist() == [1, 1, 2]
    assert route_upward(PROBS, (0.6, 0.95)).tolist() == [0, 2, 2]
    assert route_upward(PROBS, (0.7, 0.7)).tolist() == route_upward(PROBS, 0.7).tolist()
    assert describe_q((0.95, 0.4)) == "0.950 / 0.400" and describe_q(0.6055) == "0.606"


def test_offsets_move_the_most_likely_tier_without_touching_probabilities():
    probs = np.array([[0.55, 0.40, 0.05], [0.30, 0.25, 0.45]])
    assert most_likely_tier(probs).tolist() == [0, 2]
    # +0.5 on balanced: 0.40 e^0.5 = 0.66 > 0.55, so row 0 becomes balanced; row 1 stays frontier.
    assert most_likely_tier(probs, [0.0, 0.5, 0.0]).tolist() == [1, 2]
    assert most_likely_tier(probs, np.zeros(3)).tolist() == probs.argmax(axis=1).tolist()
    assert route_upward(probs, 0.0, [0.0, 0.5, 0.0]).tolist() == [1, 2]
    # The upward rule still never goes below the (offset) most likely tier, nor below q's tier.
    assert route_upward(probs, 0.96, [0.0, 0.5, 0.0]).tolist() == [2, 2]


def test_offsets_of_the_wrong_length_are_rejected():
    with pytest.raises(ValueError, match="2 tier offsets for 3 tiers"):
        most_likely_tier(PROBS, [0.0, 1.0])


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
