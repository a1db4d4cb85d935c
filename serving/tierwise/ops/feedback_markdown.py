"""report.md of `tierwise report`, rendered from the templates below.

Each template is the literal shape of one part of the report (`string.Template`, `$name` fields, so
markdown pipes and braces need no escaping); the functions only format numbers into the fields and
repeat row templates over tiers and model versions. The parts are joined by line breaks; optional
parts (versions, re-scored models, the shadow, cascade and segment sections, plots) begin with a
blank line and are left out when there is nothing to show.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from string import Template
from typing import Any

from tierwise.core.scoring import CHARS_PER_TOKEN_ESTIMATE, percent
from tierwise.ops.cascade_report import render_cascade
from tierwise.ops.drift import DRIFT_PSI_ALERT, DRIFT_TVD_ALERT
from tierwise.ops.segment_report import render_segments
from tierwise.ops.shadow_report import render_shadow

REPORT = Template(
    """# tierwise routing report

Decisions from $window: **$decisions**, with feedback: **$with_feedback** ($feedback_unplaceable \
outcome(s) that cannot be placed on the tiers, e.g. a failure on the top tier, are left out of the matrices).

## Live confusion matrix (classifier's predicted tier vs outcome tier)

$predicted_matrix

Accuracy $accuracy on $labeled labeled decisions; recall $recalls.

## Routing errors (tier served after the policy vs outcome)

$routed_matrix

- Under-routing (served tier too weak): **$under_routing** ($under_routing_count of $routed_labeled)
- Over-routing (a cheaper tier would have done): **$over_routing** ($over_routing_count of $routed_labeled)
- Escalation rate (served above the predicted tier): **$escalation_rate** ($escalations of $decisions); \
classifier unavailable $classifier_unavailable_rate
- Reasons: $reasons

## Spend per tier (policy prices, expected output tokens) vs all-frontier

| tier | requests | input tokens | spend (USD) |
|---|---:|---:|---:|
$spend_rows| **routed total** | $decisions | | **$routed_usd** |
| all $frontier_tier | $decisions | | $all_frontier_usd |

Routing costs **$cost_ratio** of sending everything to $frontier_tier (saves $savings_usd USD).$estimate_note

## Drift against the training data

$drift
$alerts"""
)
SPEND_ROW = Template("| $tier | $requests | $input_tokens | $cost_usd |\n")
ESTIMATE_NOTE = Template(
    " $count request(s) had no token count (classifier unavailable); their size is estimated at "
    "$chars_per_token characters per token."
)
NO_DRIFT = "No training metrics were found, so drift is not computed."
DRIFT = Template(
    """Reference: the model's `$split` split ($reference_n prompts).

| | $tier_header |
|---|$tier_alignment
| predicted mix, live | $predicted_live |
| predicted mix, training | $predicted_train |
| routed mix, live | $routed_live |
| routed mix (upward rule), training | $routed_train |

- Predicted-mix shift (total variation): $tvd (alert above $tvd_alert)
- Mean confidence (top probability): live $live_mean, training $train_mean; PSI $psi (alert above $psi_alert)"""
)
VERSIONS = Template(
    """
## Model versions (canary comparison on the same window and feedback)

| model version | decisions | with feedback | accuracy | under-routing | over-routing | escalation \
| cost vs all-frontier |
|---|---:|---:|---:|---:|---:|---:|---:|
$rows$canary_note"""
)
VERSION_ROW = Template(
    "| `$version` | $decisions | $with_feedback | $accuracy | $under | $over | $escalation | $cost |"
)
CANARY_NOTE = """

The canary split is decided by a hash of the request id, so both versions see the same kind of traffic; \
compare their rows directly, and wait for a few hundred labeled decisions each before promoting."""
RESCORED = Template(
    """
## Models re-scored on the same labeled requests

Each model classified the same stored prompts that have feedback (upward rule with its own q).

| model version | labeled | accuracy | under-routing | over-routing | escalation | cost vs all-frontier |
|---|---:|---:|---:|---:|---:|---:|
$rows"""
)
RESCORED_ROW = Template("| `$version` | $labeled | $accuracy | $under | $over | $escalation | $cost |")
PLOTS = Template(
    """
## Plots

