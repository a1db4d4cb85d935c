import pytest

from training.labels import (
    DIFFICULTY_SOURCE_TIERS,
    MATH_LEVEL_TIERS,
    TIERS,
    cheapest_passing,
    tier_passes,
    validate_allowed,
)


def test_multiple_choice_needs_a_majority_not_one_lucky_model():
    assert not tier_passes([1, 0], multiple_choice=True)  # one of two could be a guess
    assert not tier_passes([1, 0, 0], multiple_choice=True)
    assert tier_passes([1, 1, 0], multiple_choice=True)


def test_open_ended_passes_when_the_best_model_passes():
    assert tier_passes([0, 0, 1], multiple_choice=False)
    assert not tier_passes([0, 0, 0], multiple_choice=False)


def test_cheapest_passing_tier_with_all_tiers_covered():
    outcomes = {"fast": [0, 0], "balanced": [1, 1, 0], "frontier": [1, 1, 1]}
    assert cheapest_passing(outcomes, multiple_choice=True) == {"balanced"}
    outcomes["fast"] = [1, 1]
    assert cheapest_passing(outcomes, multiple_choice=True) == {"fast"}


def test_a_pass_by_the_cheapest_covered_tier_only_bounds_the_label():
    # RouteLLM: Mixtral (balanced) passed, nothing cheaper was run -> fast or balanced.
    assert cheapest_passing({"balanced": [1], "frontier": [1]}, multiple_choice=False) == {"fast", "balanced"}
    assert cheapest_passing({"balanced": [0], "frontier": [1]}, multiple_choice=False) == {"frontier"}


def test_rows_no_tier_passes_are_unresolved():
    assert cheapest_passing({"fast": [0], "balanced": [0]}, multiple_choice=False) is None
    assert cheapest_passing({"fast": [0], "balanced": [0], "frontier": [0]}, multiple_choice=False) is None


def test_allowed_sets_are_validated():
    assert validate_allowed(["fast", "balanced"]) == {"fast", "balanced"}
    with pytest.raises(ValueError, match="unknown tier"):
        validate_allowed(["cheap"])
    with pytest.raises(ValueError, match="contiguous"):
        validate_allowed(["fast", "frontier"])
    with pytest.raises(ValueError, match="empty"):
        validate_allowed([])


def test_difficulty_mappings_are_ordered_and_contiguous():
    for allowed in [*MATH_LEVEL_TIERS.values(), *DIFFICULTY_SOURCE_TIERS.values()]:
        validate_allowed(sorted(allowed))
    lows = [min(TIERS.index(t) for t in MATH_LEVEL_TIERS[level]) for level in range(1, 6)]
    assert lows == sorted(lows)  # harder MATH levels never map to a cheaper tier
