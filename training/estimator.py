"""Fit the cheap estimator the service answers from when the encoder cannot make its deadline.

    python -m tierwise.training.estimator --model models/candidate      # fit, calibrate, judge, write into the folder

`make train` runs this after the encoder is calibrated. The estimator (serving/tierwise/core/estimator.py: hashed
word 1-2 grams of the task, one linear layer) is fitted on the train split and its wrapped twins
(training wrappers; it reads only the task, so a system prompt cannot move it, but a format rule
inside the user turn can). Its temperature is fitted on out-of-source predictions: the train sources
are split into folds, each fold is scored by an estimator fitted on the other sources, and val rows
(in-source) are added. A bag of n-grams is sharp on sources it has seen and near-blind on new ones;
a temperature fitted on val alone would leave it over-confident exactly on the traffic it has not
seen. Its tier offsets are chosen on val (bare and wrapped by training wrappers) for macro-F1 among
those whose decisions cost within 5% of the encoder's routed tiers (an overloaded service should pay
what an unloaded one does, neither more nor less), then its escalation q is chosen like the
encoder's (`--q-on val`, the default): the cheapest q whose under-routing on val meets the target,
so under load it routes the way the encoder does unloaded. `--q-on out-of-source` chooses q on the
same rows as the temperature instead: safer on unseen sources, but it escalated most in-source
traffic (on the public data, test over-routing 6.6% -> 57.5%), so an overloaded service paid far
more than an unloaded one. It is judged on test and held-out sources, bare and under the
evaluation-only wrappers, beside the encoder: macro-F1, under-routing after escalation, and
agreement with the encoder's routed tier. Writes `estimator.npz` and the manifest's `estimator`
section.
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import random
import sys
from pathlib import Path
from typing import Any

import numpy as np
from scipy.sparse import csr_matrix
from sklearn.linear_model import LogisticRegression
from tierwise.core.classifier import TierClassifier
from tierwise.core.escalation import TierOffsets, most_likely_tier, route_upward
from tierwise.core.estimator import (
    DEFAULT_FEATURES,
    ESTIMATOR_FILE,
    Estimator,
    EstimatorSettings,
    hashed_features,
)
from tierwise.core.model_folder import MANIFEST_FILE
from tierwise.core.policy_file import load_policy
from tierwise.core.request_text import ClassifierInput, request_input
from tierwise.core.scoring import percent, score_routing
from tierwise.training import paths
from tierwise.training.assessment import allowed_matrix
from tierwise.training.build_dataset import row_input
from tierwise.training.calibration import TemperatureScaler
from tierwise.training.evaluation import TierPrices, allowed_bounds, classification_metrics, load_prices
from tierwise.training.invariance import read_splits, sample_rows, wrapped_inputs
from tierwise.training.labels import TIER_INDEX
from tierwise.training.thresholds import OFFSET_GRID, choose_q
from tierwise.training.wrappers import CONDITIONS, WrapperLibrary

log = logging.getLogger("tierwise.estimator")

REGULARIZATION_C = 4.0
SOURCE_FOLDS = 3
JUDGED_SPLITS = ("test", "heldout")
Q_CHOICES = ("val", "out-of-source")
COST_TOLERANCE = 0.05  # the estimator's routed cost on val, relative to the encoder's
CALIBRATION_ROWS = f"out-of-source train predictions ({SOURCE_FOLDS} source folds) + val"


def feature_matrix(inputs: list[ClassifierInput], n_features: int) -> csr_matrix:
    """(N, n_features) sparse, the rows serving computes for the same requests."""
    indptr, indices, values = [0], [], []
    for item in inputs:
        features = hashed_features(item, n_features)
        indices.extend(features.keys())
        values.extend(features.values())
        indptr.append(len(indices))
    return csr_matrix((values, indices, indptr), shape=(len(inputs), n_features), dtype=np.float64)


def bare_and_wrapped(rows: list[dict], rng: random.Random) -> tuple[list[ClassifierInput], list[dict]]:
    """Every row bare, then once wrapped by a training wrapper (its label unchanged). -> 2N inputs, rows"""
    library = WrapperLibrary.load("train")
    twins = [request_input(library.sample(r["text"], rng)) for r in rows]
    return [row_input(r) for r in rows] + twins, rows + rows


def training_inputs(train_rows: list[dict], seed: int) -> tuple[list[ClassifierInput], list[dict]]:
    """Every train row bare and once wrapped by a training wrapper (its label unchanged)."""
    return bare_and_wrapped(train_rows, random.Random(seed))


def fit_weights(
    inputs: list[ClassifierInput], rows: list[dict], n_features: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Class-balanced logistic regression; a row allowed several tiers counts once for each, weighted
    1/len. -> weights (n_features, K), bias (K,)"""
    x = feature_matrix(inputs, n_features)
    picks, labels, weights = [], [], []
    for i, r in enumerate(rows):
        for tier in r["allowed_tiers"]:
            picks.append(i)
            labels.append(TIER_INDEX[tier])
            weights.append(1.0 / len(r["allowed_tiers"]))
    model = LogisticRegression(C=REGULARIZATION_C, class_weight="balanced", max_iter=3000, random_state=seed)
    model.fit(x[picks], labels, sample_weight=np.array(weights))
    if list(model.classes_) != list(range(len(TIER_INDEX))):
        raise ValueError(f"train rows cover tiers {list(model.classes_)}; the estimator needs every tier.")
    return model.coef_.T.astype(np.float32), model.intercept_.astype(np.float64)