$images"""
)


def _matrix_table(matrix: list[list[int]], tiers: Sequence[str], column_label: str) -> str:
    lines = [
        f"| outcome \\ {column_label} | " + " | ".join(tiers) + " | total |",
        "|---|" + "---:|" * (len(tiers) + 1),
    ]
    for tier, row in zip(tiers, matrix, strict=True):
        lines.append(f"| **{tier}** | " + " | ".join(str(v) for v in row) + f" | {sum(row)} |")
    return "\n".join(lines)


def _percent_cells(mix: dict[str, float], tiers: Sequence[str]) -> str:
    return " | ".join(percent(mix.get(t, 0.0)) for t in tiers)


def render_drift(drift: dict[str, Any], tiers: Sequence[str]) -> str:
    if drift["reference_split"] is None:
        return NO_DRIFT
    return DRIFT.substitute(
        split=drift["reference_split"],
        reference_n=drift["reference_n"],
        tier_header=" | ".join(tiers),
        tier_alignment="---:|" * len(tiers),
        predicted_live=" | ".join(percent(drift["predicted_mix_live"][t]) for t in tiers),
        predicted_train=_percent_cells(drift["predicted_mix_train"], tiers),
        routed_live=_percent_cells(drift["routed_mix_live"], tiers),
        routed_train=_percent_cells(drift["routed_mix_train"], tiers),
        tvd=f"{drift['tvd_predicted_mix']:.3f}",
        tvd_alert=DRIFT_TVD_ALERT,
        live_mean=f"{drift['confidence_live_mean']:.3f}",
        train_mean=f"{drift['confidence_train_mean']:.3f}",
        psi=f"{drift['confidence_psi']:.3f}",
        psi_alert=DRIFT_PSI_ALERT,
    )


def _model_cells(version: str, v: dict[str, Any]) -> dict[str, str]:
    return {
        "version": version,
        "accuracy": percent(v["accuracy_predicted"]),
        "under": percent(v["under_routing"]),
        "over": percent(v["over_routing"]),
        "escalation": percent(v["escalation_rate"]),
        "cost": percent(v["cost_ratio"]),
    }


def render_versions(versions: dict[str, dict[str, Any]]) -> str:
    """The canary comparison ('' with no decisions at all)."""
    if not versions:
        return ""
    rows = [
        VERSION_ROW.substitute(
            _model_cells(version, v), decisions=v["decisions"], with_feedback=v["with_feedback"]
        )
        for version, v in versions.items()
    ]
    return VERSIONS.substitute(rows="\n".join(rows), canary_note=CANARY_NOTE if len(versions) > 1 else "")


def render_rescored(rescored: dict[str, dict[str, Any]] | None) -> str:
    """The models re-scored on the same labeled requests ('' when none was asked for)."""
    if not rescored:
        return ""
    rows = [
        RESCORED_ROW.substitute(_model_cells(version, v), labeled=v["labeled"])
        for version, v in rescored.items()
    ]
    return RESCORED.substitute(rows="\n".join(rows))


def render_spend_rows(spend: dict[str, Any]) -> str:
    return "".join(
        SPEND_ROW.substitute(
            tier=tier,
            requests=entry["requests"],
            input_tokens=entry["input_tokens"],
            cost_usd=f"{entry['cost_usd']:.4f}",
        )
        for tier, entry in spend["per_tier"].items()
    )


def render_body(report: dict[str, Any]) -> str:
    """The report's fixed part: volumes, confusion, routing errors, spend and drift."""
    tiers = report["tiers"]
    quality, spend, drift = report["quality"], report["spend"], report["drift"]
    estimated = spend["estimated_token_counts"]
    return REPORT.substitute(
        window=f"{report['since'] or 'the beginning'} to {report['until'] or 'now'}",
        decisions=report["decisions"],
        with_feedback=report["with_feedback"],
        feedback_unplaceable=report["feedback_unplaceable"],
        predicted_matrix=_matrix_table(quality["confusion_predicted"], tiers, "predicted"),
        accuracy=percent(quality["accuracy_predicted"]),
        labeled=quality["labeled"],
        recalls=", ".join(f"{t} {percent(v)}" for t, v in quality["recall_predicted"].items()),
        routed_matrix=_matrix_table(quality["confusion_routed"], tiers, "served"),
        under_routing=percent(quality["under_routing"]),
        under_routing_count=quality["under_routing_count"],
        over_routing=percent(quality["over_routing"]),
        over_routing_count=quality["over_routing_count"],
        routed_labeled=quality["routed_labeled"],
        escalation_rate=percent(report["escalation_rate"]),
        escalations=report["escalations"],
        classifier_unavailable_rate=percent(report["classifier_unavailable_rate"]),
        reasons=", ".join(f"{k} {v}" for k, v in report["reasons"].items()) or "none",
        spend_rows=render_spend_rows(spend),
        routed_usd=f"{spend['routed_usd']:.4f}",
        frontier_tier=spend["frontier_tier"],
        all_frontier_usd=f"{spend['all_frontier_usd']:.4f}",
        cost_ratio=percent(spend["cost_ratio"]),
        savings_usd=f"{spend['savings_usd']:.4f}",
        estimate_note=(
            ESTIMATE_NOTE.substitute(count=estimated, chars_per_token=CHARS_PER_TOKEN_ESTIMATE)
            if estimated
            else ""
        ),
        drift=render_drift(drift, tiers),
        alerts="".join(f"\n- **Alert:** {a}" for a in drift["alerts"]),
    )


def render_markdown(report: dict[str, Any], plots: Sequence[str] = ()) -> str:
    """The whole report.md; `plots` are the PNG paths written beside it."""
    parts = [
        render_body(report),
        render_versions(report["versions"]),
        render_rescored(report.get("rescored")),
        "\n".join(render_shadow(report.get("shadow"))),
        "\n".join(render_cascade(report.get("cascade"))),
        "\n".join(render_segments(report.get("segments"))),
        PLOTS.substitute(images="\n".join(f"![{Path(p).stem}]({Path(p).name})" for p in plots))
        if plots
        else "",
    ]
    return "\n".join(part for part in parts if part) + "\n"
