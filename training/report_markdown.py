"""report.md of a model folder, rendered from the templates below.

Each template is the literal shape of one part of the report (`string.Template`, `$name` fields, so
markdown pipes need no escaping); the functions only format measured numbers into the fields and
repeat row templates over splits, tiers, models and sources.
"""

from __future__ import annotations

from string import Template
from typing import Any

from tierwise.core.escalation import describe_q
from tierwise.core.scoring import percent
from tierwise.training.estimator import render_markdown as render_estimator
from tierwise.training.invariance import render_markdown as render_invariance
from tierwise.training.labels import TIERS
from tierwise.training.within_source import LOSO_SCORES, SCORES
from tierwise.training.within_source_markdown import within_source_markdown

SPLIT_TITLES = {
    "val": "val (calibration split)",
    "test": "test (random split of training sources)",
    "heldout": "held-out sources (never trained or calibrated on)",
    "non_english": "non-English requests (never trained on)",
}
DETAILED_SPLITS = ("test", "heldout", "non_english")  # a section each; val only chooses T and q

HEADER = Template(
    """# tierwise model report: `$name`

Base model $base_model ($package $package_version); data hash `$data_hash`; code `$commit`; fine-tuned \
in $train_minutes min on $device (whole `make train` pipeline $pipeline_minutes min). Every number below \
is computed by `make train` (training/assessment.py) from the splits of `make data`.

## What this model has not seen

- Held-out sources, never used in training or calibration: $heldout_sources. The `heldout` figures are \
the honest estimate for traffic unlike the training benchmarks.
- Languages other than $train_languages: the base encoder is English-only; the `non_english` figures \
measure what happens to them.
- Real production traffic: apart from ~400 English OpenAssistant prompts, training data are public \
benchmarks (exams, math, code, trivia), bare or wrapped by the training wrappers \
(`data/wrappers/train.yaml`), labeled by model outcomes mapped to today's price classes ($tier_classes). \
Retrain on your own labeled traffic (`make data USER_DATA=...`) before trusting the tier mix on your workload.

## Verdict against the baselines

$verdict
$sections"""
)
CALIBRATION = Template(
    """## Calibration and escalation

- Temperature T = $temperature, fitted on `val` (allowed-set NLL $nll_before -> $nll_after).
- Most likely tier: argmax(log P + offsets), tier offsets $tier_offsets (fast / balanced / frontier), chosen \
for macro-F1 on `val` bare and under the training wrappers; zeros are the plain argmax.
- Upward rule: route to the lowest tier t with P(true tier <= t) >= q, never below the most likely tier; \
q = $q, the cheapest q whose under-routing on `val` is at most $target_under_routing.
- Export: ONNX parity max |dlogit| = $parity (tolerance 1e-4); BERT fusion $fusion. int8 gate (argmax \
agreement with fp32 >= $min_agreement on test and macro-F1 drop <= $max_f1_drop point; fp32 macro-F1 \
$macro_f1_fp32): $trials$kept

| split | n | ECE top-1 | ECE top-1, single-label rows | ECE of served confidence | under-routing before \
| under-routing after | over-routing after | routed cost / always-frontier |
|---|---:|---|---|---|---:|---:|---:|---:|
$split_rows

ECE columns read before -> after temperature scaling. Top-1: confidence of the predicted tier against \
'the predicted tier is allowed' (a row allowing two tiers is easier to get right than its top-1 confidence \
says, so the single-label column is the cleaner reading). Served confidence: P(true tier <= predicted \
tier), what `/classify` returns, against 'the predicted tier suffices'. The temperature minimises the \
allowed-set NLL on `val`; when T is close to 1 the fine-tuned model was already near-calibrated and ECE \
moves by noise-level amounts either way.

Reference tier: a row labeled with a set of allowed tiers counts as correct when the prediction is in the \
set; otherwise its reference is the allowed tier nearest the prediction. Under-routing = sent to a tier \
cheaper than every allowed tier; over-routing = dearer than every allowed tier. Costs use the prices in \
serving/tierwise/core/policy.yaml and the prompt's token count.

![cost versus quality](cost_quality.png)
"""
)
GATE_TRIAL = Template("$graph graph $agreement agreement, macro-F1 $macro_f1, $outcome")
INT8_KEPT = Template(". Kept: int8 ($graph graph, $megabytes MB).")
INT8_REJECTED = Template(". **int8 rejected by the gate: fp32 kept** ($megabytes MB).")
SPLIT_ROW = Template(
    "| $split | $n | $ece | $ece_single | $ece_served | $under_before | $under_after | $over_after | $cost |"
)
SPLIT_SECTION = Template(
    """## $title

$metrics_table

Per tier (most likely tier, before escalation):

$per_tier_table

![confusion counts](confusion_$split.png) ![confusion normalized](confusion_${split}_normalized.png) \
![reliability](reliability_$split.png)

Per source:

$source_table
"""
)
METRICS_ROW = Template("| $model | $macro_f1 | $recalls | $under | $over | $cost |")
PER_TIER_ROW = Template("| $tier | $precision | $recall | $f1 | $support |")
SOURCE_ROW = Template("| $source | $n | $accuracy | $under_before | $under_after | $over_after | $mix |")


