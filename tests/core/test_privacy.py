import asyncio
import threading
import time

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

from tests.helpers.privacy_cases import ORDINARY, PRIVATE
from tools.reliability import PRIVACY_MAX_FALSE_POSITIVE_RATE, PRIVACY_MIN_RECALL, privacy_case

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


def test_a_large_prompt_is_scanned_quickly():
    text = ("lorem ipsum 12345 dolor@ sit amet 4111 " * 30000)[:1_000_000]
    started = time.perf_counter()
    detect_private_data(text)
    assert time.perf_counter() - started < 2.0


# The adversarial set (tests/helpers/privacy_cases.py): each case, then the rates make reliability reports.


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
    scan = privacy.detect_private_data

    def recording_scan(text):
        threads.append(threading.get_ident())
        return scan(text)

    monkeypatch.setattr(privacy, "detect_private_data", recording_scan)
    large = "card 4111 1111 1111 1111 " + "lorem ipsum dolor sit amet 12345 " * 20_000

    async def run():
        ticks = 0
        stop = asyncio.Event()

        async def ticker():
            nonlocal ticks
            while not stop.is_set():
                await asyncio.sleep(0.002)
                ticks += 1

        task = asyncio.create_task(ticker())
        await asyncio.sleep(0.01)
        before = ticks
        small = await detect_private_data_async("short text", offload_chars=1000)
        kinds = await detect_private_data_async(large, offload_chars=1000)
        during = ticks - before
        stop.set()
        await task
        return small, kinds, during, threading.get_ident()

    small, kinds, ticks_during, loop_thread = asyncio.run(run())
    assert small == [] and kinds == [CREDIT_CARD]
    assert threads[0] == loop_thread and threads[1] != loop_thread  # short inline, large in a thread
    assert ticks_during >= 3  # the event loop kept running while the large prompt was scanned


def test_with_private_data_fills_in_large_requests_only():
    requests = [
        RoutingInput(text="mail me: a.b@example.com"),
        RoutingInput(text="x" * 50 + " a.b@example.com"),
    ]
    scanned = asyncio.run(with_private_data(requests, offload_chars=60))
    assert scanned[0].private_data is None and scanned[1].private_data == (EMAIL,)
