"""Fitting the estimator (training/estimator.py) on a few rows, read back by serving's Estimator."""

import json
import zlib

import numpy as np
import pytest
from tierwise.core.classifier import TierClassifier
from tierwise.core.escalation import cumulative_confidence, most_likely_tier, route_upward
from tierwise.core.estimator import ESTIMATOR_FILE, Estimator, EstimatorSettings
from tierwise.core.request_text import request_input
from tierwise.training.build_dataset import row_input
from tierwise.training.estimator import (
    build_estimator,
    cost_matched_offsets,
    feature_matrix,
    judge_split,
    main,
    out_of_source_logits,
    render_markdown,
    routed_metrics,
    val_inputs,
)
from tierwise.training.evaluation import TierPrices, allowed_bounds
from tierwise.training.wrappers import CONDITIONS

from tools.tiny_model import write_model_folder

TEXTS = {
    "fast": ["hello there {w}", "thanks, what is {w}?", "hi, spell {w}"],
    "balanced": ["write an email about {w}", "summarize the {w} report", "list the {w} steps"],
    "frontier": ["prove the {w} theorem", "design a distributed {w} system", "optimize the {w} proof"],
}
WORDS = ["oslo", "lima", "kiev", "rome", "bern", "doha"]


def rows(split: str, sources: int = 3) -> list[dict]:
    out = []
    for tier, templates in TEXTS.items():
        for t_idx, template in enumerate(templates):
            for w_idx, word in enumerate(WORDS):
                out.append(
                    {
                        "id": f"{split}-{tier}-{t_idx}-{w_idx}",
                        "text": template.format(w=word),
                        "allowed_tiers": [tier],
                        "source": f"s{(t_idx + w_idx) % sources}",
                    }
                )
    return out


N = 2**12


def test_feature_rows_match_what_serving_computes():
    system = {"role": "system", "content": "You are a careful assistant. Prove every theorem you state."}
    wrapped = request_input({"messages": [system, {"role": "user", "content": "Write an email"}]})
    inputs = [request_input({"text": "Write an email"}), request_input({"text": "hi"}), wrapped]
    x = feature_matrix(inputs, N)
    assert x.shape == (3, N)
    # "hi" by hand: the unigram and the length bucket of one token (log2(2) = 1), 1/sqrt(2) each.
    hi = {zlib.crc32(b"hi") % N: 2**-0.5, zlib.crc32(b"__len1") % N: 2**-0.5}
    assert dict(zip(x[1].indices.tolist(), x[1].data.tolist(), strict=True)) == pytest.approx(hi)
    # Serving's estimator over the same requests: the training rows give exactly its logits, and a
    # system prompt reaches neither (serving reads only the task).
    rng = np.random.default_rng(0)
    weights, bias = rng.normal(size=(N, 3)).astype(np.float32), rng.normal(size=3)
    serving = Estimator(weights, bias, EstimatorSettings(N, 1.0, 0.5)).logits(inputs)
    np.testing.assert_allclose(x @ weights.astype(np.float64) + bias, serving, rtol=1e-5, atol=1e-5)
    assert (x[2] != x[0]).nnz == 0


ROTATED = {"fast": "balanced", "balanced": "frontier", "frontier": "fast"}


def test_out_of_source_logits_score_each_row_without_its_source():
    train = rows("train")
    small = 2**8  # three fits per call, twice: a smaller table fits in a tenth of the time
    logits, scored = out_of_source_logits(train, small, seed=1)
    assert logits.shape == (len(train), 3) and sorted(r["id"] for r in scored) == sorted(
        r["id"] for r in train
    )
    # Relabel every row of source s0. The estimator that scores s0's rows was fitted without them, so
    # their logits do not move; the other sources' rows are scored by fits that saw s0, so theirs do.
    relabelled = [
        {**r, "allowed_tiers": [ROTATED[r["allowed_tiers"][0]]]} if r["source"] == "s0" else r for r in train
    ]
    moved, scored_again = out_of_source_logits(relabelled, small, seed=1)
    before = {r["id"]: row for r, row in zip(scored, logits, strict=True)}
    after = {r["id"]: row for r, row in zip(scored_again, moved, strict=True)}
    own = [r["id"] for r in train if r["source"] == "s0"]
    other = [r["id"] for r in train if r["source"] != "s0"]
    np.testing.assert_allclose([after[i] for i in own], [before[i] for i in own], rtol=1e-9, atol=1e-9)
    assert max(np.abs(after[i] - before[i]).max() for i in other) > 0.1


