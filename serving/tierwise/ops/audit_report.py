"""The traffic audit's report: tier mix, request sizes and what routing would save, from the totals.

`summarize` turns `AuditTotals` into the JSON summary (costs through `tierwise.core.scoring`, the same
prices as every other report); `write_audit` writes `audit.json`, `audit.md` and, unless turned off,
two plots into the output folder.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from tierwise.core.policy import Policy
from tierwise.core.scoring import tier_cost_usd
from tierwise.ops.audit_totals import TOKEN_BIN_EDGES, AuditTotals

DAYS_PER_MONTH = 30.0


def token_quantile(bins: Mapping[int, int], q: float) -> str:
    """The token-size bin holding quantile q, e.g. '<= 512'."""
    total = sum(bins.values())
    if not total:
        return "n/a"
    seen = 0
    for index in sorted(bins):
        seen += bins[index]
        if seen >= q * total:
            return (
                f"<= {TOKEN_BIN_EDGES[index]}" if index < len(TOKEN_BIN_EDGES) else f"> {TOKEN_BIN_EDGES[-1]}"
            )
    return "n/a"


def tier_mix(totals: AuditTotals, policy: Policy) -> dict[str, dict[str, Any]]:
    """Requests, share, input tokens and cost per served tier (the private tier included)."""
    tiers = [t.name for t in policy.tiers] + ([policy.private_tier.name] if policy.private_tier else [])
    per_tier = {}
    for name in tiers:
        requests = totals.routed.get(name, 0)
        tokens = totals.input_tokens.get(name, 0)
        per_tier[name] = {
            "requests": requests,
            "share": requests / totals.requests if totals.requests else 0.0,
            "input_tokens": tokens,
            "cost_usd": tier_cost_usd(policy, name, tokens, requests),
        }
    return per_tier


def size_figures(totals: AuditTotals) -> dict[str, Any]:
    """Input tokens: total, mean, histogram and quantile bins."""
    all_tokens = sum(totals.input_tokens.values())
    return {
        "input_tokens": all_tokens,
        "mean_input_tokens": all_tokens / totals.requests if totals.requests else 0.0,
        "token_histogram": {
            (f"< {TOKEN_BIN_EDGES[i]}" if i < len(TOKEN_BIN_EDGES) else f">= {TOKEN_BIN_EDGES[-1]}"): c
            for i, c in sorted(totals.token_bins.items())
        },
        "token_p50": token_quantile(totals.token_bins, 0.5),
        "token_p90": token_quantile(totals.token_bins, 0.9),
        "token_p99": token_quantile(totals.token_bins, 0.99),
    }


def summarize(totals: AuditTotals, policy: Policy, period_days: float | None = None) -> dict[str, Any]:
    """Tier mix, sizes, cost all-frontier vs routed and projected savings, from the totals."""
    top = policy.tiers[-1].name
    per_tier = tier_mix(totals, policy)
    routed_usd = sum(entry["cost_usd"] for entry in per_tier.values())
    sizes = size_figures(totals)
    frontier_usd = tier_cost_usd(policy, top, sizes["input_tokens"], totals.requests)
    savings = frontier_usd - routed_usd
    summary: dict[str, Any] = {
        "requests": totals.requests,
        "unreadable": totals.unreadable,
        "errors": [list(e) for e in totals.errors],
        "tier_mix": per_tier,
        "predicted_mix": {t: totals.predicted.get(t, 0) for t in policy.tier_names},
        "escalated": totals.escalated,
        "reasons": dict(sorted(totals.reasons.items())),
        **sizes,
        "all_frontier_usd": frontier_usd,
        "routed_usd": routed_usd,
        "savings_usd": savings,
        "savings_share": savings / frontier_usd if frontier_usd else 0.0,
        "savings_per_million_requests_usd": savings / totals.requests * 1e6 if totals.requests else 0.0,
        "frontier_tier": top,
        "expected_output_tokens": policy.expected_output_tokens,
    }
    if period_days:
        summary["period_days"] = period_days
        summary["projected_monthly_savings_usd"] = savings / period_days * DAYS_PER_MONTH
    return summary


def _run_line(summary: dict[str, Any], meta: dict[str, Any]) -> str:
    ray_start = (
        f", of which Ray start-up {meta['ray_init_seconds']:.1f} s" if meta.get("ray_init_seconds") else ""
    )
    return (
        f"Logs: {', '.join(meta['logs'])}. Model `{meta['model_version']}`, policy `{meta['policy']}`, "
        f"engine {meta['engine']}: {summary['requests']} requests in {meta['seconds']:.1f} s "
        f"({meta['requests_per_second']:.0f} requests/s{ray_start}); "
        f"{summary['unreadable']} unreadable row(s) skipped."
    )


def _savings_section(summary: dict[str, Any]) -> list[str]:
    lines = [
        "## What routing would save",
        "",
        f"- All to {summary['frontier_tier']}: **{summary['all_frontier_usd']:.2f} USD**",
        f"- Routed by tierwise: **{summary['routed_usd']:.2f} USD**",
        f"- Savings: **{summary['savings_usd']:.2f} USD ({100 * summary['savings_share']:.1f}%)**, "
        f"{summary['savings_per_million_requests_usd']:.0f} USD per million requests",
    ]
    if "projected_monthly_savings_usd" in summary:
        lines.append(
            f"- Projected: **{summary['projected_monthly_savings_usd']:.2f} USD per 30 days** "
            f"(the logs cover {summary['period_days']:g} days)"
        )
    return [
        *lines,
        "",
        f"Costs use the policy's list prices, each request's input tokens and {summary['expected_output_tokens']} "
        "expected output tokens (completions are not known at routing time).",
    ]


def _mix_section(summary: dict[str, Any]) -> list[str]:
    reasons = ", ".join(f"{k} {v}" for k, v in summary["reasons"].items()) or "none"
    return [
        "## Tier mix",
        "",
        "| tier | requests | share | input tokens | cost (USD) |",
        "|---|---:|---:|---:|---:|",
        *(
            f"| {tier} | {entry['requests']} | {100 * entry['share']:.1f}% | {entry['input_tokens']} | "
            f"{entry['cost_usd']:.4f} |"
            for tier, entry in summary["tier_mix"].items()
        ),
        "",
        f"Escalated above the classifier's most likely tier: {summary['escalated']}; reasons: {reasons}.",
    ]


def _size_section(summary: dict[str, Any]) -> list[str]:
    return [
        "## Request sizes (input tokens)",
        "",
        f"Mean {summary['mean_input_tokens']:.0f} tokens; median {summary['token_p50']}, p90 "
        f"{summary['token_p90']}, p99 {summary['token_p99']}.",
        "",
        "| size | requests |",
        "|---|---:|",
        *(f"| {size} | {count} |" for size, count in summary["token_histogram"].items()),
    ]


def render_audit_markdown(summary: dict[str, Any], meta: dict[str, Any], plots: Sequence[str] = ()) -> str:
    lines = ["# tierwise traffic audit", "", _run_line(summary, meta), ""]
    lines += [*_savings_section(summary), "", *_mix_section(summary), "", *_size_section(summary)]
    if summary["errors"]:
        lines += [
            "",
            "## Unreadable rows (first ones)",
            "",
            *(f"- {where}: {msg}" for where, msg in summary["errors"]),
        ]
    if plots:
        lines += ["", "## Plots", "", *(f"![{Path(p).stem}]({Path(p).name})" for p in plots)]
    return "\n".join(lines) + "\n"


def plot_audit(summary: dict[str, Any], out_dir: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    mix = summary["tier_mix"]
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    axes[0].bar(list(mix), [e["requests"] for e in mix.values()])
    axes[0].set_title("tier mix (requests)")
    axes[1].bar(
        ["all " + summary["frontier_tier"], "routed"],
        [summary["all_frontier_usd"], summary["routed_usd"]],
        color=["tab:red", "tab:green"],
    )
    axes[1].set_title(f"cost (USD): saves {100 * summary['savings_share']:.1f}%")
    fig.tight_layout()
    paths.append(out_dir / "audit_mix_cost.png")
    fig.savefig(paths[-1], dpi=90)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(7, 3.5))
    histogram = summary["token_histogram"]
    ax.bar(list(histogram), list(histogram.values()))
    ax.set_title("request size (input tokens)")
    ax.tick_params(axis="x", rotation=45)
    fig.tight_layout()
    paths.append(out_dir / "audit_sizes.png")
    fig.savefig(paths[-1], dpi=90)
    plt.close(fig)
    return paths


def write_audit(summary: dict[str, Any], meta: dict[str, Any], out_dir: Path, plots: bool = True) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    plot_paths = [str(p) for p in plot_audit(summary, out_dir)] if plots else []
    (out_dir / "audit.json").write_text(json.dumps({"summary": summary, "meta": meta}, indent=1) + "\n")
    path = out_dir / "audit.md"
    path.write_text(render_audit_markdown(summary, meta, plot_paths), encoding="utf-8")
    return path
