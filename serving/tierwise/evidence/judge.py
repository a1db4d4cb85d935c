"""The LLM judge: its prompts, the parsing of its verdicts, and how verdicts become a tier label.

Used by `tierwise label` (tierwise/ops/labeler.py) and the service's shadow evaluation
(tierwise/evidence/shadow.py), so both judge alike. Two modes:

- **pairwise**: the judge sees the request, the reference answer (the strongest tier's) and a
  candidate (a cheaper tier's) and says which is better or that they tie. It is asked twice with the
  answers in swapped positions; the candidate is accepted only when it ties or wins in *both* orders,
  so a judge that favours the first (or second) position cannot accept a worse answer.
- **rubric**: the judge grades one answer on its own from 1 to 5; it passes at `pass_grade` or above.

A verdict the parser cannot read (no verdict line, two different verdicts, a grade out of range) is
`None`: the caller retries the judge once and then leaves the request unlabeled rather than guess.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

Verdict = Literal["A", "B", "TIE"]
JUDGE_MODES = ("pairwise", "rubric")
MAX_GRADE = 5
DEFAULT_PASS_GRADE = 4
JUDGE_MAX_TOKENS = 400
ANSWER_A_MARK = "[Answer A]"
ANSWER_B_MARK = "[Answer B]"
ANSWER_MARK = "[Answer]"
REQUEST_MARK = "[Request]"
END_MARK = "[End]"

PAIRWISE_SYSTEM = (
    "You are an impartial judge of answers from AI assistants. Compare two answers to the same request "
    "for correctness, completeness and helpfulness. Ignore length, style and the order in which the "
    "answers are shown. Think briefly, then end with exactly one line: 'VERDICT: A' if answer A is "
    "better, 'VERDICT: B' if answer B is better, or 'VERDICT: TIE' if they are equally good."
)
RUBRIC_SYSTEM = (
    "You are a strict grader of answers from AI assistants. Grade the answer to the request from 1 to 5: "
    "5 fully correct and complete, 4 correct with minor omissions, 3 partly correct, 2 mostly wrong, "
    "1 wrong or no answer. Ignore length and style. Think briefly, then end with exactly one line: "
    "'GRADE: <1-5>'."
)
RETRY_REMINDER = (
    "Your previous reply had no readable verdict. Reply again and end with the verdict line exactly."
)

_PAIRWISE_RE = re.compile(r"verdict\s*[:=]?\s*[*\"'`\[(]*\s*(a|b|tie)\b", re.IGNORECASE)
_BRACKET_RE = re.compile(r"\[\[\s*(a|b|c|tie)\s*\]\]", re.IGNORECASE)  # MT-bench style [[A]]
_GRADE_RE = re.compile(r"grade\s*[:=]?\s*[*\"'`\[(]*\s*(\d+(?:\.\d+)?)", re.IGNORECASE)


def conversation_block(messages: Sequence[Mapping[str, Any]]) -> str:
    """The request as the judge reads it: each message as `role: text`."""
    lines = []
    for message in messages:
        content = message.get("content")
        if isinstance(content, list):
            content = "\n".join(str(p.get("text", "")) for p in content if isinstance(p, Mapping))
        lines.append(f"{message.get('role', 'user')}: {content or ''}")
    return "\n".join(lines)


def pairwise_messages(request: str, first: str, second: str) -> list[dict[str, str]]:
    """The judge's chat messages comparing `first` (shown as A) with `second` (shown as B)."""
    user = (
        f"{REQUEST_MARK}\n{request}\n{END_MARK}\n\n{ANSWER_A_MARK}\n{first}\n{END_MARK}\n\n"
        f"{ANSWER_B_MARK}\n{second}\n{END_MARK}"
    )
    return [{"role": "system", "content": PAIRWISE_SYSTEM}, {"role": "user", "content": user}]


def rubric_messages(request: str, answer: str) -> list[dict[str, str]]:
    user = f"{REQUEST_MARK}\n{request}\n{END_MARK}\n\n{ANSWER_MARK}\n{answer}\n{END_MARK}"
    return [{"role": "system", "content": RUBRIC_SYSTEM}, {"role": "user", "content": user}]


