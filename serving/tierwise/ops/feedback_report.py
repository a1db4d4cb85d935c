"""`tierwise report` and `tierwise export-feedback`: what production outcomes say about the routing.

`build_report` is pure (decision rows + policy + the model's training metrics -> a dict of numbers) so
it can be tested on a small known log; `write_report` writes it as report.json, report.md (from the
templates of tierwise.ops.feedback_markdown) and PNG plots (tierwise.ops.feedback_plots).

Outcomes are scored with the one rule of tierwise.core.scoring, shared with the training report and
the audit: an outcome allows a range of tiers [low, high]; a prediction inside the range counts as
right (its outcome tier is itself), one below counts against `low` (under-routing), one above against
`high` (over-routing). Spend uses the same request-cost formula as the audit.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from tierwise.core.policy import Policy
from tierwise.core.scoring import (
    CHARS_PER_TOKEN_ESTIMATE,
    RoutingScore,
    cost_ratio,
    rate,
    score_routing,
    tier_cost_usd,
)
from tierwise.evidence.decision_log import DecisionRecord, LabeledDecision
from tierwise.ops.drift import drift_summary
from tierwise.ops.feedback_markdown import render_markdown
from tierwise.ops.feedback_plots import plot_report

_SINCE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([mhdw])\s*$")


def parse_since(value: str, now: datetime | None = None) -> datetime:
    """'7d', '24h', '30m', '2w' before now, or an ISO date/time (UTC when no zone is given)."""
    now = now or datetime.now(UTC)
    match = _SINCE_RE.match(value)
    if match:
        amount, unit = float(match.group(1)), match.group(2)
        seconds = {"m": 60, "h": 3600, "d": 86400, "w": 604800}[unit] * amount
        return now - timedelta(seconds=seconds)
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError as err:
        raise ValueError(
            f"--since {value!r} is neither a duration (7d, 24h, 30m, 2w) nor an ISO date (2026-11-01)"
        ) from err
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed


def request_tokens(decision: DecisionRecord) -> tuple[int, bool]:
    """Input tokens of a request, and whether they are an estimate (no classifier token count)."""
    if decision.token_count is not None:
        return int(decision.token_count), False
    return math.ceil(decision.text_chars / CHARS_PER_TOKEN_ESTIMATE), True


def _labeled_indices(row: LabeledDecision, tiers: Sequence[str]) -> tuple[int, int] | None:
    feedback = row.feedback
    if feedback is None or feedback.low_tier is None or feedback.high_tier is None:
        return None
    if feedback.low_tier not in tiers or feedback.high_tier not in tiers:
        return None
    return tiers.index(feedback.low_tier), tiers.index(feedback.high_tier)


def _score(choices: Sequence[tuple[int, int, int]], size: int) -> RoutingScore:
    """Score (chosen, low, high) tier indices."""
    table = np.array(choices, dtype=np.int64).reshape(-1, 3)
    return score_routing(table[:, 0], table[:, 1], table[:, 2], size)


def quality_summary(rows: Sequence[LabeledDecision], tiers: Sequence[str]) -> dict[str, Any]:
    """Confusion matrices and routing errors over the rows whose feedback can be placed on the tiers."""
    predicted: list[tuple[int, int, int]] = []  # the classifier's argmax tier
    served: list[tuple[int, int, int]] = []  # the tier served after the policy
    for row in rows:
        bounds = _labeled_indices(row, tiers)
        if bounds is None:
            continue
        if row.decision.predicted_tier in tiers:
            predicted.append((tiers.index(row.decision.predicted_tier), *bounds))
        if row.decision.tier in tiers:
            served.append((tiers.index(row.decision.tier), *bounds))
    by_prediction, by_route = _score(predicted, len(tiers)), _score(served, len(tiers))
    return {
        "labeled": by_prediction.n,
        "confusion_predicted": by_prediction.confusion.tolist(),
        "accuracy_predicted": by_prediction.accuracy,
        "recall_predicted": {t: float(by_prediction.recall[i]) for i, t in enumerate(tiers)},
        "routed_labeled": by_route.n,
        "confusion_routed": by_route.confusion.tolist(),
        "under_routing": by_route.under_routing,
        "over_routing": by_route.over_routing,
        "under_routing_count": by_route.under,
        "over_routing_count": by_route.over,
    }


def spend_summary(rows: Sequence[LabeledDecision], policy: Policy) -> dict[str, Any]:
    """Spend per served tier with the policy's prices, against sending everything to the top tier."""
    top = policy.tiers[-1]
    per_tier: dict[str, dict[str, Any]] = {}
    routed_total = frontier_total = 0.0
    estimated = 0
    for row in rows:
        decision = row.decision
        tokens, is_estimate = request_tokens(decision)
        estimated += is_estimate
        cost = tier_cost_usd(policy, decision.tier, tokens)
        entry = per_tier.setdefault(decision.tier, {"requests": 0, "input_tokens": 0, "cost_usd": 0.0})
        entry["requests"] += 1
        entry["input_tokens"] += tokens
        entry["cost_usd"] += cost
        routed_total += cost
        frontier_total += tier_cost_usd(policy, top.name, tokens)
    order = [t.name for t in policy.tiers] + ([policy.private_tier.name] if policy.private_tier else [])
    ordered = {name: per_tier[name] for name in order if name in per_tier}
    ordered.update({k: v for k, v in per_tier.items() if k not in ordered})
    return {
        "per_tier": ordered,
        "routed_usd": routed_total,
        "all_frontier_usd": frontier_total,
        "savings_usd": frontier_total - routed_total,
        "cost_ratio": cost_ratio(routed_total, frontier_total),
        "estimated_token_counts": estimated,
        "frontier_tier": top.name,
    }


