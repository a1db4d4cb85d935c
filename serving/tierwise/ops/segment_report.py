"""The segments section of `tierwise report`: traffic, judged quality, cost and the controller's setting
per segment (a decision's `segment`: its route, else an automatic segment such as `auto-07`).

Per segment with decisions in the report window:

- requests, and judged: the decisions with feedback (their latest feedback, as in the rest of the
  report);
- under-routing with its 95% Wilson interval: a shadow verdict that judged every tier below the top
  (`tier_verdicts` in its evidence) counts the verdict at the served tier; any other feedback counts
  the served tier below the outcome's lowest allowed tier (`low_tier`). A request served at the top
  tier is never under-routed. A judged decision neither rule can place (e.g. served on the private
  tier) is left out of the rate, which is why the cell shows its count out of the placed ones;
- the per-segment controller's current setting when the policy has a `segment_control` section
  (tierwise.evidence.segment_control): recomputed here as a worker would, from the decision log's
  evidence in the controller's own window (ending now, not at the report's end) and the serving
  model's q: status, the q per tier boundary (or "top only"), its bound and the segment's alpha;
- the tier mix, and the segment's share of the window's estimated routed cost (the report's spend
  estimate: policy prices, expected output tokens), so the shares and the unsegmented rest sum to 1.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from tierwise.core.policy import Policy
from tierwise.core.scoring import CHARS_PER_TOKEN_ESTIMATE, percent, rate, tier_cost_usd
from tierwise.core.segment_guard import SegmentEvidence, SegmentState, choose_setting
from tierwise.evidence.decision_log import DecisionRecord, LabeledDecision
from tierwise.evidence.segment_control import (
    TIER_VERDICTS,
    SegmentControlError,
    load_segment_control,
    policy_tier_costs,
    segment_evidence,
)
from tierwise.evidence.segment_evidence import judged_in_segments
from tierwise.evidence.shadow import wilson_interval

NO_SETTING = "-"


def markdown_cell(name: str) -> str:
    """A caller-chosen name (a route) inside a code span of a table cell: no backtick or pipe left to
    break the table."""
    return name.replace("`", "'").replace("|", "/")


def request_tokens(decision: DecisionRecord) -> int:
    """Input tokens of a request as the report's spend counts them (tierwise.ops.feedback_report's
    rule, repeated here: feedback_report renders through this module)."""
    if decision.token_count is not None:
        return int(decision.token_count)
    return math.ceil(decision.text_chars / CHARS_PER_TOKEN_ESTIMATE)


def under_routed(row: LabeledDecision, tiers: Sequence[str]) -> bool | None:
    """Whether a judged decision was served below the tier it needed; None without feedback, or when
    the feedback cannot place the served tier."""
    feedback, served = row.feedback, row.decision.tier
    if feedback is None:
        return None
    if served == tiers[-1]:
        return False  # nothing is above the top tier
    verdicts = (feedback.evidence or {}).get(TIER_VERDICTS)
    if isinstance(verdicts, Mapping) and served in verdicts:
        return not bool(verdicts[served])
    if served not in tiers or feedback.low_tier not in tiers:
        return None
    return tiers.index(served) < tiers.index(feedback.low_tier)


# ---------------------------------------------------------------------------------------------
# The controller's current setting per segment
# ---------------------------------------------------------------------------------------------


def _unavailable(note: str) -> dict[str, Any]:
    return {"on": False, "note": note, "settings": {}}


def _setting(state: SegmentState, model_q: Any, n_tiers: int) -> dict[str, Any]:
    setting = state.setting
    return {
        "status": state.status,
        "setting": setting.label(),
        "top_only": setting.top_only,
        "q": None if setting.top_only else list(setting.thresholds(model_q, n_tiers)),
        "bound": state.bound,
        "estimate": state.estimate,
        "alpha": state.alpha,
        "evidence_judged": state.judged,
    }


def controller_settings(
    store: Any,
    policy_file: Path,
    model_dir: Path,
    policy: Policy,
    segments: Sequence[str],
    now: datetime | None = None,
) -> dict[str, Any]:
    """The setting the per-segment controller would route each of `segments` with now, from the
    decision log's evidence (`store`), the policy file's `segment_control` section and the model
    folder's q; {"on": False, "note": why} when the policy has no section or the model is not at hand."""
    from tierwise.core.model_folder import ModelFolderError, load_manifest

    try:
        config = load_segment_control(policy_file)
    except (SegmentControlError, OSError, ValueError) as err:
        return _unavailable(f"the policy's `segment_control` section cannot be read ({err})")
    if config is None:
        return _unavailable(
            f"the policy {policy_file} has no `segment_control` section, so no per-segment controller runs"
        )
    try:
        manifest = load_manifest(model_dir)
    except ModelFolderError as err:
        return _unavailable(
            f"the controller's q is the serving model's and no model folder is at hand ({err})"
        )
    tiers = policy.tier_names
    if tuple(manifest.tiers) != tiers:
        return _unavailable(
            f"the model folder {model_dir} predicts tiers {list(manifest.tiers)}, not the policy's "
            f"{list(tiers)}; pass --model with the folder that serves"
        )
    model_q = policy.base_q(manifest.escalation_q)
    now = now or datetime.now(UTC)
    rows = judged_in_segments(
        store, now - timedelta(hours=config.window_hours), config.max_judged, manifest.version
    )
    costs = policy_tier_costs(policy)
    evidence = segment_evidence(rows, tiers)
    settings = {}
    for segment in segments:
        state = choose_setting(
            segment,
            evidence.get(segment, SegmentEvidence.empty(len(tiers))),
            model_q,
            manifest.tier_offsets,
            config.guard,
            config.alpha_for(segment),
            costs,
        )
        settings[segment] = _setting(state, model_q, len(tiers))
    return {
        "on": True,
        "note": None,
        "as_of": now.isoformat(),
        "window_hours": config.window_hours,
        "confidence": config.guard.confidence,
        "model_q": list(model_q) if isinstance(model_q, tuple) else model_q,
        "settings": settings,
    }


