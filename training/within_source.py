"""`make within-source`: an evaluation that cannot be won by naming the source (issue 21, item 3).

    python -m tierwise.training.within_source --model models/default [--splits test heldout]

Most training sources carry one label for every row, so pooled figures reward a model for knowing
which benchmark a prompt came from: the source prior (the row's source's mean label in `train`) wins
them. Inside one source the source is constant, so ranking its rows takes reading how hard each is.
For each judged split, bare and wrapped once by the evaluation-only wrappers (never trained on):

- per source: AUC of P(tier > fast) against "fast does not suffice" and Spearman against the item
  difficulty, beside prompt length and TF-IDF + logistic regression fitted on `train`;
- the macro average over the sources with spread, with a seeded bootstrap 95% interval (rows
  resampled within their source, the same draws for every score);
- pooled AUC beside the source prior, which is 0.5 within any source by construction;
- the hard rows (P(fast fails) >= 0.8) routed to `fast` and the tier mix, per source group.

Grouped leave-source-out: TF-IDF ridge and a logistic head on the estimator's hashed n-grams, fitted
on the train rows of every other source group, judge the rows of the group left out.
Writes models/NAME/report/within_source.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import sys
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression, Ridge
from tierwise.core.classifier import TierClassifier
from tierwise.core.escalation import EscalationQ, TierOffsets, route_upward
from tierwise.core.estimator import DEFAULT_FEATURES
from tierwise.core.request_text import ClassifierInput, request_input
from tierwise.training import paths
from tierwise.training.build_dataset import row_input
from tierwise.training.difficulty_targets import HARD_P_FAIL
from tierwise.training.estimator import REGULARIZATION_C, feature_matrix
from tierwise.training.invariance import read_splits, sample_rows
from tierwise.training.labels import TIERS
from tierwise.training.source_groups import source_group
from tierwise.training.source_ranking import (
    BOOTSTRAP,
    MIN_CLASS_ROWS,
    MIN_ROWS,
    fast_fail_target,
    needs_more_than_fast,
    ranking_table,
)
from tierwise.training.within_source_markdown import within_source_markdown
from tierwise.training.wrappers import WrapperLibrary

log = logging.getLogger("tierwise.within_source")

JUDGED_SPLITS = ("test", "heldout")
MIN_FIT_ROWS = 50  # leave-source-out: fewer rows of the other groups fit no text model worth judging
HARD_THRESHOLD = HARD_P_FAIL  # the gate's hard rows: the cheap class almost surely fails
ROWS_PER_SOURCE = 400  # per split and source: bounds the encoder passes of `make train`
SCORES = ("model", "length", "tfidf")
LOSO_SCORES = ("tfidf_ridge", "hashed_ngrams", "length")


class Manifest(Protocol):
    escalation_q: EscalationQ
    tier_offsets: TierOffsets


class Scorer(Protocol):
    """What this module needs of tierwise.core.classifier.TierClassifier."""

    manifest: Manifest

    def predict_proba(self, texts: Sequence[ClassifierInput | str]) -> tuple[np.ndarray, list[int]]: ...


# --- baselines --------------------------------------------------------------------------------------


def lengths(texts: list[str]) -> np.ndarray:
    return np.array([len(t) for t in texts], dtype=float)


def fit_tfidf_logistic(train_rows: list[dict], seed: int) -> Callable[[list[str]], np.ndarray]:
    """P(fast does not suffice) from TF-IDF word 1-2 grams + class-balanced logistic regression."""
    vectorizer = TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True, max_features=200_000)
    model = LogisticRegression(max_iter=2000, class_weight="balanced", random_state=seed)
    model.fit(
        vectorizer.fit_transform([r["text"] for r in train_rows]),
        [needs_more_than_fast(r) for r in train_rows],
    )
    return lambda texts: model.predict_proba(vectorizer.transform(texts))[:, 1]


def fit_tfidf_ridge(train_rows: list[dict]) -> Callable[[list[str]], np.ndarray]:
    """P(fast fails) regressed on TF-IDF word 1-2 grams (the issue's within-source probe)."""
    vectorizer = TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True, max_features=200_000)
    model = Ridge(alpha=1.0)
    model.fit(
        vectorizer.fit_transform([r["text"] for r in train_rows]), [fast_fail_target(r) for r in train_rows]
    )
    return lambda texts: model.predict(vectorizer.transform(texts))


def fit_hashed_ngrams(train_rows: list[dict], seed: int) -> Callable[[list[ClassifierInput]], np.ndarray]:
    """The load-shedding estimator's features (hashed 1-2 grams of the task) under a binary logistic
    head: the served head has one output per tier and cannot be fitted when the rows left in lack a
    tier (leaving out math leaves no `frontier` label today)."""
    model = LogisticRegression(C=REGULARIZATION_C, class_weight="balanced", max_iter=3000, random_state=seed)
    model.fit(
        feature_matrix([row_input(r) for r in train_rows], DEFAULT_FEATURES),
        [needs_more_than_fast(r) for r in train_rows],
    )
    return lambda inputs: model.predict_proba(feature_matrix(inputs, DEFAULT_FEATURES))[:, 1]


