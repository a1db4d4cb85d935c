"""`make invariance`: does a request keep its tier when it arrives wrapped the way apps send it?

    python -m tierwise.training.invariance --model models/default            # table on stdout, files in runs/
    python -m tierwise.training.invariance --model models/mine --rows 200     # fewer rows per split, faster

A seeded sample of each evaluation split (val, test, held-out sources) is scored bare and under every
wrapper condition of the evaluation-only library (`data/wrappers/eval.yaml`, never trained on): system
prompts of many apps and lengths, format rules, harness templates, histories, tool-using agents, RAG,
`developer` roles with content parts, follow-ups. Per split and condition it reports the tier flip
rate (the routed tier differs from the bare request's), the tier mix, macro-F1, under-routing after
escalation and the ranking quality (AUC) of P(tier > fast) against "fast does not suffice". The
prompt-length and TF-IDF baselines are scored on the same wrapped requests, reading every word of
them as a naive router would. `make train` puts the same section in the model report; its wrapper
targets are lines of the promotion gate (training/gate.py).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import random
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.metrics import roc_auc_score
from tierwise.core.classifier import TierClassifier
from tierwise.core.escalation import EscalationQ, TierOffsets, most_likely_tier, route_upward
from tierwise.core.request_text import ClassifierInput, request_input
from tierwise.core.scoring import percent
from tierwise.training import paths
from tierwise.training.assessment import fitted_baselines
from tierwise.training.baselines import Predictor
from tierwise.training.build_dataset import row_input
from tierwise.training.evaluation import allowed_bounds, classification_metrics
from tierwise.training.wrappers import CONDITIONS, WrapperLibrary

log = logging.getLogger("tierwise.invariance")

INVARIANCE_SPLITS = ("val", "test", "heldout")
COMPARED_BASELINES = ("prompt-length", "tfidf-logreg")
TARGETS = {"flip_rate": 0.10, "fast_share_gap_long_system": 0.05, "under_routing_after_test": 0.05}


def sample_rows(rows: list[dict], n: int, seed: int) -> list[dict]:
    """A seeded sample of at most n rows, chosen by a hash of the row id (stable as rows are added)."""
    if len(rows) <= n:
        return rows
    key = lambda r: hashlib.sha256(f"{seed}:{r['id']}".encode()).hexdigest()  # noqa: E731
    return sorted(rows, key=key)[:n]


def wrapped_inputs(
    rows: list[dict], library: WrapperLibrary, condition: str, seed: int
) -> list[ClassifierInput]:
    """Each row under `condition`; the wrapper a row gets depends only on (seed, condition, row id)."""
    return [
        request_input(library.wrap(r["text"], condition, random.Random(f"{seed}:{condition}:{r['id']}")))
        for r in rows
    ]


def auc_or_none(labels: np.ndarray, scores: np.ndarray) -> float | None:
    """ROC AUC of `scores` against 0/1 `labels`; None when one class is absent."""
    positives = int(np.count_nonzero(labels))
    return float(roc_auc_score(labels, scores)) if 0 < positives < len(labels) else None


def ranking_auc(probs: np.ndarray, low: np.ndarray) -> float | None:
    """AUC of P(tier > fast) against 'fast does not suffice'; None when one class is absent."""
    return auc_or_none(low > 0, 1.0 - probs[:, 0])


def condition_metrics(
    probs: np.ndarray,
    chosen: np.ndarray,
    plain_chosen: np.ndarray,
    low: np.ndarray,
    high: np.ndarray,
    offsets: TierOffsets = None,
) -> dict[str, Any]:
    """probs (N, K) calibrated; chosen (N,) tiers after escalation; plain_chosen the bare requests'.
    Macro-F1 is that of the most likely tier (with the model's tier offsets), before escalation."""
    before = classification_metrics(most_likely_tier(probs, offsets), low, high)
    after = classification_metrics(chosen, low, high)
    return {
        "n": int(len(chosen)),
        "flip_rate": float(np.mean(chosen != plain_chosen)),
        "tier_mix": after["tier_mix"],
        "macro_f1": before["macro_f1"],
        "under_routing_after": after["under_routing"],
        "over_routing_after": after["over_routing"],
        "auc_needs_more_than_fast": ranking_auc(probs, low),
    }


def baseline_f1(baselines: dict[str, Predictor], rows: list[dict], counts: np.ndarray) -> dict[str, float]:
    low, high = allowed_bounds(rows)
    return {
        name: classification_metrics(baselines[name](rows, counts), low, high)["macro_f1"]
        for name in COMPARED_BASELINES
    }


@dataclass(frozen=True)
class Routed:
    """One shape of a split's rows through the classifier: what it read, its calibrated
    probabilities (N, K), full token counts and routed tiers (N,) after escalation."""

    inputs: list[ClassifierInput]
    probs: np.ndarray
    counts: list[int]
    chosen: np.ndarray


def route_rows(
    classifier: TierClassifier, rows: list[dict], library: WrapperLibrary, q: EscalationQ, seed: int
) -> tuple[Routed, dict[str, Routed]]:
    """The rows bare, and under every evaluation-only wrapper condition, routed with the model's
    q and tier offsets."""

    def routed(inputs: list[ClassifierInput]) -> Routed:
        probs, counts = classifier.predict_proba(inputs)
        return Routed(inputs, probs, counts, route_upward(probs, q, classifier.manifest.tier_offsets))

    plain = routed([row_input(r) for r in rows])
    return plain, {c: routed(wrapped_inputs(rows, library, c, seed)) for c in CONDITIONS}


def pooled_wrapped_metrics(
    plain: Routed, conditions: dict[str, Routed], low: np.ndarray, high: np.ndarray, offsets: TierOffsets
) -> dict[str, Any]:
    """`condition_metrics` over every wrapped condition at once, flips against the bare tiers."""
    n = len(conditions)
    return condition_metrics(
        np.concatenate([r.probs for r in conditions.values()]),
        np.concatenate([r.chosen for r in conditions.values()]),
        np.tile(plain.chosen, n),
        np.tile(low, n),
        np.tile(high, n),
        offsets,
    )


def evaluate_split(
    classifier: TierClassifier,
    rows: list[dict],
    library: WrapperLibrary,
    baselines: dict[str, Predictor],
    q: EscalationQ,
    seed: int,
) -> dict[str, Any]:
    low, high = allowed_bounds(rows)
    offsets = classifier.manifest.tier_offsets
    plain, conditions = route_rows(classifier, rows, library, q, seed)
    result: dict[str, Any] = {
        "plain": condition_metrics(plain.probs, plain.chosen, plain.chosen, low, high, offsets),
        "conditions": {
            c: condition_metrics(r.probs, r.chosen, plain.chosen, low, high, offsets)
            for c, r in conditions.items()
        },
    }
    result["wrapped"] = pooled_wrapped_metrics(plain, conditions, low, high, offsets)
    wrapped_rows = [
        {**row, "text": item.text}
        for r in conditions.values()
        for row, item in zip(rows, r.inputs, strict=True)
    ]
    wrapped_counts = [count for r in conditions.values() for count in r.counts]
    result["baselines"] = {
        "plain": baseline_f1(baselines, rows, np.array(plain.counts)),
        "wrapped": baseline_f1(baselines, wrapped_rows, np.array(wrapped_counts)),
    }
    return result


def target_checks(section: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's targets on the evaluation-only wrappers, each with its measured value."""
    test = section["splits"].get("test")
    checks: list[dict[str, Any]] = []
    if test is None:
        return checks
    fast_gap = abs(test["conditions"]["system_long"]["tier_mix"]["fast"] - test["plain"]["tier_mix"]["fast"])
    checks.append(
        {
            "target": "tier flip rate, test, wrapped <= 10%",
            "value": test["wrapped"]["flip_rate"],
            "met": test["wrapped"]["flip_rate"] <= TARGETS["flip_rate"],
        }
    )
    checks.append(
        {
            "target": "fast share, long system prompt vs bare, within 5 points (test)",
            "value": fast_gap,
            "met": fast_gap <= TARGETS["fast_share_gap_long_system"],
        }
    )
    checks.append(
        {
            "target": "under-routing after escalation, test, wrapped <= 5%",
            "value": test["wrapped"]["under_routing_after"],
            "met": test["wrapped"]["under_routing_after"] <= TARGETS["under_routing_after_test"],
        }
    )
    return checks


def evaluate_invariance(
    classifier: TierClassifier,
    splits: dict[str, list[dict]],
    baselines: dict[str, Predictor],
    rows_per_split: int,
    seed: int,
) -> dict[str, Any]:
    library = WrapperLibrary.load("eval")
    q = classifier.manifest.escalation_q
    section: dict[str, Any] = {"rows_per_split": rows_per_split, "conditions": list(CONDITIONS), "splits": {}}
    for split in INVARIANCE_SPLITS:
        rows = sample_rows(splits.get(split) or [], rows_per_split, seed)
        if rows:
            log.info("invariance: %s, %d rows x %d conditions", split, len(rows), len(CONDITIONS))
            section["splits"][split] = evaluate_split(classifier, rows, library, baselines, q, seed)
    section["targets"] = target_checks(section)
    return section


def pct(value: float | None) -> str:
    return "n/a" if value is None else percent(value)


def num(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def metrics_row(name: str, m: dict[str, Any]) -> str:
    mix = m["tier_mix"]
    return (
        f"| {name} | {m['n']} | {pct(m['flip_rate'])} | {pct(mix['fast'])} / {pct(mix['balanced'])} / "
        f"{pct(mix['frontier'])} | {num(m['macro_f1'])} | {pct(m['under_routing_after'])} | "
        f"{num(m['auc_needs_more_than_fast'])} |"
    )


def render_markdown(section: dict[str, Any], title: str = "Wrapper invariance") -> str:
    lines = [
        f"## {title}",
        "",
        f"Each split: {section['rows_per_split']} seeded rows (or all), bare and under each evaluation-only "
        "wrapper condition (`data/wrappers/eval.yaml`, never trained on). Flip: the routed tier (after "
        "escalation) differs from the bare request's. Mix: routed fast / balanced / frontier. Macro-F1 of "
        "the most likely tier (argmax with the model's tier offsets); under-routing after escalation; "
        "AUC of P(tier > fast) against 'fast does not suffice'.",
        "",
    ]
    for split, res in section["splits"].items():
        lines += [
            f"### {split}",
            "",
            "| condition | n | flip | mix f/b/F | macro-F1 | under-routing | AUC |",
            "|---|---:|---:|---|---:|---:|---:|",
            metrics_row("bare", res["plain"]),
            metrics_row("**all wrapped**", res["wrapped"]),
            *(metrics_row(c, m) for c, m in res["conditions"].items()),
            "",
            "| baseline macro-F1 | bare | wrapped |",
            "|---|---:|---:|",
            *(
                f"| {name} | {num(res['baselines']['plain'][name])} | {num(res['baselines']['wrapped'][name])} |"
                for name in res["baselines"]["plain"]
            ),
            "",
        ]
    if section.get("targets"):
        lines += ["Wrapper targets (lines of the promotion gate, training/gate.py):", ""]
        lines += ["| target | measured | met |", "|---|---:|---|"]
        lines += [
            f"| {t['target']} | {pct(t['value'])} | {'yes' if t['met'] else 'no'} |"
            for t in section["targets"]
        ]
    return "\n".join(lines) + "\n"


def read_split(path: Path) -> list[dict]:
    """The rows of one JSONL file `make data` wrote."""
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: run `make data` first (or pass --data-dir).")
    with open(path, encoding="utf-8") as f:  # not splitlines(): U+2028 in a JSON string ends no line
        return [json.loads(line) for line in f if line.strip()]


def read_splits(data_dir: Path) -> dict[str, list[dict]]:
    return {split: read_split(data_dir / f"{split}.jsonl") for split in ("train", *INVARIANCE_SPLITS)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", type=Path, default=None, help="model folder (default models/default)")
    parser.add_argument("--data-dir", type=Path, default=None, help="splits from `make data`")
    parser.add_argument("--rows", type=int, default=400, help="rows per split (seeded sample)")
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--out-dir", type=Path, default=None, help="default runs/invariance")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    model_dir = args.model or paths.models_dir() / "default"
    try:
        classifier = TierClassifier(model_dir)
        splits = read_splits(args.data_dir or paths.processed_dir())
        baselines = fitted_baselines(classifier, splits["train"], args.seed)
        section = evaluate_invariance(classifier, splits, baselines, args.rows, args.seed)
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    markdown = render_markdown(section, f"Wrapper invariance: {classifier.version}")
    out_dir = args.out_dir or paths.runs_dir() / "invariance"
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"{model_dir.name}.md").write_text(markdown, encoding="utf-8")
    (out_dir / f"{model_dir.name}.json").write_text(json.dumps(section, indent=1), encoding="utf-8")
    print(markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
