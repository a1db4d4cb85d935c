"""`make source-signal`: within-source AUCs on synthetic splits whose signal is known by construction."""

import json

import numpy as np
import pytest
from tierwise.training.source_signal import (
    main,
    pool_ceiling,
    render_ceiling,
    render_markdown,
    source_signals,
)


def row(i: int, source: str, text: str, tier: str) -> dict:
    return {"id": f"{source}-{i}", "text": text, "allowed_tiers": [tier], "source": source}


def lengthy(i: int) -> dict:
    return row(
        i, "lengthy", "write a long essay " * 10 if i % 2 else "hi there", "balanced" if i % 2 else "fast"
    )


def splits() -> dict[str, list[dict]]:
    # "proof" words mean frontier in train; in `lengthy` only the length tells the tiers apart;
    # `onelabel` is all fast; `noise` draws the same texts under both labels.
    train = [
        row(
            i,
            "math",
            "prove the lemma rigorously" if i % 2 else "add two numbers",
            "frontier" if i % 2 else "fast",
        )
        for i in range(40)
    ]
    heldout = [lengthy(i) for i in range(20)]
    heldout += [row(i, "onelabel", f"question {i}", "fast") for i in range(10)]
    heldout += [row(i, "noise", "same text each time", "balanced" if i % 2 else "fast") for i in range(20)]
    return {"train": train, "val": [], "test": [], "heldout": heldout}


def test_length_signal_is_found_and_noise_is_at_chance():
    signals = {s.source: s for s in source_signals(splits(), ["lengthy", "noise", "onelabel"], None, seed=13)}
    assert signals["lengthy"].auc["length"] == pytest.approx(1.0)
    assert signals["noise"].auc["length"] == pytest.approx(0.5)
    assert signals["noise"].auc["tfidf"] == pytest.approx(0.5)
    assert signals["onelabel"].auc == {"tfidf": None, "length": None}  # one label: nothing to rank
    assert signals["lengthy"].tier_counts == {"fast": 10, "balanced": 10, "frontier": 0}
    table = render_markdown(list(signals.values()))
    assert "| lengthy | 20 | 10 / 10 / 0 |" in table and "| onelabel | 10 | 10 / 0 / 0 | - | - |" in table


def test_tfidf_is_fitted_without_the_source_it_scores():
    data = splits()
    # A second source that would give `lengthy` away if it were in the TF-IDF's training rows.
    data["train"] += [lengthy(i) for i in range(20, 60)]
    signal = source_signals(data, ["lengthy"], None, seed=13)[0]
    assert signal.auc["tfidf"] == pytest.approx(0.5)  # fitted on math rows only: no word of `lengthy` known
    data["train"] = [{**r, "source": "elsewhere"} if r["source"] == "lengthy" else r for r in data["train"]]
    assert source_signals(data, ["lengthy"], None, seed=13)[0].auc["tfidf"] == pytest.approx(1.0)


def test_unknown_source_is_a_clear_error(tmp_path, capsys):
    for name, rows in splits().items():
        (tmp_path / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    assert main(["--sources", "lengthy", "--data-dir", str(tmp_path)]) == 0
    assert "| lengthy | 20 |" in capsys.readouterr().out
    assert main(["--sources", "nope", "--data-dir", str(tmp_path)]) == 2
    assert "no single-tier rows of source 'nope'" in capsys.readouterr().err


def test_the_pool_ceiling_fits_offsets_and_cut_offs_on_the_pool_itself():
    # The model ranks the pool perfectly but its probabilities sit under the served decision's line:
    # served, every row is fast; offsets fitted on the pool recover every tier.
    pool = [
        row(i, "p", f"q{i}", tier)
        for i, tier in enumerate(["fast"] * 6 + ["balanced"] * 3 + ["frontier"] * 3)
    ]
    p_upper = np.array([0.05] * 6 + [0.3] * 3 + [0.45] * 3)  # P(tier > fast), rising with the tier
    probabilities = np.stack([1 - p_upper, p_upper * 0.8, p_upper * 0.2 + (p_upper > 0.4) * 0.1], axis=1)
    probabilities /= probabilities.sum(axis=1, keepdims=True)
    # Length: long rows are harder in the pool, but train's cut-offs were learned on other lengths.
    pool_counts = np.array([10] * 6 + [50] * 3 + [90] * 3)
    train = [
        row(i, "t", f"t{i}", tier)
        for i, tier in enumerate(["fast"] * 4 + ["balanced"] * 4 + ["frontier"] * 4)
    ]
    train_counts = np.array([1000] * 4 + [2000] * 4 + [3000] * 4)
    ceiling = pool_ceiling(pool, probabilities, None, pool_counts, train, train_counts)
    assert ceiling.rows == 12
    assert ceiling.served["model"] < 0.5  # argmax: all fast
    assert ceiling.ceiling["model"] == pytest.approx(1.0)
    assert ceiling.served["length"] < 0.5  # train's cut-offs put every pool row in fast
    assert ceiling.ceiling["length"] == pytest.approx(1.0)
    table = render_ceiling(ceiling, ["p"])
    assert "12 rows" in table and "| model (tier offsets) |" in table and "| 1.000 |" in table