def metrics_table(res: dict[str, Any]) -> list[str]:
    lines = [
        "| model | macro-F1 | "
        + " | ".join(f"recall {t}" for t in TIERS)
        + " | under-routing | over-routing | cost vs frontier |",
        "|---|---:|" + "---:|" * (len(TIERS) + 3),
    ]
    rows = [
        ("tierwise (most likely tier)", res["before"], None),
        ("tierwise (after escalation)", res["after"], res["cost"]),
    ]
    rows += [(name, m, res["baseline_costs"][name]) for name, m in res["baselines"].items()]
    for name, m, cost in rows:
        lines.append(
            METRICS_ROW.substitute(
                model=name,
                macro_f1=f"{m['macro_f1']:.3f}",
                recalls=" | ".join(f"{m['per_tier'][t]['recall']:.3f}" for t in TIERS),
                under=percent(m["under_routing"]),
                over=percent(m["over_routing"]),
                cost=f"{cost['cost_ratio']:.3f}" if cost else "-",
            )
        )
    return lines


def per_tier_table(m: dict[str, Any]) -> list[str]:
    lines = ["| tier | precision | recall | F1 | support |", "|---|---:|---:|---:|---:|"]
    for t in TIERS:
        v = m["per_tier"][t]
        lines.append(
            PER_TIER_ROW.substitute(
                tier=t,
                precision=f"{v['precision']:.3f}",
                recall=f"{v['recall']:.3f}",
                f1=f"{v['f1']:.3f}",
                support=v["support"],
            )
        )
    return lines


def source_table(rows: list[dict]) -> list[str]:
    lines = [
        "| source | n | accuracy (most likely tier) | under-routing before | under-routing after | over-routing after |"
        " mix after (fast/balanced/frontier) |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        lines.append(
            SOURCE_ROW.substitute(
                source=r["source"],
                n=r["n"],
                accuracy=f"{r['accuracy']:.3f}",
                under_before=percent(r["under_routing_before"]),
                under_after=percent(r["under_routing_after"]),
                over_after=percent(r["over_routing_after"]),
                mix="/".join(f"{100 * r['tier_mix_after'][t]:.0f}" for t in TIERS),
            )
        )
    return lines


def verdict(evaluation: dict[str, Any]) -> list[str]:
    """Say plainly whether the model beats every baseline on macro-F1, split by split."""
    lines = []
    for split in DETAILED_SPLITS:
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


def render_header(manifest: dict[str, Any], evaluation: dict[str, Any]) -> str:
    """Provenance, what the model has not seen, the verdict, the invariance and estimator sections."""
    data, base = manifest["data"], manifest["base_model"]
    sections = []
    if "invariance" in evaluation:
        sections.append(render_invariance(evaluation["invariance"]))
    if "estimator" in evaluation:
        sections.append(render_estimator(evaluation["estimator"]))
    if "within_source" in evaluation:
        sections.append(within_source_markdown(evaluation["within_source"], SCORES, LOSO_SCORES))
    return HEADER.substitute(
        name=manifest["name"],
        base_model=base["name"],
        package=base["package"],
        package_version=base["package_version"],
        data_hash=manifest["data_hash"][:16],
        commit=manifest["git_commit"][:12],
        train_minutes=f"{manifest.get('train_seconds', 0) / 60:.1f}",
        device=manifest.get("train_device", "CPU"),
        pipeline_minutes=f"{manifest.get('pipeline_seconds', 0) / 60:.1f}",
        heldout_sources=", ".join(data["heldout_sources"]) or "none",
        train_languages=", ".join(data["train_languages"]),
        tier_classes="; ".join(f"{t}: {c}" for t, c in manifest.get("tier_classes", {}).items()),
        verdict="".join(f"{line}\n" for line in verdict(evaluation)),
        sections="".join(f"{section}\n" for section in sections),
    )


