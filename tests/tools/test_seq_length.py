"""The sequence-length study: the same weights served at shorter lengths, latency and quality side by side."""

import json
from pathlib import Path

import numpy as np
import pytest
from tierwise.core.classifier import TierClassifier
from tierwise.training.build_dataset import row_input
from tierwise.training.invariance import wrapped_inputs
from tierwise.training.wrappers import CONDITIONS, WrapperLibrary

from tools import seq_length

ROWS = [
    {"id": f"r{i}", "text": text, "allowed_tiers": [tier], "tier": tier, "source": "s"}
    for i, (text, tier) in enumerate(
        [
            ("hi there", "fast"),
            ("prove the theorem about primes " * 20, "frontier"),
            ("write an email to my team about the launch " * 10, "balanced"),
            ("what is 2 + 2?", "fast"),
            ("design a distributed database with consensus " * 15, "frontier"),
            ("summarise this short paragraph for me " * 5, "fast"),  # 30 tokens
        ]
    )
]


def test_scaled_manifest_keeps_the_shape_of_the_truncation():
    manifest = {
        "max_length": 256,
        "truncation": {"strategy": "task_first", "head_tokens": 190, "tail_tokens": 64, "context_tokens": 64},
    }
    scaled = seq_length.scaled_manifest(manifest, 128)
    trunc = scaled["truncation"]
    assert scaled["max_length"] == 128 and trunc["head_tokens"] + trunc["tail_tokens"] == 126
    assert (trunc["head_tokens"], trunc["context_tokens"]) == (94, 32)  # 190 and 64 halved, rounded
    assert manifest["max_length"] == 256  # the original is not changed
    with pytest.raises(ValueError, match="fewer than 8"):
        seq_length.scaled_manifest(manifest, 8)


def test_a_folder_at_a_shorter_length_encodes_no_more_than_it(tiny_model_dir, tmp_path):
    folder = seq_length.folder_at_length(tiny_model_dir, 32, tmp_path)
    classifier = TierClassifier(folder, intra_op_threads=1)
    ids, counts = classifier.encoder.encode_ids([ROWS[1]["text"]])
    assert classifier.manifest.max_length == 32 and len(ids[0]) == 32
    assert counts[0] >= 100  # the full count still reads every word (the long-context rule needs it)


def routed_tiers(folder: Path) -> np.ndarray:
    """Every row's routed tier, bare then under each evaluation wrapper condition (seed 13). -> (11, 6)"""
    classifier = TierClassifier(folder, intra_op_threads=1)
    library = WrapperLibrary.load("eval")
    shapes = [[row_input(r) for r in ROWS]] + [wrapped_inputs(ROWS, library, c, 13) for c in CONDITIONS]
    return np.array([[p.tier for p in classifier.classify(inputs)] for inputs in shapes])


def test_the_study_writes_one_row_per_length_with_the_first_as_reference(
    tiny_model_dir, tmp_path, monkeypatch
):
    processed = tmp_path / "processed"
    processed.mkdir()
    for split in ("train", "val", "test", "heldout"):
        (processed / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    requests = tmp_path / "requests.jsonl"
    requests.write_text("".join(json.dumps({"body": {"text": r["text"]}}) + "\n" for r in ROWS))
    monkeypatch.setenv("TIERWISE_PROCESSED_DIR", str(processed))
    output = tmp_path / "seq.md"
    argv = ["--model", str(tiny_model_dir), "--lengths", "64,24", "--requests", str(requests)]
    argv += ["--latency-requests", "6", "--repeats", "1", "--rows", "6", "--output", str(output)]
    assert seq_length.main(argv) == 0
    results = json.loads(output.with_suffix(".json").read_text())
    assert [r["max_length"] for r in results] == [64, 24]
    # Agreement with the first length, one request at a time: each row bare and under every wrapper
    # condition, routed by a folder at 64 tokens and by one at 24. The cut moves some of them.
    routed = {n: routed_tiers(seq_length.folder_at_length(tiny_model_dir, n, tmp_path)) for n in (64, 24)}
    expected = float(np.mean(routed[64] == routed[24]))
    assert 0.0 < expected < 1.0
    assert results[0]["test"]["same_tier_as_first"] == 1.0
    for split in ("test", "heldout"):
        assert results[1][split]["same_tier_as_first"] == pytest.approx(expected)
    assert results[1]["truncated"] > results[0]["truncated"]  # 24 tokens cut more of the long rows
    assert all(r["p99_ms"] >= r["p50_ms"] > 0 for r in results)
    table = output.read_text()
    assert "| 64 |" in table and "| 24 |" in table and "heldout" in table


def test_missing_bench_requests_say_which_command_builds_them(tmp_path, capsys):
    assert seq_length.main(["--requests", str(tmp_path / "nope.jsonl")]) == 2
    assert "make bench-requests" in capsys.readouterr().err
