"""The upward routing rule over ordered tiers, shared by training (to choose it) and serving.

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

from tierwise.core.scoring import score_routing

TierOffsets = Sequence[float] | np.ndarray | None
# One threshold for every boundary, or one per boundary between tiers (K - 1 of them).
EscalationQ = float | tuple[float, ...]
# Offsets searched by `choose_tier_offsets` (log-probability units): 0 to +4 favours a tier up to e^4 x.
OFFSET_GRID = np.round(np.arange(-2.0, 4.0001, 0.1), 2)


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


def under_routing_rate(chosen: np.ndarray, lowest_allowed: np.ndarray) -> float:
    """Share of requests sent to a tier weaker than the weakest tier that handles them."""
    return float(np.mean(chosen < lowest_allowed)) if len(chosen) else 0.0


def choose_q(
    probabilities: np.ndarray,
    lowest_allowed: np.ndarray,
    target_under_routing: float,
    offsets: TierOffsets = None,
) -> float:
    """The smallest (cheapest) q whose under-routing on these rows is at most the target.

    Candidates are the observed cumulative probabilities themselves, so the search is exact.
    """
    if not 0.0 <= target_under_routing <= 1.0:
        raise ValueError(f"target under-routing must be in [0, 1], got {target_under_routing}")
    cum = cumulative_confidence(np.atleast_2d(probabilities))
    candidates = np.unique(np.concatenate([[0.0], cum[:, :-1].ravel(), [1.0]]))
    for q in candidates:  # ascending: under-routing only falls as q rises
        chosen = route_upward(probabilities, float(q), offsets)
        if under_routing_rate(chosen, lowest_allowed) <= target_under_routing:
            return float(q)
    return 1.0


def choose_tier_offsets(
    probabilities: np.ndarray,
    lowest_allowed: np.ndarray,
    highest_allowed: np.ndarray,
    tiers: Sequence[str],
    rounds: int = 3,
) -> np.ndarray:
    """Offsets (K,) that maximise the macro-F1 of `most_likely_tier` on these rows (`val`), by
    coordinate ascent over `OFFSET_GRID`; the cheapest tier's offset stays 0. Ties keep the offset
    nearest 0, so a tier is only favoured when that measurably helps."""
    probabilities = np.atleast_2d(probabilities)
    offsets = np.zeros(probabilities.shape[-1])

    def macro_f1(candidate: np.ndarray) -> float:
        chosen = most_likely_tier(probabilities, candidate)
        return float(np.mean(score_routing(chosen, lowest_allowed, highest_allowed, len(tiers)).f1))

    best = macro_f1(offsets)
    for _ in range(rounds):
        improved = False
        for k in range(1, len(offsets)):
            for value in sorted(OFFSET_GRID, key=abs):
                candidate = offsets.copy()
                candidate[k] = value
                score = macro_f1(candidate)
                if score > best + 1e-9:
                    best, offsets, improved = score, candidate, True
        if not improved:
            break
    return offsets


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
