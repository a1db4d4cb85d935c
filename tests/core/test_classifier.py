import json
import shutil

import pytest
from tierwise.core.classifier import TierClassifier
from tierwise.core.model_folder import ModelFolderError

TEXTS = ["hi", "please write an email " * 30, "prove the theorem", "ok thanks", "design a distributed " * 5]


def test_logits_come_back_in_input_order_with_full_token_counts(tiny_classifier):
    logits, counts = tiny_classifier.logits(TEXTS)
    assert logits.shape == (len(TEXTS), 3)
    assert counts == tiny_classifier.count_tokens(TEXTS)
    assert [row.argmax() for row in logits] == [0, 1, 2, 0, 2]  # "hi" fast, "write" balanced, "prove"...


# Worked by hand from tools/tiny_model.py: the logits are the mean over [CLS] text [SEP] of
# 9 per marker word, divided by the temperature 1.5; q 0.7 sends a request to the lowest tier t with
# P(tier <= t) >= 0.7 when that is above the most likely tier.
HAND_ROUTED = [
    # text, P(fast), most likely tier, routed tier
    ("hi", 0.787, "fast", "fast"),  # e^2 / (e^2 + 2): confident enough, stays
    ("hello the the the the", 0.5409, "fast", "balanced"),  # e^(9/7/1.5) / (... + 2); cum 0.541, 0.770
    ("the", 1 / 3, "fast", "frontier"),  # no marker word: uniform, cum 1/3, 2/3 < 0.7, so the top tier
    ("write the the", 0.188, "balanced", "balanced"),  # P(balanced) 0.624, cum 0.812: stays
    ("prove the theorem", 0.0768, "frontier", "frontier"),
]


def test_classify_escalates_only_upward(tiny_classifier):
    texts = [case[0] for case in HAND_ROUTED] + TEXTS
    predictions = tiny_classifier.classify(texts)
    for (_, p_fast, predicted, routed), p in zip(HAND_ROUTED, predictions[: len(HAND_ROUTED)], strict=True):
        assert p.probabilities["fast"] == pytest.approx(p_fast, abs=1e-3)
        assert (p.predicted_tier, p.tier, p.escalated) == (predicted, routed, predicted != routed)
    for p in predictions:
        assert tiny_classifier.tiers.index(p.tier) >= tiny_classifier.tiers.index(p.predicted_tier)
        assert p.escalated == (p.tier != p.predicted_tier)
        assert sum(p.probabilities.values()) == pytest.approx(1.0)
    assert sum(p.escalated for p in predictions) >= 2  # the property above is not met by escalating nothing


def test_a_folder_with_mismatched_files_is_refused(tiny_model_dir, tmp_path):
    folder = tmp_path / "mixed"
    shutil.copytree(tiny_model_dir, folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["tiers"] = ["fast", "frontier"]
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelFolderError, match="different runs"):
        TierClassifier(folder)


def test_a_corrupt_onnx_file_is_reported(tiny_model_dir, tmp_path):
    folder = tmp_path / "corrupt"
    shutil.copytree(tiny_model_dir, folder)
    (folder / "model.onnx").write_bytes(b"not a model")
    with pytest.raises(ModelFolderError, match="make train"):
        TierClassifier(folder)


def _with_offsets(tiny_model_dir, tmp_path, offsets):
    folder = tmp_path / "offsets"
    shutil.copytree(tiny_model_dir, folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["escalation"]["tier_offsets"] = offsets
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


def test_manifest_tier_offsets_move_the_predicted_tier_not_the_probabilities(tiny_model_dir, tmp_path):
    plain = TierClassifier(tiny_model_dir, intra_op_threads=1)
    assert plain.manifest.tier_offsets == (0.0, 0.0, 0.0)  # a folder without offsets: plain argmax
    favoured = TierClassifier(_with_offsets(tiny_model_dir, tmp_path, [0.0, 50.0, 0.0]), intra_op_threads=1)
    for a, b in zip(plain.classify(TEXTS, q=0.0), favoured.classify(TEXTS, q=0.0), strict=True):
        assert a.probabilities == pytest.approx(b.probabilities)
        assert b.predicted_tier == b.tier == "balanced"  # +50 in log space wins every row
        assert b.confidence == pytest.approx(a.probabilities["fast"] + a.probabilities["balanced"])


@pytest.mark.parametrize("offsets", [[0.0, 1.0], [0.0, "nan", 0.0], [0.0, float("inf"), 0.0]])
def test_bad_tier_offsets_are_refused_with_the_field_named(tiny_model_dir, tmp_path, offsets):
    with pytest.raises(ModelFolderError, match="tier_offsets"):
        TierClassifier(_with_offsets(tiny_model_dir, tmp_path, offsets))


def _with_q(tiny_model_dir, tmp_path, q):
    folder = tmp_path / "q"
    shutil.copytree(tiny_model_dir, folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["escalation"]["q"] = q
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


def test_a_manifest_q_per_tier_boundary_routes_like_route_upward(tiny_model_dir, tmp_path):
    classifier = TierClassifier(_with_q(tiny_model_dir, tmp_path, [0.999, 0.0]), intra_op_threads=1)
    assert classifier.manifest.escalation_q == (0.999, 0.0)
    for prediction in classifier.classify(TEXTS):
        p = prediction.probabilities
        # leaving fast needs P(fast) >= 0.999; above it q is 0 (balanced always qualifies), and the
        # rule never goes below the most likely tier
        by_q = "fast" if p["fast"] >= 0.999 else "balanced"
        order = ["fast", "balanced", "frontier"]
        assert prediction.tier == max(by_q, prediction.predicted_tier, key=order.index)
    assert any(
        prediction.tier == "balanced" and prediction.predicted_tier == "fast"
        for prediction in classifier.classify(TEXTS)
    )


@pytest.mark.parametrize("q", [[0.9, 0.5, 0.5], [0.9, 1.5], 1.5])
def test_a_bad_q_is_refused_with_the_field_named(tiny_model_dir, tmp_path, q):
    with pytest.raises(ModelFolderError, match="escalation.q"):
        TierClassifier(_with_q(tiny_model_dir, tmp_path, q))
