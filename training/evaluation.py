"""Metrics of the training report over allowed-tier sets: routing scores, calibration and cost.

Scoring and pricing follow the one rule of `tierwise.core.scoring` (shared with the feedback report and
the audit): a row's label is a set of allowed tiers, a prediction inside it is correct, one outside it
is scored against the allowed tier nearest it. This module binds that rule to the training tiers and
adds what only training measures: calibration bins and the cost of whole splits.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from tierwise.core import scoring
from tierwise.core.policy import Policy
from tierwise.training.labels import TIER_INDEX, TIERS

K = len(TIERS)


def allowed_bounds(rows: list[dict]) -> tuple[np.ndarray, np.ndarray]:
    """Lowest and highest allowed tier index per row. -> (N,), (N,)"""
    idx = [[TIER_INDEX[t] for t in r["allowed_tiers"]] for r in rows]
    return np.array([min(i) for i in idx]), np.array([max(i) for i in idx])


def calibration_bins(conf: np.ndarray, hit: np.ndarray, bins: int) -> list[dict]:
    """Equal-width confidence bins: mean confidence, hit rate and count of each non-empty bin."""
    edges = np.linspace(0, 1, bins + 1)
    out = []
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        in_bin = (conf > lo) & (conf <= hi)
        if in_bin.any():
            out.append(
                {
                    "confidence": float(conf[in_bin].mean()),
                    "accuracy": float(hit[in_bin].mean()),
                    "count": int(in_bin.sum()),
                }
            )
    return out


def binned_calibration_error(conf: np.ndarray, hit: np.ndarray, bins: int) -> float:
    """Count-weighted mean |confidence - hit rate| over the bins."""
    n = max(len(conf), 1)
    return float(
        sum(b["count"] / n * abs(b["confidence"] - b["accuracy"]) for b in calibration_bins(conf, hit, bins))
    )


def expected_calibration_error(probs: np.ndarray, low: np.ndarray, high: np.ndarray, bins: int = 15) -> float:
    """ECE of the top-class confidence against 'the predicted tier is allowed'."""
    pred = probs.argmax(axis=1)
    return binned_calibration_error(probs.max(axis=1), (pred >= low) & (pred <= high), bins)


def sufficiency_calibration_error(probs: np.ndarray, low: np.ndarray, bins: int = 15) -> float:
    """ECE of the confidence the service returns, P(true tier <= predicted tier), against 'the
    predicted tier suffices' (it is not below the cheapest allowed tier). Defined for set labels too."""
    pred = probs.argmax(axis=1)
    conf = np.cumsum(probs, axis=1)[np.arange(len(probs)), pred]
    return binned_calibration_error(conf, low <= pred, bins)


def reliability_curve(probs: np.ndarray, low: np.ndarray, high: np.ndarray, bins: int = 10) -> list[dict]:
    pred = probs.argmax(axis=1)
    return calibration_bins(probs.max(axis=1), (pred >= low) & (pred <= high), bins)


@dataclass(frozen=True)
class TierPrices:
    """USD per million input and output tokens per tier, and the assumed output length."""

    input: dict[str, float]
    output: dict[str, float]
    expected_output_tokens: int

    def request_cost(self, tier_idx: np.ndarray, token_counts: np.ndarray) -> np.ndarray:
        inp = np.array([self.input[TIERS[i]] for i in tier_idx])
        out = np.array([self.output[TIERS[i]] for i in tier_idx])
        return scoring.request_cost_usd(token_counts, self.expected_output_tokens, inp, out)


def load_prices(policy: Policy) -> TierPrices:
    """The training tiers' prices from a policy read by `tierwise.core.policy_file.load_policy`."""
    tiers = {t.name: t for t in policy.tiers}
    missing = [t for t in TIERS if t not in tiers]
    if missing:
        raise ValueError(f"policy file has no price for tier(s) {missing}; add them to its `tiers` list")
    return TierPrices(
        {t: tiers[t].input_price_per_million for t in TIERS},
        {t: tiers[t].output_price_per_million for t in TIERS},
        policy.expected_output_tokens,
    )


def classification_metrics(chosen: np.ndarray, low: np.ndarray, high: np.ndarray) -> dict[str, Any]:
    """`tierwise.core.scoring.classification_metrics` over the training tiers."""
    return scoring.classification_metrics(chosen, low, high, TIERS)


def cost_summary(chosen: np.ndarray, token_counts: np.ndarray, prices: TierPrices) -> dict[str, float]:
    routed = float(prices.request_cost(chosen, token_counts).sum())
    frontier = float(prices.request_cost(np.full(len(chosen), K - 1), token_counts).sum())
    return {
        "routed_usd": routed,
        "always_frontier_usd": frontier,
        "cost_ratio": scoring.cost_ratio(routed, frontier),
    }
