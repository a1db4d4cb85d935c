"""The upward routing rule over ordered tiers, shared by training (to choose q) and serving.

The classifier's calibrated probabilities are the routing *score*; q is the *threshold*.
Route to the lowest tier t with P(true tier <= t) >= q: a larger q escalates more often.
The rule only ever moves a request up: the result is never below the most likely tier.
"""

from __future__ import annotations

import numpy as np


def cumulative_confidence(probabilities: np.ndarray) -> np.ndarray:
    """P(true tier <= t) for each tier t. (N, K) -> (N, K); the last column is 1."""
    cum = np.cumsum(probabilities, axis=-1)
    cum[..., -1] = 1.0  # guard against float drift so the top tier always qualifies
    return cum


def route_upward(probabilities: np.ndarray, q: float) -> np.ndarray:
    """max(argmax, lowest tier whose cumulative probability reaches q). (N, K) -> (N,)"""
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"q must be in [0, 1], got {q}")
    probabilities = np.atleast_2d(probabilities)
    cum = cumulative_confidence(probabilities)
    by_confidence = np.argmax(cum >= q - 1e-12, axis=-1)
    return np.maximum(by_confidence, probabilities.argmax(axis=-1))


def under_routing_rate(chosen: np.ndarray, lowest_allowed: np.ndarray) -> float:
    """Share of requests sent to a tier weaker than the weakest tier that handles them."""
    return float(np.mean(chosen < lowest_allowed)) if len(chosen) else 0.0


def choose_q(probabilities: np.ndarray, lowest_allowed: np.ndarray, target_under_routing: float) -> float:
    """The smallest (cheapest) q whose under-routing on these rows is at most the target.

    Candidates are the observed cumulative probabilities themselves, so the search is exact.
    """
    if not 0.0 <= target_under_routing <= 1.0:
        raise ValueError(f"target under-routing must be in [0, 1], got {target_under_routing}")
    cum = cumulative_confidence(np.atleast_2d(probabilities))
    candidates = np.unique(np.concatenate([[0.0], cum[:, :-1].ravel(), [1.0]]))
    for q in candidates:  # ascending: under-routing only falls as q rises
        if under_routing_rate(route_upward(probabilities, float(q)), lowest_allowed) <= target_under_routing:
            return float(q)
    return 1.0
