import asyncio
import math
import re
import sys
import threading
from re import _constants as sre_constants  # the parsed form of a pattern, to check its nesting
from re import _parser as sre_parser

import pytest
from tierwise.core import privacy
from tierwise.core.policy import RoutingInput, with_private_data
from tierwise.core.privacy import (
    CREDIT_CARD,
    EMAIL,
    IBAN,
    PHONE,
    SECRET,
    canonical_text,
    card_issuer_length_ok,
    detect_private_data,
    detect_private_data_async,
    iban_valid,
    luhn_valid,
)

from tests.helpers.timing import HANG_SECONDS, until
from tools.privacy_cases import ORDINARY, PRIVATE
from tools.reliability import PRIVACY_MAX_FALSE_POSITIVE_RATE, PRIVACY_MIN_RECALL, privacy_case
from tools.reliability.privacy import privacy_scan_time_case

TRUE_POSITIVES = [
    ("write to john.doe@example.com please", EMAIL),
    ("cc: Ops-Team+alerts@mail.example.co.uk", EMAIL),
    ("call +1 415 555 2671 tomorrow", PHONE),
    ("+44 20 7946 0958", PHONE),
    ("my number is (415) 555-2671.", PHONE),
    ("reach me at 415-555-2671", PHONE),
    ("Tel: 030 1234567", PHONE),
    ("card 4111 1111 1111 1111 exp 12/27", CREDIT_CARD),
    ("5500-0000-0000-0004", CREDIT_CARD),
    ("amex 378282246310005", CREDIT_CARD),
    ("IBAN DE89 3704 0044 0532 0130 00 thanks", IBAN),
    ("pay GB82WEST12345698765432 today", IBAN),
    ("FR14 2004 1010 0505 0001 3M02 606", IBAN),
    ("NL91ABNA0417164300", IBAN),
    ("use sk-proj-abcdefghijklmnopqrstuvwx1234 for the call", SECRET),
    ("OPENAI_API_KEY=sk-abcdefghijklmnopqrstuvwxyz012345", SECRET),
    ("aws_access_key_id = AKIAIOSFODNN7EXAMPLE", SECRET),
    ("token ghp_" + "a1B2" * 9, SECRET),
    ("-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA", SECRET),
    ("-----BEGIN OPENSSH PRIVATE KEY-----", SECRET),
    ('db password = "hunter2hunter2"', SECRET),
    ("xoxb-123456789012-abcdefghijkl", SECRET),
    (
        "Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
        SECRET,
    ),
]

FALSE_POSITIVES = [
    "on 2024-01-15 at 10:30 the job ran",
    "upgrade from 1.2.3 to 10.4.12",
    "server 192.168.100.200 port 8080",
    "the total is 1234567890123456 units",  # 16 digits but no card issuer prefix
    "4111 1111 1111 1112",  # Luhn fails
    "0000 0000 0000 0000",
    "@property\ndef name(self): return a@b",
    "timestamp 1700000000000",
    "ISBN 978-3-16-148410-0",
    "x = compute(3, 4) + 12345",
    'password = "<your-password>"',
    'password = os.environ["DB_PASSWORD"]',
    "ask-questions-and-answers-here-please",
    "DE89 3704 0044 0532 0130 01",  # mod-97 fails
    "ABCD1234EFGH5678IJKL",
    "id 123e4567-e89b-12d3-a456-426614174000",
    "it costs $1,234,567.89",
    "Explain the difference between TCP and UDP.",
]


@pytest.mark.parametrize(("text", "kind"), TRUE_POSITIVES)
def test_detects_personal_data_and_secrets(text, kind):
    assert kind in detect_private_data(text)


@pytest.mark.parametrize("text", FALSE_POSITIVES)
def test_ignores_lookalikes(text):
    assert detect_private_data(text) == []