@pytest.mark.slow
def test_build_writes_a_folder_estimator_serving_can_load(tmp_path):
    folder = write_model_folder(tmp_path / "model")
    splits = {s: rows(s) for s in ("train", "val", "test", "heldout")}
    section = build_estimator(
        folder, splits, 0.05, seed=1, n_features=N, wrapped_rows=6, classifier=TierClassifier(folder)
    )
    assert (folder / ESTIMATOR_FILE).is_file()
    assert section["n_features"] == N and 0.0 <= section["escalation"]["q"] <= 1.0
    assert section["escalation"]["chosen_on"] == "val, like the encoder"
    assert "source folds" in section["temperature_fitted_on"]
    assert len(section["escalation"]["tier_offsets"]) == 3  # chosen to agree with the encoder
    assert "val bare + wrapped" in section["escalation"]["tier_offsets_chosen_for"]
    test = section["metrics"]["test"]
    assert test["bare"]["macro_f1"] > 0.9  # the marker words are learnable
    assert test["wrapped"]["n"] > 0 and 0.0 <= test["wrapped"]["flip_rate"] <= 1.0
    assert 0.0 <= test["agreement_with_encoder"] <= 1.0 and "chosen" not in test["bare"]
    estimator = Estimator.load(folder, {"estimator": section})
    probs = estimator.predict_proba(["prove the lima theorem", "hello there rome"])
    assert list(probs.argmax(axis=1)) == [2, 0]
    markdown = render_markdown(section)
    assert "| test | estimator, bare |" in markdown and "| heldout | encoder, bare |" in markdown


@pytest.mark.slow
def test_the_command_adds_the_estimator_to_the_manifest(tmp_path, capsys):
    folder = write_model_folder(tmp_path / "model")
    data = tmp_path / "data"
    data.mkdir()
    for split in ("train", "val", "test", "heldout"):
        (data / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows(split)))
    assert main(["--model", str(folder), "--data-dir", str(data), "--wrapped-rows", "6"]) == 0
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["estimator"]["file"] == ESTIMATOR_FILE and manifest["name"] == "tiny"
    assert "## Estimator" in capsys.readouterr().out


def test_the_command_says_what_is_missing(tmp_path, capsys):
    folder = write_model_folder(tmp_path / "model")
    assert main(["--model", str(folder), "--data-dir", str(tmp_path / "none")]) == 2
    assert "run `make data` first" in capsys.readouterr().err


@pytest.mark.parametrize("missing", ["fast", "frontier"])
def test_every_tier_must_be_in_train(tmp_path, missing):
    folder = write_model_folder(tmp_path / "model")
    splits = {s: rows(s) for s in ("train", "val", "test", "heldout")}
    splits["train"] = [r for r in splits["train"] if r["allowed_tiers"] != [missing]]
    with pytest.raises(ValueError, match="needs every tier"):
        build_estimator(folder, splits, 0.05, seed=1, n_features=N, wrapped_rows=6)


def test_the_encoder_beside_the_estimator_is_scored_with_its_tier_offsets():
    rows = [{"allowed_tiers": ["fast"]}, {"allowed_tiers": ["balanced"]}]
    probs = np.array([[0.8, 0.15, 0.05], [0.55, 0.4, 0.05]])  # plain argmax: fast, fast
    plain = routed_metrics(probs, 0.0, rows)
    offset = routed_metrics(probs, 0.0, rows, offsets=[0.0, 0.5, 0.0])  # 0.4 e^0.5 = 0.66 > 0.55
    assert plain["tier_mix"]["balanced"] == 0.0 and offset["tier_mix"]["balanced"] == 0.5
    assert offset["macro_f1"] > plain["macro_f1"]


