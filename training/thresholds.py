"""The routing decision's parameters, chosen on `val` by training and written to the manifest:
the escalation threshold q (one, or one per tier boundary when hard rows need a stricter one for
leaving the cheapest tier) and the per-tier offsets. Serving only applies them
(tierwise.core.escalation), so this search lives with training.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from tierwise.core.escalation import TierOffsets, cumulative_confidence, most_likely_tier, route_upward
from tierwise.core.scoring import score_routing

# Offsets searched by `choose_tier_offsets` (log-probability units): 0 to +4 favours a tier up to e^4 x.
OFFSET_GRID = np.round(np.arange(-2.0, 4.0001, 0.1), 2)


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
