"""The figures of `make replay` (tools/replay.py): what a run produced, per 1,000-request window, per
source over the tail against alpha + the sampling allowance, the ceiling of the model, and the
headline; as markdown lines and plain dicts."""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tierwise.core.policy import Policy
from tierwise.core.scoring import tier_cost_usd

WINDOW = 1000
ALLOWANCE_Z = 1.645  # one-sided 95%: the sampling allowance of a segment's rate over n requests
MIN_TAIL_REQUESTS = 200  # a source is held to the target over the tail with at least this many
MIN_WINDOW_REQUESTS = 50  # the worst source of a window is chosen among sources with this many


@dataclass
class Outcome:
    source: str
    tier: str
    needed: int
    routed: int  # tier index; -1 for the private tier
    cost: float
    frontier_cost: float
    oracle_cost: float
    reasons: list[str]
    tokens: int = 1
    probabilities: tuple[float, ...] = ()  # the calibrated probabilities of the answer (public tiers)


@dataclass
class RunResult:
    name: str
    outcomes: list[Outcome] = field(default_factory=list)
    judged: int = 0
    shadow_counts: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    segments_seen: Counter[str] = field(default_factory=Counter)
    states: list[dict[str, Any]] = field(default_factory=list)  # the controller's, at the end


def under_routed(outcome: Outcome) -> bool:
    return 0 <= outcome.routed < outcome.needed


def summary(outcomes: Sequence[Outcome], tier_names: Sequence[str]) -> dict[str, Any]:
    n = len(outcomes)
    cost = sum(o.cost for o in outcomes)
    frontier = sum(o.frontier_cost for o in outcomes)
    oracle = sum(o.oracle_cost for o in outcomes)
    by_source: dict[str, list[Outcome]] = defaultdict(list)
    for o in outcomes:
        by_source[o.source].append(o)
    rates = {s: sum(map(under_routed, rows)) / len(rows) for s, rows in by_source.items()}
    eligible = {s: r for s, r in rates.items() if len(by_source[s]) >= MIN_WINDOW_REQUESTS}
    worst = max(eligible, key=lambda s: eligible[s]) if eligible else None
    mix = Counter(o.tier for o in outcomes)
    return {
        "requests": n,
        "under_routing": sum(map(under_routed, outcomes)) / n if n else 0.0,
        "worst_source": worst,
        "worst_under_routing": eligible[worst] if worst else 0.0,
        "cost_vs_frontier": cost / frontier if frontier else 0.0,
        "cost_vs_oracle": cost / oracle if oracle else 0.0,
        "savings_share_of_oracle": (frontier - cost) / (frontier - oracle) if frontier > oracle else 0.0,
        "mix": {t: mix.get(t, 0) / n for t in [*tier_names, *sorted(set(mix) - set(tier_names))]},
    }


def allowance(alpha: float, n: int) -> float:
    """The one-sided 95% sampling allowance of a rate at alpha measured on n requests."""
    return ALLOWANCE_Z * math.sqrt(alpha * (1 - alpha) / n)


def tail_table(outcomes: Sequence[Outcome], alpha: float) -> list[dict[str, Any]]:
    by_source: dict[str, list[Outcome]] = defaultdict(list)
    for o in outcomes:
        by_source[o.source].append(o)
    table = []
    for source, rows in sorted(by_source.items(), key=lambda item: -len(item[1])):
        rate = sum(map(under_routed, rows)) / len(rows)
        held = len(rows) >= MIN_TAIL_REQUESTS
        line = alpha + allowance(alpha, len(rows))
        table.append(
            {
                "source": source,
                "requests": len(rows),
                "under_routing": rate,
                "line": line,
                "held_to_target": held,
                "passed": (rate <= line) if held else None,
                "mix": dict(Counter(o.tier for o in rows)),
            }
        )
    return table


def pct(value: float) -> str:
    return f"{100 * value:.1f}%"


