"""From verdicts to per-prompt targets (training/difficulty_targets.py) and the verdict table they
start from (training/verdicts.py): tiers and soft targets worked by hand, a tiny table whose fast
models fail the hard prompts, and one name per model across collections."""

import pytest
from tierwise.training.difficulty_targets import fit_difficulty, soft_target, tier_from_p_fail
from tierwise.training.labels import TIERS
from tierwise.training.verdicts import VerdictTable, model_key

# --- tier and soft target, by hand ---


@pytest.mark.parametrize(
    ("p_fail", "tier", "soft"),
    [
        # fast fails too often, balanced serves it: P(cheapest success) = 0.3 fast, 0.7 - 0.3 balanced, 0.3 rest
        ({"fast": 0.7, "balanced": 0.3, "frontier": 0.1}, "balanced", [0.3, 0.4, 0.3]),
        ({"fast": 0.1, "balanced": 0.05, "frontier": 0.0}, "fast", [0.9, 0.05, 0.05]),
        # no cheaper class is likely to serve it
        ({"fast": 0.9, "balanced": 0.8, "frontier": 0.6}, "frontier", [0.1, 0.1, 0.8]),
        # balanced failing more than fast is clamped: where fast succeeds, the abler class is taken to
        # succeed too, so nothing is left for balanced and frontier holds fast's failures
        ({"fast": 0.2, "balanced": 0.6, "frontier": 0.05}, "fast", [0.8, 0.0, 0.2]),
        # the threshold itself still serves
        ({"fast": 0.5, "balanced": 0.2, "frontier": 0.1}, "fast", [0.5, 0.3, 0.2]),
    ],
)
def test_tier_and_soft_target_of_hand_worked_p_fail(p_fail, tier, soft):
    assert tier_from_p_fail(p_fail) == tier
    assert soft_target(p_fail) == pytest.approx(soft)
    assert sum(soft_target(p_fail)) == pytest.approx(1.0)


def test_a_stricter_threshold_sends_the_prompt_to_an_abler_class():
    p_fail = {"fast": 0.3, "balanced": 0.15, "frontier": 0.05}
    assert tier_from_p_fail(p_fail, threshold=0.5) == "fast"
    assert tier_from_p_fail(p_fail, threshold=0.2) == "balanced"
    assert tier_from_p_fail(p_fail, threshold=0.1) == "frontier"


# --- the whole path on a tiny verdict table ---

FAST = ["meta-llama/Meta-Llama-3.1-8B-Instruct", "gpt-4o-mini-2024-07-18"]
BALANCED = ["gpt-4o-2024-08-06", "meta-llama/Meta-Llama-3.1-70B-Instruct"]
FRONTIER = ["claude-3-opus-20240229", "o1-preview-2024-09-12"]
PRICE_CLASSES = {
    model_key(name): tier
    for names, tier in ((FAST, "fast"), (BALANCED, "balanced"), (FRONTIER, "frontier"))
    for name in names
}


def tiny_table() -> VerdictTable:
    """8 easy prompts every model solves, 8 that only the fast models fail, 8 only frontier solves."""
    table = VerdictTable()
    for i in range(8):
        table.add(f"easy question number {i}", "gsm8k", dict.fromkeys(FAST + BALANCED + FRONTIER, 1.0))
        table.add(
            f"hard question number {i}",
            "gsm8k",
            {**dict.fromkeys(FAST, 0.0), **dict.fromkeys(BALANCED + FRONTIER, 1.0)},
        )
        table.add(
            f"hardest question number {i}",
            "gsm8k",
            {**dict.fromkeys(FAST + BALANCED, 0.0), **dict.fromkeys(FRONTIER, 1.0)},
        )
    return table


@pytest.fixture(scope="module")
def tiny_fit():
    return fit_difficulty(tiny_table(), PRICE_CLASSES)