def _gate_outcome(export: dict[str, Any]) -> tuple[str, str]:
    """The int8 gate's trials, and which graph was kept."""
    gate = export["int8_gate"]
    trials = "; ".join(
        GATE_TRIAL.substitute(
            graph=t["graph"],
            agreement=percent(t["argmax_agreement"]),
            macro_f1=f"{t['macro_f1_int8']:.3f}",
            outcome="passed" if t["passed"] else "failed",
        )
        for t in gate.get("trials", [])
    )
    if gate["passed"]:
        kept = INT8_KEPT.substitute(
            graph=export.get("int8_graph"), megabytes=f"{export['int8_bytes'] / 1e6:.1f}"
        )
    else:
        kept = INT8_REJECTED.substitute(megabytes=f"{export['fp32_bytes'] / 1e6:.1f}")
    return trials, kept


def split_row(split: str, res: dict[str, Any]) -> str:
    return SPLIT_ROW.substitute(
        split=split,
        n=res["n"],
        ece=f"{res['ece_before']:.3f} -> {res['ece_after']:.3f}",
        ece_single=f"{res['ece_single_label_before']:.3f} -> {res['ece_single_label_after']:.3f}",
        ece_served=f"{res['ece_sufficiency_before']:.3f} -> {res['ece_sufficiency_after']:.3f}",
        under_before=percent(res["before"]["under_routing"]),
        under_after=percent(res["after"]["under_routing"]),
        over_after=percent(res["after"]["over_routing"]),
        cost=f"{res['cost']['cost_ratio']:.3f}",
    )


def render_calibration(manifest: dict[str, Any], evaluation: dict[str, Any]) -> str:
    """Temperature, q, the export and int8 gate, and the per-split calibration and routing table."""
    export = manifest["export"]
    gate = export["int8_gate"]
    trials, kept = _gate_outcome(export)
    return CALIBRATION.substitute(
        temperature=f"{evaluation['temperature']:.3f}",
        nll_before=f"{manifest['metrics']['val_nll_before']:.4f}",
        nll_after=f"{manifest['metrics']['val_nll_after']:.4f}",
        q=describe_q(evaluation["q"]),
        tier_offsets=" / ".join(f"{o:+.2f}" for o in evaluation.get("tier_offsets") or [0.0, 0.0, 0.0]),
        target_under_routing=percent(manifest["escalation"]["target_under_routing"]),
        parity=f"{export['parity_max_abs_logit_diff']:.2e}",
        fusion="on" if export["fused"] else "off",
        min_agreement=percent(gate["min_agreement"]),
        max_f1_drop=f"{100 * gate['max_f1_drop']:.0f}",
        macro_f1_fp32=f"{gate['macro_f1_fp32']:.3f}",
        trials=trials,
        kept=kept,
        split_rows="\n".join(split_row(split, res) for split, res in evaluation["splits"].items()),
    )


def render_split(split: str, res: dict[str, Any]) -> str:
    """One detailed split: model and baselines, per tier, the plots, per source."""
    return SPLIT_SECTION.substitute(
        title=SPLIT_TITLES[split],
        split=split,
        metrics_table="\n".join(metrics_table(res)),
        per_tier_table="\n".join(per_tier_table(res["before"])),
        source_table="\n".join(source_table(res["per_source"])),
    )


def render_report(manifest: dict[str, Any], evaluation: dict[str, Any]) -> str:
    """The whole report.md (the plots it links are drawn by tierwise.training.report)."""
    splits = [
        render_split(split, evaluation["splits"][split])
        for split in DETAILED_SPLITS
        if evaluation["splits"].get(split)
    ]
    parts = [render_header(manifest, evaluation) + render_calibration(manifest, evaluation), *splits]
    return "\n".join(parts) + "\n"
