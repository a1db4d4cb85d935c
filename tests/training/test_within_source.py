"""The within-source evaluation on synthetic rows: figures a source prior cannot win, the bootstrap,
the hard-rows check and the grouped leave-source-out fits."""

from dataclasses import dataclass

import numpy as np
import pytest
from scipy.stats import spearmanr
from sklearn.metrics import roc_auc_score
from tierwise.training.report_markdown import render_header
from tierwise.training.source_ranking import (
    batched_auc,
    batched_spearman,
    needs_more_than_fast,
    ranking_table,
    source_difficulty,
)
from tierwise.training.within_source import (
    LOSO_SCORES,
    SCORES,
    hard_rows_routed_fast,
    leave_group_out,
    within_source_report,
)
from tierwise.training.within_source_markdown import within_source_markdown


def row(i: int, source: str, hard: bool, text: str = "", **extra: object) -> dict:
    tiers = ["balanced"] if hard else ["fast"]
    return {
        "id": f"{source}-{i}",
        "text": text or f"item {i}",
        "source": source,
        "allowed_tiers": tiers,
        **extra,
    }


def test_batched_metrics_match_sklearn_and_scipy_ties_included():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, size=(4, 40)).astype(float)
    scores = rng.integers(0, 5, size=(4, 40)).astype(float)  # many ties
    expected_auc = [roc_auc_score(y, s) for y, s in zip(labels, scores, strict=True)]
    expected_rho = [spearmanr(s, y).statistic for y, s in zip(labels, scores, strict=True)]
    assert batched_auc(labels, scores) == pytest.approx(expected_auc)
    assert batched_spearman(scores, labels) == pytest.approx(expected_rho)


def test_one_class_or_a_constant_gives_nan():
    assert np.isnan(batched_auc(np.ones((1, 5)), np.arange(5.0)[None]))[0]
    assert np.isnan(batched_spearman(np.arange(5.0)[None], np.ones((1, 5))))[0]


def test_the_fit_decides_the_label_where_there_is_one():
    assert needs_more_than_fast({"allowed_tiers": ["fast"], "p_fail": {"fast": 0.9}}) == 1
    assert needs_more_than_fast({"allowed_tiers": ["frontier"], "p_fail": {"fast": 0.1}}) == 0
    assert needs_more_than_fast({"allowed_tiers": ["fast", "balanced"]}) == 0
    assert needs_more_than_fast({"allowed_tiers": ["balanced", "frontier"]}) == 1


def test_difficulty_is_the_fits_only_when_every_row_has_one():
    fitted = [
        {"allowed_tiers": ["fast"], "difficulty": 1.5},
        {"allowed_tiers": ["frontier"], "difficulty": -0.2},
    ]
    assert source_difficulty(fitted)[1] == "fit"
    assert list(source_difficulty(fitted)[0]) == [1.5, -0.2]
    mixed = [fitted[0], {"allowed_tiers": ["frontier"]}]
    difficulty, kind = source_difficulty(mixed)
    assert kind == "ordinal" and list(difficulty) == [0.0, 2.0]


def two_sources(n: int = 40) -> list[dict]:
    """Source `easy` is mostly fast, `hard` mostly not; inside each, odd rows need more than fast."""
    rows = []
    for source, hard_share in (("easy", 4), ("hard", 36)):
        rows += [row(i, source, hard=i < hard_share) for i in range(n)]
    return rows


def test_a_source_prior_wins_pooled_but_ranks_nothing_within():
    rows = two_sources()
    labels = np.array([needs_more_than_fast(r) for r in rows], dtype=float)
    prior = np.array([0.1 if r["source"] == "easy" else 0.9 for r in rows])
    table = ranking_table(rows, {"prior": prior, "oracle": labels + prior}, n_boot=200, seed=1)
    assert table["pooled_auc"]["prior"] > 0.85
    assert table["macro"]["auc"]["prior"]["value"] == pytest.approx(0.5)
    assert table["macro"]["auc"]["oracle"]["value"] == pytest.approx(1.0)
    assert table["macro"]["auc"]["oracle"]["sources"] == 2


def test_sources_without_spread_leave_the_macro():
    rows = two_sources() + [row(i, "tiny", hard=i % 2 == 0) for i in range(10)]
    rows += [row(i, "flat", hard=False) for i in range(30)]
    table = ranking_table(rows, {"length": np.arange(len(rows), dtype=float)}, n_boot=50, seed=1)
    assert table["macro"]["auc"]["length"]["sources"] == 2
    assert {s["source"] for s in table["no_spread"]} == {"tiny", "flat"}


def test_the_bootstrap_interval_is_seeded_and_brackets_the_value():
    rng = np.random.default_rng(3)
    rows = two_sources(60)
    noisy = np.array([needs_more_than_fast(r) for r in rows]) + rng.normal(0, 0.8, len(rows))
    first = ranking_table(rows, {"s": noisy}, n_boot=300, seed=7)["macro"]["auc"]["s"]
    again = ranking_table(rows, {"s": noisy}, n_boot=300, seed=7)["macro"]["auc"]["s"]
    assert first == again
    assert first["low"] < first["value"] < first["high"] and first["high"] - first["low"] > 0.02


