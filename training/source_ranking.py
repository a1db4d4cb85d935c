"""Ranking within one source: whether fast suffices for a row, its item difficulty, AUC and
Spearman batched over bootstrap draws, and the per-source table with its macro average and interval.
The evaluation around it (baselines, wrappers, hard rows, leave-source-out) is training/within_source.py.
"""

from __future__ import annotations

import warnings
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.stats import rankdata
from tierwise.training.labels import TIER_INDEX, lowest_tier
from tierwise.training.source_groups import source_group

MIN_ROWS = 20  # fewer rows rank too few pairs to say anything about one source
MIN_CLASS_ROWS = 3  # an AUC from one or two positives is one or two ranks, noise in a macro average
FAIL_LABEL = 0.5  # P(fast fails) at or above which fast "does not suffice"
BOOTSTRAP = 1000
# Reported but left out of the gate's macro (training/gate.py): their labels are one pass/fail vote
# of a few models on multiple choice, mostly guessing noise (Winogrande), or all `fast` (CommonsenseQA).
GATE_EXCLUDED_SOURCES = frozenset({"winogrande", "commonsense_qa"})


# --- labels and difficulty ---------------------------------------------------------------------


def needs_more_than_fast(row: dict) -> int:
    """1 when fast does not suffice: P(fast fails) >= 0.5 from the item-response fit where the row
    has one, else its cheapest allowed tier is above fast."""
    p_fail = row.get("p_fail")
    if p_fail:
        return int(p_fail["fast"] >= FAIL_LABEL)
    return int(TIER_INDEX[lowest_tier(row["allowed_tiers"])] > 0)


def fast_fail_target(row: dict) -> float:
    """P(fast fails), or the 0/1 label without a fit: one scale for every source, so a regression
    fitted across sources is not asked to reconcile difficulty scales of different sources."""
    p_fail = row.get("p_fail")
    return float(p_fail["fast"]) if p_fail else float(needs_more_than_fast(row))


def source_difficulty(rows: list[dict]) -> tuple[np.ndarray, str]:
    """Item difficulty of one source's rows: the fit's `difficulty` when every row has one, else the
    index of the cheapest allowed tier (ordinal). Never a mix: the two scales are not comparable."""
    if rows and all(r.get("difficulty") is not None for r in rows):
        return np.array([float(r["difficulty"]) for r in rows]), "fit"
    return np.array([float(TIER_INDEX[lowest_tier(r["allowed_tiers"])]) for r in rows]), "ordinal"


# --- ranking metrics, batched so the bootstrap is one array operation per source ------------------


