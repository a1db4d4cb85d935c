"""Drift of live traffic against the model's training data, for `tierwise report`.

The live predicted and routed tier mixes and the confidence histogram are compared with the model's
test split (val when there is no test) as recorded in its `report/metrics.json`: total variation
distance between the mixes, population stability index between the confidence histograms.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

from tierwise.core.scoring import rate
from tierwise.evidence.decision_log import LabeledDecision

CONFIDENCE_BINS = 10
DRIFT_TVD_ALERT = 0.10  # total variation distance between tier mixes
DRIFT_PSI_ALERT = 0.20  # population stability index of the confidence histogram


def confidence_bin(value: float, bins: int = CONFIDENCE_BINS) -> int:
    """The bin (k/bins, (k+1)/bins] holding a max-probability value, as the training reliability curve
    bins it (0 falls in the first bin)."""
    return min(bins - 1, max(0, math.ceil(value * bins) - 1))


def confidence_histogram(values: Iterable[float], bins: int = CONFIDENCE_BINS) -> list[int]:
    """Counts of max-probability values in (k/bins, (k+1)/bins], as the training reliability curve bins them."""
    counts = [0] * bins
    for value in values:
        counts[confidence_bin(value, bins)] += 1
    return counts


def population_stability(expected: Sequence[float], actual: Sequence[float], floor: float = 1e-4) -> float:
    """PSI between two distributions over the same bins (0.1: some shift, 0.2+: a real one)."""
    total_e, total_a = sum(expected), sum(actual)
    if not total_e or not total_a:
        return 0.0
    psi = 0.0
    for e, a in zip(expected, actual, strict=True):
        pe, pa = max(e / total_e, floor), max(a / total_a, floor)
        psi += (pa - pe) * math.log(pa / pe)
    return psi


def total_variation(p: dict[str, float], q: dict[str, float]) -> float:
    keys = set(p) | set(q)
    return 0.5 * sum(abs(p.get(k, 0.0) - q.get(k, 0.0)) for k in keys)


def drift_summary(
    rows: Sequence[LabeledDecision], tiers: Sequence[str], training_metrics: dict[str, Any] | None
) -> dict[str, Any]:
    """Live tier mix and confidence against the model's test split (val when there is no test)."""
    predicted = Counter(r.decision.predicted_tier for r in rows if r.decision.predicted_tier in tiers)
    routed = Counter(r.decision.tier for r in rows)
    n_predicted, n_routed = sum(predicted.values()), len(rows)
    live_confidence = [max(r.decision.probabilities.values()) for r in rows if r.decision.probabilities]
    live_hist = confidence_histogram(live_confidence)
    summary: dict[str, Any] = {
        "predicted_mix_live": {t: rate(predicted[t], n_predicted) for t in tiers},
        "routed_mix_live": {t: rate(routed[t], n_routed) for t in routed},
        "confidence_live_mean": rate(sum(live_confidence), len(live_confidence)),
        "confidence_live_histogram": live_hist,
        "reference_split": None,
        "alerts": [],
    }
    splits = (training_metrics or {}).get("splits") or {}
    split_name = "test" if "test" in splits else ("val" if "val" in splits else None)
    if split_name is None:
        summary["alerts"].append("no training metrics (model folder report/metrics.json): drift not computed")
        return summary
    split = splits[split_name]
    train_predicted = split["before"]["tier_mix"]
    train_routed = split["after"]["tier_mix"]
    bins = split.get("reliability_after") or []
    train_hist = [0] * CONFIDENCE_BINS
    weighted = 0.0
    for entry in bins:
        train_hist[confidence_bin(entry["confidence"])] += int(entry["count"])
        weighted += entry["confidence"] * entry["count"]
    tvd_predicted = total_variation(summary["predicted_mix_live"], train_predicted)
    psi = population_stability(train_hist, live_hist)
    summary.update(
        {
            "reference_split": split_name,
            "reference_n": split.get("n"),
            "predicted_mix_train": train_predicted,
            "routed_mix_train": train_routed,
            "tvd_predicted_mix": tvd_predicted,
            "confidence_train_mean": rate(weighted, sum(train_hist)),
            "confidence_train_histogram": train_hist,
            "confidence_psi": psi,
        }
    )
    if n_predicted and tvd_predicted > DRIFT_TVD_ALERT:
        summary["alerts"].append(
            f"the predicted tier mix moved {tvd_predicted:.2f} (total variation) from the {split_name} split: "
            "traffic differs from the training data; label it (POST /feedback) and retrain"
        )
    if live_confidence and psi > DRIFT_PSI_ALERT:
        summary["alerts"].append(
            f"confidence shifted (PSI {psi:.2f} vs the {split_name} split): calibration may no longer hold; "
            "check the escalation rate and under-routing"
        )
    return summary