def segments_in(rows: Sequence[LabeledDecision]) -> list[str]:
    """The distinct segments of the decisions, in first-seen order."""
    return list(dict.fromkeys(r.decision.segment for r in rows if r.decision.segment))


def segment_settings_from_files(
    store: Any, policy_file: Path, model_dir: Path, policy: Policy, rows: Sequence[LabeledDecision]
) -> dict[str, Any] | None:
    """controller_settings for the segments of `rows`; None when no decision has a segment."""
    segments = segments_in(rows)
    if not segments:
        return None
    return controller_settings(store, policy_file, model_dir, policy, segments)


# ---------------------------------------------------------------------------------------------
# The section
# ---------------------------------------------------------------------------------------------


def segment_summary(
    rows: Sequence[LabeledDecision], policy: Policy, controller: Mapping[str, Any] | None = None
) -> dict[str, Any] | None:
    """The section's numbers (None when no decision of the window has a segment). `controller` is
    controller_settings' answer; None: not computed (the setting columns show "-")."""
    tiers = list(policy.tier_names)
    order = [*tiers, *([policy.private_tier.name] if policy.private_tier is not None else [])]
    costs = [tier_cost_usd(policy, r.decision.tier, request_tokens(r.decision)) for r in rows]
    total_cost = sum(costs)
    grouped: dict[str, list[tuple[LabeledDecision, float]]] = {}
    for row, cost in zip(rows, costs, strict=True):
        if row.decision.segment:
            grouped.setdefault(row.decision.segment, []).append((row, cost))
    if not grouped:
        return None
    settings = controller.get("settings", {}) if controller else {}
    out: list[dict[str, Any]] = []
    for segment, members in grouped.items():
        judged = [r for r, _ in members if r.feedback is not None]
        placed = [u for u in (under_routed(r, tiers) for r in judged) if u is not None]
        failures = sum(placed)
        low, high = wilson_interval(failures, len(placed))
        served = Counter(r.decision.tier for r, _ in members)
        mix_order = [t for t in order if t in served] + sorted(t for t in served if t not in order)
        out.append(
            {
                "segment": segment,
                "requests": len(members),
                "judged": len(judged),
                "placed": len(placed),
                "under_routed": failures,
                "under_routing": rate(failures, len(placed)),
                "low": low,
                "high": high,
                "tier_mix": {t: rate(served[t], len(members)) for t in mix_order},
                "cost_usd": sum(c for _, c in members),
                "cost_share": rate(sum(c for _, c in members), total_cost),
                "setting": settings.get(segment),
            }
        )
    out.sort(key=lambda s: (-s["requests"], s["segment"]))
    unsegmented = [c for r, c in zip(rows, costs, strict=True) if not r.decision.segment]
    if controller is None:
        controller = _unavailable("the controller's settings were not computed for this report")
    return {
        "segments": out,
        "routed_usd": total_cost,
        "unsegmented": {"requests": len(unsegmented), "cost_share": rate(sum(unsegmented), total_cost)},
        "controller": {k: v for k, v in controller.items() if k != "settings"},
    }


