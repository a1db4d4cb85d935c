"""The within-source report as markdown (training/within_source.py computes it): per split and shape the
per-source table with its macro and gate-macro rows, the pooled row beside the source prior, the hard
rows per source group, and the grouped leave-source-out table."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tierwise.training.labels import TIERS


def num(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def interval(m: dict[str, Any]) -> str:
    return "-" if m["value"] is None else f"{m['value']:.3f} [{m['low']:.2f}, {m['high']:.2f}]"


def table_markdown(table: dict[str, Any], names: Sequence[str]) -> list[str]:
    """Per source with spread, the macro row with its interval, the pooled row with the source prior."""
    head = " | ".join(f"AUC {n}" for n in names) + " | " + " | ".join(f"ρ {n}" for n in names)
    lines = [
        f"| source | group | n | fast fails | difficulty | {head} |",
        "|---|---|---:|---:|---|" + "---:|" * 2 * len(names),
    ]
    for e in table["per_source"]:
        if all(v is None for v in (*e["auc"].values(), *e["spearman"].values())):
            continue
        cells = [num(e["auc"][n]) for n in names] + [num(e["spearman"][n]) for n in names]
        lines.append(
            f"| {e['source']} | {e['group']} | {e['n']} | {e['positives']} | {e['difficulty']} | {' | '.join(cells)} |"
        )
    macro = table["macro"]
    cells = [interval(macro["auc"][n]) for n in names] + [interval(macro["spearman"][n]) for n in names]
    counts = f"{macro['auc'][names[0]]['sources']} / {macro['spearman'][names[0]]['sources']} sources"
    lines.append(f"| **macro** | {counts} | | | | {' | '.join(cells)} |")
    if "gate_macro" in table:
        gate = table["gate_macro"]
        cells = [interval(gate[n]) for n in names] + ["" for _ in names]
        counts = f"{gate[names[0]]['sources']} sources"
        lines.append(
            f"| **gate macro** (no Winogrande, CommonsenseQA) | {counts} | | | | {' | '.join(cells)} |"
        )
    pooled = table["pooled_auc"]
    lines += [
        "",
        f"Pooled AUC over all {table['n']} rows (naming the source wins this one): "
        + ", ".join(f"{k} {num(v)}" for k, v in pooled.items())
        + ".",
    ]
    if table["no_spread"]:
        lines.append(
            "No spread (left out): "
            + ", ".join(f"{s['source']} ({s['n']})" for s in table["no_spread"])
            + "."
        )
    return lines


def hard_rows_markdown(hard: dict[str, Any]) -> list[str]:
    lines = [
        f"| group | n | routed fast / balanced / frontier | hard rows (P(fast fails) >= {hard['threshold']}) | hard to fast |",
        "|---|---:|---|---:|---:|",
    ]
    for group, g in hard["groups"].items():
        mix = " / ".join(f"{100 * g['tier_mix'][t]:.0f}%" for t in TIERS)
        share = (
            "-" if g["hard_fast_share"] is None else f"{g['hard_fast']} ({100 * g['hard_fast_share']:.0f}%)"
        )
        lines.append(f"| {group} | {g['n']} | {mix} | {g['hard']} | {share} |")
    lines.append(f"\nRouted to frontier outside math: {hard['frontier_outside_math']} rows.")
    return lines


def within_source_markdown(report: dict[str, Any], scores: Sequence[str], loso_scores: Sequence[str]) -> str:
    lines = [
        "## Within-source ranking",
        "",
        "Inside one source the source is constant, so these figures cannot be won by naming it. AUC of "
        "P(tier > fast) against 'fast does not suffice' (P(fast fails) >= 0.5 from the item-response "
        "fit, else the cheapest allowed tier); ρ: Spearman against the item difficulty (the fit's, else "
        f"the cheapest allowed tier). Sources with >= {report['min_rows']} rows and >= "
        f"{report['min_class_rows']} of each class (AUC) or non-constant difficulty (ρ); macro with a "
        f"bootstrap 95% interval ({report['bootstrap']} resamples within sources, seed {report['seed']}). "
        "Length and TF-IDF (logistic, fitted on `train`) read every word of the request. Wrapped: each "
        "row once under an evaluation-only wrapper. The source prior is constant within a source "
        "(AUC 0.5 there by construction) and shown pooled only.",
        "",
    ]
    for split, shapes in report["splits"].items():
        for shape, table in shapes.items():
            lines += [
                f"### {split}, {shape}",
                "",
                *table_markdown(table, scores),
                "",
                *hard_rows_markdown(table["hard_rows"]),
                "",
            ]
    if "leave_source_out" in report:
        lines += [*leave_source_out_markdown(report["leave_source_out"], loso_scores), ""]
    return "\n".join(lines)


def leave_source_out_markdown(section: dict[str, Any], names: Sequence[str]) -> list[str]:
    lines = [
        "### Grouped leave-source-out",
        "",
        "Each source group judged by cheap models fitted on the train rows of every other group: TF-IDF "
        "ridge on P(fast fails), a logistic head on the estimator's hashed n-grams; length needs no fit. "
        "Macro over the group's sources with spread (every split).",
        "",
        "| group | fit rows | judged rows | sources (AUC / ρ) | "
        + " | ".join(f"AUC {n}" for n in names)
        + " | "
        + " | ".join(f"ρ {n}" for n in names)
        + " |",
        "|---|---:|---:|---|" + "---:|" * 2 * len(names),
    ]
    for g in section["groups"]:
        if "skipped" in g:
            lines.append(f"| {g['group']} | {g['fit_rows']} | - | {g['skipped']} |" + " - |" * 2 * len(names))
            continue
        macro = g["macro"]
        cells = [interval(macro["auc"][n]) for n in names] + [interval(macro["spearman"][n]) for n in names]
        sources = f"{macro['auc'][names[0]]['sources']} / {macro['spearman'][names[0]]['sources']}"
        lines.append(f"| {g['group']} | {g['fit_rows']} | {g['n']} | {sources} | {' | '.join(cells)} |")
    return lines