def load_training_metrics(model_dir: Path) -> dict[str, Any] | None:
    """`report/metrics.json` of a model folder (written by `make train`), or None."""
    path = Path(model_dir) / "report" / "metrics.json"
    if not path.is_file():
        return None
    return json.loads(path.read_text(encoding="utf-8"))


def build_report(
    rows: Sequence[LabeledDecision],
    policy: Policy,
    training_metrics: dict[str, Any] | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> dict[str, Any]:
    """All the report's numbers for the decisions in `rows` (each with its latest feedback)."""
    tiers = list(policy.tier_names)
    with_feedback = [r for r in rows if r.feedback is not None]
    unplaceable = sum(1 for r in with_feedback if _labeled_indices(r, tiers) is None)
    reasons = Counter(reason for r in rows for reason in r.decision.reasons)
    escalated = sum(1 for r in rows if r.decision.escalated)
    by_version: dict[str, list[LabeledDecision]] = defaultdict(list)
    for row in rows:
        by_version[row.decision.model_version].append(row)
    versions = {}
    for version, version_rows in sorted(by_version.items()):
        quality = quality_summary(version_rows, tiers)
        spend = spend_summary(version_rows, policy)
        versions[version] = {
            "decisions": len(version_rows),
            "with_feedback": sum(1 for r in version_rows if r.feedback is not None),
            "escalation_rate": rate(sum(r.decision.escalated for r in version_rows), len(version_rows)),
            "cost_ratio": spend["cost_ratio"],
            **quality,
        }
    return {
        "tiers": tiers,
        "since": since.isoformat() if since else None,
        "until": until.isoformat() if until else None,
        "decisions": len(rows),
        "with_feedback": len(with_feedback),
        "feedback_unplaceable": unplaceable,
        "escalation_rate": rate(escalated, len(rows)),
        "escalations": escalated,
        "reasons": dict(sorted(reasons.items())),
        "classifier_unavailable_rate": rate(reasons.get("classifier_unavailable", 0), len(rows)),
        "quality": quality_summary(rows, tiers),
        "spend": spend_summary(rows, policy),
        "drift": drift_summary(rows, tiers, training_metrics),
        "versions": versions,
    }


def rescore_models(
    rows: Sequence[LabeledDecision], policy: Policy, model_dirs: Sequence[Path]
) -> dict[str, dict[str, Any]]:
    """Every model folder re-scored on the same labeled decisions (those with stored prompt text).

    Each model's argmax and upward-rule tier (with its own calibrated q, before the other policy
    rules) are scored against the same outcomes, so candidate and primary are compared row for row.
    """
    from tierwise.core.classifier import TierClassifier

    tiers = list(policy.tier_names)
    labeled = [r for r in rows if r.decision.prompt_text and _labeled_indices(r, tiers) is not None]
    out: dict[str, dict[str, Any]] = {}
    for model_dir in model_dirs:
        classifier = TierClassifier(Path(model_dir), intra_op_threads=0)
        policy.check_model_tiers(classifier.tiers)
        predictions = classifier.classify([r.decision.prompt_text or "" for r in labeled]) if labeled else []
        rescored = [
            LabeledDecision(
                replace(r.decision, tier=p.tier, predicted_tier=p.predicted_tier, token_count=p.token_count),
                r.feedback,
            )
            for r, p in zip(labeled, predictions, strict=True)
        ]
        out[classifier.version] = {
            "model_dir": str(model_dir),
            "escalation_rate": rate(sum(p.escalated for p in predictions), len(predictions)),
            "cost_ratio": spend_summary(rescored, policy)["cost_ratio"],
            **quality_summary(rescored, tiers),
        }
    return out


def write_report(report: dict[str, Any], out_dir: Path, plots: bool = True) -> Path:
    """report.md, report.json and the PNG plots into `out_dir`; returns the markdown path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    plot_paths = [str(p) for p in plot_report(report, out_dir)] if plots else []
    (out_dir / "report.json").write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    markdown = out_dir / "report.md"
    markdown.write_text(render_markdown(report, plot_paths), encoding="utf-8")
    return markdown


# ---------------------------------------------------------------------------------------------
# Export of labeled feedback for `make data`
# ---------------------------------------------------------------------------------------------


def feedback_rows(
    rows: Sequence[LabeledDecision], tiers: Sequence[str], source: str
) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """JSONL rows for `make data USER_DATA=...` (text, allowed_tiers, source, weight) and skip counts."""
    out: list[dict[str, Any]] = []
    skipped = {"no_feedback": 0, "unplaceable": 0, "no_prompt_text": 0}
    for row in rows:
        if row.feedback is None:
            skipped["no_feedback"] += 1
            continue
        bounds = _labeled_indices(row, tiers)
        if bounds is None:
            skipped["unplaceable"] += 1
            continue
        if not row.decision.prompt_text:
            skipped["no_prompt_text"] += 1
            continue
        low, high = bounds
        out.append(
            {
                "text": row.decision.prompt_text,
                "allowed_tiers": list(tiers[low : high + 1]),
                "source": f"{source}:{row.feedback.source}" if row.feedback.source else source,
                "weight": 1.0,
                "request_id": row.decision.request_id,
                "model_version": row.decision.model_version,
            }
        )
    return out, skipped
