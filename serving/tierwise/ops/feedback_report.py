"""`tierwise report` and `tierwise export-feedback`: what production outcomes say about the routing.

`build_report` is pure (decision rows + policy + the model's training metrics -> a dict of numbers) so
it can be tested on a small known log; `write_report` renders it as markdown with PNG plots.

Outcome tiers follow the training evaluation's convention: an outcome allows a range of tiers
[low, high]; a prediction inside the range counts as right (its outcome tier is itself), one below
counts against `low` (under-routing), one above against `high` (over-routing).
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from tierwise.core.policy import Policy, TierConfig
from tierwise.ops.decision_log import DecisionRecord, LabeledDecision
from tierwise.ops.shadow_report import render_shadow

CONFIDENCE_BINS = 10
DRIFT_TVD_ALERT = 0.10  # total variation distance between tier mixes
DRIFT_PSI_ALERT = 0.20  # population stability index of the confidence histogram
CHARS_PER_TOKEN_ESTIMATE = 4
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


def tier_config(policy: Policy, name: str) -> TierConfig | None:
    for tier in policy.tiers:
        if tier.name == name:
            return tier
    if policy.private_tier is not None and policy.private_tier.name == name:
        return policy.private_tier
    return None


def request_tokens(decision: DecisionRecord) -> tuple[int, bool]:
    """Input tokens of a request, and whether they are an estimate (no classifier token count)."""
    if decision.token_count is not None:
        return int(decision.token_count), False
    return math.ceil(decision.text_chars / CHARS_PER_TOKEN_ESTIMATE), True


def request_cost(tier: TierConfig, tokens: int, expected_output_tokens: int) -> float:
    """USD for one request: its input tokens plus the policy's expected output tokens."""
    return (
        tokens * tier.input_price_per_million + expected_output_tokens * tier.output_price_per_million
    ) / 1e6


def outcome_index(chosen: int, low: int, high: int) -> int:
    """The outcome tier a choice is scored against: itself when allowed, else the nearest bound."""
    return min(max(chosen, low), high)


def confusion_matrix(pairs: Iterable[tuple[int, int]], size: int) -> list[list[int]]:
    """Counts with rows = outcome tier, columns = predicted (or routed) tier."""
    matrix = [[0] * size for _ in range(size)]
    for outcome, chosen in pairs:
        matrix[outcome][chosen] += 1
    return matrix


def _rate(part: int, whole: int) -> float:
    return part / whole if whole else 0.0


def _labeled_indices(row: LabeledDecision, tiers: Sequence[str]) -> tuple[int, int] | None:
    feedback = row.feedback
    if feedback is None or feedback.low_tier is None or feedback.high_tier is None:
        return None
    if feedback.low_tier not in tiers or feedback.high_tier not in tiers:
        return None
    return tiers.index(feedback.low_tier), tiers.index(feedback.high_tier)


def quality_summary(rows: Sequence[LabeledDecision], tiers: Sequence[str]) -> dict[str, Any]:
    """Confusion matrices and routing errors over the rows whose feedback can be placed on the tiers."""
    size = len(tiers)
    predicted_pairs: list[tuple[int, int]] = []
    routed_pairs: list[tuple[int, int]] = []
    under = over = routed_n = 0
    for row in rows:
        bounds = _labeled_indices(row, tiers)
        if bounds is None:
            continue
        low, high = bounds
        predicted = row.decision.predicted_tier
        if predicted in tiers:
            index = tiers.index(predicted)
            predicted_pairs.append((outcome_index(index, low, high), index))
        if row.decision.tier in tiers:
            served = tiers.index(row.decision.tier)
            routed_pairs.append((outcome_index(served, low, high), served))
            routed_n += 1
            under += served < low
            over += served > high
    predicted_matrix = confusion_matrix(predicted_pairs, size)
    correct = sum(predicted_matrix[i][i] for i in range(size))
    return {
        "labeled": len(predicted_pairs),
        "confusion_predicted": predicted_matrix,
        "accuracy_predicted": _rate(correct, len(predicted_pairs)),
        "recall_predicted": {
            t: _rate(predicted_matrix[i][i], sum(predicted_matrix[i])) for i, t in enumerate(tiers)
        },
        "routed_labeled": routed_n,
        "confusion_routed": confusion_matrix(routed_pairs, size),
        "under_routing": _rate(under, routed_n),
        "over_routing": _rate(over, routed_n),
        "under_routing_count": under,
        "over_routing_count": over,
    }


