"""Baselines the fine-tuned model must beat, fitted on `train` and scored on the same splits."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from tierwise.training.evaluation import K, allowed_bounds, classification_metrics
from tierwise.training.labels import TIER_INDEX

Predictor = Callable[[list[dict], np.ndarray], np.ndarray]  # (rows, token_counts) -> tier index (N,)


def always(tier_idx: int) -> Predictor:
    return lambda rows, counts: np.full(len(rows), tier_idx)


def fit_length_heuristic(rows: list[dict], token_counts: np.ndarray) -> Predictor:
    """Two token-count cut-offs (fast | balanced | frontier), chosen on train for macro-F1."""
    low, high = allowed_bounds(rows)
    grid = np.unique(np.percentile(token_counts, np.arange(5, 100, 5)))
    best, best_f1 = (np.inf, np.inf), -1.0
    for i, a in enumerate(grid):
        for b in grid[i:]:
            chosen = (token_counts > a).astype(int) + (token_counts > b).astype(int)
            f1 = classification_metrics(chosen, low, high)["macro_f1"]
            if f1 > best_f1:
                best, best_f1 = (a, b), f1
    a, b = best
    return lambda rows, counts: (counts > a).astype(int) + (counts > b).astype(int)


def fit_tfidf_logreg(rows: list[dict], seed: int) -> Predictor:
    """TF-IDF (word 1-2 grams) + class-balanced logistic regression; a set row counts once per allowed tier."""
    texts, labels, weights = [], [], []
    for r in rows:
        for t in r["allowed_tiers"]:
            texts.append(r["text"])
            labels.append(TIER_INDEX[t])
            weights.append(1.0 / len(r["allowed_tiers"]))
    vectorizer = TfidfVectorizer(ngram_range=(1, 2), min_df=2, max_features=100_000, sublinear_tf=True)
    x = vectorizer.fit_transform(texts)
    model = LogisticRegression(max_iter=2000, class_weight="balanced", random_state=seed, C=2.0)
    model.fit(x, labels, sample_weight=np.array(weights))
    return lambda rows, counts: model.predict(vectorizer.transform([r["text"] for r in rows]))


def fit_baselines(train_rows: list[dict], train_counts: np.ndarray, seed: int) -> dict[str, Predictor]:
    return {
        "always-fast": always(0),
        "always-frontier": always(K - 1),
        "prompt-length": fit_length_heuristic(train_rows, train_counts),
        "tfidf-logreg": fit_tfidf_logreg(train_rows, seed),
    }
