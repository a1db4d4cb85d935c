"""The privacy rule on the adversarial set of tools/privacy_cases.py, and how long it takes to
scan a large prompt (a timing, so measured here rather than in the tests)."""

from __future__ import annotations

import math
import time
from collections import Counter

from tools.reliability.report import CaseResult

PRIVACY_MIN_RECALL = 0.97  # of the adversarial set's personal data and secrets

PRIVACY_MAX_FALSE_POSITIVE_RATE = 0.02  # of its ordinary prompts

PRIVACY_MAX_SCAN_SECONDS = 2.0  # for a 1 MB prompt of digits, at signs and card-like groups (~0.6 s)


def privacy_case() -> CaseResult:
    """The privacy rule on the adversarial set (tools/privacy_cases.py): recall on obfuscated
    card numbers, e-mails, IBANs, keys and phones; false positives on ordinary look-alike prompts."""
    from tierwise.core.privacy import detect_private_data

    from tools import privacy_cases as cases

    missed = [(text, kind) for text, kind in cases.PRIVATE if kind not in detect_private_data(text)]
    flagged = [text for text in cases.ORDINARY if detect_private_data(text)]
    recall = 1 - len(missed) / len(cases.PRIVATE)
    false_positive_rate = len(flagged) / len(cases.ORDINARY)
    per_kind = Counter(kind for _, kind in cases.PRIVATE)
    missed_kind = Counter(kind for _, kind in missed)
    figures = (
        f"recall {recall:.1%} ({len(cases.PRIVATE) - len(missed)} of {len(cases.PRIVATE)}: "
        + ", ".join(f"{kind} {n - missed_kind[kind]}/{n}" for kind, n in sorted(per_kind.items()))
        + f"); false positives {false_positive_rate:.1%} ({len(flagged)} of {len(cases.ORDINARY)} "
        f"ordinary prompts); thresholds: recall >= {PRIVACY_MIN_RECALL:.0%}, "
        f"false positives <= {PRIVACY_MAX_FALSE_POSITIVE_RATE:.0%}"
    )
    problems = [f"missed {kind}: {text[:60]!r}" for text, kind in missed]
    problems += [f"flagged: {text[:60]!r}" for text in flagged]
    failures = int(recall < PRIVACY_MIN_RECALL) + int(false_positive_rate > PRIVACY_MAX_FALSE_POSITIVE_RATE)
    return CaseResult(
        "privacy: adversarial set", len(cases.PRIVATE) + len(cases.ORDINARY), failures, figures, problems
    )


def privacy_scan_time_case(
    max_seconds: float = PRIVACY_MAX_SCAN_SECONDS, chars: int = 1_000_000, repeats: int = 3
) -> CaseResult:
    """The privacy rule's scan of a `chars`-long prompt full of candidates (digit groups, card-like
    groups, at signs): the best of `repeats` scans must take at most `max_seconds`."""
    from tierwise.core.privacy import detect_private_data

    unit = "lorem ipsum 12345 dolor@ sit amet 4111 "
    text = (unit * math.ceil(chars / len(unit)))[:chars]
    best = math.inf
    for _ in range(repeats):
        started = time.perf_counter()
        detect_private_data(text)
        best = min(best, time.perf_counter() - started)
    failed = best > max_seconds
    problems = [f"{best:.2f} s is over {max_seconds:g} s: a pattern may backtrack"] if failed else []
    return CaseResult(
        "privacy: large prompt scan",
        1,
        int(failed),
        f"{chars:,} characters in {best:.2f} s (best of {repeats}; limit {max_seconds:g} s)",
        problems,
    )
