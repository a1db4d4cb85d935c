"""The wrapper-invariance suite on the tiny word-vector model of tools/tiny_model.py: its tier
depends only on which words a request contains, so what a wrapper does to it is predictable."""

import json

import numpy as np
import pytest
from tierwise.core.classifier import TierClassifier
from tierwise.training.invariance import (
    condition_metrics,
    evaluate_invariance,
    main,
    ranking_auc,
    render_markdown,
    sample_rows,
    wrapped_inputs,
)
from tierwise.training.wrappers import CONDITIONS, WrapperLibrary

from tools.tiny_model import write_model_folder


def rows(n: int, split: str) -> list[dict]:
    texts = [
        ("hello thanks", ["fast"]),
        ("please summarize my email", ["balanced"]),
        ("prove the theorem", ["frontier"]),
    ]
    return [
        {"id": f"{split}-{i}", "text": texts[i % 3][0], "allowed_tiers": texts[i % 3][1], "source": "s"}
        for i in range(n)
    ]


def always(tier: int):
    return lambda rows, counts: np.full(len(rows), tier)


def test_sample_rows_is_seeded_and_stable():
    data = rows(50, "t")
    assert sample_rows(data, 10, 1) == sample_rows(data, 10, 1)
    assert sample_rows(data, 10, 1) != sample_rows(data, 10, 2)
    assert sample_rows(data, 100, 1) == data


def test_the_same_row_always_gets_the_same_wrapper():
    library = WrapperLibrary.load("eval")
    first = wrapped_inputs(rows(6, "t"), library, "mixed", 13)
    assert first == wrapped_inputs(rows(6, "t"), library, "mixed", 13)
    assert all(i.task == r["text"] or r["text"] in i.text for i, r in zip(first, rows(6, "t"), strict=True))


def test_condition_metrics_counts_flips_against_the_bare_tiers():
    probs = np.array([[0.9, 0.05, 0.05], [0.1, 0.8, 0.1], [0.1, 0.1, 0.8], [0.8, 0.1, 0.1]])
    chosen = np.array([0, 1, 2, 2])
    plain = np.array([0, 1, 2, 0])
    low, high = np.array([0, 1, 2, 0]), np.array([0, 1, 2, 0])
    m = condition_metrics(probs, chosen, plain, low, high)
    assert m["flip_rate"] == pytest.approx(0.25)
    assert m["tier_mix"] == {"fast": 0.25, "balanced": 0.25, "frontier": 0.5}
    assert m["under_routing_after"] == 0.0 and m["over_routing_after"] == pytest.approx(0.25)
    assert m["auc_needs_more_than_fast"] == pytest.approx(1.0)


def test_auc_needs_both_classes():
    probs = np.array([[0.9, 0.1, 0.0], [0.2, 0.8, 0.0]])
    assert ranking_auc(probs, np.array([0, 0])) is None
    assert ranking_auc(probs, np.array([0, 1])) == pytest.approx(1.0)
    assert ranking_auc(probs, np.array([1, 0])) == pytest.approx(0.0)


def test_evaluate_invariance_end_to_end(tmp_path):
    model = TierClassifier(write_model_folder(tmp_path / "model"))
    splits = {s: rows(9, s) for s in ("val", "test", "heldout")}
    baselines = {"prompt-length": always(2), "tfidf-logreg": always(0)}
    section = evaluate_invariance(model, splits, baselines, rows_per_split=6, seed=13)
    test = section["splits"]["test"]
    assert set(test["conditions"]) == set(CONDITIONS)
    assert test["plain"]["n"] == 6 and test["wrapped"]["n"] == 6 * len(CONDITIONS)
    # The expected flips, one request at a time: the bare tier is the row's label (the word model gets
    # bare rows right), a wrapped request flips when its own routed tier differs from it.
    sample = sample_rows(splits["test"], 6, 13)
    bare = [p.tier for p in model.classify([r["text"] for r in sample])]
    assert bare == [r["allowed_tiers"][0] for r in sample]
    library = WrapperLibrary.load("eval")
    expected = {}
    for condition in CONDITIONS:
        wrapped = model.classify(wrapped_inputs(sample, library, condition, 13))
        expected[condition] = np.mean([p.tier != b for p, b in zip(wrapped, bare, strict=True)])
    assert {c: m["flip_rate"] for c, m in test["conditions"].items()} == pytest.approx(expected)
    assert test["wrapped"]["flip_rate"] == pytest.approx(np.mean(list(expected.values())))
    # The wrappers' own words move this model (a long system prompt is full of frontier words), so a
    # flip rate that compared the wrapped tiers with themselves (0) fails here.
    assert expected["system_long"] > 0 and test["wrapped"]["flip_rate"] > 0.2
    assert test["plain"]["macro_f1"] == pytest.approx(1.0)  # the word model gets bare rows right
    assert set(test["baselines"]["wrapped"]) == {"prompt-length", "tfidf-logreg"}
    markdown = render_markdown(section)
    assert "| bare | 6 |" in markdown and "Wrapper targets" in markdown and "system_long" in markdown


def test_make_invariance_writes_its_tables(tmp_path, capsys):
    model_dir = write_model_folder(tmp_path / "model")
    data = tmp_path / "data"
    data.mkdir()
    for split in ("train", "val", "test", "heldout"):
        (data / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows(12, split)))
    out = tmp_path / "out"
    assert (
        main(["--model", str(model_dir), "--data-dir", str(data), "--rows", "6", "--out-dir", str(out)]) == 0
    )
    assert (out / "model.md").read_text() in capsys.readouterr().out
    assert json.loads((out / "model.json").read_text())["rows_per_split"] == 6


def test_make_invariance_says_what_is_missing(tmp_path, capsys):
    model_dir = write_model_folder(tmp_path / "model")
    assert main(["--model", str(model_dir), "--data-dir", str(tmp_path / "nothing")]) == 2
    assert "run `make data` first" in capsys.readouterr().err