def render_run(result: RunResult, tier_names: Sequence[str], alpha: float, tail: int) -> list[str]:
    lines = [
        f"### Run `{result.name}`",
        "",
        f"{len(result.outcomes)} requests in {result.seconds:.0f} s; shadow verdicts stored: {result.judged} "
        f"(outcomes {dict(sorted(result.shadow_counts.items()))}); segments answered: {len(result.segments_seen)}",
        "",
        "| window | under-routing | worst source (>= 50 requests) | cost / all-top | cost / oracle | "
        "savings share of oracle | mix " + " / ".join(tier_names) + " |",
        "|---|---:|---|---:|---:|---:|---|",
    ]
    for start in range(0, len(result.outcomes), WINDOW):
        s = summary(result.outcomes[start : start + WINDOW], tier_names)
        mix = " / ".join(pct(s["mix"].get(t, 0.0)) for t in tier_names)
        lines.append(
            f"| {start + 1}-{start + s['requests']} | {pct(s['under_routing'])} | "
            f"{s['worst_source']} {pct(s['worst_under_routing'])} | {pct(s['cost_vs_frontier'])} | "
            f"{s['cost_vs_oracle']:.2f}x | {pct(s['savings_share_of_oracle'])} | {mix} |"
        )
    last = result.outcomes[-tail:]
    s = summary(last, tier_names)
    lines += [
        "",
        f"Last {len(last)} requests: under-routing {pct(s['under_routing'])}, cost {pct(s['cost_vs_frontier'])} "
        f"of all-top, savings {pct(s['savings_share_of_oracle'])} of the oracle's.",
        "",
        f"| source | requests | under-routing | line (alpha {pct(alpha)} + allowance) | held | mix |",
        "|---|---:|---:|---:|---|---|",
    ]
    for row in tail_table(last, alpha):
        held = "-" if row["passed"] is None else ("pass" if row["passed"] else "**FAIL**")
        mix = ", ".join(f"{t} {c}" for t, c in sorted(row["mix"].items()))
        lines.append(
            f"| {row['source']} | {row['requests']} | {pct(row['under_routing'])} | {pct(row['line'])} | "
            f"{held} | {mix} |"
        )
    if result.states:
        lines += [
            "",
            "The controller at the end (its 15 segments with the most verdicts):",
            "",
            "| segment | status | setting | judged | under-routing (corrected) | one-sided 95% bound |",
            "|---|---|---|---:|---:|---:|",
        ]
        for state in result.states[:15]:
            estimate = "-" if state["estimate"] is None else pct(state["estimate"])
            bound = "-" if state["bound"] is None else pct(state["bound"])
            lines.append(
                f"| {state['segment']} | {state['status']} | {state['setting']} | {state['judged']} | "
                f"{estimate} | {bound} |"
            )
    return [*lines, ""]


def ceiling(result: RunResult, policy: Policy, model_dir: Path, alpha: float, tail: int) -> dict[str, Any]:
    """What any controller of this model could reach at best: per source, the cheapest setting of the
    controller's path (or the model's own rule) whose *true* under-routing over the whole run is <= alpha,
    chosen knowing every label; applied to the last `tail` requests."""
    from tierwise.core.model_folder import load_manifest
    from tierwise.core.segment_guard import PATH, GuardSetting, setting_tiers

    manifest = load_manifest(model_dir)
    q, offsets = policy.base_q(manifest.escalation_q), manifest.tier_offsets
    tiers = policy.tier_names
    settings = [GuardSetting(delta=0.0, floor=True), *PATH]
    by_source: dict[str, list[int]] = defaultdict(list)
    for index, o in enumerate(result.outcomes):
        if o.routed >= 0 and o.probabilities:  # a private answer stays private under every setting
            by_source[o.source].append(index)
    routed = {i: o.routed for i, o in enumerate(result.outcomes)}
    for indices in by_source.values():
        rows = [result.outcomes[i] for i in indices]
        probs = np.asarray([o.probabilities for o in rows])
        needed = np.asarray([o.needed for o in rows])
        best: tuple[float, np.ndarray] | None = None
        for setting in settings:
            chosen = setting_tiers(setting, probs, q, offsets)
            if np.mean(chosen < needed) > alpha:
                continue
            cost = sum(tier_cost_usd(policy, tiers[t], o.tokens) for t, o in zip(chosen, rows, strict=True))
            if best is None or cost < best[0]:
                best = (cost, chosen)
        assert best is not None  # top_only is always within alpha
        routed.update({i: int(t) for i, t in zip(indices, best[1], strict=True)})
    start = len(result.outcomes) - tail
    last = [
        Outcome(
            o.source,
            tiers[routed[i]] if routed[i] >= 0 else o.tier,
            o.needed,
            routed[i],
            tier_cost_usd(policy, tiers[routed[i]], o.tokens) if routed[i] >= 0 else o.cost,
            o.frontier_cost,
            o.oracle_cost,
            [],
            o.tokens,
        )
        for i, o in enumerate(result.outcomes)
        if i >= start
    ]
    s = summary(last, tiers)
    held = [row for row in tail_table(last, alpha) if row["held_to_target"]]
    return {
        "savings_share_of_oracle": round(s["savings_share_of_oracle"], 4),
        "cost_vs_frontier": round(s["cost_vs_frontier"], 4),
        "worst_segment_under_routing": round(max(r["under_routing"] for r in held), 4) if held else None,
    }


def headline(result: RunResult, tier_names: Sequence[str], alpha: float, tail: int) -> dict[str, Any]:
    last = result.outcomes[-tail:]
    table = [row for row in tail_table(last, alpha) if row["held_to_target"]]
    worst = max(table, key=lambda row: row["under_routing"]) if table else None
    s = summary(last, tier_names)
    return {
        "worst_segment_under_routing": round(worst["under_routing"], 4) if worst else None,
        "worst_segment": worst["source"] if worst else None,
        "segments_held": len(table),
        "segments_passed": sum(bool(row["passed"]) for row in table),
        "under_routing": round(s["under_routing"], 4),
        "savings_share_of_oracle": round(s["savings_share_of_oracle"], 4),
        "cost_vs_frontier": round(s["cost_vs_frontier"], 4),
        "judged": result.judged,
        "seconds": round(result.seconds, 1),
    }
