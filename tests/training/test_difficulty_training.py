"""Training that cannot win by naming the source: soft targets, the within-source ranking term,
source-balanced batches and the weight of sources whose labels say nothing inside them."""

import math

import numpy as np
import pytest
import torch
from tierwise.training.finetune import (
    DifficultyTargets,
    SourceBalancedSampler,
    above_fast_score,
    rank_key,
    tier_loss,
    within_source_ranking_loss,
)
from tierwise.training.train import source_information_weights

NAN = float("nan")


def test_tier_loss_is_cross_entropy_to_the_soft_target_where_there_is_one():
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.0, 1.0, 0.0]])
    allowed = torch.tensor([[1.0, 1.0, 1.0], [0.0, 1.0, 1.0]])
    soft = torch.tensor([[0.5, 0.3, 0.2], [NAN, NAN, NAN]])
    weight = torch.tensor([1.0, 3.0])
    log_p = torch.log_softmax(logits, dim=-1)
    by_hand_soft = -(0.5 * log_p[0, 0] + 0.3 * log_p[0, 1] + 0.2 * log_p[0, 2])
    by_hand_set = -torch.log(log_p[1, 1].exp() + log_p[1, 2].exp())
    expected = (1.0 * by_hand_soft + 3.0 * by_hand_set) / 4.0
    assert tier_loss(logits, allowed, soft, weight).item() == pytest.approx(expected.item(), rel=1e-6)
    # Without soft targets the first row's allowed set (every tier) costs nothing.
    assert tier_loss(logits, allowed, None, weight).item() == pytest.approx(
        3.0 * by_hand_set.item() / 4.0, rel=1e-5
    )


def test_above_fast_score_is_the_log_odds_of_fast_not_sufficing():
    logits = torch.log(torch.tensor([[0.2, 0.3, 0.5]]))
    assert above_fast_score(logits).item() == pytest.approx(math.log(0.8 / 0.2), rel=1e-6)


def test_ranking_compares_only_rows_of_one_source_and_beyond_the_margin():
    # Row 0 is hard and row 1 easy in source 0; row 2 (another source) would be a wrong pair with both.
    logits = torch.tensor([[0.0, 0.0, 0.0], [0.0, 0.0, 0.0], [5.0, -5.0, -5.0]], requires_grad=True)
    source = torch.tensor([0, 0, 1])
    key = torch.tensor([2.0, 0.0, 9.0])
    loss = within_source_ranking_loss(logits, source, key, margin=0.5)
    assert loss.item() == pytest.approx(math.log(2.0), rel=1e-6)  # one pair with equal scores: softplus(0)
    loss.backward()
    # The gradient raises the hard row's P(tier > fast) and lowers the easy row's; row 2 is untouched.
    assert above_fast_score(logits.detach() - 0.1 * logits.grad)[0] > above_fast_score(logits.detach())[0]
    assert torch.all(logits.grad[2] == 0)


def test_ranking_has_no_pair_within_the_margin_or_with_unknown_difficulty():
    logits = torch.zeros((3, 3), requires_grad=True)
    loss = within_source_ranking_loss(
        logits, torch.tensor([0, 0, 0]), torch.tensor([1.0, 1.3, NAN]), margin=0.5
    )
    assert loss.item() == 0.0
    loss.backward()  # still a graph
    assert torch.all(logits.grad == 0)


def test_ranking_loss_falls_when_the_order_is_right():
    source, key = torch.tensor([0, 0]), torch.tensor([1.0, 0.0])
    right = torch.tensor([[0.0, 0.0, 2.0], [2.0, 0.0, 0.0]])
    wrong = right.flip(0)
    assert within_source_ranking_loss(right, source, key, 0.5) < within_source_ranking_loss(
        wrong, source, key, 0.5
    )


def test_rank_key_prefers_the_fitted_difficulty_then_the_level_then_the_label():
    assert rank_key({"difficulty": -0.7, "level": 5, "allowed_tiers": ["fast"]}) == -0.7
    assert rank_key({"level": 4, "allowed_tiers": ["fast"]}) == 4.0
    assert rank_key({"allowed_tiers": ["balanced", "frontier"]}) == 1.0


def test_difficulty_targets_from_rows():
    rows = [
        {"source": "b", "soft_target": [0.1, 0.2, 0.7], "difficulty": 1.5, "allowed_tiers": ["frontier"]},
        {"source": "a", "allowed_tiers": ["fast", "balanced", "frontier"]},
    ]
    targets = DifficultyTargets.from_rows(rows)
    assert targets.soft[0].tolist() == [0.1, 0.2, 0.7] and np.isnan(targets.soft[1]).all()
    assert targets.rank_key.tolist() == [1.5, 0.0] and targets.source_ids.tolist() == [1, 0]


def test_source_balanced_batches():
    # One source of 900 rows and two of 50: each batch holds 2 sources x 4 rows.
    source_ids = np.array([0] * 900 + [1] * 50 + [2] * 50)
    sampler = SourceBalancedSampler(source_ids, batch_size=8, sources_per_batch=2, seed=3, temperature=0.0)
    order = list(sampler)
    assert len(order) == len(source_ids) == len(sampler)
    for start in range(0, len(order) - 7, 8):
        batch = source_ids[order[start : start + 8]]
        assert sorted(np.unique(batch, return_counts=True)[1].tolist()) == [4, 4]
    share = np.bincount(source_ids[order], minlength=3) / len(order)
    assert share == pytest.approx([1 / 3] * 3, abs=0.05)  # temperature 0: sources drawn uniformly
    assert list(sampler) != order  # a new order each epoch
    assert list(SourceBalancedSampler(source_ids, 8, 2, seed=3, temperature=0.0)) == order  # seeded


def test_sources_whose_labels_say_nothing_inside_them_weigh_less():
    rows = [
        {"source": "gsm8k", "allowed_tiers": ["fast", "balanced", "frontier"]},
        {"source": "gsm8k", "allowed_tiers": ["fast", "balanced", "frontier"]},
        {"source": "math", "allowed_tiers": ["fast"]},
        {"source": "math", "allowed_tiers": ["frontier"]},
        {"source": "mmlu_pro", "allowed_tiers": ["fast"], "difficulty": 0.1},
        {"source": "mmlu_pro", "allowed_tiers": ["fast"], "difficulty": 1.2},
    ]
    assert source_information_weights(rows, 0.3).tolist() == [0.3, 0.3, 1.0, 1.0, 1.0, 1.0]
