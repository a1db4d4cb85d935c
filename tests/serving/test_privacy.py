import time

import pytest

from serving.privacy import (
    CREDIT_CARD,
    EMAIL,
    IBAN,
    PHONE,
    SECRET,
    detect_private_data,
    iban_valid,
    luhn_valid,
)

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
