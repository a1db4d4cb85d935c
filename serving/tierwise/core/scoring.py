"""Scoring routing choices against allowed tiers, and pricing requests: one rule for every report.

The training report (tierwise.training.evaluation), the feedback report (tierwise.ops.feedback_report)
and the traffic audit (tierwise.ops.audit) all score and price through this module, so their numbers
mean the same thing.

Tiers are indices, cheapest first. A row allows a range of tiers [low, high]. A choice inside the
range is right and is its own reference tier; a choice outside is scored against the allowed tier
nearest it (a {fast, balanced} row routed to `frontier` counts as a `balanced` row over-routed).
Under-routing: the choice is cheaper than every allowed tier (quality is lost). Over-routing: dearer
than every allowed tier (money is lost).

Only numpy at run time: the serving install scores reports without scikit-learn. Precision, recall
and F1 follow scikit-learn's `precision_recall_fscore_support(..., zero_division=0)` formulas exactly
(F1 = 2 tp / (2 tp + fp + fn)), so the training report's numbers did not move when it left sklearn.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from tierwise.core.policy import Policy, TierConfig

TOKENS_PER_PRICE_UNIT = 1e6  # prices are USD per million tokens
# A request logged without a token count (the classifier was unavailable) is priced at this many
# characters a token: the usual ratio for English text with BERT-like and GPT tokenizers.
CHARS_PER_TOKEN_ESTIMATE = 4


def reference_tiers(chosen: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """The allowed tier nearest each choice (the choice itself when it is allowed)."""
    return np.clip(chosen, low, high)


def confusion_matrix(reference: np.ndarray, chosen: np.ndarray, size: int) -> np.ndarray:
    """(size, size) counts, rows = reference (outcome) tier, columns = chosen tier."""
    counts = np.bincount(
        np.asarray(reference, dtype=np.int64) * size + np.asarray(chosen, dtype=np.int64),
        minlength=size * size,
    )
    return counts.reshape(size, size)


def _divide_or_zero(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """numerator / denominator, 0 where the denominator is 0 (scikit-learn's zero_division=0)."""
    denominator = np.asarray(denominator, dtype=np.float64)
    safe = np.where(denominator == 0, 1.0, denominator)
    return np.where(denominator == 0, 0.0, np.asarray(numerator, dtype=np.float64) / safe)


@dataclass(frozen=True)
class RoutingScore:
    """Choices scored against allowed ranges: the confusion matrix and the routing errors."""

    confusion: np.ndarray  # (tiers, tiers) counts, rows = reference tier, columns = chosen tier
    under: int  # choices cheaper than every allowed tier
    over: int  # choices dearer than every allowed tier

    @property
    def n(self) -> int:
        return int(self.confusion.sum())

    @property
    def correct(self) -> int:
        return int(np.trace(self.confusion))

    @property
    def accuracy(self) -> float:
        return rate(self.correct, self.n)

    @property
    def under_routing(self) -> float:
        return rate(self.under, self.n)

    @property
    def over_routing(self) -> float:
        return rate(self.over, self.n)

    @property
    def support(self) -> np.ndarray:
        """Rows per reference tier."""
        return self.confusion.sum(axis=1)

    @property
    def precision(self) -> np.ndarray:
        return _divide_or_zero(np.diag(self.confusion), self.confusion.sum(axis=0))

    @property
    def recall(self) -> np.ndarray:
        return _divide_or_zero(np.diag(self.confusion), self.support)

    @property
    def f1(self) -> np.ndarray:
        true_plus_predicted = self.support + self.confusion.sum(axis=0)
        return _divide_or_zero(2.0 * np.diag(self.confusion), true_plus_predicted)

    def normalized_confusion(self) -> np.ndarray:
        """Each row divided by its count (rows without any count stay 0), rounded to 4 decimals."""
        row_sums = self.confusion.sum(axis=1, keepdims=True)
        return np.divide(self.confusion, np.maximum(row_sums, 1)).round(4)


def score_routing(chosen: np.ndarray, low: np.ndarray, high: np.ndarray, size: int) -> RoutingScore:
    """Score each choice against its row's allowed range [low, high] (tier indices, arrays of one length)."""
    chosen, low, high = (np.asarray(a, dtype=np.int64) for a in (chosen, low, high))
    return RoutingScore(
        confusion=confusion_matrix(reference_tiers(chosen, low, high), chosen, size),
        under=int(np.sum(chosen < low)),
        over=int(np.sum(chosen > high)),
    )


def classification_metrics(
    chosen: np.ndarray, low: np.ndarray, high: np.ndarray, tiers: Sequence[str]
) -> dict[str, Any]:
    """Macro-F1, per-tier precision/recall/F1, confusion (counts, row-normalized), routing errors, mix."""
    chosen = np.asarray(chosen)
    score = score_routing(chosen, low, high, len(tiers))
    precision, recall, f1, support = score.precision, score.recall, score.f1, score.support
    return {
        "n": score.n,
        "accuracy": score.accuracy,
        "macro_f1": float(np.mean(f1)),
        "per_tier": {
            t: {
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(support[i]),
            }
            for i, t in enumerate(tiers)
        },
        "confusion": score.confusion.tolist(),
        "confusion_normalized": score.normalized_confusion().tolist(),
        "under_routing": score.under_routing,
        "over_routing": score.over_routing,
        "tier_mix": {t: rate(int(np.sum(chosen == i)), len(chosen)) for i, t in enumerate(tiers)},
    }


def rate(part: float, whole: float) -> float:
    """part / whole, 0 when there is nothing to divide by."""
    return part / whole if whole else 0.0


# ---------------------------------------------------------------------------------------------
# Cost
# ---------------------------------------------------------------------------------------------


def request_cost_usd(
    input_tokens: Any,
    output_tokens: Any,
    input_price_per_million: Any,
    output_price_per_million: Any,
) -> Any:
    """USD for input and output tokens at per-million prices; numbers or numpy arrays (element-wise)."""
    return (
        input_tokens * input_price_per_million + output_tokens * output_price_per_million
    ) / TOKENS_PER_PRICE_UNIT


def tier_serving(policy: Policy, model: str) -> TierConfig | None:
    """The tier (ordered or private) whose models include `model`; None for a model the policy does
    not name (callers choose their own fallback price)."""
    for tier in (*policy.tiers, *([policy.private_tier] if policy.private_tier is not None else [])):
        if model in tier.models:
            return tier
    return None


def priced_tier(policy: Policy, tier_name: str) -> TierConfig:
    """The tier whose prices a served tier name is charged at: an ordered tier, the private tier, or
    (for a name the policy no longer has) the top tier, so an estimate errs on the dear side."""
    for tier in policy.tiers:
        if tier.name == tier_name:
            return tier
    if policy.private_tier is not None and policy.private_tier.name == tier_name:
        return policy.private_tier
    return policy.tiers[-1]


def tier_cost_usd(policy: Policy, tier_name: str, input_tokens: int, requests: int = 1) -> float:
    """USD for `requests` requests served by a tier: their input tokens plus the policy's expected
    output tokens per request (completions are not known when routing)."""
    tier = priced_tier(policy, tier_name)
    output_tokens = requests * policy.expected_output_tokens
    return request_cost_usd(
        input_tokens, output_tokens, tier.input_price_per_million, tier.output_price_per_million
    )


def cost_ratio(routed_usd: float, baseline_usd: float) -> float:
    """Routed spend as a share of the baseline's (everything on the top tier); 0 without a baseline."""
    return rate(routed_usd, baseline_usd)


def percent(share: float) -> str:
    """A share as the reports write it: 0.1234 -> "12.3%"."""
    return f"{100 * share:.1f}%"