def out_of_source_logits(train_rows: list[dict], n_features: int, seed: int) -> tuple[np.ndarray, list[dict]]:
    """Logits of each train row (bare) from an estimator fitted without its source. -> (N, K), rows"""
    sources = sorted({r["source"] for r in train_rows})
    folds = [sources[i::SOURCE_FOLDS] for i in range(SOURCE_FOLDS)] if len(sources) >= SOURCE_FOLDS else []
    logits, scored = [], []
    for fold in folds:
        inside = [r for r in train_rows if r["source"] not in fold]
        held = [r for r in train_rows if r["source"] in fold]
        inputs, rows = training_inputs(inside, seed)
        weights, bias = fit_weights(inputs, rows, n_features, seed)
        fold_estimator = Estimator(weights, bias, EstimatorSettings(n_features, 1.0, 1.0))
        logits.append(fold_estimator.logits([row_input(r) for r in held]))
        scored += held
    return (np.concatenate(logits) if logits else np.zeros((0, len(TIER_INDEX)))), scored


def routed_metrics(
    probs: np.ndarray, q: float, rows: list[dict], offsets: TierOffsets = None
) -> dict[str, Any]:
    """Macro-F1 of the most likely tier, and the routed tiers' under-routing and mix, with the
    scorer's own tier offsets."""
    low, high = allowed_bounds(rows)
    chosen = route_upward(probs, q, offsets)
    after = classification_metrics(chosen, low, high)
    return {
        "n": len(rows),
        "macro_f1": classification_metrics(most_likely_tier(probs, offsets), low, high)["macro_f1"],
        "under_routing_after": after["under_routing"],
        "tier_mix": after["tier_mix"],
        "chosen": chosen,
    }


def val_inputs(val_rows: list[dict], seed: int) -> tuple[list[ClassifierInput], list[dict]]:
    """Val rows bare and once wrapped by a training wrapper: the offsets are chosen on rows shaped like
    traffic (long system prompts make the encoder's escalations dearer), never on evaluation wrappers."""
    return bare_and_wrapped(val_rows, random.Random(f"{seed}:val"))


def cost_matched_offsets(
    val_probs: np.ndarray,
    inputs: list[ClassifierInput],
    val_rows: list[dict],
    classifier: TierClassifier | None,
    prices: TierPrices,
    target_under_routing: float,
) -> tuple[np.ndarray, str]:
    """The estimator's tier offsets (K,), searched over every combination of `OFFSET_GRID`: the best
    macro-F1 against the labels of `val_rows` (estimator probabilities `val_probs` (N, K) of `inputs`)
    among the offsets whose decisions cost within `COST_TOLERANCE` of the encoder's routed tiers on
    the same inputs and meet the under-routing target, so an overloaded service pays what an unloaded
    one does: a cap alone let it buy macro-F1 by routing cheaper (0.73x the encoder's cost under load).
    (Most agreement with the encoder was tried: it never chose `balanced`, test macro-F1 0.58 vs 0.84.)
    When no offsets are within the band: the cost nearest the encoder's among those meeting the
    target. Ties keep offsets nearest 0. Without an encoder to price against: zeros (plain argmax).
    Returns the offsets and what they were chosen for."""
    k = val_probs.shape[-1]
    if classifier is None:
        return np.zeros(k), "none: no encoder to price against (plain argmax)"
    encoder_probs, counts = classifier.predict_proba(inputs)
    manifest = classifier.manifest
    encoder_tiers = route_upward(encoder_probs, manifest.escalation_q, manifest.tier_offsets)  # (N,)
    low, high = allowed_bounds(val_rows)
    counts = np.asarray(counts)
    tier_costs = np.stack([prices.request_cost(np.full(len(counts), t), counts) for t in range(k)], axis=1)
    rows = np.arange(len(counts))
    budget = tier_costs[rows, encoder_tiers].sum()
    best, best_key = np.zeros(k), None
    for combo in itertools.product(OFFSET_GRID, repeat=k - 1):
        offsets = np.array([0.0, *combo])
        chosen = most_likely_tier(val_probs, offsets)
        cost_gap = abs(tier_costs[rows, chosen].sum() / budget - 1.0) if budget > 0 else 0.0
        within = cost_gap <= COST_TOLERANCE + 1e-9
        meets_target = np.mean(chosen < low) <= target_under_routing
        macro_f1 = float(np.mean(score_routing(chosen, low, high, k).f1))
        key = (meets_target, within, macro_f1 if within else -cost_gap, -float(np.abs(offsets).sum()))
        if best_key is None or key > best_key:
            best, best_key = offsets, key
    band = f"within {COST_TOLERANCE:.0%} of the encoder's routed cost"
    if best_key is not None and not best_key[0]:
        return best, f"macro-F1 on val bare + wrapped (no offsets met the under-routing target {band})"
    if best_key is not None and not best_key[1]:
        return best, f"the cost nearest the encoder's on val bare + wrapped (none {band})"
    return best, f"macro-F1 on val bare + wrapped, {band} and within the under-routing target"