def test_checksums():
    assert luhn_valid("4111111111111111")
    assert not luhn_valid("4111111111111112")
    assert iban_valid("DE89370400440532013000")
    assert not iban_valid("DE89370400440532013001")
    assert not iban_valid("DE89")


# A large prompt is scanned in time linear in its length. Checked by what the scan does, not by how long
# it takes on a shared machine (`make reliability` times a 1 MB prompt: tools/reliability/privacy.py).

_REPEATS = (sre_constants.MAX_REPEAT, sre_constants.MIN_REPEAT, sre_constants.POSSESSIVE_REPEAT)


def _parts(op, arg) -> list:
    """The sub-patterns of one parsed item (a repeat's body, a group's, each branch, a lookaround's)."""
    if op in _REPEATS:
        return [arg[2]]
    if op == sre_constants.SUBPATTERN:
        return [arg[-1]]
    if op == sre_constants.BRANCH:
        return list(arg[1])
    if op in (sre_constants.ASSERT, sre_constants.ASSERT_NOT):
        return [arg[1]]
    return [arg] if op == sre_constants.ATOMIC_GROUP else []


def nested_unbounded_repeat(items, inside_unbounded: bool = False) -> bool:
    """Whether an unbounded repetition sits inside another one (`(a+)+`), the shape that backtracks
    exponentially; bounded ones (`{0,63}`) cost at most a constant factor."""
    for op, arg in items:
        unbounded = op in _REPEATS and arg[1] == sre_constants.MAXREPEAT
        if unbounded and inside_unbounded:
            return True
        if any(nested_unbounded_repeat(part, inside_unbounded or unbounded) for part in _parts(op, arg)):
            return True
    return False


def test_no_detector_pattern_nests_unbounded_repetitions():
    def nested(pattern: re.Pattern[str]) -> bool:
        return nested_unbounded_repeat(sre_parser.parse(pattern.pattern, pattern.flags))

    assert nested(re.compile(r"(a+)+$")) and nested(re.compile(r"(?:x|(?:\d\s*)*)+"))  # the check sees them
    assert not nested(re.compile(r"(?:a{1,5}b)+")) and not nested(re.compile(r"\w+@\w+"))
    patterns = {name: value for name, value in vars(privacy).items() if isinstance(value, re.Pattern)}
    patterns |= {f"_SECRET_PATTERNS[{i}]": pattern for i, (_, pattern) in enumerate(privacy._SECRET_PATTERNS)}
    assert len(patterns) >= 20  # every detector's patterns are looked at
    # A run of card digit groups repeats (separator, digits): a separator is never a digit, so each
    # repetition matches one way only and the run is linear.
    assert {name for name, pattern in patterns.items() if nested(pattern)} <= {"_CARD_RUN_RE"}


def calls_made_scanning(text: str) -> int:
    """Python and C function calls made by one scan: a count of the scan's work that, unlike its
    duration, does not depend on what else the machine runs."""
    calls = 0

    def count(frame, event, arg):
        nonlocal calls
        if event in ("call", "c_call"):
            calls += 1

    sys.setprofile(count)
    try:
        detect_private_data(text)
    finally:
        sys.setprofile(None)
    return calls


