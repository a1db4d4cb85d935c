import numpy as np
import pytest
from tierwise.core.escalation import cumulative_confidence, describe_q, most_likely_tier, route_upward

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
