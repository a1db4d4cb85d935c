"""Metrics over allowed-tier sets: confusion, per-tier P/R/F1, routing errors, calibration, cost.

A row's label is a set of allowed tiers. A prediction inside the set is correct; outside it, the
row's reference tier is the allowed tier nearest the prediction (so a {fast, balanced} row predicted
`frontier` counts as a `balanced` row over-routed). Under-routing: the chosen tier is cheaper than
every allowed tier (quality is lost). Over-routing: dearer than every allowed tier (money is lost).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support
from tierwise.training.labels import TIER_INDEX, TIERS

K = len(TIERS)


def allowed_bounds(rows: list[dict]) -> tuple[np.ndarray, np.ndarray]:
    """Lowest and highest allowed tier index per row. -> (N,), (N,)"""
    idx = [[TIER_INDEX[t] for t in r["allowed_tiers"]] for r in rows]
    return np.array([min(i) for i in idx]), np.array([max(i) for i in idx])


def reference_tiers(pred: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """The allowed tier nearest each prediction (the prediction itself when it is allowed)."""
    return np.clip(pred, low, high)


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
        return (token_counts * inp + self.expected_output_tokens * out) / 1e6


def load_prices(policy: dict) -> TierPrices:
    tiers = {t["name"]: t["price_per_million"] for t in policy["tiers"]}
    missing = [t for t in TIERS if t not in tiers]
    if missing:
        raise ValueError(f"policy file has no price for tier(s) {missing}")
    return TierPrices(
        {t: float(tiers[t]["input"]) for t in TIERS},
        {t: float(tiers[t]["output"]) for t in TIERS},
        int(policy.get("expected_output_tokens", 300)),
    )


def classification_metrics(chosen: np.ndarray, low: np.ndarray, high: np.ndarray) -> dict:
    """Macro-F1, per-tier precision/recall/F1, confusion (counts, row-normalized), routing errors."""
    ref = reference_tiers(chosen, low, high)
    p, r, f, support = precision_recall_fscore_support(ref, chosen, labels=list(range(K)), zero_division=0)
    cm = confusion_matrix(ref, chosen, labels=list(range(K)))
    row_sums = cm.sum(axis=1, keepdims=True)
    return {
        "n": int(len(chosen)),
        "accuracy": float(np.mean(ref == chosen)) if len(chosen) else 0.0,
        "macro_f1": float(np.mean(f)),
        "per_tier": {
            t: {
                "precision": float(p[i]),
                "recall": float(r[i]),
                "f1": float(f[i]),
                "support": int(support[i]),
            }
            for i, t in enumerate(TIERS)
        },
        "confusion": cm.tolist(),
        "confusion_normalized": np.divide(cm, np.maximum(row_sums, 1)).round(4).tolist(),
        "under_routing": float(np.mean(chosen < low)) if len(chosen) else 0.0,
        "over_routing": float(np.mean(chosen > high)) if len(chosen) else 0.0,
        "tier_mix": {t: float(np.mean(chosen == i)) if len(chosen) else 0.0 for i, t in enumerate(TIERS)},
    }


def cost_summary(chosen: np.ndarray, token_counts: np.ndarray, prices: TierPrices) -> dict:
    routed = float(prices.request_cost(chosen, token_counts).sum())
    frontier = float(prices.request_cost(np.full(len(chosen), K - 1), token_counts).sum())
    return {
        "routed_usd": routed,
        "always_frontier_usd": frontier,
        "cost_ratio": routed / frontier if frontier else 0.0,
    }
