"""The analyst report: PNG plots and one report.md tying them together, from measured metrics only."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from tierwise.training.estimator import render_markdown as render_estimator  # noqa: E402
from tierwise.training.invariance import render_markdown  # noqa: E402
from tierwise.training.labels import TIERS  # noqa: E402

SPLIT_TITLES = {
    "val": "val (calibration split)",
    "test": "test (random split of training sources)",
    "heldout": "held-out sources (never trained or calibrated on)",
    "non_english": "non-English requests (never trained on)",
}


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


def plot_cost_curve(curves: dict[str, list[dict]], q: float, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(5.0, 4.0))
    for split, points in curves.items():
        ax.plot([p["cost_ratio"] for p in points], [p["quality"] for p in points], "-", label=split)
        chosen = min(points, key=lambda p: abs(p["q"] - q))
        ax.plot(chosen["cost_ratio"], chosen["quality"], "k*", markersize=10)
    ax.set_xlabel("cost relative to always-frontier")
    ax.set_ylabel("share of requests not under-routed")
    ax.set_title(f"cost versus quality over q (star: chosen q = {q:.3f})", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def metrics_table(res: dict[str, Any]) -> list[str]:
    lines = [
        "| model | macro-F1 | "
        + " | ".join(f"recall {t}" for t in TIERS)
        + " | under-routing | over-routing | cost vs frontier |",
        "|---|---:|" + "---:|" * (len(TIERS) + 3),
    ]
    rows = [
        ("tierwise (argmax)", res["before"], None),
        ("tierwise (after escalation)", res["after"], res["cost"]),
    ]
    rows += [(name, m, res["baseline_costs"][name]) for name, m in res["baselines"].items()]
    for name, m, cost in rows:
        recalls = " | ".join(f"{m['per_tier'][t]['recall']:.3f}" for t in TIERS)
        cost_text = f"{cost['cost_ratio']:.3f}" if cost else "-"
        lines.append(
            f"| {name} | {m['macro_f1']:.3f} | {recalls} | {pct(m['under_routing'])} | "
            f"{pct(m['over_routing'])} | {cost_text} |"
        )
    return lines


def per_tier_table(m: dict[str, Any]) -> list[str]:
    lines = ["| tier | precision | recall | F1 | support |", "|---|---:|---:|---:|---:|"]
    for t in TIERS:
        v = m["per_tier"][t]
        lines.append(f"| {t} | {v['precision']:.3f} | {v['recall']:.3f} | {v['f1']:.3f} | {v['support']} |")
    return lines


def source_table(rows: list[dict]) -> list[str]:
    lines = [
        "| source | n | accuracy (argmax) | under-routing before | under-routing after | over-routing after |"
        " mix after (fast/balanced/frontier) |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        mix = "/".join(f"{100 * r['tier_mix_after'][t]:.0f}" for t in TIERS)
        lines.append(
            f"| {r['source']} | {r['n']} | {r['accuracy']:.3f} | {pct(r['under_routing_before'])} | "
            f"{pct(r['under_routing_after'])} | {pct(r['over_routing_after'])} | {mix} |"
        )
    return lines


def verdict(evaluation: dict[str, Any]) -> list[str]:
    """Say plainly whether the model beats every baseline on macro-F1, split by split."""
    lines = []
    for split in ("test", "heldout", "non_english"):
        res = evaluation["splits"].get(split)
        if not res:
            continue
        ours = res["before"]["macro_f1"]
        beaten = [n for n, m in res["baselines"].items() if m["macro_f1"] >= ours]
        if beaten:
            lines.append(
                f"- **{split}: the fine-tuned model does NOT beat every baseline on macro-F1** "
                f"({ours:.3f}; not beaten: {', '.join(beaten)})."
            )
        else:
            lines.append(
                f"- {split}: the fine-tuned model beats all four baselines on macro-F1 ({ours:.3f})."
            )
    return lines


def write_report(out: Path, manifest: dict[str, Any], evaluation: dict[str, Any]) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(evaluation, indent=1) + "\n", encoding="utf-8")
    q, temp = evaluation["q"], evaluation["temperature"]
    export = manifest["export"]
    gate = export["int8_gate"]
    data = manifest["data"]
    lines = [
        f"# tierwise model report: `{manifest['name']}`",
        "",
        f"Base model {manifest['base_model']['name']} ({manifest['base_model']['package']} "
        f"{manifest['base_model']['package_version']}); data hash `{manifest['data_hash'][:16]}`; code "
        f"`{manifest['git_commit'][:12]}`; fine-tuned in {manifest.get('train_seconds', 0) / 60:.1f} min "
        f"on {manifest.get('train_device', 'CPU')} "
        f"(whole `make train` pipeline {manifest.get('pipeline_seconds', 0) / 60:.1f} min). "
        "Every number below is computed by `make train` (training/assessment.py) from the splits of `make data`.",
        "",
        "## What this model has not seen",
        "",
        f"- Held-out sources, never used in training or calibration: {', '.join(data['heldout_sources']) or 'none'}. "
        "The `heldout` figures are the honest estimate for traffic unlike the training benchmarks.",
        f"- Languages other than {', '.join(data['train_languages'])}: the base encoder is English-only; "
        "the `non_english` figures measure what happens to them.",
        "- Real production traffic: apart from ~400 English OpenAssistant prompts, training data are public "
        "benchmarks (exams, math, code, trivia), bare or wrapped by the training wrappers "
        "(`data/wrappers/train.yaml`), labeled by model outcomes mapped to today's price classes "
        f"({'; '.join(f'{t}: {c}' for t, c in manifest.get('tier_classes', {}).items())}). Retrain on your "
        "own labeled traffic (`make data USER_DATA=...`) before trusting the tier mix on your workload.",
        "",
        "## Verdict against the baselines",
        "",
        *verdict(evaluation),
        "",
        *([render_markdown(evaluation["invariance"])] if "invariance" in evaluation else []),
        *([render_estimator(evaluation["estimator"])] if "estimator" in evaluation else []),
        "## Calibration and escalation",
        "",
        f"- Temperature T = {temp:.3f}, fitted on `val` (allowed-set NLL {manifest['metrics']['val_nll_before']:.4f}"
        f" -> {manifest['metrics']['val_nll_after']:.4f}).",
        f"- Upward rule: route to the lowest tier t with P(true tier <= t) >= q; q = {q:.4f}, the cheapest q "
        f"whose under-routing on `val` is at most {pct(manifest['escalation']['target_under_routing'])}.",
        f"- Export: ONNX parity max |dlogit| = {export['parity_max_abs_logit_diff']:.2e} (tolerance 1e-4); "
        f"BERT fusion {'on' if export['fused'] else 'off'}. int8 gate (argmax agreement with fp32 >= "
        f"{pct(gate['min_agreement'])} on test and macro-F1 drop <= {100 * gate['max_f1_drop']:.0f} point; fp32 "
        f"macro-F1 {gate['macro_f1_fp32']:.3f}): "
        + "; ".join(
            f"{t['graph']} graph {pct(t['argmax_agreement'])} agreement, macro-F1 {t['macro_f1_int8']:.3f}, "
            f"{'passed' if t['passed'] else 'failed'}"
            for t in gate.get("trials", [])
        )
        + (
            f". Kept: int8 ({export.get('int8_graph')} graph, {export['int8_bytes'] / 1e6:.1f} MB)."
            if gate["passed"]
            else f". **int8 rejected by the gate: fp32 kept** ({export['fp32_bytes'] / 1e6:.1f} MB)."
        ),
        "",
        "| split | n | ECE top-1 | ECE top-1, single-label rows | ECE of served confidence |"
        " under-routing before | under-routing after | over-routing after | routed cost / always-frontier |",
        "|---|---:|---|---|---|---:|---:|---:|---:|",
    ]
    for split, res in evaluation["splits"].items():
        lines.append(
            f"| {split} | {res['n']} | {res['ece_before']:.3f} -> {res['ece_after']:.3f} | "
            f"{res['ece_single_label_before']:.3f} -> {res['ece_single_label_after']:.3f} | "
            f"{res['ece_sufficiency_before']:.3f} -> {res['ece_sufficiency_after']:.3f} | "
            f"{pct(res['before']['under_routing'])} | {pct(res['after']['under_routing'])} | "
            f"{pct(res['after']['over_routing'])} | {res['cost']['cost_ratio']:.3f} |"
        )
    lines += [
        "",
        "ECE columns read before -> after temperature scaling. Top-1: confidence of the predicted tier "
        "against 'the predicted tier is allowed' (a row allowing two tiers is easier to get right than its "
        "top-1 confidence says, so the single-label column is the cleaner reading). Served confidence: "
        "P(true tier <= predicted tier), what `/classify` returns, against 'the predicted tier suffices'. "
        "The temperature minimises the allowed-set NLL on `val`; when T is close to 1 the fine-tuned "
        "model was already near-calibrated and ECE moves by noise-level amounts either way.",
        "",
        "Reference tier: a row labeled with a set of allowed tiers counts as correct when the "
        "prediction is in the set; otherwise its reference is the allowed tier nearest the prediction. "
        "Under-routing = sent to a tier cheaper than every allowed tier; over-routing = dearer than every "
        "allowed tier. Costs use the prices in serving/tierwise/core/policy.yaml and the prompt's token count.",
        "",
    ]
    plot_cost_curve(
        {s: r["cost_curve"] for s, r in evaluation["splits"].items() if s != "val"},
        q,
        out / "cost_quality.png",
    )
    lines += ["![cost versus quality](cost_quality.png)", ""]
    for split in ("test", "heldout", "non_english"):
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
        lines += [
            f"## {SPLIT_TITLES[split]}",
            "",
            *metrics_table(res),
            "",
            "Per tier (argmax, before escalation):",
            "",
            *per_tier_table(res["before"]),
            "",
            f"![confusion counts](confusion_{split}.png) ![confusion normalized](confusion_{split}_normalized.png)"
            f" ![reliability](reliability_{split}.png)",
            "",
            "Per source:",
            "",
            *source_table(res["per_source"]),
            "",
        ]
    path = out / "report.md"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path