def fit_source_prior(train_rows: list[dict]) -> Callable[[list[dict]], np.ndarray]:
    """Each row's source's mean label in `train`; sources absent from train get train's mean."""
    sums: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])
    for r in train_rows:
        sums[r["source"]][0] += needs_more_than_fast(r)
        sums[r["source"]][1] += 1
    overall = sum(s for s, _ in sums.values()) / max(1, sum(n for _, n in sums.values()))
    means = {source: s / n for source, (s, n) in sums.items()}
    return lambda rows: np.array([means.get(r["source"], overall) for r in rows])


@dataclass(frozen=True)
class Baselines:
    tfidf: Callable[[list[str]], np.ndarray]
    source_prior: Callable[[list[dict]], np.ndarray]


def fit_baselines(train_rows: list[dict], seed: int) -> Baselines:
    return Baselines(fit_tfidf_logistic(train_rows, seed), fit_source_prior(train_rows))


# --- the hard-requests check ------------------------------------------------------------------------


def tier_name(tier: str | int) -> str:
    return TIERS[tier] if isinstance(tier, int | np.integer) else str(tier)


def hard_rows_routed_fast(
    rows: list[dict], tiers_routed: Sequence[str | int], threshold: float = HARD_THRESHOLD
) -> dict[str, Any]:
    """Per source group (and `all`): the tier mix, and of the rows the cheap class almost surely fails
    (P(fast fails) >= threshold; rows without a fit never count), how many were routed to `fast`."""
    if len(rows) != len(tiers_routed):
        raise ValueError(f"{len(rows)} rows but {len(tiers_routed)} routed tiers")
    counts: dict[str, dict[str, Any]] = defaultdict(
        lambda: {"n": 0, "tiers": dict.fromkeys(TIERS, 0), "hard": 0, "hard_fast": 0}
    )
    for row, routed in zip(rows, tiers_routed, strict=True):
        tier = tier_name(routed)
        hard = (row.get("p_fail") or {}).get("fast", 0.0) >= threshold
        for group in (source_group(row["source"]), "all"):
            c = counts[group]
            c["n"] += 1
            c["tiers"][tier] += 1
            c["hard"] += int(hard)
            c["hard_fast"] += int(hard and tier == "fast")
    groups = {group: summarize_group(c) for group, c in sorted(counts.items(), key=lambda kv: kv[0] == "all")}
    frontier_not_math = sum(c["tiers"]["frontier"] for g, c in counts.items() if g not in ("math", "all"))
    return {"threshold": threshold, "groups": groups, "frontier_outside_math": frontier_not_math}


def summarize_group(c: dict[str, Any]) -> dict[str, Any]:
    return {
        "n": c["n"],
        "tier_counts": c["tiers"],
        "tier_mix": {t: c["tiers"][t] / c["n"] for t in TIERS},
        "hard": c["hard"],
        "hard_fast": c["hard_fast"],
        "hard_fast_share": c["hard_fast"] / c["hard"] if c["hard"] else None,
    }


# --- one split, bare and wrapped ----------------------------------------------------------------------


def wrapped_once(rows: list[dict], library: WrapperLibrary, seed: int) -> list[ClassifierInput]:
    """Each row under one evaluation-only wrapper, drawn from (seed, row id) alone: reruns agree."""
    return [request_input(library.sample(r["text"], random.Random(f"{seed}:{r['id']}"))) for r in rows]


def shape_section(
    classifier: Scorer,
    rows: list[dict],
    inputs: list[ClassifierInput],
    baselines: Baselines,
    n_boot: int,
    seed: int,
) -> dict[str, Any]:
    """The ranking table and the hard-rows check of one shape (bare or wrapped) of a split's rows.
    Length and TF-IDF read every word of the request, as a naive router would."""
    probabilities, _ = classifier.predict_proba(inputs)
    texts = [item.text for item in inputs]
    scores = {"model": 1.0 - probabilities[:, 0], "length": lengths(texts), "tfidf": baselines.tfidf(texts)}
    table = ranking_table(rows, scores, {"source prior": baselines.source_prior(rows)}, n_boot, seed)
    routed = route_upward(probabilities, classifier.manifest.escalation_q, classifier.manifest.tier_offsets)
    table["hard_rows"] = hard_rows_routed_fast(rows, [int(t) for t in routed])
    return table