def judge_split(
    estimator: Estimator, classifier: TierClassifier | None, rows: list[dict], wrapped_rows: int, seed: int
) -> dict[str, Any]:
    """Bare and wrapped figures for one split; agreement with the encoder's routed tier (bare)."""
    q, offsets = estimator.escalation_q, estimator.tier_offsets
    bare = routed_metrics(estimator.predict_proba([row_input(r) for r in rows]), q, rows, offsets)
    result: dict[str, Any] = {"bare": bare}
    if classifier is not None:
        encoder_probs, _ = classifier.predict_proba([row_input(r) for r in rows])
        manifest = classifier.manifest
        encoder = routed_metrics(encoder_probs, manifest.escalation_q, rows, manifest.tier_offsets)
        result["encoder_bare"] = encoder
        result["agreement_with_encoder"] = float(np.mean(bare["chosen"] == encoder["chosen"]))
    sample = sample_rows(rows, wrapped_rows, seed)
    library = WrapperLibrary.load("eval")
    sample_plain = route_upward(estimator.predict_proba([row_input(r) for r in sample]), q, offsets)
    probs, flips = [], []
    for condition in CONDITIONS:
        condition_probs = estimator.predict_proba(wrapped_inputs(sample, library, condition, seed))
        probs.append(condition_probs)
        flips.append(route_upward(condition_probs, q, offsets) != sample_plain)
    wrapped = routed_metrics(np.concatenate(probs), q, sample * len(CONDITIONS), offsets)
    wrapped["flip_rate"] = float(np.mean(np.concatenate(flips)))
    result["wrapped"] = wrapped
    for shape in result.values():
        if isinstance(shape, dict):
            shape.pop("chosen", None)
    return result


def build_estimator(
    model_dir: Path,
    splits: dict[str, list[dict]],
    target_under_routing: float,
    seed: int,
    n_features: int = DEFAULT_FEATURES,
    wrapped_rows: int = 400,
    classifier: TierClassifier | None = None,
    q_on: str = "val",
    prices: TierPrices | None = None,
) -> dict[str, Any]:
    """Fit, calibrate and judge; write estimator.npz into model_dir; return the manifest section.
    `q_on`: "val" (like the encoder) or "out-of-source" (the temperature's rows)."""
    if q_on not in Q_CHOICES:
        raise ValueError(f"q_on must be one of {', '.join(Q_CHOICES)}, got {q_on!r}")
    inputs, rows = training_inputs(splits["train"], seed)
    log.info("estimator: fitting on %d rows (%d bare + wrapped twins)", len(inputs), len(splits["train"]))
    weights, bias = fit_weights(inputs, rows, n_features, seed)
    raw = Estimator(weights, bias, EstimatorSettings(n_features, 1.0, 1.0))
    log.info("estimator: %d source folds for out-of-source calibration", SOURCE_FOLDS)
    oos_logits, oos_rows = out_of_source_logits(splits["train"], n_features, seed)
    calibration_rows = oos_rows + splits["val"]
    offset_inputs, offset_rows = val_inputs(splits["val"], seed)  # val bare, then its wrapped twins
    offset_logits = raw.logits(offset_inputs)
    logits = np.concatenate([oos_logits, offset_logits[: len(splits["val"])]])
    scaler = TemperatureScaler().fit(logits, allowed_matrix(calibration_rows))
    offset_probs = scaler.transform(offset_logits)
    val_probs = offset_probs[: len(splits["val"])]
    prices = prices or load_prices(load_policy(paths.policy_file()))
    offsets, offsets_for = cost_matched_offsets(
        offset_probs, offset_inputs, offset_rows, classifier, prices, target_under_routing
    )
    log.info("estimator: tier offsets %s (%s)", offsets.round(2).tolist(), offsets_for)
    if q_on == "val":
        q = choose_q(val_probs, allowed_bounds(splits["val"])[0], target_under_routing, offsets)
    else:
        oos_probs = scaler.transform(logits)
        q = choose_q(oos_probs, allowed_bounds(calibration_rows)[0], target_under_routing, offsets)
    rounded = tuple(round(float(o), 2) for o in offsets)
    settings = EstimatorSettings(n_features, float(scaler.temperature_), q, rounded)
    estimator = Estimator(weights, bias, settings)
    np.savez_compressed(model_dir / ESTIMATOR_FILE, weights=weights, bias=bias)
    metrics = {
        split: judge_split(estimator, classifier, splits[split], wrapped_rows, seed)
        for split in JUDGED_SPLITS
        if splits.get(split)
    }
    return {
        "file": ESTIMATOR_FILE,
        "features": "CRC-32 hashed lower-cased word 1-2 grams + length bucket of the task; sublinear tf, L2",
        "n_features": n_features,
        "temperature": settings.temperature,
        "escalation": {
            "q": q,
            "target_under_routing": target_under_routing,
            "chosen_on": "val, like the encoder" if q_on == "val" else CALIBRATION_ROWS,
            "tier_offsets": list(rounded),
            "tier_offsets_chosen_for": offsets_for,
        },
        "temperature_fitted_on": CALIBRATION_ROWS,
        "trained_rows": len(inputs),
        "metrics": metrics,
    }


