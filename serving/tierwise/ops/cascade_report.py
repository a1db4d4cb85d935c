"""The cascade section of `tierwise report`: what the gateways' answer checks and retries cost and found.

Reads the feedback rows with source `cascade` (one per failed check, sent by
serving/tierwise/gateway/cascade_runner.py: the tier whose answer failed, the reason, the next tier
tried, and on a request's last row its estimated cost, added latency and whether its final answer
passed) with the decisions of the window, and gives:

- retries by the tier that failed and the reason;
- per tier: answers checked (the decisions served there, plus the retries that went there), failed
  checks, the fallback rate and the success rate;
- cost per successful response: every decision at its tier's policy price (the report's spend
  estimate), plus each retry at the next tier's price, over the responses whose final answer passed;
  against all-frontier (every request on the top tier, where none is counted as failing);
- the latency the cascade added to the requests it retried (p50, p95).

It counts every decision of the window as checked: traffic that bypasses a cascading gateway makes
the rates look better than they are.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import sqlalchemy as sa

from tierwise.core.cascade_names import CASCADE_SOURCE
from tierwise.core.policy import Policy
from tierwise.core.scoring import CHARS_PER_TOKEN_ESTIMATE, percent, rate, tier_cost_usd
from tierwise.evidence.decision_log import LabeledDecision, decided_between
from tierwise.evidence.decision_schema import decisions_table, feedback_table


@dataclass(frozen=True)
class CascadeCheck:
    """One failed check of a cascade (a feedback row)."""

    request_id: str
    tier: str
    reason: str
    next_tier: str | None
    final_passed: bool | None  # on a request's last row only
    added_ms: float | None  # on a request's last row only


def cascade_checks(store: Any, since: datetime | None, until: datetime | None) -> list[CascadeCheck]:
    """Every failed cascade check on decisions made in [since, until), in the order recorded."""
    query = (
        sa.select(feedback_table.c.request_id, feedback_table.c.evidence)
        .join(decisions_table, feedback_table.c.request_id == decisions_table.c.request_id)
        .where(feedback_table.c.source == CASCADE_SOURCE)
        .order_by(feedback_table.c.id)
    )
    query = decided_between(query, since, until)
    with store.engine.connect() as connection:
        rows = list(connection.execute(query))
    return [_check(str(request_id), evidence) for request_id, evidence in rows]


def _name(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _check(request_id: str, evidence: Any) -> CascadeCheck:
    """One row's check; a value of the wrong type (rows stored before the service checked them, or by
    another writer) reads as unknown, never as a crash of the report."""
    evidence = evidence if isinstance(evidence, dict) else {}
    added = evidence.get("added_ms")
    passed = evidence.get("final_passed")
    number = isinstance(added, int | float) and not isinstance(added, bool) and math.isfinite(added)
    return CascadeCheck(
        request_id=request_id,
        tier=_name(evidence.get("tier")) or "unknown",
        reason=_name(evidence.get("reason")) or "unknown",
        next_tier=_name(evidence.get("next_tier")),
        final_passed=passed if isinstance(passed, bool) else None,
        added_ms=float(added) if number and added >= 0 else None,
    )


def _tokens(row: LabeledDecision) -> int:
    """Input tokens as the report's spend counts them (feedback_report.request_tokens, which this
    module cannot import: feedback_report renders this section)."""
    decision = row.decision
    if decision.token_count is not None:
        return int(decision.token_count)
    return math.ceil(decision.text_chars / CHARS_PER_TOKEN_ESTIMATE)


def cascade_summary(
    rows: Sequence[LabeledDecision], checks: Sequence[CascadeCheck], policy: Policy
) -> dict[str, Any] | None:
    """The section's numbers; None without any cascade feedback in the window."""
    if not checks:
        return None
    decisions = {row.decision.request_id: row for row in rows}
    checked = Counter(row.decision.tier for row in rows)
    failed = Counter(check.tier for check in checks)
    retries = Counter((check.tier, check.reason) for check in checks if check.next_tier)
    spend = sum(tier_cost_usd(policy, row.decision.tier, _tokens(row)) for row in rows)
    for check in checks:
        if check.next_tier:
            checked[check.next_tier] += 1
            row = decisions.get(check.request_id)
            spend += tier_cost_usd(policy, check.next_tier, _tokens(row)) if row is not None else 0.0
    final_failures = sum(1 for check in checks if check.final_passed is False)
    successes = len(rows) - final_failures
    frontier = sum(tier_cost_usd(policy, policy.top_tier, _tokens(row)) for row in rows)
    retried = {check.request_id for check in checks if check.next_tier}
    added = [c.added_ms for c in checks if c.added_ms is not None and c.request_id in retried]
    per_success = spend / successes if successes else None
    frontier_per_response = frontier / len(rows) if rows else None
    tiers = [
        t
        for t in (*policy.tier_names, *([policy.private_tier.name] if policy.private_tier else []))
        if checked[t] or failed[t]
    ]
    return {
        "requests_with_failed_checks": len({c.request_id for c in checks}),
        "failed_checks": len(checks),
        "retries": sum(retries.values()),
        "retries_by_tier_reason": {f"{t}:{r}": n for (t, r), n in sorted(retries.items())},
        "per_tier": {
            t: {
                "checked": checked[t],
                "failed": failed[t],
                "fallback_rate": rate(failed[t], checked[t]),
                "success_rate": 1 - rate(failed[t], checked[t]) if checked[t] else None,
            }
            for t in tiers
        },
        "final_failures": final_failures,
        "cost_per_success_usd": per_success,
        "all_frontier_cost_per_response_usd": frontier_per_response,
        "cost_per_success_ratio": (per_success / frontier_per_response)
        if per_success and frontier_per_response
        else None,
        "added_ms_retried_p50": float(np.percentile(added, 50)) if added else None,
        "added_ms_retried_p95": float(np.percentile(added, 95)) if added else None,
    }


def render_cascade(section: dict[str, Any] | None) -> list[str]:
    """Markdown lines of the section (none without cascade feedback)."""
    if not section:
        return []
    lines = [
        "",
        "## Cascade: answer checks and retries at the gateway",
        "",
        f"{section['failed_checks']} failed checks on {section['requests_with_failed_checks']} requests, "
        f"{section['retries']} retries one tier up, {section['final_failures']} responses whose final "
        "answer still failed. Every decision of the window counts as checked.",
        "",
        "| tier | answers checked | failed checks | fallback rate | success rate |",
        "|---|---|---|---|---|",
    ]
    for tier, cell in section["per_tier"].items():
        success = cell["success_rate"]
        lines.append(
            f"| {tier} | {cell['checked']} | {cell['failed']} | {percent(cell['fallback_rate'])} | "
            f"{percent(success) if success is not None else '-'} |"
        )
    lines += ["", "| retried from tier : reason | retries |", "|---|---|"]
    lines += [f"| {key} | {count} |" for key, count in section["retries_by_tier_reason"].items()]
    per_success = section["cost_per_success_usd"]
    frontier = section["all_frontier_cost_per_response_usd"]
    if per_success is not None and frontier:
        lines += [
            "",
            f"Cost per successful response (retries included, policy prices): ${per_success:.6f}; "
            f"all-frontier: ${frontier:.6f} per response ({percent(per_success / frontier)} of it).",
        ]
    if section["added_ms_retried_p50"] is not None:
        lines.append(
            f"Latency the cascade added to retried requests: p50 {section['added_ms_retried_p50']:.1f} ms, "
            f"p95 {section['added_ms_retried_p95']:.1f} ms."
        )
    return lines