def judged_rows(rows: list[dict], per_source: int | None, seed: int) -> list[dict]:
    """At most `per_source` seeded rows of each source (all with None)."""
    if per_source is None:
        return rows
    grouped: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        grouped[r["source"]].append(r)
    return [r for source in sorted(grouped) for r in sample_rows(grouped[source], per_source, seed)]


# --- grouped leave-source-out ---------------------------------------------------------------------------


def leave_group_out(splits: dict[str, list[dict]], seed: int, n_boot: int = BOOTSTRAP) -> dict[str, Any]:
    """For each source group: cheap models fitted on the train rows of every other group judge every
    row of the group (all splits; none of them was seen), within its sources."""
    every_row = [r for split, rows in splits.items() if split != "non_english" for r in rows]
    out = []
    for group in sorted({source_group(r["source"]) for r in every_row}):
        fitted = [r for r in splits["train"] if source_group(r["source"]) != group]
        judged = [r for r in every_row if source_group(r["source"]) == group]
        classes = {needs_more_than_fast(r) for r in fitted}
        if len(fitted) < MIN_FIT_ROWS or len(classes) < 2:
            out.append(
                {"group": group, "fit_rows": len(fitted), "skipped": "too few rows, or one class, to fit on"}
            )
            continue
        log.info("leave-source-out: %s, fit on %d rows, judge %d", group, len(fitted), len(judged))
        inputs = [row_input(r) for r in judged]
        texts = [item.text for item in inputs]
        scores = {
            "tfidf_ridge": fit_tfidf_ridge(fitted)(texts),
            "hashed_ngrams": fit_hashed_ngrams(fitted, seed)(inputs),
            "length": lengths(texts),
        }
        out.append(
            {"group": group, "fit_rows": len(fitted), **ranking_table(judged, scores, None, n_boot, seed)}
        )
    return {"groups": out}


# --- the report ----------------------------------------------------------------------------------------


def within_source_report(
    classifier: Scorer,
    splits: dict[str, list[dict]],
    seed: int,
    *,
    judged: Sequence[str] = JUDGED_SPLITS,
    rows_per_source: int | None = ROWS_PER_SOURCE,
    n_boot: int = BOOTSTRAP,
    leave_source_out: bool = True,
) -> dict[str, Any]:
    """The whole section: each judged split bare and wrapped, and the leave-source-out table.
    `splits` needs `train` (baselines) and the judged splits."""
    baselines = fit_baselines(splits["train"], seed)
    library = WrapperLibrary.load("eval")
    report: dict[str, Any] = {
        "seed": seed,
        "bootstrap": n_boot,
        "rows_per_source": rows_per_source,
        "min_rows": MIN_ROWS,
        "min_class_rows": MIN_CLASS_ROWS,
        "splits": {},
    }
    for split in judged:
        rows = judged_rows(splits.get(split) or [], rows_per_source, seed)
        if not rows:
            continue
        log.info("within-source: %s, %d rows, bare and wrapped", split, len(rows))
        report["splits"][split] = {
            "bare": shape_section(classifier, rows, [row_input(r) for r in rows], baselines, n_boot, seed),
            "wrapped": shape_section(
                classifier, rows, wrapped_once(rows, library, seed), baselines, n_boot, seed
            ),
        }
    if leave_source_out:
        report["leave_source_out"] = leave_group_out(splits, seed, n_boot)
    return report


# --- CLI ------------------------------------------------------------------------------------------------


def write_within_source(out_dir: Path, report: dict[str, Any]) -> str:
    """report/within_source.{json,md} (the gate reads the json); returns the markdown."""
    markdown = within_source_markdown(report, SCORES, LOSO_SCORES)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "within_source.json").write_text(json.dumps(report, indent=1), encoding="utf-8")
    (out_dir / "within_source.md").write_text(markdown, encoding="utf-8")
    return markdown


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", type=Path, default=None, help="model folder (default models/default)")
    parser.add_argument("--data-dir", type=Path, default=None, help="splits from `make data`")
    parser.add_argument("--splits", nargs="+", default=list(JUDGED_SPLITS), help="splits to judge")
    parser.add_argument("--rows-per-source", type=int, default=ROWS_PER_SOURCE, help="0: every row")
    parser.add_argument("--bootstrap", type=int, default=BOOTSTRAP)
    parser.add_argument(
        "--no-leave-source-out", action="store_true", help="skip the grouped leave-source-out fits"
    )
    parser.add_argument("--seed", type=int, default=13)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    model_dir = args.model or paths.models_dir() / "default"
    try:
        classifier = TierClassifier(model_dir)
        splits = read_splits(args.data_dir or paths.processed_dir())
        report = within_source_report(
            classifier,
            splits,
            args.seed,
            judged=args.splits,
            rows_per_source=args.rows_per_source or None,
            n_boot=args.bootstrap,
            leave_source_out=not args.no_leave_source_out,
        )
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(write_within_source(model_dir / "report", report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