def batched_auc(labels: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """(B, n) 0/1 labels and scores -> (B,) ROC AUC, ties counted half; nan where a class is absent."""
    ranks = rankdata(scores, axis=-1)
    positives = labels.sum(axis=-1)
    negatives = labels.shape[-1] - positives
    u = (ranks * labels).sum(axis=-1) - positives * (positives + 1) / 2
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where((positives > 0) & (negatives > 0), u / (positives * negatives), np.nan)


def batched_spearman(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """(B, n) -> (B,) Spearman correlation (Pearson of average ranks); nan where either is constant."""
    rx = rankdata(x, axis=-1)
    ry = rankdata(y, axis=-1)
    rx -= rx.mean(axis=-1, keepdims=True)
    ry -= ry.mean(axis=-1, keepdims=True)
    denominator = np.sqrt((rx * rx).sum(axis=-1) * (ry * ry).sum(axis=-1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denominator > 0, (rx * ry).sum(axis=-1) / denominator, np.nan)


def rank_metric(target: str, truth: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """(B, n) -> (B,) AUC (truth: 0/1 labels) or Spearman (truth: difficulty). A score constant over
    the rows ranks nothing: ρ 0 there, as its AUC is 0.5 by ties; nan only where the truth has no spread."""
    if target == "auc":
        return batched_auc(truth, scores)
    rho = batched_spearman(scores, truth)
    return np.where((np.ptp(scores, axis=-1) == 0) & (np.ptp(truth, axis=-1) > 0), 0.0, rho)


def one(target: str, truth: np.ndarray, scores: np.ndarray) -> float | None:
    value = float(rank_metric(target, truth[None, :], scores[None, :])[0])
    return None if np.isnan(value) else value


# --- per source tables ----------------------------------------------------------------------------


@dataclass(frozen=True)
class SourceRows:
    """One source's rows of a split: their positions, labels and difficulty."""

    source: str
    index: np.ndarray
    labels: np.ndarray
    difficulty: np.ndarray
    difficulty_kind: str

    @property
    def ranks_labels(self) -> bool:
        positives = int(self.labels.sum())
        return len(self.index) >= MIN_ROWS and min(positives, len(self.index) - positives) >= MIN_CLASS_ROWS

    @property
    def ranks_difficulty(self) -> bool:
        return len(self.index) >= MIN_ROWS and np.ptp(self.difficulty) > 0


def by_source(rows: list[dict]) -> list[SourceRows]:
    positions: dict[str, list[int]] = defaultdict(list)
    for i, r in enumerate(rows):
        positions[r["source"]].append(i)
    out = []
    for source, index in sorted(positions.items()):
        members = [rows[i] for i in index]
        difficulty, kind = source_difficulty(members)
        labels = np.array([needs_more_than_fast(r) for r in members], dtype=float)
        out.append(SourceRows(source, np.array(index), labels, difficulty, kind))
    return out


def source_entry(s: SourceRows, scores: dict[str, np.ndarray]) -> dict[str, Any]:
    return {
        "source": s.source,
        "group": source_group(s.source),
        "n": len(s.index),
        "positives": int(s.labels.sum()),
        "difficulty": s.difficulty_kind,
        "auc": {k: one("auc", s.labels, v[s.index]) if s.ranks_labels else None for k, v in scores.items()},
        "spearman": {
            k: one("spearman", s.difficulty, v[s.index]) if s.ranks_difficulty else None
            for k, v in scores.items()
        },
    }


def bootstrap_macro(
    sources: list[SourceRows], target: str, scores: np.ndarray, n_boot: int, seed: int
) -> dict[str, Any]:
    """Macro average over `sources` and its 95% interval: rows resampled within each source, drawn
    from `seed` alone so every score sees the same resamples (a paired comparison)."""
    if not sources:
        return {"value": None, "low": None, "high": None, "sources": 0}
    rng = np.random.default_rng(seed)
    point, draws = [], []
    for s in sources:
        truth = s.labels if target == "auc" else s.difficulty
        own = scores[s.index]
        point.append(one(target, truth, own))
        picks = rng.integers(0, len(s.index), size=(n_boot, len(s.index)))
        draws.append(rank_metric(target, truth[picks], own[picks]))
    with warnings.catch_warnings():  # a resample that loses a class skips that source (nan)
        warnings.simplefilter("ignore", RuntimeWarning)
        macro = np.nanmean(np.stack(draws), axis=0)
        low, high = np.nanpercentile(macro, [2.5, 97.5])
    return {"value": float(np.mean(point)), "low": float(low), "high": float(high), "sources": len(sources)}


def ranking_table(
    rows: list[dict],
    scores: dict[str, np.ndarray],
    pooled_only: dict[str, np.ndarray] | None = None,
    n_boot: int = BOOTSTRAP,
    seed: int = 13,
) -> dict[str, Any]:
    """Per source, macro (sources with spread) and pooled figures of each (N,) score of `rows`.
    `pooled_only`: scores that are constant within a source (the source prior), shown pooled only."""
    sources = by_source(rows)
    labels = np.array([needs_more_than_fast(r) for r in rows], dtype=float)
    ranked = {
        "auc": [s for s in sources if s.ranks_labels],
        "spearman": [s for s in sources if s.ranks_difficulty],
    }
    return {
        "n": len(rows),
        "per_source": [source_entry(s, scores) for s in sources],
        "no_spread": [
            {"source": s.source, "n": len(s.index)}
            for s in sources
            if not (s.ranks_labels or s.ranks_difficulty)
        ],
        "macro": {
            target: {k: bootstrap_macro(members, target, v, n_boot, seed) for k, v in scores.items()}
            for target, members in ranked.items()
        },
        "gate_macro": {
            k: bootstrap_macro(
                [s for s in ranked["auc"] if s.source not in GATE_EXCLUDED_SOURCES], "auc", v, n_boot, seed
            )
            for k, v in scores.items()
        },
        "pooled_auc": {k: one("auc", labels, v) for k, v in {**scores, **(pooled_only or {})}.items()},
    }
