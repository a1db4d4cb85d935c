"""The PNG plots of `tierwise report`: confusion matrices, drift against training, spend per tier.

matplotlib is imported when a plot is drawn (headless, Agg), so reading the report's numbers or its
markdown never needs it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tierwise.core.scoring import percent
from tierwise.ops.drift import CONFIDENCE_BINS


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _share(counts: list[int]) -> list[float]:
    total = sum(counts)
    return [c / total if total else 0.0 for c in counts]


def _saved(plt: Any, fig: Any, path: Path) -> Path:
    """Write the figure as a PNG and free it (pyplot keeps every open figure alive)."""
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def plot_confusion(report: dict[str, Any], path: Path) -> Path:
    """The classifier's confusion and the policy's routing errors, side by side."""
    plt = _pyplot()
    tiers = report["tiers"]
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
    return _saved(plt, fig, path)


def plot_drift(report: dict[str, Any], path: Path) -> Path:
    """Predicted tier mix and confidence histogram, live against the training split."""
    plt = _pyplot()
    tiers, drift = report["tiers"], report["drift"]
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
    axes[1].plot(centers, _share(drift["confidence_live_histogram"]), marker="o", label="live")
    if drift["reference_split"]:
        axes[1].plot(centers, _share(drift["confidence_train_histogram"]), marker="s", label="training")
    axes[1].set_xlabel("top probability")
    axes[1].set_title("confidence")
    axes[1].legend()
    return _saved(plt, fig, path)


def plot_spend(report: dict[str, Any], path: Path) -> Path:
    """Spend per served tier against the routed total and the all-frontier spend."""
    plt = _pyplot()
    spend = report["spend"]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    names = list(spend["per_tier"])
    ax.bar(names, [spend["per_tier"][n]["cost_usd"] for n in names], label="routed, per tier")
    ax.axhline(spend["all_frontier_usd"], color="red", linestyle="--", label=f"all {spend['frontier_tier']}")
    ax.axhline(spend["routed_usd"], color="green", linestyle=":", label="routed total")
    ax.set_ylabel("USD")
    ax.set_title(f"spend: {percent(spend['cost_ratio'])} of all-frontier")
    ax.legend()
    return _saved(plt, fig, path)


def plot_report(report: dict[str, Any], out_dir: Path) -> list[Path]:
    """confusion.png, drift.png and spend.png into `out_dir`."""
    return [
        plot_confusion(report, out_dir / "confusion.png"),
        plot_drift(report, out_dir / "drift.png"),
        plot_spend(report, out_dir / "spend.png"),
    ]
