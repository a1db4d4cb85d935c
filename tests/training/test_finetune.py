"""The fine-tuning losses and the twin batches (no training here: the end-to-end test trains).

Slow as a whole: importing torch alone takes seconds, so the fast loop does not import this module."""

import numpy as np
import pytest
import torch
from tierwise.training.finetune import (
    PaddingCollator,
    TierDataset,
    allowed_set_loss,
    consistency_loss,
    distillation_loss,
    load_model,
)

pytestmark = pytest.mark.slow


def test_allowed_set_loss_rewards_probability_anywhere_in_the_set():
    logits = torch.tensor([[4.0, 0.0, 0.0], [0.0, 4.0, 0.0]])
    allowed = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 0.0]])
    weight = torch.ones(2)
    low = allowed_set_loss(logits, allowed, weight)
    high = allowed_set_loss(logits, torch.tensor([[0.0, 0.0, 1.0], [0.0, 0.0, 1.0]]), weight)
    assert low < 0.05 < high


def test_consistency_is_zero_for_identical_predictions_and_moves_only_the_wrapped_side():
    plain = torch.tensor([[2.0, 0.0, -1.0]], requires_grad=True)
    same = plain.detach().clone().requires_grad_(True)
    assert consistency_loss(plain, same, torch.ones(1)).item() == pytest.approx(0.0, abs=1e-7)
    wrapped = torch.tensor([[-1.0, 0.0, 2.0]], requires_grad=True)
    loss = consistency_loss(plain, wrapped, torch.ones(1))
    loss.backward()
    assert loss.item() > 0.5
    assert plain.grad is None and wrapped.grad is not None  # the bare prediction is the target


def test_collator_pads_rows_and_their_twins_separately():
    dataset = TierDataset(
        [[101, 5, 102], [101, 102]], [[101, 7, 8, 9, 102], [101, 6, 102]], [[1, 0, 0]] * 2, [1.0, 2.0]
    )
    batch = PaddingCollator(pad_id=0)([dataset[0], dataset[1]])
    assert batch["input_ids"].shape == (2, 3) and batch["twin_ids"].shape == (2, 5)
    assert batch["twin_attention_mask"].tolist() == [[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]]
    assert batch["weight"].tolist() == [1.0, 2.0]


def test_dataset_refuses_misaligned_twins():
    with pytest.raises(ValueError, match="one entry per row"):
        TierDataset([[1]], [], [[1, 0, 0]], [1.0])


def test_distillation_is_zero_at_the_teacher_and_pulls_the_student_towards_it():
    teacher = torch.tensor([[0.6, 0.3, 0.1]])
    matching = torch.log(teacher).clone().requires_grad_(True)
    assert distillation_loss(teacher, matching, torch.ones(1)).item() == pytest.approx(0.0, abs=1e-6)
    student = torch.tensor([[0.0, 0.0, 3.0]], requires_grad=True)  # sure of frontier, the teacher is not
    loss = distillation_loss(teacher, student, torch.ones(1))
    loss.backward()
    assert loss.item() > 1.0
    assert student.grad[0, 2] > 0 > student.grad[0, 0]  # a step lowers frontier and raises fast


def test_teacher_probabilities_travel_with_their_rows():
    probs = np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]])
    dataset = TierDataset([[101, 102], [101, 5, 102]], [[101, 102]] * 2, [[1, 0, 0]] * 2, [1.0, 1.0], probs)
    batch = PaddingCollator(pad_id=0)([dataset[1], dataset[0]])
    np.testing.assert_allclose(batch["teacher_probs"].numpy(), [[0.1, 0.1, 0.8], [0.7, 0.2, 0.1]], rtol=1e-6)
    with pytest.raises(ValueError, match="one row per training row"):
        TierDataset([[1]], [[1]], [[1, 0, 0]], [1.0], probs)


def test_a_student_keeps_the_first_layers_and_says_so_in_its_config():
    model = load_model("tiny-random", seed=1, layers=1)
    assert len(model.bert.encoder.layer) == 1 and model.config.num_hidden_layers == 1
    with pytest.raises(ValueError, match="only 1"):
        load_model("tiny-random", seed=1, layers=2)