# ---------------------------------------------------------------------------------------------
# Markdown
# ---------------------------------------------------------------------------------------------

HEADER = (
    "| segment | requests | judged | under-routed | 95% interval (Wilson) | setting | q per boundary "
    "| bound | alpha | tier mix | cost share |"
)
ALIGN = "|---|---:|---:|---:|---|---|---|---:|---:|---|---:|"


def _setting_cells(setting: Mapping[str, Any] | None) -> list[str]:
    if setting is None:
        return [NO_SETTING] * 4
    q = "top only" if setting["top_only"] else " / ".join(f"{v:.3f}" for v in setting["q"])
    bound = NO_SETTING if setting["bound"] is None else percent(setting["bound"])
    return [setting["status"], q, bound, percent(setting["alpha"])]


def _row(s: Mapping[str, Any]) -> str:
    under = f"**{percent(s['under_routing'])}** ({s['under_routed']}/{s['placed']})" if s["placed"] else "-"
    interval = f"{percent(s['low'])} - {percent(s['high'])}" if s["placed"] else "-"
    mix = ", ".join(f"{t} {percent(v)}" for t, v in s["tier_mix"].items())
    cells = [
        f"`{markdown_cell(s['segment'])}`",
        str(s["requests"]),
        str(s["judged"]),
        under,
        interval,
        *_setting_cells(s["setting"]),
        mix,
        percent(s["cost_share"]),
    ]
    return "| " + " | ".join(cells) + " |"


def render_segments(section: Mapping[str, Any] | None) -> list[str]:
    """The markdown lines of the section ([] when no decision of the window has a segment)."""
    if not section or not section["segments"]:
        return []
    controller = section["controller"]
    if controller["on"]:
        about = (
            f"Setting: the per-segment controller's, recomputed as of {controller['as_of']} from the judged "
            f"decisions of its own {controller['window_hours']:g}-hour window; bound: the one-sided "
            f"{percent(controller['confidence'])} upper bound on under-routing at that setting (none yet in "
            "cold start; 0 for top only, where nothing is routed lower)."
        )
    else:
        about = f"Setting columns are {NO_SETTING}: {controller['note']}."
    rest = section["unsegmented"]
    lines = [
        "",
        "## Segments",
        "",
        "Per segment (the route, else the automatic segment) of the window, most requests first. Judged: "
        "decisions with feedback. Under-routed: served below the tier the feedback or the shadow judge "
        "needed, out of the judged decisions that can be placed. Cost share: of the window's estimated "
        f"routed cost ({section['routed_usd']:.4f} USD).",
        "",
        about,
        "",
        HEADER,
        ALIGN,
        *(_row(s) for s in section["segments"]),
    ]
    if rest["requests"]:
        lines += [
            "",
            f"Decisions without a segment: {rest['requests']} ({percent(rest['cost_share'])} of the cost).",
        ]
    return lines
