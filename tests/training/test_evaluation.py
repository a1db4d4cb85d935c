import numpy as np
from tierwise.core.scoring import reference_tiers
from tierwise.training.evaluation import classification_metrics

# Rows: allowed [fast], [fast, balanced], [frontier], [balanced]
LOW = np.array([0, 0, 2, 1])
HIGH = np.array([0, 1, 2, 1])


def test_a_prediction_inside_the_allowed_set_is_correct():
    assert reference_tiers(np.array([0, 1, 2, 1]), LOW, HIGH).tolist() == [0, 1, 2, 1]


def test_outside_the_set_the_nearest_allowed_tier_is_the_reference():
    assert reference_tiers(np.array([2, 2, 0, 0]), LOW, HIGH).tolist() == [0, 1, 2, 1]


def test_under_and_over_routing_rates():
    m = classification_metrics(np.array([2, 2, 0, 0]), LOW, HIGH)
    assert m["under_routing"] == 0.5  # frontier row sent to fast, balanced row sent to fast
    assert m["over_routing"] == 0.5
    assert m["accuracy"] == 0.0
    assert np.array(m["confusion"]).sum() == 4


def test_perfect_predictions():
    m = classification_metrics(np.array([0, 0, 2, 1]), LOW, HIGH)
    assert m["macro_f1"] == 1.0
    assert m["under_routing"] == m["over_routing"] == 0.0