def test_hard_rows_routed_fast_per_group():
    rows = [
        row(0, "gsm8k", True, p_fail={"fast": 0.95}),
        row(1, "gsm8k", True, p_fail={"fast": 0.85}),
        row(2, "mbpp", True, p_fail={"fast": 0.9}),
        row(3, "mbpp", False, p_fail={"fast": 0.2}),
        row(4, "mmlu", True),  # no fit: never a hard row
    ]
    result = hard_rows_routed_fast(rows, ["fast", "frontier", 0, "fast", 2])
    math, code = result["groups"]["math"], result["groups"]["code"]
    assert (math["hard"], math["hard_fast"], math["hard_fast_share"]) == (2, 1, 0.5)
    assert (code["hard"], code["hard_fast"]) == (1, 1)
    assert (
        result["groups"]["knowledge"]["hard"] == 0
        and result["groups"]["knowledge"]["hard_fast_share"] is None
    )
    assert result["groups"]["all"]["tier_counts"] == {"fast": 3, "balanced": 0, "frontier": 2}
    assert result["frontier_outside_math"] == 1
    with pytest.raises(ValueError):
        hard_rows_routed_fast(rows, ["fast"])


def grouped_splits() -> dict[str, list[dict]]:
    """math and code rows whose hard items say 'prove optimize' and easy ones 'simple'; knowledge
    rows say 'obscure' or 'recall', words no other group has."""
    words = {"gsm8k": "prove", "mbpp": "optimize", "mmlu": "obscure"}
    rows = []
    for k, (source, word) in enumerate(words.items()):
        for i in range(100 * k, 100 * k + 60):  # no item number is shared between sources
            hard = i % 3 == 0
            shared = "prove optimize" if source != "mmlu" else word
            easy = "simple" if source != "mmlu" else "recall"
            text = f"{shared} case {i} of {source}" if hard else f"{easy} case {i} of {source}"
            rows.append(row(i, source, hard, text))
    return {"train": rows[::2], "test": rows[1::2]}


def test_leave_group_out_judges_each_group_with_a_model_that_never_saw_it():
    groups = {g["group"]: g for g in leave_group_out(grouped_splits(), seed=1, n_boot=50)["groups"]}
    assert set(groups) == {"math", "code", "knowledge"}
    assert groups["math"]["fit_rows"] == 60  # the train rows of code and knowledge only
    # math's hard words also mark code's hard rows, so a model fitted without math still ranks math;
    # 'obscure' is only in knowledge, so without it nothing ranks knowledge's rows.
    assert groups["math"]["macro"]["auc"]["tfidf_ridge"]["value"] > 0.9
    assert groups["math"]["macro"]["auc"]["hashed_ngrams"]["value"] > 0.9
    assert groups["knowledge"]["macro"]["auc"]["tfidf_ridge"]["value"] < 0.75


@dataclass
class FakeManifest:
    escalation_q: float = 0.7
    tier_offsets: None = None


class WordScorer:
    """P(fast) is low when the task says 'prove': reads the task the way the encoder does."""

    manifest = FakeManifest()

    def __init__(self) -> None:
        self.seen: list[str] = []

    def predict_proba(self, inputs: list) -> tuple[np.ndarray, list[int]]:
        self.seen += [item.text for item in inputs]
        fast = np.array([0.1 if "prove" in item.task else 0.9 for item in inputs])
        return np.stack([fast, (1 - fast) / 2, (1 - fast) / 2], axis=1), [10] * len(inputs)


def test_the_report_judges_bare_and_wrapped_rows_and_renders():
    splits = grouped_splits()
    scorer = WordScorer()
    report = within_source_report(scorer, splits, 5, judged=["test"], n_boot=50, leave_source_out=False)
    bare, wrapped = report["splits"]["test"]["bare"], report["splits"]["test"]["wrapped"]
    assert len(scorer.seen) == 2 * len(splits["test"])
    n = len(splits["test"])
    bare_chars, wrapped_chars = (sum(map(len, part)) for part in (scorer.seen[:n], scorer.seen[n:]))
    assert wrapped_chars > 2 * bare_chars  # the second pass read the rows inside wrappers
    entry = {e["source"]: e for e in bare["per_source"]}
    assert entry["gsm8k"]["auc"]["model"] == pytest.approx(1.0)
    assert entry["mmlu"]["auc"]["model"] == pytest.approx(0.5)
    assert "source prior" in wrapped["pooled_auc"] and "leave_source_out" not in report
    markdown = within_source_markdown(report, SCORES, LOSO_SCORES)
    assert "### test, wrapped" in markdown and "**macro**" in markdown and "source prior" in markdown


def test_the_model_report_has_the_section_only_when_measured():
    report = within_source_report(
        WordScorer(), grouped_splits(), 5, judged=["test"], n_boot=20, leave_source_out=False
    )
    manifest = {
        "name": "m",
        "data": {"heldout_sources": [], "train_languages": ["en"]},
        "base_model": {"name": "b", "package": "p", "package_version": "1"},
        "data_hash": "0" * 16,
        "git_commit": "0" * 12,
    }
    evaluation = {"splits": {}}
    assert "Within-source ranking" not in render_header(manifest, evaluation)
    assert "Within-source ranking" in render_header(manifest, {**evaluation, "within_source": report})