PRICES = TierPrices(
    {"fast": 0.15, "balanced": 2.0, "frontier": 15.0}, {"fast": 0.6, "balanced": 8.0, "frontier": 60.0}, 300
)
FREE = TierPrices({t: 0.0 for t in PRICES.input}, {t: 0.0 for t in PRICES.output}, 300)


class DecidedEncoder:
    """Stands in for the encoder: fixed calibrated probabilities, q 0, no offsets of its own."""

    def __init__(self, probabilities: np.ndarray) -> None:
        self.probabilities = probabilities
        self.manifest = type("M", (), {"escalation_q": 0.0, "tier_offsets": ()})()

    def predict_proba(self, inputs):
        return self.probabilities[: len(inputs)], [5] * len(inputs)


def leaning_cheap(n_fast: int, n_balanced: int) -> np.ndarray:
    """Estimator probabilities whose plain argmax says fast for every row, balanced rows included."""
    probs = np.tile([0.8, 0.15, 0.05], (n_fast + n_balanced, 1))
    probs[n_fast:] = [0.55, 0.40, 0.05]
    return probs


def matched(estimator_probs, val, encoder, prices=PRICES, target=0.05):
    inputs = [row_input(r) for r in val]
    return cost_matched_offsets(estimator_probs, inputs, val, encoder, prices, target)


def routed_cost(tiers: np.ndarray) -> float:
    return float(PRICES.request_cost(tiers, np.full(len(tiers), 5)).sum())


def test_estimator_offsets_raise_macro_f1_at_the_encoders_cost():
    val = rows("val")[:36]  # 18 fast rows, then 18 balanced ones
    assert [r["allowed_tiers"] for r in val] == [["fast"]] * 18 + [["balanced"]] * 18
    estimator_probs = leaning_cheap(18, 18)
    encoder_probs = np.tile([0.9, 0.05, 0.05], (36, 1))
    encoder_probs[18:] = [0.2, 0.7, 0.1]  # the encoder gets them right
    offsets, chosen_for = matched(estimator_probs, val, DecidedEncoder(encoder_probs))
    assert "within 5% of the encoder's routed cost" in chosen_for and offsets[0] == 0.0
    assert list(most_likely_tier(estimator_probs, offsets)) == [0] * 18 + [1] * 18
    assert list(most_likely_tier(estimator_probs)) == [0] * 36  # without them: fast for everyone
    none, why = matched(estimator_probs, val, None)
    assert not none.any() and "no encoder" in why


def test_estimator_offsets_cost_neither_more_nor_less_than_the_encoders_decisions():
    val = rows("val")[:36]
    estimator_probs = leaning_cheap(18, 18)
    cheap_encoder = np.tile([0.9, 0.05, 0.05], (36, 1))  # the encoder sends everything to fast
    offsets, _ = matched(estimator_probs, val, DecidedEncoder(cheap_encoder), target=1.0)
    assert (most_likely_tier(estimator_probs, offsets) == 0).all()  # balanced would beat its cost
    free, _ = matched(estimator_probs, val, DecidedEncoder(cheap_encoder), prices=FREE, target=1.0)
    assert (most_likely_tier(estimator_probs, free)[18:] == 1).all()  # all tiers free: the best macro-F1
    # The encoder escalates the balanced rows to frontier: routing them to balanced (the best macro-F1)
    # would cost far less than the unloaded service, so the estimator matches its cost instead.
    dear_encoder = cheap_encoder.copy()
    dear_encoder[18:] = [0.1, 0.2, 0.7]
    offsets, why = matched(estimator_probs, val, DecidedEncoder(dear_encoder))
    chosen = most_likely_tier(estimator_probs, offsets)
    encoder_cost = routed_cost(most_likely_tier(dear_encoder))
    assert abs(routed_cost(chosen) / encoder_cost - 1) <= 0.05 and "within 5%" in why
    # The under-routing target comes first: at 0% the balanced rows go up though that costs more.
    safe, why = matched(estimator_probs, val, DecidedEncoder(cheap_encoder), target=0.0)
    assert (most_likely_tier(estimator_probs, safe)[18:] >= 1).all() and "nearest" in why
    same = np.tile([0.8, 0.15, 0.05], (36, 1))  # rows it cannot tell apart get one tier: the cheapest
    blind, _ = matched(same, val, DecidedEncoder(cheap_encoder), target=0.0)  # that under-routes none
    assert (most_likely_tier(same, blind) == 1).all()