def test_the_scan_of_a_large_prompt_does_work_linear_in_its_length():
    unit = "lorem ipsum 12345 dolor@ sit amet 4111 "  # digits, at signs and card-like groups all along
    small, large = (
        calls_made_scanning((unit * (size // len(unit) + 1))[:size]) for size in (100_000, 1_000_000)
    )
    assert small > 1000  # the scan looks at every candidate
    assert large <= 11 * small  # ten times the text, about ten times the work (quadratic: a hundred)


def test_make_reliability_times_the_scan_of_a_large_prompt():
    timed = privacy_scan_time_case(max_seconds=math.inf, chars=10_000, repeats=1)
    assert timed.passed and "10,000 characters in" in timed.figures
    over = privacy_scan_time_case(max_seconds=0.0, chars=10_000, repeats=1)  # any scan takes some time
    assert not over.passed and "a pattern may backtrack" in over.problems[0]


# The adversarial set (tools/privacy_cases.py): each case, then the rates make reliability reports.


@pytest.mark.parametrize(("text", "kind"), PRIVATE)
def test_adversarial_private_data_is_detected(text, kind):
    assert kind in detect_private_data(text), f"{kind} not found in {text!r}"


@pytest.mark.parametrize("text", ORDINARY)
def test_ordinary_prompts_are_not_flagged(text):
    assert detect_private_data(text) == [], text


def test_recall_and_false_positive_rate_meet_the_thresholds():
    result = privacy_case()
    assert result.passed, result.problems
    assert result.tried == len(PRIVATE) + len(ORDINARY) > 150
    recall = float(result.figures.split("recall ")[1].split("%")[0]) / 100
    false_positives = float(result.figures.split("false positives ")[1].split("%")[0]) / 100
    assert recall >= PRIVACY_MIN_RECALL and false_positives <= PRIVACY_MAX_FALSE_POSITIVE_RATE


def test_every_kind_has_adversarial_cases():
    kinds = {kind for _, kind in PRIVATE}
    assert kinds == {CREDIT_CARD, EMAIL, IBAN, PHONE, SECRET}
    assert min(sum(1 for _, k in PRIVATE if k == kind) for kind in kinds) >= 15


def test_canonical_text_undoes_lookalikes():
    assert canonical_text("ｊｏｈｎ＠ｅｘａｍｐｌｅ．ｃｏｍ") == "john@example.com"
    assert canonical_text("jo\u200bhn﹫example。com") == "john@example.com"
    assert canonical_text("٤١١١\u00a0１１１１\u2011") == "4111 1111-"
    assert canonical_text("plain ascii stays") == "plain ascii stays"


def test_card_issuer_ranges_and_lengths():
    assert card_issuer_length_ok("4111111111111111") and not card_issuer_length_ok("411111111111111")
    assert card_issuer_length_ok("378282246310005") and not card_issuer_length_ok("3782822463100051")
    assert card_issuer_length_ok("2223003122003222") and not card_issuer_length_ok("2019202020212022")
    assert not card_issuer_length_ok("1234567890123456") and not card_issuer_length_ok("9780306406157")


def test_a_large_prompt_is_scanned_off_the_event_loop(monkeypatch):
    threads = []
    loop_ran_during_the_scan = threading.Event()
    scan = privacy.detect_private_data

    def recording_scan(text):
        threads.append(threading.get_ident())
        if len(text) > 1000:  # scanned inline, this would hold the only thread that can set the event
            assert loop_ran_during_the_scan.wait(HANG_SECONDS), "the event loop stood still during the scan"
        return scan(text)

    monkeypatch.setattr(privacy, "detect_private_data", recording_scan)
    large = "card 4111 1111 1111 1111 " + "lorem ipsum dolor sit amet 12345 " * 20_000

    async def run():
        async def other_request() -> None:
            await until(lambda: len(threads) == 2, "the large scan")
            loop_ran_during_the_scan.set()

        task = asyncio.create_task(other_request())
        small = await detect_private_data_async("short text", offload_chars=1000)
        kinds = await detect_private_data_async(large, offload_chars=1000)
        await task
        return small, kinds, threading.get_ident()

    small, kinds, loop_thread = asyncio.run(run())
    assert small == [] and kinds == [CREDIT_CARD]
    assert threads[0] == loop_thread and threads[1] != loop_thread  # short inline, large in a thread


def test_with_private_data_fills_in_large_requests_only():
    requests = [
        RoutingInput(text="mail me: a.b@example.com"),
        RoutingInput(text="x" * 50 + " a.b@example.com"),
    ]
    scanned = asyncio.run(with_private_data(requests, offload_chars=60))
    assert scanned[0].private_data is None and scanned[1].private_data == (EMAIL,)
