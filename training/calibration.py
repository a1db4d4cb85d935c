"""Temperature scaling, fitted on `val` (never on train): one scalar T, logits / T.

The negative log-likelihood is that of the allowed-tier set (the same quantity the model was
trained on), so rows that only bound their tier calibrate honestly too. Also the hard-rows bound on
the escalation threshold q (`choose_q_for_hard_rows`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.optimize import minimize_scalar
from tierwise.core.classifier import softmax
from tierwise.core.escalation import TierOffsets, route_upward, under_routing_rate


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


def choose_q_for_hard_rows(
    probabilities: np.ndarray,
    hard: np.ndarray,
    groups: Sequence[str],
    target_hard_fast: float,
    min_hard_rows: int,
    offsets: TierOffsets = None,
) -> float:
    """The smallest q that sends at most `target_hard_fast` of the hard rows (hard: (N,) bool) to the
    cheapest tier, in every group with at least `min_hard_rows` hard rows; 0.0 when no group has
    that many. probabilities (N, K) calibrated. Candidates are the rows' own P(cheapest tier), so
    the search is exact: a row leaves the cheapest tier once q exceeds its P(cheapest)."""
    if not 0.0 <= target_hard_fast <= 1.0:
        raise ValueError(f"target_hard_fast must be in [0, 1], got {target_hard_fast}")
    probabilities = np.atleast_2d(probabilities)
    group_array = np.asarray(groups)
    judged = [
        hard & (group_array == g)
        for g in sorted(set(group_array[hard].tolist()))
        if np.count_nonzero(hard & (group_array == g)) >= min_hard_rows
    ]
    if not judged:
        return 0.0
    # just above each P(cheapest) (route_upward's tolerance is 1e-12): a row with P(cheapest) >= q
    # still goes to the cheapest tier
    above = np.minimum(probabilities[:, 0] + 1e-9, 1.0)
    candidates = np.unique(np.concatenate([[0.0], above, [1.0]]))
    for q in candidates:  # ascending: rows sent to the cheapest tier only fall as q rises
        cheapest = route_upward(probabilities, float(q), offsets) == 0
        if all(np.mean(cheapest[rows]) <= target_hard_fast for rows in judged):
            return float(q)
    return 1.0


def choose_q_above_cheapest(
    probabilities: np.ndarray,
    lowest_allowed: np.ndarray,
    target_under_routing: float,
    cheapest_q: float,
    offsets: TierOffsets = None,
) -> tuple[float, ...]:
    """Per-boundary q: `cheapest_q` for leaving the cheapest tier, then the smallest q for every
    boundary above it whose under-routing on these rows is at most the target. (K - 1,) thresholds.

    A strict threshold for leaving the cheapest tier (hard rows must not stay cheap) would, as one q
    for every boundary, also send nearly everything that leaves it to the top tier."""
    probabilities = np.atleast_2d(probabilities)
    n_boundaries = probabilities.shape[-1] - 1
    if n_boundaries < 2:
        return (cheapest_q,)
    cum = np.cumsum(probabilities, axis=-1)[:, 1:-1]
    candidates = np.unique(np.concatenate([[0.0], np.minimum(cum.ravel() + 1e-9, 1.0), [1.0]]))
    for q in candidates:  # ascending: under-routing only falls as q rises
        thresholds = (cheapest_q, *[float(q)] * (n_boundaries - 1))
        if (
            under_routing_rate(route_upward(probabilities, thresholds, offsets), lowest_allowed)
            <= target_under_routing
        ):
            return thresholds
    return (cheapest_q, *[1.0] * (n_boundaries - 1))
