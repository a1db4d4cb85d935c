"""The batch-invariance bench: its `before` column really is batch-dependent, its `after` is not."""

import random
from pathlib import Path

import pytest
from tierwise.core.classifier import TierClassifier

from tools import batch_invariance
from tools.tiny_model import write_int8_model_folder

POOL = ["hi thanks ok", "please write an email and summarize the list", "prove the theorem and design it"]


@pytest.fixture(scope="module")
def int8_classifier(tmp_path_factory: pytest.TempPathFactory) -> TierClassifier:
    return TierClassifier(
        write_int8_model_folder(tmp_path_factory.mktemp("models") / "int8"), intra_op_threads=1
    )


def test_only_the_padded_batches_move_a_rows_probabilities(int8_classifier: TierClassifier) -> None:
    rng = random.Random(3)
    words = " ".join(POOL).split()
    texts = [" ".join(rng.choices(words, k=rng.randint(1, 60))) for _ in range(80)]
    rows = {
        name: (diff, flips)
        for name, diff, flips in batch_invariance.invariance_rows(int8_classifier, texts, 16, 3)
    }
    assert rows["padded batch (before)"][0] > 1e-3  # dynamic int8 scales span the padded batch
    assert rows["row by row (after)"] == (0.0, 0)


def test_the_table_has_both_scorings_for_every_call(
    tiny_model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["--model", str(tiny_model_dir), "--rows", "20", "--batch", "4", "--iterations", "3"]
    assert batch_invariance.main([*args, "--batch-iterations", "2", "--threads", "1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    for call in (
        "1 request, 16 tokens",
        "1 request, 64 tokens",
        "4 requests, 64 tokens",
        "4 requests, mixed lengths",
    ):
        assert [line.split(" | ")[1] for line in lines if line.startswith(f"| {call} |")] == [
            "padded batch (before)",
            "row by row (after)",
        ]
