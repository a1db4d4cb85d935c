"""A tiny randomly initialised BERT through the whole pipeline: train -> export -> parity -> int8 gate ->
calibrate -> q -> report, then classified through the serving code path and the CLI."""

import json
from pathlib import Path

import numpy as np
import pytest
from tierwise.cli.main import main as tierwise_main
from tierwise.core.classifier import TierClassifier
from tierwise.training.build_dataset import BuildConfig, build


@pytest.fixture(scope="module")
def trained_folder(tmp_path_factory, fixture_jsonl) -> Path:
    from tierwise.training.train import TrainConfig, run  # torch: imported only when a test trains

    root = tmp_path_factory.mktemp("e2e")
    build(
        root / "data",
        BuildConfig(heldout_sources=("trivia",), val_fraction=0.2, test_fraction=0.2),
        None,
        [fixture_jsonl],
    )
    config = TrainConfig(
        name="tiny",
        base_model="tiny-random",
        max_steps=4,
        batch_size=8,
        data_dir=root / "data",
        output_dir=root / "model",
        work_dir=root / "run",
        head_tokens=40,
        tail_tokens=20,
        context_tokens=16,
        max_length=64,
        invariance_rows=12,
    )
    return run(config)


@pytest.mark.slow
def test_folder_describes_itself(trained_folder):
    assert {"model.onnx", "tokenizer.json", "manifest.json"} <= {p.name for p in trained_folder.iterdir()}
    m = json.loads((trained_folder / "manifest.json").read_text())
    assert m["tiers"] == ["fast", "balanced", "frontier"]
    assert m["max_length"] == 64 and m["truncation"]["head_tokens"] == 40
    assert m["temperature"] > 0 and 0 <= m["escalation"]["q"] <= 1
    assert m["escalation"]["target_under_routing"] == 0.05
    assert len(m["data_hash"]) == 64 and m["git_commit"]
    assert {"torch", "onnxruntime", "transformers"} <= set(m["versions"])
    assert m["export"]["parity_max_abs_logit_diff"] <= 1e-4
    gate = m["export"]["int8_gate"]
    assert m["precision"] == ("int8" if gate["passed"] else "fp32")
    assert {"test", "heldout"} <= set(m["metrics"])
    assert m["truncation"]["strategy"] == "task_first" and m["truncation"]["context_tokens"] == 16
    assert set(m["tier_classes"]) == set(m["tiers"])
    assert "gate" not in m  # the promotion gate is `make gate`'s: it also times an idle service


@pytest.mark.slow
def test_report_has_every_artefact(trained_folder):
    report = trained_folder / "report"
    for name in (
        "report.md",
        "metrics.json",
        "cost_quality.png",
        "confusion_test.png",
        "confusion_test_normalized.png",
        "confusion_heldout.png",
        "reliability_test.png",
        "within_source.json",
        "within_source.md",
    ):
        assert (report / name).is_file(), name
    text = (report / "report.md").read_text()
    for baseline in ("always-fast", "always-frontier", "prompt-length", "tfidf-logreg"):
        assert baseline in text
    assert "What this model has not seen" in text and "trivia" in text


@pytest.mark.slow
def test_serving_classifier_matches_manifest_calibration(trained_folder):
    clf = TierClassifier(trained_folder)
    texts = ["What is the capital of peru?", "Prove the four colour theorem. " * 100]
    logits, counts = clf.logits(texts)
    probs, _ = clf.predict_proba(texts)
    expected = np.exp(logits / clf.manifest.temperature)
    np.testing.assert_allclose(probs, expected / expected.sum(axis=1, keepdims=True), rtol=1e-6)
    assert counts[1] >= 600  # the full length is kept although the model saw 64 tokens
    for p in clf.classify(texts):
        assert p.tier in clf.tiers
        assert clf.tiers.index(p.tier) >= clf.tiers.index(p.predicted_tier)
        assert p.escalated == (p.tier != p.predicted_tier)


