"""The shadow-evaluation section of `tierwise report`: judge-estimated under-routing per tier and route.

Reads the feedback rows with source `shadow` (written by serving/tierwise/evidence/shadow.py) with their decisions,
and gives per served tier and per (route, tier): judged requests, how many the judge found worse
than the top tier's answer, that rate and its 95% Wilson interval, and the rate per day (per hour
for windows under three days) as the trend.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from tierwise.core.scoring import percent
from tierwise.evidence.decision_log import as_utc, decided_between
from tierwise.evidence.decision_schema import decisions_table, feedback_table
from tierwise.evidence.shadow import wilson_interval

SHADOW_SOURCE = "shadow"
HOURLY_TREND_BELOW_DAYS = 3


@dataclass(frozen=True)
class ShadowOutcome:
    judged_at: datetime
    tier: str
    route: str | None
    passed: bool


def shadow_outcomes(store: Any, since: datetime | None, until: datetime | None) -> list[ShadowOutcome]:
    """Every shadow verdict on decisions made in [since, until)."""
    query = (
        sa.select(
            feedback_table.c.created_at,
            decisions_table.c.tier,
            decisions_table.c.route,
            feedback_table.c.passed,
        )
        .join(decisions_table, feedback_table.c.request_id == decisions_table.c.request_id)
        .where(feedback_table.c.source == SHADOW_SOURCE, feedback_table.c.passed.is_not(None))
        .order_by(feedback_table.c.created_at)
    )
    query = decided_between(query, since, until)
    with store.engine.connect() as connection:
        return [ShadowOutcome(as_utc(r[0]), r[1], r[2], bool(r[3])) for r in connection.execute(query)]


def _cell(failures: int, total: int) -> dict[str, Any]:
    low, high = wilson_interval(failures, total)
    return {
        "judged": total,
        "under_routed": failures,
        "rate": failures / total if total else 0.0,
        "low": low,
        "high": high,
    }


def _bucket(moment: datetime, hourly: bool) -> str:
    return moment.strftime("%Y-%m-%d %H:00") if hourly else moment.strftime("%Y-%m-%d")


def shadow_summary(outcomes: Sequence[ShadowOutcome], tiers: Sequence[str]) -> dict[str, Any]:
    counts: dict[tuple[str, ...], list[int]] = defaultdict(lambda: [0, 0])
    span_days = (outcomes[-1].judged_at - outcomes[0].judged_at).total_seconds() / 86400 if outcomes else 0.0
    hourly = span_days < HOURLY_TREND_BELOW_DAYS
    for outcome in outcomes:
        failed = int(not outcome.passed)
        route = outcome.route or "-"
        for key in (
            ("tier", outcome.tier),
            ("route", route, outcome.tier),
            ("trend", _bucket(outcome.judged_at, hourly), outcome.tier),
        ):
            counts[key][0] += failed
            counts[key][1] += 1
    order = {t: i for i, t in enumerate(tiers)}

    def cells(kind: str) -> list[dict[str, Any]]:
        keys = sorted(
            (k for k in counts if k[0] == kind), key=lambda k: (*k[1:-1], order.get(k[-1], 99), k[-1])
        )
        return [{"key": list(k[1:]), **_cell(*counts[k])} for k in keys]

    total_failed = sum(not o.passed for o in outcomes)
    return {
        "judged": len(outcomes),
        "overall": _cell(total_failed, len(outcomes)),
        "per_tier": cells("tier"),
        "per_route": cells("route"),
        "trend": cells("trend"),
        "trend_bucket": "hour" if hourly else "day",
    }


def _row(label: str, cell: dict[str, Any]) -> str:
    return (
        f"| {label} | {cell['judged']} | {cell['under_routed']} | **{percent(cell['rate'])}** | "
        f"{percent(cell['low'])} - {percent(cell['high'])} |"
    )


def render_shadow(summary: dict[str, Any] | None) -> list[str]:
    """The markdown lines of the section ([] when there were no shadow verdicts)."""
    if not summary or not summary["judged"]:
        return []
    header = ["| {} | judged | under-routed | rate | 95% interval (Wilson) |", "|---|---:|---:|---:|---|"]
    overall = summary["overall"]
    lines = [
        "",
        "## Shadow evaluation: judge-estimated under-routing",
        "",
        f"{summary['judged']} sampled requests served below the top tier were also sent to the top tier, and a "
        "judge compared the answers (both orders). Under-routed: the served tier's answer was worse. Overall "
        f"**{percent(overall['rate'])}** ({percent(overall['low'])} - {percent(overall['high'])}).",
        "",
        header[0].format("served tier"),
        header[1],
        *(_row(c["key"][0], c) for c in summary["per_tier"]),
        "",
        header[0].format("route / tier"),
        header[1],
        *(_row(f"{c['key'][0]} / {c['key'][1]}", c) for c in summary["per_route"]),
        "",
        f"Trend per {summary['trend_bucket']}:",
        "",
        header[0].format(f"{summary['trend_bucket']} / tier"),
        header[1],
        *(_row(f"{c['key'][0]} / {c['key'][1]}", c) for c in summary["trend"]),
    ]
    return lines
