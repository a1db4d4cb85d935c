"""A request's scores must not depend on the other requests it is batched with (issue 22, item 2).

Shipped models are dynamically int8 quantized: DynamicQuantizeLinear takes its activation scale over
the whole input tensor, so scoring padded rows together moves every row's probabilities (and can
flip a tier). Every row scored alone and inside seeded random batches of rows of other lengths must
get the same tier and probabilities within 1e-5.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import onnx
import pytest
from tierwise.core.classifier import TierClassifier, TierPrediction

from tools.tiny_model import (
    BALANCED_WORDS,
    FAST_WORDS,
    FRONTIER_WORDS,
    NEUTRAL_WORDS,
    write_int8_model_folder,
)

REPO = Path(__file__).resolve().parents[2]
DEFAULT_MODEL = REPO / "models" / "default"
TOLERANCE = 1e-5
PROSE_TEXT = (
    "Summarize the attached quarterly report for the board and list the three largest risks. "
    "Prove that every bounded monotone sequence of real numbers converges, then give an example. "
    "hi, thanks! what time is it in Tokyo right now? ok. Write a short email declining the meeting. "
    "Design a distributed rate limiter for a multi-region API gateway and discuss its failure modes."
)


def tiny_texts(rng: random.Random, n: int) -> list[str]:
    """Texts of 1 to 80 words (past the tiny model's 64-token max length) with mixed tier words."""
    vocab = FAST_WORDS + BALANCED_WORDS + FRONTIER_WORDS + NEUTRAL_WORDS * 3
    return [" ".join(rng.choices(vocab, k=rng.randint(1, 80))) for _ in range(n)]


def prose_texts(rng: random.Random, n: int) -> list[str]:
    """Runs of 1 to 150 words cut from PROSE_TEXT (repeated), so lengths and topics vary."""
    words = PROSE_TEXT.split() * 4
    out = []
    for _ in range(n):
        length = rng.randint(1, 150)
        start = rng.randrange(len(words) - length + 1) if length < len(words) else 0
        out.append(" ".join(words[start : start + length]))
    return out


def random_batches(rng: random.Random, n: int, rounds: int) -> list[list[int]]:
    """`rounds` shuffles of range(n), each cut into batches of 2 to 16 rows."""
    batches = []
    for _ in range(rounds):
        order = list(range(n))
        rng.shuffle(order)
        while order:
            size = rng.randint(2, 16)
            batches.append(order[:size])
            order = order[size:]
    return batches


def assert_batch_invariant(classifier: TierClassifier, texts: list[str], rng: random.Random) -> None:
    alone: list[TierPrediction] = [classifier.classify([text])[0] for text in texts]
    lengths = {len(ids) for ids in classifier.encoder.encode_ids(texts)[0]}
    assert len(lengths) > 5, "the rows must differ in length, or no batch is padded"
    for batch in random_batches(rng, len(texts), rounds=3):
        together = classifier.classify([texts[i] for i in batch])
        for i, got in zip(batch, together, strict=True):
            want = alone[i]
            np.testing.assert_allclose(
                list(got.probabilities.values()),
                list(want.probabilities.values()),
                rtol=0,
                atol=TOLERANCE,
                err_msg=f"row {i} ({texts[i][:40]!r}) in a batch of {len(batch)}",
            )
            assert (got.tier, got.predicted_tier) == (want.tier, want.predicted_tier), texts[i][:40]


@pytest.fixture(scope="module")
def int8_tiny_classifier(tmp_path_factory: pytest.TempPathFactory) -> TierClassifier:
    folder = write_int8_model_folder(tmp_path_factory.mktemp("models") / "tiny-int8")
    ops = {node.op_type for node in onnx.load(str(folder / "model.onnx")).graph.node}
    assert "DynamicQuantizeLinear" in ops  # the case that broke: scales computed per call
    return TierClassifier(folder, intra_op_threads=1)


def test_rows_score_the_same_alone_and_in_random_batches_on_a_dynamic_int8_model(
    int8_tiny_classifier: TierClassifier,
) -> None:
    rng = random.Random(22)
    assert_batch_invariant(int8_tiny_classifier, tiny_texts(rng, 60), rng)


def test_rows_score_the_same_alone_and_in_random_batches_on_the_fp32_tiny_model(
    tiny_classifier: TierClassifier,
) -> None:
    rng = random.Random(23)
    assert_batch_invariant(tiny_classifier, tiny_texts(rng, 60), rng)


@pytest.mark.skipif(not (DEFAULT_MODEL / "model.onnx").is_file(), reason="models/default is not in this tree")
def test_rows_score_the_same_alone_and_in_random_batches_on_models_default() -> None:
    rng = random.Random(24)
    classifier = TierClassifier(DEFAULT_MODEL, intra_op_threads=1)
    assert_batch_invariant(classifier, prose_texts(rng, 40), rng)
