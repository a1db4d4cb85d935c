"""Score a finished model folder (through the serving code path) and the baselines on every split."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import numpy as np
from tierwise.core.classifier import TierClassifier, softmax
from tierwise.core.escalation import EscalationQ, TierOffsets, most_likely_tier, route_upward
from tierwise.training.baselines import Predictor, fit_baselines
from tierwise.training.build_dataset import row_input
from tierwise.training.calibration import TemperatureScaler
from tierwise.training.evaluation import (
    TierPrices,
    allowed_bounds,
    classification_metrics,
    cost_summary,
    expected_calibration_error,
    reliability_curve,
    sufficiency_calibration_error,
)
from tierwise.training.labels import allowed_mask

EVAL_SPLITS = ("val", "test", "heldout", "non_english")
Q_GRID = np.round(np.linspace(0.0, 1.0, 51), 2)


def allowed_matrix(rows: list[dict]) -> np.ndarray:
    return np.array([allowed_mask(r["allowed_tiers"]) for r in rows])


def batched_logits(
    classifier: TierClassifier, rows: list[dict], batch_size: int = 64
) -> tuple[np.ndarray, np.ndarray]:
    """Raw logits (N, K) and full token counts (N,), scored as serving scores them (each row alone,
    so the int8 gate and the reports see the scores a request gets in any micro-batch)."""
    order = np.argsort([len(r["text"]) for r in rows], kind="stable")
    logits = np.zeros((len(rows), len(classifier.tiers)))
    counts = np.zeros(len(rows), dtype=np.int64)
    for start in range(0, len(rows), batch_size):
        idx = order[start : start + batch_size]
        batch_logits, batch_counts = classifier.logits([row_input(rows[i]) for i in idx])
        logits[idx], counts[idx] = batch_logits, batch_counts
    return logits, counts


def per_source(rows: list[dict], before: np.ndarray, after: np.ndarray) -> list[dict]:
    low, high = allowed_bounds(rows)
    groups: dict[str, list[int]] = defaultdict(list)
    for i, r in enumerate(rows):
        groups[r["source"]].append(i)
    out = []
    for source, idx in sorted(groups.items()):
        ix = np.array(idx)
        m_before = classification_metrics(before[ix], low[ix], high[ix])
        m_after = classification_metrics(after[ix], low[ix], high[ix])
        out.append(
            {
                "source": source,
                "n": len(ix),
                "accuracy": m_before["accuracy"],
                "under_routing_before": m_before["under_routing"],
                "under_routing_after": m_after["under_routing"],
                "over_routing_after": m_after["over_routing"],
                "tier_mix_after": m_after["tier_mix"],
            }
        )
    return out


def cost_curve(
    probs: np.ndarray,
    counts: np.ndarray,
    low: np.ndarray,
    high: np.ndarray,
    prices: TierPrices,
    offsets: TierOffsets = None,
) -> list[dict]:
    """Cost relative to always-frontier and routing errors for each q on a grid."""
    points = []
    for q in Q_GRID:
        chosen = route_upward(probs, float(q), offsets)
        m = classification_metrics(chosen, low, high)
        points.append(
            {
                "q": float(q),
                "cost_ratio": cost_summary(chosen, counts, prices)["cost_ratio"],
                "under_routing": m["under_routing"],
                "over_routing": m["over_routing"],
                "quality": 1.0 - m["under_routing"],
            }
        )
    return points


def evaluate_split(
    rows: list[dict],
    logits: np.ndarray,
    counts: np.ndarray,
    scaler: TemperatureScaler,
    q: EscalationQ,
    prices: TierPrices,
    baselines: dict,
    offsets: TierOffsets = None,
) -> dict[str, Any]:
    low, high = allowed_bounds(rows)
    raw, calibrated = softmax(logits), scaler.transform(logits)
    single = low == high  # rows with exactly one allowed tier
    before = most_likely_tier(calibrated, offsets)
    after = route_upward(calibrated, q, offsets)
    return {
        "n": len(rows),
        "before": classification_metrics(before, low, high),
        "after": classification_metrics(after, low, high),
        "ece_before": expected_calibration_error(raw, low, high),
        "ece_after": expected_calibration_error(calibrated, low, high),
        "ece_single_label_before": expected_calibration_error(raw[single], low[single], high[single]),
        "ece_single_label_after": expected_calibration_error(calibrated[single], low[single], high[single]),
        "ece_sufficiency_before": sufficiency_calibration_error(raw, low),
        "ece_sufficiency_after": sufficiency_calibration_error(calibrated, low),
        "reliability_before": reliability_curve(raw, low, high),
        "reliability_after": reliability_curve(calibrated, low, high),
        "cost": cost_summary(after, counts, prices),
        "cost_curve": cost_curve(calibrated, counts, low, high, prices, offsets),
        "per_source": per_source(rows, before, after),
        "baselines": {
            name: classification_metrics(predict(rows, counts), low, high)
            for name, predict in baselines.items()
        },
        "baseline_costs": {
            name: cost_summary(predict(rows, counts), counts, prices) for name, predict in baselines.items()
        },
    }


def evaluate_all(
    classifier: TierClassifier,
    splits: dict[str, list[dict]],
    scaler: TemperatureScaler,
    q: EscalationQ,
    prices: TierPrices,
    baselines: dict[str, Predictor],
) -> dict[str, Any]:
    offsets = classifier.manifest.tier_offsets
    results: dict[str, Any] = {
        "q": q,
        "tier_offsets": list(offsets),
        "temperature": scaler.temperature_,
        "splits": {},
    }
    for split in EVAL_SPLITS:
        rows = splits.get(split) or []
        if not rows:
            continue
        logits, counts = batched_logits(classifier, rows)
        results["splits"][split] = evaluate_split(rows, logits, counts, scaler, q, prices, baselines, offsets)
    return results


def fitted_baselines(classifier: TierClassifier, train_rows: list[dict], seed: int) -> dict[str, Predictor]:
    """The baselines, fitted on train; the length baseline needs only the token counts."""
    _, counts = classifier.encoder.encode_ids([row_input(r) for r in train_rows])
    return fit_baselines(train_rows, np.array(counts), seed)


def headline_metrics(evaluation: dict[str, Any], scaler: TemperatureScaler) -> dict[str, Any]:
    """The figures that go into the manifest; the full detail is in report/metrics.json."""
    out: dict[str, Any] = {
        "temperature": scaler.temperature_,
        "val_nll_before": scaler.nll_before_,
        "val_nll_after": scaler.nll_after_,
    }
    for split, res in evaluation["splits"].items():
        out[split] = {
            "n": res["n"],
            "macro_f1": res["before"]["macro_f1"],
            "recall": {t: v["recall"] for t, v in res["before"]["per_tier"].items()},
            "ece_before": res["ece_before"],
            "ece_after": res["ece_after"],
            "ece_sufficiency_before": res["ece_sufficiency_before"],
            "ece_sufficiency_after": res["ece_sufficiency_after"],
            "under_routing_before": res["before"]["under_routing"],
            "under_routing_after": res["after"]["under_routing"],
            "over_routing_after": res["after"]["over_routing"],
            "cost_ratio_vs_frontier": res["cost"]["cost_ratio"],
            "baselines_macro_f1": {k: v["macro_f1"] for k, v in res["baselines"].items()},
        }
    return out