def with_reminder(messages: list[dict[str, str]]) -> list[dict[str, str]]:
    """The same judge prompt, asking again for a readable verdict line."""
    return [*messages, {"role": "user", "content": RETRY_REMINDER}]


def parse_pairwise(text: str | None) -> Verdict | None:
    """'A', 'B' or 'TIE' from a judge reply; None when absent or ambiguous (two different verdicts)."""
    if not text:
        return None
    found = {m.upper() for m in _PAIRWISE_RE.findall(text)}
    found |= {"TIE" if m.upper() in {"C", "TIE"} else m.upper() for m in _BRACKET_RE.findall(text)}
    if len(found) != 1:
        return None
    return found.pop()


def parse_grade(text: str | None) -> int | None:
    """The 1-5 grade from a judge reply; None when absent, ambiguous or out of range."""
    if not text:
        return None
    found = {float(m) for m in _GRADE_RE.findall(text)}
    if len(found) != 1:
        return None
    grade = found.pop()
    if not grade.is_integer() or not 1 <= grade <= MAX_GRADE:
        return None
    return int(grade)


def candidate_outcome(verdict: Verdict, candidate_position: Literal["A", "B"]) -> str:
    """'win', 'tie' or 'loss' of the candidate in one ordering."""
    if verdict == "TIE":
        return "tie"
    return "win" if verdict == candidate_position else "loss"


@dataclass(frozen=True)
class PairwiseResult:
    """The two orderings of one candidate against the reference."""

    reference_first: Verdict | None  # A = reference, B = candidate
    candidate_first: Verdict | None  # A = candidate, B = reference

    @property
    def readable(self) -> bool:
        return self.reference_first is not None and self.candidate_first is not None

    @property
    def outcomes(self) -> tuple[str, str] | None:
        if self.reference_first is None or self.candidate_first is None:
            return None
        return (
            candidate_outcome(self.reference_first, "B"),
            candidate_outcome(self.candidate_first, "A"),
        )

    @property
    def accepted(self) -> bool | None:
        """As good as the reference in both orders; None when a verdict is unreadable."""
        outcomes = self.outcomes
        if outcomes is None:
            return None
        return all(o in {"win", "tie"} for o in outcomes)

    @property
    def position_bias(self) -> bool:
        """The two orders disagree: the judge favoured a position, not an answer."""
        outcomes = self.outcomes
        return outcomes is not None and (outcomes[0] in {"win", "tie"}) != (outcomes[1] in {"win", "tie"})


def rubric_accepted(grade: int | None, pass_grade: int = DEFAULT_PASS_GRADE) -> bool | None:
    return None if grade is None else grade >= pass_grade


def allowed_tiers(
    tiers: Sequence[str], evaluated: Sequence[str], accepted: Mapping[str, bool]
) -> tuple[list[str], bool]:
    """The tier label from per-tier verdicts, and whether the verdicts were non-monotone.

    `tiers` are all ordered tiers (cheapest first); `evaluated` those whose answers were judged, in
    the same order; `accepted[t]` says whether t's answer was good enough (the reference tier is
    accepted by definition). The router assumes that a tier good enough for a request makes every
    stronger tier good enough too, so the label is the *cheapest sufficient tier*: the cheapest
    evaluated tier e from which every stronger evaluated tier was accepted as well. When a cheap
    tier passes but a stronger one fails (judge noise or a genuinely weaker model), the label is
    taken from above the failure - upward, the safe direction: it may cost money, never quality -
    and the row is flagged. Tiers not evaluated between the previous evaluated tier and e are
    possible too, so the label is the range (previous evaluated tier, e], as for RouteLLM's bounds.
    """
    order = [t for t in tiers if t in set(evaluated)]
    cheapest = len(order) - 1
    while cheapest > 0 and accepted.get(order[cheapest - 1], False):
        cheapest -= 1
    non_monotone = any(accepted.get(t, False) for t in order[:cheapest])
    high = tiers.index(order[cheapest])
    low = tiers.index(order[cheapest - 1]) + 1 if cheapest > 0 else 0
    return list(tiers[low : high + 1]), non_monotone