def render_markdown(section: dict[str, Any]) -> str:
    """The model report's estimator section: estimator beside the encoder, per split and shape."""
    escalation = section["escalation"]
    offsets = escalation.get("tier_offsets") or "none (plain argmax)"
    offsets_for = (
        f" for {escalation['tier_offsets_chosen_for']}" if "tier_offsets_chosen_for" in escalation else ""
    )
    lines = [
        "## Estimator (answers when the encoder cannot make its deadline)",
        "",
        f"{section['features']}; {section['n_features']:,} slots; temperature "
        f"{section['temperature']:.3f} (fitted on {section.get('temperature_fitted_on', CALIBRATION_ROWS)}); "
        f"escalation q {section['escalation']['q']:.2f} "
        f"(chosen on {escalation['chosen_on']}); tier offsets {offsets}{offsets_for}. "
        "Wrapped: a seeded sample under every evaluation-only wrapper condition.",
        "",
        "| split | shape | macro-F1 | under-routing after | mix f/b/F | flip vs bare | agrees with encoder |",
        "|---|---|---:|---:|---|---:|---:|",
    ]
    for split, result in section["metrics"].items():
        for shape in ("bare", "wrapped", "encoder_bare"):
            if shape not in result:
                continue
            m = result[shape]
            mix = " / ".join(percent(m["tier_mix"][t]) for t in ("fast", "balanced", "frontier"))
            flip = percent(m["flip_rate"]) if "flip_rate" in m else "-"
            agree = (
                percent(result["agreement_with_encoder"])
                if shape == "bare" and "agreement_with_encoder" in result
                else "-"
            )
            name = "encoder, bare" if shape == "encoder_bare" else f"estimator, {shape}"
            lines.append(
                f"| {split} | {name} | {m['macro_f1']:.3f} | {percent(m['under_routing_after'])} | {mix} | {flip} | {agree} |"
            )
    return "\n".join(lines) + "\n"


def add_to_folder(
    model_dir: Path, data_dir: Path, seed: int, wrapped_rows: int, q_on: str = "val"
) -> dict[str, Any]:
    """Fit the estimator for an existing model folder and record it in its manifest."""
    manifest_path = model_dir / MANIFEST_FILE
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    classifier = TierClassifier(model_dir)
    splits = read_splits(data_dir)  # train, val, test, heldout
    target = float(manifest.get("escalation", {}).get("target_under_routing", 0.05))
    section = build_estimator(
        model_dir, splits, target, seed, wrapped_rows=wrapped_rows, classifier=classifier, q_on=q_on
    )
    manifest["estimator"] = section
    manifest_path.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return section


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", type=Path, required=True, help="model folder to add the estimator to")
    parser.add_argument("--data-dir", type=Path, default=None, help="splits from `make data`")
    parser.add_argument("--wrapped-rows", type=int, default=400, help="rows per split under each wrapper")
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument(
        "--q-on", choices=Q_CHOICES, default="val", help="rows that choose the escalation q (see above)"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    try:
        section = add_to_folder(
            args.model, args.data_dir or paths.processed_dir(), args.seed, args.wrapped_rows, args.q_on
        )
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(render_markdown(section))
    return 0


if __name__ == "__main__":
    sys.exit(main())
