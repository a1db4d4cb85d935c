"""`make source-signal`: can a source's labels be predicted from its text at all?

    python -m tierwise.training.source_signal --sources winogrande commonsense_qa cruxeval [--model models/default]

A held-out source judges a model only if its labels carry a signal the request text can show. For
each source, within its own single-tier rows, the AUC of three scores against "fast does not
suffice": a TF-IDF + logistic regression fitted on the training rows of every *other* source, the
prompt length in characters, and (with --model) a model folder's P(tier > fast). A source where
every score sits near 0.5 has labels no method can rank, and a gate over it measures only which
source each method ranks higher. Rows come from every split of `make data` (data/processed).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from tierwise.core.classifier import TierClassifier
from tierwise.core.model_folder import ModelFolderError
from tierwise.training import paths
from tierwise.training.build_dataset import row_input
from tierwise.training.invariance import auc_or_none, read_splits
from tierwise.training.labels import TIERS


@dataclass
class SourceSignal:
    source: str
    rows: int
    tier_counts: dict[str, int]
    auc: dict[str, float | None]  # score name -> AUC within the source (None: one label only)


def needs_more_than_fast(rows: list[dict]) -> np.ndarray:
    """(N,) 1 where the single allowed tier is above `fast`."""
    return np.array([int(r["allowed_tiers"] != ["fast"]) for r in rows])


def fit_tfidf_scorer(train_rows: list[dict], seed: int) -> Callable[[list[dict]], np.ndarray]:
    """P(tier > fast) from TF-IDF 1-2 grams + class-balanced logistic regression on single-tier rows."""
    rows = [r for r in train_rows if len(r["allowed_tiers"]) == 1]
    vectorizer = TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True)
    model = LogisticRegression(max_iter=2000, class_weight="balanced", random_state=seed)
    model.fit(vectorizer.fit_transform([r["text"] for r in rows]), needs_more_than_fast(rows))
    return lambda scored: model.predict_proba(vectorizer.transform([r["text"] for r in scored]))[:, 1]


def source_signals(
    splits: dict[str, list[dict]], sources: list[str], classifier: TierClassifier | None, seed: int
) -> list[SourceSignal]:
    every_row = [r for rows in splits.values() for r in rows]
    results = []
    for source in sources:
        rows = [r for r in every_row if r["source"] == source and len(r["allowed_tiers"]) == 1]
        if not rows:
            raise ValueError(f"no single-tier rows of source {source!r} in the splits: check its name")
        labels = needs_more_than_fast(rows)
        scores = {
            "tfidf": fit_tfidf_scorer([r for r in splits["train"] if r["source"] != source], seed)(rows),
            "length": np.array([len(r["text"]) for r in rows], dtype=float),
        }
        if classifier is not None:
            probs, _ = classifier.predict_proba([row_input(r) for r in rows])
            scores["model"] = 1.0 - probs[:, 0]
        tiers = [r["allowed_tiers"][0] for r in rows]
        results.append(
            SourceSignal(
                source=source,
                rows=len(rows),
                tier_counts={t: tiers.count(t) for t in TIERS},
                auc={name: auc_or_none(labels, s) for name, s in scores.items()},
            )
        )
    return results


def render_markdown(signals: list[SourceSignal]) -> str:
    names = list(signals[0].auc) if signals else []
    lines = [
        "| source | rows | " + " / ".join(TIERS) + " | " + " | ".join(f"AUC {n}" for n in names) + " |",
        "|---|---:|---|" + "---:|" * len(names),
    ]
    for s in signals:
        aucs = " | ".join("-" if s.auc[n] is None else f"{s.auc[n]:.3f}" for n in names)
        counts = " / ".join(str(s.tier_counts[t]) for t in TIERS)
        lines.append(f"| {s.source} | {s.rows} | {counts} | {aucs} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sources", nargs="+", required=True, help="source names, as in the datasheet")
    parser.add_argument("--model", type=Path, default=None, help="also score with this model folder")
    parser.add_argument("--data-dir", type=Path, default=None, help="splits from `make data`")
    parser.add_argument("--seed", type=int, default=13)
    args = parser.parse_args(argv)
    try:
        splits = read_splits(args.data_dir or paths.processed_dir())
        classifier = TierClassifier(args.model) if args.model else None
        signals = source_signals(splits, args.sources, classifier, args.seed)
    except (FileNotFoundError, ValueError, ModelFolderError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(render_markdown(signals), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
