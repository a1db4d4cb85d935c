"""Tier label rules: from model outcomes (or a source's known difficulty) to allowed tiers.

A label is a set of allowed tiers. Outcome rows with full coverage of the tiers get one tier (the
cheapest passing tier); rows that only bound the tier keep a set, and the training loss honours it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

TIERS: tuple[str, ...] = ("fast", "balanced", "frontier")
TIER_INDEX = {t: i for i, t in enumerate(TIERS)}


def tier_passes(outcomes: Sequence[float], multiple_choice: bool) -> bool:
    """Does a tier pass a prompt, given its models' 0/1 outcomes?

    Multiple choice is passed by guessing 25-50% of the time, so one lucky small model is not
    enough: a strict majority of the tier's models must pass. Open-ended answers (code run by
    tests, numeric answers) are not guessed, so the tier's best model passing is enough.
    """
    if not outcomes:
        raise ValueError("a tier needs at least one model outcome")
    passed = sum(1 for o in outcomes if o >= 0.5)
    return passed * 2 > len(outcomes) if multiple_choice else passed >= 1


def cheapest_passing(
    outcomes_by_tier: Mapping[str, Sequence[float]], multiple_choice: bool
) -> frozenset[str] | None:
    """Allowed tiers from outcomes of some tiers, or None when no covered tier passes.

    With all tiers covered the answer is one tier. If the top tiers are not covered (no frontier
    model was run), a row that no covered tier passes is unresolved (None: dropped, counted).
    If the cheap tiers are not covered, a pass by a covered tier only bounds the label from above.
    """
    covered = [t for t in TIERS if t in outcomes_by_tier]
    if not covered:
        raise ValueError("no tier has outcomes")
    for tier in covered:
        if tier_passes(outcomes_by_tier[tier], multiple_choice):
            lowest_covered = TIER_INDEX[covered[0]]
            idx = TIER_INDEX[tier]
            if idx == lowest_covered:
                # Nothing cheaper was tried: any tier up to this one may be the cheapest that passes.
                return frozenset(TIERS[: idx + 1])
            return frozenset({tier})
    return None


def lowest_tier(allowed: frozenset[str] | Sequence[str]) -> str:
    return min(allowed, key=TIER_INDEX.__getitem__)


def highest_tier(allowed: frozenset[str] | Sequence[str]) -> str:
    return max(allowed, key=TIER_INDEX.__getitem__)


def validate_allowed(allowed: Sequence[str]) -> frozenset[str]:
    """Check tier names; allowed sets must be contiguous ranges of ordered tiers."""
    unknown = [t for t in allowed if t not in TIER_INDEX]
    if unknown:
        raise ValueError(f"unknown tier(s) {unknown}; tiers are {list(TIERS)}")
    if not allowed:
        raise ValueError("allowed_tiers is empty")
    idx = sorted(TIER_INDEX[t] for t in set(allowed))
    if idx != list(range(idx[0], idx[-1] + 1)):
        raise ValueError(f"allowed_tiers {sorted(set(allowed))} must be a contiguous range of {list(TIERS)}")
    return frozenset(allowed)


# Difficulty-only sources: the source (or MATH level) bounds the tier. Documented in data/README.md.
MATH_LEVEL_TIERS: dict[int, frozenset[str]] = {
    1: frozenset({"fast"}),
    2: frozenset({"fast", "balanced"}),
    3: frozenset({"balanced"}),
    4: frozenset({"balanced", "frontier"}),
    5: frozenset({"frontier"}),
}

DIFFICULTY_SOURCE_TIERS: dict[str, frozenset[str]] = {
    "svamp": frozenset({"fast"}),
    "mawps": frozenset({"fast"}),
    "asdiv": frozenset({"fast"}),
    "gsm8k": frozenset({"fast", "balanced"}),
    "aqua": frozenset({"fast", "balanced"}),
    "sat_math": frozenset({"fast", "balanced"}),
    "college_math": frozenset({"balanced", "frontier"}),
    "minerva_math": frozenset({"balanced", "frontier"}),
    "olympiadbench": frozenset({"frontier"}),
    "aime24": frozenset({"frontier"}),
    "amc23": frozenset({"frontier"}),
}