def spend_summary(rows: Sequence[LabeledDecision], policy: Policy) -> dict[str, Any]:
    """Spend per served tier with the policy's prices, against sending everything to the top tier."""
    top = policy.tiers[-1]
    out_tokens = policy.expected_output_tokens
    per_tier: dict[str, dict[str, Any]] = {}
    routed_total = frontier_total = 0.0
    estimated = 0
    for row in rows:
        decision = row.decision
        tokens, is_estimate = request_tokens(decision)
        estimated += is_estimate
        tier = tier_config(policy, decision.tier) or top
        cost = request_cost(tier, tokens, out_tokens)
        entry = per_tier.setdefault(decision.tier, {"requests": 0, "input_tokens": 0, "cost_usd": 0.0})
        entry["requests"] += 1
        entry["input_tokens"] += tokens
        entry["cost_usd"] += cost
        routed_total += cost
        frontier_total += request_cost(top, tokens, out_tokens)
    order = [t.name for t in policy.tiers] + ([policy.private_tier.name] if policy.private_tier else [])
    ordered = {name: per_tier[name] for name in order if name in per_tier}
    ordered.update({k: v for k, v in per_tier.items() if k not in ordered})
    return {
        "per_tier": ordered,
        "routed_usd": routed_total,
        "all_frontier_usd": frontier_total,
        "savings_usd": frontier_total - routed_total,
        "cost_ratio": _rate(routed_total, frontier_total) if frontier_total else 0.0,
        "estimated_token_counts": estimated,
        "frontier_tier": top.name,
    }


def confidence_histogram(values: Iterable[float], bins: int = CONFIDENCE_BINS) -> list[int]:
    """Counts of max-probability values in (k/bins, (k+1)/bins], as the training reliability curve bins them."""
    counts = [0] * bins
    for value in values:
        index = min(bins - 1, max(0, math.ceil(value * bins) - 1))
        counts[index] += 1
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


def load_training_metrics(model_dir: Path) -> dict[str, Any] | None:
    """`report/metrics.json` of a model folder (written by `make train`), or None."""
    path = Path(model_dir) / "report" / "metrics.json"
    if not path.is_file():
        return None
    return json.loads(path.read_text(encoding="utf-8"))


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
        "predicted_mix_live": {t: _rate(predicted[t], n_predicted) for t in tiers},
        "routed_mix_live": {t: _rate(routed[t], n_routed) for t in routed},
        "confidence_live_mean": _rate(sum(live_confidence), len(live_confidence)),
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
        index = min(CONFIDENCE_BINS - 1, max(0, math.ceil(entry["confidence"] * CONFIDENCE_BINS) - 1))
        train_hist[index] += int(entry["count"])
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
            "confidence_train_mean": _rate(weighted, sum(train_hist)),
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
            "escalation_rate": _rate(sum(r.decision.escalated for r in version_rows), len(version_rows)),
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
        "escalation_rate": _rate(escalated, len(rows)),
        "escalations": escalated,
        "reasons": dict(sorted(reasons.items())),
        "classifier_unavailable_rate": _rate(reasons.get("classifier_unavailable", 0), len(rows)),
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
    from dataclasses import replace

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
            "escalation_rate": _rate(sum(p.escalated for p in predictions), len(predictions)),
            "cost_ratio": spend_summary(rescored, policy)["cost_ratio"],
            **quality_summary(rescored, tiers),
        }
    return out


# ---------------------------------------------------------------------------------------------
# Rendering
# ---------------------------------------------------------------------------------------------


def _pct(value: float) -> str:
    return f"{100 * value:.1f}%"


def _matrix_table(matrix: list[list[int]], tiers: Sequence[str], column_label: str) -> list[str]:
    lines = [
        f"| outcome \\ {column_label} | " + " | ".join(tiers) + " | total |",
        "|---|" + "---:|" * (len(tiers) + 1),
    ]
    for tier, row in zip(tiers, matrix, strict=True):
        lines.append(f"| **{tier}** | " + " | ".join(str(v) for v in row) + f" | {sum(row)} |")
    return lines


