"""The analyst report: PNG plots and one report.md tying them together, from measured metrics only.

The markdown comes from the templates of tierwise.training.report_markdown; this module draws the plots."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import matplotlib
from tierwise.core.escalation import EscalationQ, describe_q

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from tierwise.training.labels import TIERS  # noqa: E402
from tierwise.training.report_markdown import DETAILED_SPLITS, render_report  # noqa: E402


def plot_confusion(cm: list[list[float]], title: str, path: Path, normalized: bool) -> None:
    fig, ax = plt.subplots(figsize=(4.2, 3.6))
    data = np.array(cm, dtype=float)
    ax.imshow(data, cmap="Blues", vmin=0, vmax=1 if normalized else max(data.max(), 1))
    for i in range(len(TIERS)):
        for j in range(len(TIERS)):
            text = f"{data[i, j]:.2f}" if normalized else f"{int(data[i, j])}"
            ax.text(j, i, text, ha="center", va="center", color="black", fontsize=9)
    ax.set_xticks(range(len(TIERS)), TIERS)
    ax.set_yticks(range(len(TIERS)), TIERS)
    ax.set_xlabel("predicted tier")
    ax.set_ylabel("reference tier")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_reliability(before: list[dict], after: list[dict], path: Path, title: str) -> None:
    fig, ax = plt.subplots(figsize=(4.2, 4.0))
    ax.plot([0, 1], [0, 1], "--", color="grey", label="perfect calibration")
    for points, label in ((before, "before (T=1)"), (after, "after temperature scaling")):
        ax.plot([p["confidence"] for p in points], [p["accuracy"] for p in points], "o-", label=label)
    ax.set_xlabel("confidence of the predicted tier")
    ax.set_ylabel("share where the predicted tier is allowed")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_cost_curve(
    curves: dict[str, list[dict]], chosen: dict[str, tuple[float, float]], q: EscalationQ, path: Path
) -> None:
    """Each split's curve over one q for every boundary; the star is where the chosen q (one, or one
    per boundary) routes: (cost ratio, share not under-routed)."""
    fig, ax = plt.subplots(figsize=(5.0, 4.0))
    for split, points in curves.items():
        ax.plot([p["cost_ratio"] for p in points], [p["quality"] for p in points], "-", label=split)
        ax.plot(*chosen[split], "k*", markersize=10)
    ax.set_xlabel("cost relative to always-frontier")
    ax.set_ylabel("share of requests not under-routed")
    ax.set_title(f"cost versus quality over q (star: chosen q = {describe_q(q)})", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_splits(out: Path, evaluation: dict[str, Any]) -> None:
    """cost_quality.png, and the confusion and reliability plots of every detailed split."""
    shown = {s: r for s, r in evaluation["splits"].items() if s != "val"}
    plot_cost_curve(
        {s: r["cost_curve"] for s, r in shown.items()},
        {s: (r["cost"]["cost_ratio"], 1.0 - r["after"]["under_routing"]) for s, r in shown.items()},
        evaluation["q"],
        out / "cost_quality.png",
    )
    for split in DETAILED_SPLITS:
        res = evaluation["splits"].get(split)
        if not res:
            continue
        plot_confusion(res["before"]["confusion"], f"{split}: counts", out / f"confusion_{split}.png", False)
        plot_confusion(
            res["before"]["confusion_normalized"],
            f"{split}: row-normalized",
            out / f"confusion_{split}_normalized.png",
            True,
        )
        plot_reliability(
            res["reliability_before"],
            res["reliability_after"],
            out / f"reliability_{split}.png",
            f"{split}: reliability",
        )


def write_report(out: Path, manifest: dict[str, Any], evaluation: dict[str, Any]) -> Path:
    """metrics.json, the PNG plots and report.md (tierwise.training.report_markdown) into `out`."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(evaluation, indent=1) + "\n", encoding="utf-8")
    plot_splits(out, evaluation)
    path = out / "report.md"
    path.write_text(render_report(manifest, evaluation), encoding="utf-8")
    return path
