"""make promote: a model becomes the default only if the gate recorded by make gate passed, or the
owner's fallback rule allows it."""

import json

import pytest
from tierwise.training.promote import PromotionRefused, main, promote

from tools.tiny_model import write_model_folder


def candidate(tmp_path, name: str, gate: dict | None):
    folder = write_model_folder(tmp_path / name)
    manifest = json.loads((folder / "manifest.json").read_text())
    if gate is not None:
        manifest["gate"] = gate
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


def test_a_passing_model_replaces_the_default_and_the_old_one_is_kept(tmp_path):
    default = candidate(tmp_path, "default", {"passed": True, "failures": [], "lines": []})
    (default / "marker").write_text("old")
    new = candidate(tmp_path, "new", {"passed": True, "failures": [], "lines": []})
    assert promote(new, default) == []
    assert (
        not (default / "marker").exists() and (tmp_path / "default.previous" / "marker").read_text() == "old"
    )
    assert (new / "model.onnx").is_file()  # the candidate stays where it was


def test_a_failing_model_is_refused_unless_forced(tmp_path):
    default = candidate(tmp_path, "default", None)
    bad = candidate(
        tmp_path,
        "bad",
        {"passed": False, "failures": ["held-out wrapped: 0.2 does not beat tfidf 0.3"], "lines": []},
    )
    with pytest.raises(PromotionRefused, match="does not beat tfidf"):
        promote(bad, default)
    assert not (tmp_path / "default.previous").exists()
    assert promote(bad, default, force=True) == ["held-out wrapped: 0.2 does not beat tfidf 0.3"]


def test_a_model_without_a_gate_is_refused(tmp_path, monkeypatch, capsys):
    candidate(tmp_path, "default", None)
    candidate(tmp_path, "old", None)
    monkeypatch.setenv("TIERWISE_MODELS_DIR", str(tmp_path))
    assert main(["--name", "old"]) == 2
    assert "records no promotion gate" in capsys.readouterr().err
    assert main(["--name", "missing"]) == 2


def test_the_fallback_rule_promotes_a_model_that_misses_a_line_and_says_which(tmp_path, monkeypatch, capsys):
    candidate(tmp_path, "default", None)
    missed = ["held-out ranking: wrapped: macro AUC model > tfidf: 0.55 vs 0.60"]
    gate = {"passed": False, "failures": missed, "lines": [], "fallback": {"passed": True, "failures": []}}
    candidate(tmp_path, "near", gate)
    refused = {**gate, "fallback": {"passed": False, "failures": ["serve: 0 of 10 by the encoder"]}}
    candidate(tmp_path, "slow", refused)
    monkeypatch.setenv("TIERWISE_MODELS_DIR", str(tmp_path))
    assert main(["--name", "slow"]) == 2 and "macro AUC model > tfidf" in capsys.readouterr().err
    assert main(["--name", "near"]) == 0
    assert "promoted with a gate line missed: held-out ranking" in capsys.readouterr().err
    assert (tmp_path / "default.previous").is_dir()