def render_markdown(report: dict[str, Any], plots: Sequence[str] = ()) -> str:
    tiers = report["tiers"]
    quality, spend, drift = report["quality"], report["spend"], report["drift"]
    window = f"{report['since'] or 'the beginning'} to {report['until'] or 'now'}"
    lines = [
        "# tierwise routing report",
        "",
        f"Decisions from {window}: **{report['decisions']}**, with feedback: **{report['with_feedback']}** "
        f"({report['feedback_unplaceable']} outcome(s) that cannot be placed on the tiers, e.g. a failure on the "
        "top tier, are left out of the matrices).",
        "",
        "## Live confusion matrix (classifier's predicted tier vs outcome tier)",
        "",
        *_matrix_table(quality["confusion_predicted"], tiers, "predicted"),
        "",
        f"Accuracy {_pct(quality['accuracy_predicted'])} on {quality['labeled']} labeled decisions; recall "
        + ", ".join(f"{t} {_pct(v)}" for t, v in quality["recall_predicted"].items())
        + ".",
        "",
        "## Routing errors (tier served after the policy vs outcome)",
        "",
        *_matrix_table(quality["confusion_routed"], tiers, "served"),
        "",
        f"- Under-routing (served tier too weak): **{_pct(quality['under_routing'])}** "
        f"({quality['under_routing_count']} of {quality['routed_labeled']})",
        f"- Over-routing (a cheaper tier would have done): **{_pct(quality['over_routing'])}** "
        f"({quality['over_routing_count']} of {quality['routed_labeled']})",
        f"- Escalation rate (served above the predicted tier): **{_pct(report['escalation_rate'])}** "
        f"({report['escalations']} of {report['decisions']}); classifier unavailable "
        f"{_pct(report['classifier_unavailable_rate'])}",
        "- Reasons: " + (", ".join(f"{k} {v}" for k, v in report["reasons"].items()) or "none"),
        "",
        "## Spend per tier (policy prices, expected output tokens) vs all-frontier",
        "",
        "| tier | requests | input tokens | spend (USD) |",
        "|---|---:|---:|---:|",
    ]
    for tier, entry in spend["per_tier"].items():
        lines.append(f"| {tier} | {entry['requests']} | {entry['input_tokens']} | {entry['cost_usd']:.4f} |")
    lines += [
        f"| **routed total** | {report['decisions']} | | **{spend['routed_usd']:.4f}** |",
        f"| all {spend['frontier_tier']} | {report['decisions']} | | {spend['all_frontier_usd']:.4f} |",
        "",
        f"Routing costs **{_pct(spend['cost_ratio'])}** of sending everything to {spend['frontier_tier']} "
        f"(saves {spend['savings_usd']:.4f} USD)."
        + (
            f" {spend['estimated_token_counts']} request(s) had no token count (classifier unavailable); their "
            f"size is estimated at {CHARS_PER_TOKEN_ESTIMATE} characters per token."
            if spend["estimated_token_counts"]
            else ""
        ),
        "",
        "## Drift against the training data",
        "",
    ]
    if drift["reference_split"] is None:
        lines.append("No training metrics were found, so drift is not computed.")
    else:
        lines += [
            f"Reference: the model's `{drift['reference_split']}` split ({drift['reference_n']} prompts).",
            "",
            "| | " + " | ".join(tiers) + " |",
            "|---|" + "---:|" * len(tiers),
            "| predicted mix, live | "
            + " | ".join(_pct(drift["predicted_mix_live"][t]) for t in tiers)
            + " |",
            "| predicted mix, training | "
            + " | ".join(_pct(drift["predicted_mix_train"].get(t, 0.0)) for t in tiers)
            + " |",
            "| routed mix, live | "
            + " | ".join(_pct(drift["routed_mix_live"].get(t, 0.0)) for t in tiers)
            + " |",
            "| routed mix (upward rule), training | "
            + " | ".join(_pct(drift["routed_mix_train"].get(t, 0.0)) for t in tiers)
            + " |",
            "",
            f"- Predicted-mix shift (total variation): {drift['tvd_predicted_mix']:.3f} (alert above {DRIFT_TVD_ALERT})",
            f"- Mean confidence (top probability): live {drift['confidence_live_mean']:.3f}, training "
            f"{drift['confidence_train_mean']:.3f}; PSI {drift['confidence_psi']:.3f} (alert above {DRIFT_PSI_ALERT})",
        ]
    lines += ["", *(f"- **Alert:** {a}" for a in drift["alerts"])]
    if report["versions"]:
        lines += [
            "",
            "## Model versions (canary comparison on the same window and feedback)",
            "",
            "| model version | decisions | with feedback | accuracy | under-routing | over-routing "
            "| escalation | cost vs all-frontier |",
            "|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for version, v in report["versions"].items():
            lines.append(
                f"| `{version}` | {v['decisions']} | {v['with_feedback']} | {_pct(v['accuracy_predicted'])} | "
                f"{_pct(v['under_routing'])} | {_pct(v['over_routing'])} | {_pct(v['escalation_rate'])} | "
                f"{_pct(v['cost_ratio'])} |"
            )
        if len(report["versions"]) > 1:
            lines += [
                "",
                "The canary split is decided by a hash of the request id, so both versions see the same kind "
                "of traffic; compare their rows directly, and wait for a few hundred labeled decisions each "
                "before promoting.",
            ]
    if report.get("rescored"):
        lines += [
            "",
            "## Models re-scored on the same labeled requests",
            "",
            "Each model classified the same stored prompts that have feedback (upward rule with its own q).",
            "",
            "| model version | labeled | accuracy | under-routing | over-routing | escalation | cost vs all-frontier |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        for version, v in report["rescored"].items():
            lines.append(
                f"| `{version}` | {v['labeled']} | {_pct(v['accuracy_predicted'])} | {_pct(v['under_routing'])} | "
                f"{_pct(v['over_routing'])} | {_pct(v['escalation_rate'])} | {_pct(v['cost_ratio'])} |"
            )
    lines += render_shadow(report.get("shadow"))
    if plots:
        lines += ["", "## Plots", "", *(f"![{Path(p).stem}]({Path(p).name})" for p in plots)]
    return "\n".join(lines) + "\n"


def plot_report(report: dict[str, Any], out_dir: Path) -> list[Path]:
    """confusion.png, drift.png and spend.png (matplotlib, headless)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tiers = report["tiers"]
    paths: list[Path] = []

    fig, axes = plt.subplots(1, 2, figsize=(9, 4))
    for ax, key, label in (
        (axes[0], "confusion_predicted", "predicted tier"),
        (axes[1], "confusion_routed", "served tier"),
    ):
        matrix = report["quality"][key]
        ax.imshow(matrix, cmap="Blues")
        ax.set_xticks(range(len(tiers)), tiers)
        ax.set_yticks(range(len(tiers)), tiers)
        ax.set_xlabel(label)
        ax.set_ylabel("outcome tier")
        darkest = max((v for row in matrix for v in row), default=0)
        for i, row in enumerate(matrix):
            for j, value in enumerate(row):
                color = "white" if darkest and value > darkest / 2 else "black"
                ax.text(j, i, str(value), ha="center", va="center", color=color)
    axes[0].set_title("live confusion (classifier)")
    axes[1].set_title("routing errors (policy)")
    fig.tight_layout()
    paths.append(out_dir / "confusion.png")
    fig.savefig(paths[-1], dpi=90)
    plt.close(fig)

    drift = report["drift"]
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    x = range(len(tiers))
    axes[0].bar([i - 0.2 for i in x], [drift["predicted_mix_live"][t] for t in tiers], 0.4, label="live")
    if drift["reference_split"]:
        axes[0].bar(
            [i + 0.2 for i in x],
            [drift["predicted_mix_train"].get(t, 0) for t in tiers],
            0.4,
            label="training",
        )
    axes[0].set_xticks(list(x), tiers)
    axes[0].set_title("predicted tier mix")
    axes[0].legend()
    centers = [(k + 0.5) / CONFIDENCE_BINS for k in range(CONFIDENCE_BINS)]

    def share(counts: list[int]) -> list[float]:
        total = sum(counts)
        return [c / total if total else 0.0 for c in counts]

    axes[1].plot(centers, share(drift["confidence_live_histogram"]), marker="o", label="live")
    if drift["reference_split"]:
        axes[1].plot(centers, share(drift["confidence_train_histogram"]), marker="s", label="training")
    axes[1].set_xlabel("top probability")
    axes[1].set_title("confidence")
    axes[1].legend()
    fig.tight_layout()
    paths.append(out_dir / "drift.png")
    fig.savefig(paths[-1], dpi=90)
    plt.close(fig)

    spend = report["spend"]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    names = list(spend["per_tier"])
    ax.bar(names, [spend["per_tier"][n]["cost_usd"] for n in names], label="routed, per tier")
    ax.axhline(spend["all_frontier_usd"], color="red", linestyle="--", label=f"all {spend['frontier_tier']}")
    ax.axhline(spend["routed_usd"], color="green", linestyle=":", label="routed total")
    ax.set_ylabel("USD")
    ax.set_title(f"spend: {_pct(spend['cost_ratio'])} of all-frontier")
    ax.legend()
    fig.tight_layout()
    paths.append(out_dir / "spend.png")
    fig.savefig(paths[-1], dpi=90)
    plt.close(fig)
    return paths


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
