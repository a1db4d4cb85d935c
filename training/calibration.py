"""Temperature scaling, fitted on `val` (never on train): one scalar T, logits / T.

The negative log-likelihood is that of the allowed-tier set (the same quantity the model was
trained on), so rows that only bound their tier calibrate honestly too.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize_scalar
from tierwise.core.classifier import softmax


def allowed_set_nll(logits: np.ndarray, allowed: np.ndarray, temperature: float) -> float:
    """Mean -log sum_{t allowed} softmax(logits / T)_t. logits (N, K), allowed (N, K) 0/1."""
    probs = softmax(logits / temperature)
    return float(-np.mean(np.log(np.clip((probs * allowed).sum(axis=1), 1e-12, None))))


class TemperatureScaler:
    """sklearn-style: `fit` learns `temperature_`; `transform` returns calibrated probabilities."""

    def __init__(self, *, min_temperature: float = 0.05, max_temperature: float = 20.0) -> None:
        self.min_temperature = min_temperature
        self.max_temperature = max_temperature

    def fit(self, logits: np.ndarray, allowed: np.ndarray) -> TemperatureScaler:
        if len(logits) == 0:
            raise ValueError("cannot calibrate on zero rows: the val split is empty")
        result = minimize_scalar(
            lambda log_t: allowed_set_nll(logits, allowed, float(np.exp(log_t))),
            bounds=(np.log(self.min_temperature), np.log(self.max_temperature)),
            method="bounded",
        )
        self.temperature_ = float(np.exp(result.x))
        self.nll_before_ = allowed_set_nll(logits, allowed, 1.0)
        self.nll_after_ = allowed_set_nll(logits, allowed, self.temperature_)
        return self

    def transform(self, logits: np.ndarray) -> np.ndarray:
        if not hasattr(self, "temperature_"):
            raise RuntimeError("TemperatureScaler is not fitted: call fit(val_logits, val_allowed) first")
        return softmax(logits / self.temperature_)
