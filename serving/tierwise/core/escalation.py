"""The upward routing rule over ordered tiers: serving applies it, training chooses its parameters
(tierwise.training.thresholds).

The classifier's calibrated probabilities are the routing *score*; the decision has two parameters,
both chosen on `val` by training and read from the manifest by serving:
- per-tier *offsets*: the most likely tier is argmax(log P + offsets). A fine-tuned argmax under-uses
  a tier whose rows are rare or whose label sets it shares with a cheaper tier ("fast or balanced"
  rows are satisfied by fast), so the middle tier can be never chosen at all; offsets (0 for the
  cheapest tier) re-balance the decision without touching the calibrated probabilities the service
  returns. All zeros is the plain argmax (models trained before offsets existed).
- the *threshold* q: route to the lowest tier t with P(true tier <= t) >= q; a larger q escalates
  more often. The rule only ever moves a request up: never below the (offset) most likely tier.
  q is one number, or one per boundary between tiers (K - 1 numbers, `q[t]` for leaving tier t):
  leaving the cheapest tier can then take a stricter threshold (hard requests must not stay cheap)
  without sending everything that leaves it straight to the top tier.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

TierOffsets = Sequence[float] | np.ndarray | None
# One threshold for every boundary, or one per boundary between tiers (K - 1 of them).
EscalationQ = float | tuple[float, ...]


def cumulative_confidence(probabilities: np.ndarray) -> np.ndarray:
    """P(true tier <= t) for each tier t. (N, K) -> (N, K); the last column is 1."""
    cum = np.cumsum(probabilities, axis=-1)
    cum[..., -1] = 1.0  # guard against float drift so the top tier always qualifies
    return cum


def most_likely_tier(probabilities: np.ndarray, offsets: TierOffsets = None) -> np.ndarray:
    """argmax(log P + offsets) per row. (N, K) -> (N,); offsets None is the plain argmax."""
    probabilities = np.atleast_2d(probabilities)
    if offsets is None or not np.any(offsets):
        return probabilities.argmax(axis=-1)
    offsets = np.asarray(offsets, dtype=np.float64)
    if offsets.shape != (probabilities.shape[-1],):
        raise ValueError(f"got {offsets.size} tier offsets for {probabilities.shape[-1]} tiers")
    return (np.log(np.clip(probabilities, 1e-12, None)) + offsets).argmax(axis=-1)


def boundary_thresholds(q: EscalationQ, n_tiers: int) -> np.ndarray:
    """q as one threshold per boundary between tiers: (n_tiers - 1,), each in [0, 1]."""
    thresholds = np.atleast_1d(np.asarray(q, dtype=np.float64))
    if thresholds.size == 1:
        thresholds = np.full(n_tiers - 1, float(thresholds[0]))
    if thresholds.shape != (n_tiers - 1,) or not np.all((thresholds >= 0.0) & (thresholds <= 1.0)):
        raise ValueError(f"q must be in [0, 1], one number or {n_tiers - 1} (one per tier boundary), got {q}")
    return thresholds


def describe_q(q: EscalationQ) -> str:
    """q for people: "0.606", or one figure per tier boundary "0.950 / 0.400"."""
    if isinstance(q, tuple | list):
        return " / ".join(f"{v:.3f}" for v in q)
    return f"{q:.3f}"


def route_upward(probabilities: np.ndarray, q: EscalationQ, offsets: TierOffsets = None) -> np.ndarray:
    """max(most likely tier, lowest tier t whose cumulative probability reaches q[t]). (N, K) -> (N,)"""
    probabilities = np.atleast_2d(probabilities)
    thresholds = boundary_thresholds(q, probabilities.shape[-1])
    cum = cumulative_confidence(probabilities)
    meets = np.concatenate(
        [cum[..., :-1] >= thresholds - 1e-12, np.ones((*cum.shape[:-1], 1), dtype=bool)], axis=-1
    )  # the top tier always qualifies
    by_confidence = np.argmax(meets, axis=-1)
    return np.maximum(by_confidence, most_likely_tier(probabilities, offsets))


def routing_confidence(cumulative: np.ndarray | None, chosen: int) -> float:
    """Calibrated confidence in routing to tier index `chosen` (tierwise.core.policy's docstring says why).

    `cumulative` is (tiers,) P(true tier <= t), ending at 1. Below the top tier: P(chosen suffices).
    At the top tier: P(the tier below does not suffice) = 1 - P(true tier <= top - 1)."""
    if cumulative is None:
        return 0.0
    top = len(cumulative) - 1
    if chosen < top or top == 0:
        return float(cumulative[chosen])
    return float(1.0 - cumulative[top - 1])
