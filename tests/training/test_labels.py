import pytest
from tierwise.training.labels import (
    DIFFICULTY_SOURCE_TIERS,
    MATH_LEVEL_TIERS,
    TIER_CLASSES,
    TIERS,
    cheapest_passing,
    half_or_more_pass,
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
    # Nothing cheaper than the balanced tier was run: a balanced pass means fast or balanced.
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


def test_at_least_half_of_a_tiers_models_must_pass():
    assert half_or_more_pass([1, 0])  # half is enough (ZeroEval core set, shaberi)
    assert half_or_more_pass([1])
    assert not half_or_more_pass([1, 0, 0])
    with pytest.raises(ValueError):
        half_or_more_pass([])


def test_cheapest_passing_takes_another_pass_rule():
    outcomes = {"fast": [1, 0], "balanced": [1, 1], "frontier": [1, 1]}
    assert cheapest_passing(outcomes, multiple_choice=True) == {"balanced"}
    assert cheapest_passing(outcomes, passes=half_or_more_pass) == {"fast"}
    assert cheapest_passing({"fast": [0, 0, 1], "balanced": [0]}, passes=half_or_more_pass) is None


def test_every_tier_has_a_class_description():
    assert list(TIER_CLASSES) == list(TIERS)
    assert all(isinstance(v, str) and v for v in TIER_CLASSES.values())
    assert "gpt-4o-mini" in TIER_CLASSES["fast"] and "Sonnet" in TIER_CLASSES["balanced"]


def test_difficulty_mappings_are_ordered_and_contiguous():
    bounded = [a for a in MATH_LEVEL_TIERS.values() if a is not None]
    for allowed in [*bounded, *DIFFICULTY_SOURCE_TIERS.values()]:
        validate_allowed(sorted(allowed))
    lows = [min(TIERS.index(t) for t in MATH_LEVEL_TIERS[level]) for level in range(1, 5)]
    assert lows == sorted(lows)  # harder MATH levels never map to a cheaper tier


def test_math_levels_anchored_to_todays_fast_class():
    assert [MATH_LEVEL_TIERS[n] for n in (1, 2, 3)] == [{"fast"}] * 3
    assert MATH_LEVEL_TIERS[4] == {"fast", "balanced"}
    # ZeroEval: the fast tier is the cheapest passing tier for about a third of level-5 problems,
    # so the level alone bounds nothing; those rows are labeled from outcomes or dropped.
    assert MATH_LEVEL_TIERS[5] is None
    assert DIFFICULTY_SOURCE_TIERS["gsm8k"] == {"fast"}
    assert DIFFICULTY_SOURCE_TIERS["olympiadbench"] == {"frontier"}
