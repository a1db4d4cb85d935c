import numpy as np
import pytest
from tierwise.core.escalation import choose_q, cumulative_confidence, route_upward, under_routing_rate

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
