"""`make source-signal`: can a source's labels be predicted from its text at all?

    python -m tierwise.training.source_signal --sources winogrande commonsense_qa cruxeval [--model models/default]

A held-out source judges a model only if its labels carry a signal the request text can show. For
each source, within its own single-tier rows, the AUC of three scores against "fast does not
suffice": a TF-IDF + logistic regression fitted on the training rows of every *other* source, the
prompt length in characters, and (with --model) a model folder's P(tier > fast). A source where
every score sits near 0.5 has labels no method can rank, and a gate over it measures only which
source each method ranks higher. Rows come from every split of `make data` (data/processed).

With --model, a second table pools the sources (every row, as the promotion gate does) and gives
macro-F1 as served beside a *ceiling*: the tier offsets fitted on the pool itself, and the length
baseline's cut-offs fitted on the pool itself. The ceiling is a diagnostic, never used to choose
anything: when even it stays under a baseline, no threshold or calibration choice can pass the gate,
and what is missing is the model's ranking on these sources.
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
from tierwise.core.escalation import TierOffsets, most_likely_tier
from tierwise.core.model_folder import ModelFolderError
from tierwise.training import paths
from tierwise.training.baselines import fit_length_heuristic
from tierwise.training.build_dataset import row_input
from tierwise.training.evaluation import allowed_bounds, classification_metrics
from tierwise.training.invariance import auc_or_none, read_splits
from tierwise.training.labels import TIERS
from tierwise.training.thresholds import choose_tier_offsets


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
    splits: dict[str, list[dict]], sources: list[str], model_scores: dict[str, float] | None, seed: int
) -> list[SourceSignal]:
    """`model_scores`: row id -> a model's P(tier > fast), for every row of `sources` (None: no model)."""
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
        if model_scores is not None:
            scores["model"] = np.array([model_scores[r["id"]] for r in rows])
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


@dataclass
class PoolCeiling:
    rows: int
    served: dict[str, float]  # method -> macro-F1 as the gate scores it
    ceiling: dict[str, float]  # method -> macro-F1 with its decision parameters fitted on the pool


def pool_ceiling(
    pool: list[dict],
    probabilities: np.ndarray,
    served_offsets: TierOffsets,
    pool_counts: np.ndarray,
    train_rows: list[dict],
    train_counts: np.ndarray,
) -> PoolCeiling:
    """Macro-F1 on the pooled rows: the model with its served tier offsets and the length baseline
    with its cut-offs from `train`, then each with its parameters fitted on the pool itself.
    probabilities (N, K) and pool_counts (N,) are the pool's; train_counts (M,) the train rows'."""
    low, high = allowed_bounds(pool)

    def macro_f1(chosen: np.ndarray) -> float:
        return float(classification_metrics(chosen, low, high)["macro_f1"])

    pool_offsets = choose_tier_offsets(probabilities, low, high, TIERS)
    from_train = fit_length_heuristic(train_rows, train_counts)
    from_pool = fit_length_heuristic(pool, pool_counts)
    return PoolCeiling(
        rows=len(pool),
        served={
            "model": macro_f1(most_likely_tier(probabilities, served_offsets)),
            "length": macro_f1(from_train(pool, pool_counts)),
        },
        ceiling={
            "model": macro_f1(most_likely_tier(probabilities, pool_offsets)),
            "length": macro_f1(from_pool(pool, pool_counts)),
        },
    )


@dataclass
class ScoredPool:
    rows: list[dict]  # every row of the sources, in every split
    probabilities: np.ndarray  # (N, K) the model's calibrated tier probabilities
    token_counts: np.ndarray  # (N,)

    def upper_tier_scores(self) -> dict[str, float]:
        """row id -> P(tier > fast)."""
        return {r["id"]: float(1.0 - p[0]) for r, p in zip(self.rows, self.probabilities, strict=True)}


def score_pool(splits: dict[str, list[dict]], sources: list[str], classifier: TierClassifier) -> ScoredPool:
    """One model pass over every row of `sources`: both tables read it."""
    rows = [r for split_rows in splits.values() for r in split_rows if r["source"] in sources]
    probabilities, counts = classifier.predict_proba([row_input(r) for r in rows])
    return ScoredPool(rows, probabilities, np.asarray(counts))


def model_pool_ceiling(
    splits: dict[str, list[dict]], scored: ScoredPool, classifier: TierClassifier
) -> PoolCeiling:
    """`pool_ceiling` for a model folder's scored pool; the length baseline counts train's tokens."""
    train_counts = classifier.count_tokens([row_input(r) for r in splits["train"]])
    return pool_ceiling(
        scored.rows,
        scored.probabilities,
        classifier.manifest.tier_offsets or None,
        scored.token_counts,
        splits["train"],
        np.asarray(train_counts),
    )


def render_ceiling(ceiling: PoolCeiling, sources: list[str]) -> str:
    return (
        "\n".join(
            [
                f"Pooled ({', '.join(sources)}; {ceiling.rows} rows): macro-F1 as served, and the ceiling "
                "with the decision parameters fitted on the pool itself (a diagnostic only).",
                "",
                "| method | as served | ceiling |",
                "|---|---:|---:|",
                f"| model (tier offsets) | {ceiling.served['model']:.3f} | {ceiling.ceiling['model']:.3f} |",
                f"| prompt length (two cut-offs) | {ceiling.served['length']:.3f} | {ceiling.ceiling['length']:.3f} |",
            ]
        )
        + "\n"
    )


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
        scored = score_pool(splits, args.sources, classifier) if classifier else None
        model_scores = scored.upper_tier_scores() if scored else None
        signals = source_signals(splits, args.sources, model_scores, args.seed)
        ceiling = model_pool_ceiling(splits, scored, classifier) if classifier and scored else None
    except (FileNotFoundError, ValueError, ModelFolderError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(render_markdown(signals), end="")
    if ceiling is not None:
        print("\n" + render_ceiling(ceiling, args.sources), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
