"""Tier label rules: from model outcomes (or a source's known difficulty) to allowed tiers.

A label is a set of allowed tiers. Outcome rows with full coverage of the tiers get one tier (the
cheapest passing tier); rows that only bound the tier keep a set, and the training loss honours it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

TIERS: tuple[str, ...] = ("fast", "balanced", "frontier")
TIER_INDEX = {t: i for i, t in enumerate(TIERS)}

# What each tier stands for: today's price classes (serving/tierwise/core/policy.yaml routes to them). Every
# source's models are mapped onto these classes by what they can do, not by what they cost when
# they were released (data/README.md, "Tier classes"). Written into the model manifest.
TIER_CLASSES: dict[str, str] = {
    "fast": "gpt-4o-mini / Claude Haiku / Gemini Flash class (gpt-5-mini, gpt-5-nano), 7-27B open models",
    "balanced": "gpt-4.1 / Claude Sonnet / gpt-4o class, and 70B-405B open models",
    "frontier": "the top models: o1, gpt-5, Gemini 2.5 Pro, Claude Opus",
}


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


def half_or_more_pass(outcomes: Sequence[float]) -> bool:
    """A tier passes when at least half of its models pass (ZeroEval's core set, shaberi).

    Used where each tier has several current models and a verdict per model: one greedy sample
    per model is noisy, so the tier's typical model, not its best, decides.
    """
    if not outcomes:
        raise ValueError("a tier needs at least one model outcome")
    return sum(1 for o in outcomes if o >= 0.5) * 2 >= len(outcomes)


def cheapest_passing(
    outcomes_by_tier: Mapping[str, Sequence[float]],
    multiple_choice: bool = False,
    *,
    passes: Callable[[Sequence[float]], bool] | None = None,
) -> frozenset[str] | None:
    """Allowed tiers from outcomes of some tiers, or None when no covered tier passes.

    With all tiers covered the answer is one tier. If the top tiers are not covered (no frontier
    model was run), a row that no covered tier passes is unresolved (None: dropped, counted).
    If the cheap tiers are not covered, a pass by a covered tier only bounds the label from above.
    `passes` replaces the default rule (`tier_passes` with `multiple_choice`).
    """
    covered = [t for t in TIERS if t in outcomes_by_tier]
    if not covered:
        raise ValueError("no tier has outcomes")
    for tier in covered:
        outcomes = outcomes_by_tier[tier]
        if passes(outcomes) if passes is not None else tier_passes(outcomes, multiple_choice):
            lowest_covered = TIER_INDEX[covered[0]]
            idx = TIER_INDEX[tier]
            if idx == lowest_covered:
                # Nothing cheaper was tried: any tier up to this one may be the cheapest that passes.
                return frozenset(TIERS[: idx + 1])
            return frozenset({tier})
    return None


def allowed_mask(allowed: Sequence[str]) -> list[float]:
    """(tiers,) 1.0 for each tier that serves the request: the training target of a row."""
    mask = [0.0] * len(TIERS)
    for t in allowed:
        mask[TIER_INDEX[t]] = 1.0
    return mask


def lowest_tier(allowed: frozenset[str] | Sequence[str]) -> str:
    return min(allowed, key=TIER_INDEX.__getitem__)


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


# Difficulty-only sources: the source (or MATH level) bounds the tier, anchored to today's classes
# (data/README.md, "Tier classes"). gpt-4o-mini alone solves 94% of GSM8K (ZeroEval) and about
# 70% of MATH (OpenAI's figure), so arithmetic word problems, GSM8K and MATH levels 1-3 are fast;
# level 4, college and Minerva math are fast or balanced; contest problems (olympiad, AIME, AMC)
# need the frontier tier.
#
# MATH level 5 carries no bound (None: read, dropped and counted). {balanced, frontier} would
# contradict ZeroEval's outcomes on 718 level-5 problems: at least half of the 2024 core fast
# models pass 187 of them (31% of the rows any tier passes; gpt-4o-mini alone passes 52%), and
# today's fast models are stronger still; the frontier tier is the cheapest for only 41%. A
# level-5 problem can be any tier, so its label comes from ZeroEval's per-problem outcomes
# (zeroeval_math_l5) or not at all.
MATH_LEVEL_TIERS: dict[int, frozenset[str] | None] = {
    1: frozenset({"fast"}),
    2: frozenset({"fast"}),
    3: frozenset({"fast"}),
    4: frozenset({"fast", "balanced"}),
    5: None,
}

DIFFICULTY_SOURCE_TIERS: dict[str, frozenset[str]] = {
    "svamp": frozenset({"fast"}),
    "mawps": frozenset({"fast"}),
    "asdiv": frozenset({"fast"}),
    "gsm8k": frozenset({"fast"}),  # ZeroEval: the core fast tier passes 1,222 of 1,285 resolved rows
    "aqua": frozenset({"fast"}),
    "sat_math": frozenset({"fast"}),
    "college_math": frozenset({"fast", "balanced"}),
    "minerva_math": frozenset({"fast", "balanced"}),
    "olympiadbench": frozenset({"frontier"}),
    "aime24": frozenset({"frontier"}),
    "amc23": frozenset({"frontier"}),
}