def test_the_figures_judged_for_the_manifest_are_the_estimators_own_decisions():
    from tests.core.test_estimator import word_estimator

    # Each text is its marker word alone: 20/sqrt(2) ~ 14 on its tier, P > 0.999, so q 0.7 keeps the
    # word's tier: fast, balanced, frontier, balanced, fast. The last row needed balanced.
    texts = [("hello", ["fast"]), ("email", ["balanced"]), ("theorem", ["frontier"])]
    texts += [("email", ["fast", "balanced"]), ("hello", ["balanced"])]
    judged = [{"id": f"r{i}", "text": t, "allowed_tiers": a} for i, (t, a) in enumerate(texts)]
    encoder = DecidedEncoder(np.tile([0.05, 0.05, 0.9], (5, 1)))  # routes every row to frontier
    figures = judge_split(word_estimator(), encoder, judged, wrapped_rows=5, seed=0)
    assert figures["bare"]["tier_mix"] == pytest.approx({"fast": 0.4, "balanced": 0.4, "frontier": 0.2})
    assert figures["bare"]["under_routing_after"] == pytest.approx(0.2)
    assert figures["encoder_bare"]["tier_mix"]["frontier"] == 1.0
    assert figures["agreement_with_encoder"] == pytest.approx(0.2)  # the theorem row alone
    assert figures["wrapped"]["n"] == 5 * len(CONDITIONS)


def test_offsets_are_chosen_on_val_bare_and_wrapped_by_training_wrappers():
    val = rows("val")[:6]
    inputs, labelled = val_inputs(val, seed=3)
    assert labelled == val + val and [i.task for i in inputs[:6]] == [r["text"] for r in val]
    assert all(i.sketch or i.task != r["text"] for i, r in zip(inputs[6:], val, strict=True))  # twins wrapped
    assert [i.text for i in val_inputs(val, seed=3)[0]] == [i.text for i in inputs]  # seeded


@pytest.mark.slow
def test_q_is_chosen_like_the_encoders_on_val_unless_asked_for_out_of_source(tmp_path):
    folder = write_model_folder(tmp_path / "model")
    splits = {s: rows(s) for s in ("train", "val", "test", "heldout")}
    # val rows that all need the top tier (2/3 of them under-routed at q = 0): a q chosen on val must
    # escalate; on out-of-source + val rows (half of them val) 1/3 are under-routed, within the 0.4 target.
    splits["val"] = [{**r, "allowed_tiers": ["frontier"], "tier": "frontier"} for r in splits["val"]]
    by_val = build_estimator(folder, splits, 0.4, seed=1, n_features=N, wrapped_rows=2, q_on="val")
    estimator = Estimator.load(folder, {"estimator": by_val})
    low, _ = allowed_bounds(splits["val"])
    val_probs = estimator.predict_proba([row_input(r) for r in splits["val"]])
    # The encoder's rule, on val: the cheapest observed threshold whose under-routing meets the target.
    q = by_val["escalation"]["q"]

    def under_routing(at: float) -> float:
        return float(np.mean(route_upward(val_probs, at, estimator.tier_offsets) < low))

    assert under_routing(0.0) > 0.4 and under_routing(q) <= 0.4
    thresholds = cumulative_confidence(val_probs)[:, :-1]
    cheaper = thresholds[thresholds < q]
    assert cheaper.size and under_routing(float(cheaper.max())) > 0.4  # the next cheaper one misses it
    by_folds = build_estimator(
        folder, splits, 0.4, seed=1, n_features=N, wrapped_rows=2, q_on="out-of-source"
    )
    assert "source folds" in by_folds["escalation"]["chosen_on"]
    assert by_folds["escalation"]["q"] < by_val["escalation"]["q"]
    assert by_folds["temperature"] == pytest.approx(by_val["temperature"])  # only q's rows differ
    with pytest.raises(ValueError, match="q_on"):
        build_estimator(folder, splits, 0.4, seed=1, n_features=N, wrapped_rows=2, q_on="test")