@pytest.mark.slow
def test_classify_cli_output_schema(trained_folder, tmp_path, capsys):
    src = tmp_path / "requests.jsonl"
    src.write_text(
        '{"text": "What is 2+2?", "user": "u1"}\n{bad json\n'
        '{"messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]}\n'
        '{"text": ""}\n'
    )
    out = tmp_path / "routed.jsonl"
    assert (
        tierwise_main(["classify", "--input", str(src), "--output", str(out), "--model", str(trained_folder)])
        == 0
    )
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 2
    assert rows[0]["user"] == "u1"  # other fields pass through
    for row in rows:
        assert row["tier"] in ("fast", "balanced", "frontier")
        assert set(row["probabilities"]) == {"fast", "balanced", "frontier"}
        assert sum(row["probabilities"].values()) == pytest.approx(1.0)
        assert 0 <= row["confidence"] <= 1
        assert isinstance(row["escalated"], bool) and row["predicted_tier"] in row["probabilities"]
    err = capsys.readouterr().err
    assert "line 2: invalid JSON" in err and "line 4: 'text' is empty" in err


def test_classify_cli_reports_a_bad_model_folder(tmp_path, capsys):
    src = tmp_path / "r.jsonl"
    src.write_text('{"text": "x"}\n')
    code = tierwise_main(
        [
            "classify",
            "--input",
            str(src),
            "--output",
            str(tmp_path / "o"),
            "--model",
            str(tmp_path / "missing"),
        ]
    )
    assert code == 2 and "make train" in capsys.readouterr().err


@pytest.fixture(scope="module")
def student_folder(trained_folder) -> Path:
    """A student: started from the trained checkpoint, cut to 1 layer, at a shorter max length,
    learning the trained folder's probabilities beside the labels."""
    from tierwise.training.train import TrainConfig, run

    root = trained_folder.parent
    config = TrainConfig(
        name="student",
        base_model="tiny-random",
        init_from=root / "run" / "checkpoint",
        teacher=trained_folder,
        layers=1,
        max_steps=2,
        batch_size=8,
        data_dir=root / "data",
        output_dir=root / "student",
        work_dir=root / "student-run",
        head_tokens=20,
        tail_tokens=10,
        context_tokens=8,
        max_length=32,
        invariance_rows=6,
    )
    return run(config)


@pytest.mark.slow
def test_tier_offsets_are_chosen_on_val_and_recorded(trained_folder):
    m = json.loads((trained_folder / "manifest.json").read_text())
    offsets = m["escalation"]["tier_offsets"]
    assert len(offsets) == 3 and offsets[0] == 0.0 and all(np.isfinite(offsets))
    assert TierClassifier(trained_folder).manifest.tier_offsets == tuple(offsets)
    assert "tier offsets" in (trained_folder / "report" / "report.md").read_text()


@pytest.mark.slow
def test_a_distilled_student_is_a_complete_model_folder_that_records_its_teacher(
    student_folder, trained_folder
):
    m = json.loads((student_folder / "manifest.json").read_text())
    assert m["training"]["teacher"] == str(trained_folder) and m["training"]["layers"] == 1
    assert m["max_length"] == 32 and m["export"]["parity_max_abs_logit_diff"] <= 1e-4
    student = TierClassifier(student_folder)
    ids, _ = student.encoder.encode_ids(["prove that the algorithm terminates " * 20])
    assert len(ids[0]) == 32
    assert len(student.classify(["hi", "prove the theorem"])) == 2


def test_a_student_with_a_missing_teacher_or_checkpoint_is_refused_before_training(tmp_path):
    from tierwise.training.config import TrainConfig

    with pytest.raises(ValueError, match="--teacher"):
        TrainConfig(teacher=tmp_path / "nope")
    with pytest.raises(ValueError, match="--init-from"):
        TrainConfig(init_from=tmp_path / "nope")
    with pytest.raises(ValueError, match="layers"):
        TrainConfig(layers=0)
