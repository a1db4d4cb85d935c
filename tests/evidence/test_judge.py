"""The judge's verdict parsing and how verdicts become an allowed-tier label."""

import pytest
from tierwise.evidence import judge

TIERS = ("fast", "balanced", "frontier")


@pytest.mark.parametrize(
    ("reply", "verdict"),
    [
        ("Answer A is more complete.\nVERDICT: A", "A"),
        ("verdict: b", "B"),
        ("**Verdict:** TIE", "TIE"),
        ("VERDICT = [A]", "A"),
        ("Final: [[B]]", "B"),
        ("[[C]]", "TIE"),
        ("A is better. VERDICT: A\nVERDICT: A", "A"),
    ],
)
def test_readable_pairwise_verdicts(reply, verdict):
    assert judge.parse_pairwise(reply) == verdict


@pytest.mark.parametrize(
    "reply",
    [
        None,
        "",
        "Both answers are fine.",
        "VERDICT: A\nOn reflection, VERDICT: B",  # two different verdicts
        "[[A]] or maybe [[B]]",
        "VERDICT: answer one",
        "VERDICT: Alpha",
    ],
)
def test_unreadable_pairwise_verdicts_are_none(reply):
    assert judge.parse_pairwise(reply) is None


@pytest.mark.parametrize(("reply", "grade"), [("GRADE: 4", 4), ("grade = 1", 1), ("**Grade:** 5", 5)])
def test_readable_grades(reply, grade):
    assert judge.parse_grade(reply) == grade


@pytest.mark.parametrize(
    "reply", [None, "", "good answer", "GRADE: 7", "GRADE: 0", "GRADE: 3.5", "GRADE: 2 GRADE: 4"]
)
def test_unreadable_grades_are_none(reply):
    assert judge.parse_grade(reply) is None


def test_a_position_biased_judge_accepts_nothing():
    always_first = judge.PairwiseResult(reference_first="A", candidate_first="A")
    assert always_first.outcomes == ("loss", "win")
    assert always_first.position_bias and always_first.accepted is False
    tie_both = judge.PairwiseResult("TIE", "TIE")
    assert tie_both.accepted is True and not tie_both.position_bias
    better_both = judge.PairwiseResult("B", "A")
    assert better_both.accepted is True
    unreadable = judge.PairwiseResult("A", None)
    assert unreadable.accepted is None and not unreadable.position_bias


def test_rubric_pass_grade():
    assert judge.rubric_accepted(4) is True and judge.rubric_accepted(3) is False
    assert judge.rubric_accepted(None) is None and judge.rubric_accepted(3, pass_grade=3) is True


@pytest.mark.parametrize(
    ("evaluated", "accepted", "allowed", "non_monotone"),
    [
        (TIERS, {"fast": True, "balanced": True}, ["fast"], False),
        (TIERS, {"fast": False, "balanced": True}, ["balanced"], False),
        (TIERS, {"fast": False, "balanced": False}, ["frontier"], False),
        # a cheap tier passes but a stronger one fails: upward, from above the failure, flagged
        (TIERS, {"fast": True, "balanced": False}, ["frontier"], True),
        # tiers not evaluated are possible answers too: bounds, as for RouteLLM rows
        (("fast", "frontier"), {"fast": False}, ["balanced", "frontier"], False),
        (("balanced", "frontier"), {"balanced": True}, ["fast", "balanced"], False),
        (("fast", "balanced"), {"fast": False}, ["balanced"], False),
    ],
)
def test_allowed_tiers(evaluated, accepted, allowed, non_monotone):
    assert judge.allowed_tiers(TIERS, evaluated, accepted) == (allowed, non_monotone)


def test_prompts_carry_both_orders_and_the_verdict_instruction():
    first = judge.pairwise_messages("user: q", "REF", "CAND")
    second = judge.pairwise_messages("user: q", "CAND", "REF")
    assert first[0]["content"] == judge.PAIRWISE_SYSTEM and "VERDICT" in first[0]["content"]
    body = first[1]["content"]
    assert body.index("REF") < body.index("CAND") and second[1]["content"].index("CAND") < second[1][
        "content"
    ].index("REF")
    assert judge.with_reminder(first)[-1]["content"] == judge.RETRY_REMINDER