def test_prompts_the_fast_models_fail_are_harder_and_go_to_an_abler_tier(tiny_fit):
    targets, fit = tiny_fit
    assert fit.converged
    assert len(targets) == 24
    easy, hard, hardest = (targets[f"{kind} question number 3"] for kind in ("easy", "hard", "hardest"))
    assert easy.difficulty < hard.difficulty < hardest.difficulty
    assert easy.p_fail["fast"] < 0.5 < hard.p_fail["fast"] < hardest.p_fail["fast"]
    assert hard.p_fail["balanced"] < 0.5 < hardest.p_fail["balanced"]
    assert [easy.tier, hard.tier, hardest.tier] == ["fast", "balanced", "frontier"]
    for target in (easy, hard, hardest):
        assert target.evidence == 6
        assert target.soft_target == pytest.approx(soft_target(target.p_fail))
        assert set(target.p_fail) == set(TIERS)


def test_a_class_without_a_model_with_verdicts_is_named_in_the_error():
    without_frontier = {key: tier for key, tier in PRICE_CLASSES.items() if tier != "frontier"}
    with pytest.raises(ValueError, match="frontier"):
        fit_difficulty(tiny_table(), without_frontier)
    # a frontier model that has no verdict does not stand for the class either
    with pytest.raises(ValueError, match="frontier"):
        fit_difficulty(tiny_table(), {**without_frontier, "gpt-5": "frontier"})


# --- verdicts: one name per model, one item per prompt ---


@pytest.mark.parametrize(
    ("names", "key"),
    [
        (
            [
                "meta-llama/Meta-Llama-3.1-8B-Instruct",
                "Meta-Llama-3.1-8B-Instruct-20240620",
                "meta-llama/Llama-3.1-8B-Instruct",
                "Meta-Llama-3_1-8B-Instruct",
            ],
            "llama-3.1-8b-instruct",
        ),
        (["gpt-4-1106-preview", "openai/gpt-4-turbo-2024-04-09", "gpt-4-turbo"], "gpt-4-turbo"),
        (["gpt-3.5-turbo-0125", "gpt-3.5-turbo-1106", "gpt-3.5"], "gpt-3.5-turbo"),
        (["gpt-4o-2024-08-06", "openai/gpt-4o"], "gpt-4o"),
        (["claude-3-5-sonnet-20240620", "claude-3-5-sonnet@20240620"], "claude-3-5-sonnet"),
        (["mixtral-8x7b-chat", "mistralai/Mixtral-8x7B-Instruct-v0.1"], "mixtral-8x7b-instruct-v0.1"),
    ],
)
def test_model_key_gives_one_name_per_model_across_collections(names, key):
    assert {model_key(name) for name in names} == {key}


def test_model_key_keeps_different_models_apart():
    names = [
        "Meta-Llama-3.1-8B-Instruct",
        "Meta-Llama-3.1-70B-Instruct",
        "gpt-4o",
        "gpt-4o-mini-2024-07-18",
        "gpt-4",
    ]
    assert len({model_key(name) for name in names}) == len(names)


def test_a_prompt_seen_twice_is_one_item_with_both_verdict_sets():
    table = VerdictTable()
    table.add(
        "What is 2 + 2?", "gsm8k", {"gpt-4o-2024-08-06": 1.0, "meta-llama/Meta-Llama-3.1-8B-Instruct": 0.0}
    )
    table.add("what is 2+2", "mmlu", {"openai/gpt-4o": 0.5, "claude-3-opus-20240229": 1.0}, guess=0.25)
    table.add("What is 2 + 3?", "gsm8k", {"gpt-4o": 1.0})
    table.add("What is 2 + 2?", "gsm8k", {})  # no verdict: nothing to note
    assert len(table) == 2
    item = table.items["what is 2 2"]
    assert item.source == "gsm8k"  # the first collection's source stays its prior group
    assert item.models == ["gpt-4o", "llama-3.1-8b-instruct", "gpt-4o", "claude-3-opus"]
    assert item.outcomes == [1.0, 0.0, 0.5, 1.0]
    assert item.guess == [0.0, 0.0, 0.25, 0.25]
