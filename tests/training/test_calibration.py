import numpy as np
import pytest
from tierwise.core.classifier import softmax
from tierwise.training.calibration import TemperatureScaler
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
