"""An adversarial set for the privacy rule (serving/tierwise/core/privacy.py), a security boundary: a miss sends
personal data or a secret to a third-party model.

`PRIVATE` holds (text, kind) cases that must be flagged with `kind`: obfuscated, reformatted and
Unicode-disguised card numbers, e-mail addresses, IBANs, provider API keys and phone numbers.
`ORDINARY` holds prompts that look numeric or key-like but carry nothing private (order numbers,
ISBNs, timestamps, UUIDs, hashes, hex constants, long numbers in maths) and must not be flagged.

tests/core/test_privacy.py asserts each case and the overall rates; `make reliability` reports
recall and the false-positive rate (tools/reliability/privacy.py `privacy_case`). The card numbers are
issuers' published test numbers, the IBANs the registry's examples, the keys random strings in the
providers' formats: nothing here is anyone's data.
"""

from __future__ import annotations

EMAIL = "email"
PHONE = "phone"
CREDIT_CARD = "credit_card"
IBAN = "iban"
SECRET = "secret"

# Card numbers: Visa, Mastercard (5- and 2-series), Amex, Discover, JCB, Diners, UnionPay.
_CARDS = {
    "visa": "4111111111111111",
    "visa2": "4012888888881881",
    "mastercard": "5555555555554444",
    "mastercard2": "2223003122003222",
    "discover": "6011111111111117",
    "jcb": "3530111333300000",
}


def _grouped(number: str, separator: str, sizes: tuple[int, ...] = (4, 4, 4, 4)) -> str:
    parts, start = [], 0
    for size in sizes:
        parts.append(number[start : start + size])
        start += size
    return separator.join(parts)


_FULLWIDTH = str.maketrans("0123456789", "０１２３４５６７８９")
_ARABIC_INDIC = str.maketrans("0123456789", "٠١٢٣٤٥٦٧٨٩")

CARD_CASES: list[tuple[str, str]] = [
    (f"card {_grouped(_CARDS['visa'], ' ')} exp 12/27", CREDIT_CARD),
    (f"my card is {_grouped(_CARDS['mastercard'], '-')}", CREDIT_CARD),
    (f"pay with {_grouped(_CARDS['visa2'], '.')} please", CREDIT_CARD),
    (f"number:{_CARDS['discover']}", CREDIT_CARD),
    (f"{_CARDS['mastercard2']}", CREDIT_CARD),
    (f"JCB {_grouped(_CARDS['jcb'], ' ')}", CREDIT_CARD),
    ("amex 3782 822463 10005 cvv 1234", CREDIT_CARD),
    ("amex 378282246310005", CREDIT_CARD),
    ("diners 3056 930902 5904", CREDIT_CARD),
    ("unionpay 6200000000000005", CREDIT_CARD),
    (f"card:\n{_grouped(_CARDS['visa'], ' ', (8,))}\n{_CARDS['visa'][8:]}", CREDIT_CARD),
    ("4111 1111\n1111 1111 is the card", CREDIT_CARD),
    ("card 5555-5555-\n5555-4444", CREDIT_CARD),
    ("4111\r\n1111\r\n1111\r\n1111", CREDIT_CARD),
    (f"{_grouped(_CARDS['visa'], ' / ')}", CREDIT_CARD),
    (f"cc={_grouped(_CARDS['mastercard'], '_')}", CREDIT_CARD),
    (f"{_grouped(_CARDS['visa'], '  ')}", CREDIT_CARD),
    ("4 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1", CREDIT_CARD),
    (f"card {_grouped(_CARDS['visa'], ' ').translate(_FULLWIDTH)}", CREDIT_CARD),
    (f"card {_CARDS['mastercard'].translate(_ARABIC_INDIC)}", CREDIT_CARD),
    (f'{{"card_number": "{_CARDS["visa"]}", "cvc": "123"}}', CREDIT_CARD),
    (f"card#{_CARDS['visa']}#end", CREDIT_CARD),
    (f"visa{_CARDS['visa']}", CREDIT_CARD),
    ("4111\u00a01111\u00a01111\u00a01111", CREDIT_CARD),  # no-break spaces
    ("4111\u20111111\u20111111\u20111111", CREDIT_CARD),  # non-breaking hyphens
    ("4111\u200b1111\u200b1111\u200b1111", CREDIT_CARD),  # zero-width spaces
    (f"{_grouped(_CARDS['visa'], ' ')} 12/27 123", CREDIT_CARD),
]

EMAIL_CASES: list[tuple[str, str]] = [
    ("write to john.doe@example.com please", EMAIL),
    ("JANE.DOE@EXAMPLE.ORG", EMAIL),
    ("reach me: john [at] example [dot] com", EMAIL),
    ("john(at)example(dot)com", EMAIL),
    ("john{at}example{dot}co{dot}uk", EMAIL),
    ("john [ at ] example [ dot ] com", EMAIL),
    ("john at example dot com", EMAIL),
    ("john.doe AT example DOT org", EMAIL),
    ("john[@]example[.]com", EMAIL),
    ("john @ example . com", EMAIL),
    ("john＠example.com", EMAIL),  # fullwidth commercial at
    ("john﹫example.com", EMAIL),  # small commercial at
    ("john@example．com", EMAIL),  # fullwidth full stop
    ("john@example。com", EMAIL),  # ideographic full stop
    ("ｊｏｈｎ＠ｅｘａｍｐｌｅ．ｃｏｍ", EMAIL),  # all fullwidth
    ("jo\u200bhn@exa\u200bmple.com", EMAIL),  # zero-width spaces inside
    ("müller@bücher.de", EMAIL),
    ("Contact: <ops-team+alerts@mail.example.co.uk>", EMAIL),
    ("mailto:jane_doe99@gmail.com", EMAIL),
    ("jane dot doe at gmail dot com", EMAIL),
]

IBAN_CASES: list[tuple[str, str]] = [
    ("IBAN DE89 3704 0044 0532 0130 00 thanks", IBAN),
    ("DE89370400440532013000", IBAN),
    ("pay GB82WEST12345698765432 today", IBAN),
    ("GB82 WEST 1234 5698 7654 32", IBAN),
    ("FR14 2004 1010 0505 0001 3M02 606", IBAN),
    ("NL91ABNA0417164300", IBAN),
    ("es9121000418450200051332", IBAN),  # lower case
    ("iban: de89 3704 0044 0532 0130 00", IBAN),
    ("IT60 X054 2811 1010 0000 0123 456", IBAN),
    ("CH93 0076 2011 6238 5295 7", IBAN),
    ("BE68 5390 0754 7034", IBAN),
    ("NO93 8601 1117 947", IBAN),
    ("PL61 1090 1014 0000 0712 1981 2874", IBAN),
    ("SA03 8000 0000 6080 1016 7519", IBAN),
    ("DE89-3704-0044-0532-0130-00", IBAN),
    ("DE89 3704 0044\n0532 0130 00", IBAN),
    ("DE89\u00a03704\u00a00044\u00a00532\u00a00130\u00a000", IBAN),
    ("ＤＥ８９３７０４００４４０５３２０１３０００", IBAN),  # fullwidth
    ("IBAN:GB82WEST12345698765432,BIC:WESTGB2L", IBAN),
]

SECRET_CASES: list[tuple[str, str]] = [
    ("use sk-proj-abcdefghijklmnopqrstuvwx1234 for the call", SECRET),
    ("OPENAI_API_KEY=sk-abcdefghijklmnopqrstuvwxyz012345", SECRET),
    ("key: sk-proj-Xy7_aB3cD4eF5gH6iJ7kL8mN9oP0qR1sT2uV3wX4yZ5-abc", SECRET),
    ("sk-ant-api03-Ab3dEf6hIj9kLm2nOp5qRs8tUv1wXy4z-AbCdEf", SECRET),
    ("sk-or-v1-0123456789abcdef0123456789abcdef0123456789abcdef", SECRET),
    ("aws_access_key_id = AKIAIOSFODNN7EXAMPLE", SECRET),
    ("AKIAI44QH8DHBEXAMPLE", SECRET),
    ("ASIAY34FZKBOKMUTVV7A session", SECRET),
    ("aws_secret_access_key=wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", SECRET),
    ("token ghp_" + "a1B2" * 9, SECRET),
    ("export GITHUB_TOKEN=gho_" + "Zz9Y" * 9, SECRET),
    ("github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUV", SECRET),
    ("glpat-x1y2z3A4B5C6D7E8F9G0", SECRET),
    ("xoxb-123456789012-abcdefghijkl", SECRET),
    ("AIzaSyA1b2C3d4E5f6G7h8I9j0KlMnOpQrStUvW", SECRET),
    ("stripe sk_live_51H8abcDEFghiJKLmnoPQR", SECRET),
    ("hf_AbCdEfGhIjKlMnOpQrStUvWxYz0123456789", SECRET),
    (
        "Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
        SECRET,
    ),
    (
        "token=eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCJ9.eyJpc3MiOiJhY21lIiwiZXhwIjoxNzAwMDAwMDAwfQ."
        "c2lnbmF0dXJlLXNpZ25hdHVyZS1zaWduYXR1cmU",
        SECRET,
    ),
    ("-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA", SECRET),
    ("-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA", SECRET),
    ("-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC", SECRET),
    ("-----BEGIN EC PRIVATE KEY-----\nMHcCAQEEIB", SECRET),
    ("-----BEGIN ENCRYPTED PRIVATE KEY-----\nMIIFHDBOBgkqhkiG9w0BBQ0w", SECRET),
    ("-----BEGIN PGP PRIVATE KEY BLOCK-----\nlQOYBF", SECRET),
    ("-----BEGIN  RSA  PRIVATE  KEY-----", SECRET),  # doubled spaces
    ('db password = "hunter2hunter2"', SECRET),
    ("my password is Tr0ub4dor&3", SECRET),
    ("password: hunter2!", SECRET),
    ("DATABASE_URL=postgres://admin:S3cretPassw0rd@db.internal:5432/app", SECRET),
    ("https://hooks.slack.com/services/T00000000/B00000000/XXXXXXXXXXXXXXXXXXXXXXXX", SECRET),
]

PHONE_CASES: list[tuple[str, str]] = [
    ("call +1 415 555 2671 tomorrow", PHONE),
    ("+1-415-555-2671", PHONE),
    ("+1.415.555.2671", PHONE),
    ("+1 (415) 555-2671", PHONE),
    ("+44 20 7946 0958", PHONE),
    ("+44 (0)20 7946 0958", PHONE),
    ("+49 30 1234567", PHONE),
    ("+4915112345678", PHONE),
    ("+33 1 23 45 67 89", PHONE),
    ("+81 3-1234-5678", PHONE),
    ("+91 98765 43210", PHONE),
    ("+55 11 91234-5678", PHONE),
    ("+61 2 9876 5432", PHONE),
    ("+86 138 0013 8000", PHONE),
    ("+7 (495) 123-45-67", PHONE),
    ("+34 612 34 56 78", PHONE),
    ("+971 50 123 4567", PHONE),
    ("0044 20 7946 0958", PHONE),
    ("00 49 30 1234567", PHONE),
    ("tel:+14155552671", PHONE),
    ("my number is (415) 555-2671.", PHONE),
    ("reach me at 415-555-2671", PHONE),
    ("Tel: 030 1234567", PHONE),
    ("mobile 07700 900123", PHONE),
    ("＋４４ ２０ ７９４６ ０９５８", PHONE),  # fullwidth
    ("whatsapp me on +44 7700 900123", PHONE),
]

PRIVATE: list[tuple[str, str]] = [*CARD_CASES, *EMAIL_CASES, *IBAN_CASES, *SECRET_CASES, *PHONE_CASES]

ORDINARY: list[str] = [
    # order, tracking and reference numbers
    "Where is my order #1234567? It was placed last week.",
    "order 112-3456789-1234567 has not arrived",
    "tracking number 1Z999AA10123456784",
    "ticket JIRA-12345 and PR #6789",
    "invoice INV-2024-000123 for 1,250.00 EUR",
    "SKU 8-90123-45678-9, qty 12",
    # ISBNs and other catalogue numbers
    "ISBN 978-3-16-148410-0",
    "ISBN-13: 9780306406157, ISBN-10: 0-306-40615-2",
    "DOI 10.1000/182 and arXiv:2301.12345",
    # dates and timestamps
    "on 2024-01-15 at 10:30 the job ran",
    "timestamp 1700000000000",
    "created_at=1699999999 updated_at=1700000123",
    "2024-01-15T10:30:00.123456Z INFO worker started pid=12345",
    "15.01.2024 - 20.01.2024",
    "log: [2024-03-01 12:00:00,123] took 1234567 us",
    # identifiers and hashes
    "id 123e4567-e89b-12d3-a456-426614174000",
    "commit a94a8fe5ccb19ba61c4c0873d391e987982fbbd3",
    "sha256 e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "request_id=5f3c9a7e2b1d4e6f8a0b1c2d3e4f5a6b",
    "docker image sha256:4f53cda18c2baa0c0354bb5f9a3ecbe5ed12ab4d8e11ba873c2f11161202b945",
    # code with hex constants and keys that are not secrets
    "#define MASK 0xFFFFFFFFFFFFFFFF\nuint32_t crc = 0x04C11DB7;",
    "const MAGIC = 0xDEADBEEFCAFEBABE; // 64-bit",
    "x = compute(3, 4) + 12345",
    'password = "<your-password>"',
    'password = os.environ["DB_PASSWORD"]',
    "api_key = get_secret('openai')",
    "connect with postgresql://user:password@localhost:5432/app as in the tutorial",
    "Set OPENAI_API_KEY=sk-... in your shell",
    "pip install scikit-learn==1.4.2 task-runner-utils-2024",
    "ask-questions-and-answers-here-please",
    "The password field must be at least 12 characters long.",
    "Reset my password: I forgot it",
    "@property\ndef name(self): return a@b",
    "git clone git@github.com:org/repo.git",
    "@media screen and (max-width: 600px) { .card { width: 100% } }",
    "npm i @types/node@18.11.9",
    "ABCD1234EFGH5678IJKL",
    # maths with long numbers
    "2^64 = 18446744073709551616",
    "What is 12345678901234567890 * 98765432109876543210?",
    "20! = 2432902008176640000",
    "pi = 3.14159265358979323846264338327950288",
    "Fibonacci: 1, 1, 2, 3, 5, 8, 13, 21, 34, 55, 89, 144, 233, 377, 610, 987",
    "matrix [[4, 1, 1, 1], [1, 1, 1, 1], [1, 1, 1, 1], [1, 1, 1, 1]]",
    "the total is 1234567890123456 units",
    "4111 1111 1111 1112",  # Luhn fails
    "0000 0000 0000 0000",
    "solve 3x + 7 = 22 and 5 + 12 * 3 - 4",
    "+1 -2 +3 -4 +5",
    "it costs $1,234,567.89 or € 1.234.567,89",
    # versions, addresses, coordinates
    "upgrade from 1.2.3 to 10.4.12",
    "Windows build 10.0.19041.1234",
    "server 192.168.100.200 port 8080",
    "2001:0db8:85a3:0000:0000:8a2e:0370:7334",
    "MAC 00:1A:2B:3C:4D:5E",
    "Paris is at 48.8566, 2.3522",
    "DE89 3704 0044 0532 0130 01",  # mod-97 fails
    # ordinary prose
    "Explain the difference between TCP and UDP.",
    "Meet me at the station at noon, then we go to the dot com museum.",
    "Look at example code: it is at the top. Dot products are next.",
    "Write a haiku about the sea.",
    "Summarise the attached quarterly report in three bullet points.",
]


# Request shapes: where in a chat request the private value sits. The privacy rule reads every string
# a request carries (tierwise.core.request_text.request_strings), so each of these must be flagged, by
# the service and by the gateway's local fallback alike. (name, request body, kind)
_CARD = _grouped(_CARDS["visa"], " ")
_USER = {"role": "user", "content": "Book the trip we discussed."}
REQUEST_SHAPE_CASES: list[tuple[str, dict, str]] = [
    (
        "tool-call arguments",
        {
            "messages": [
                _USER,
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": "call_1",
                            "type": "function",
                            "function": {"name": "pay", "arguments": f'{{"card": "{_CARD}"}}'},
                        }
                    ],
                },
                {"role": "user", "content": "Did it go through?"},
            ]
        },
        CREDIT_CARD,
    ),
    (
        "tool result",
        {
            "messages": [
                _USER,
                {"role": "tool", "tool_call_id": "call_1", "content": '{"contact": "jane.doe@example.com"}'},
                {"role": "user", "content": "Summarise the result."},
            ]
        },
        EMAIL,
    ),
    (
        "tool result as content parts",
        {
            "messages": [
                {
                    "role": "tool",
                    "tool_call_id": "c",
                    "content": [{"type": "text", "text": "iban DE89 3704 0044 0532 0130 00"}],
                },
                {"role": "user", "content": "Is that account valid?"},
            ]
        },
        IBAN,
    ),
    (
        "tools definition",
        {
            "messages": [{"role": "user", "content": "Send the report."}],
            "tools": [
                {
                    "type": "function",
                    "function": {
                        "name": "send",
                        "description": "Sends mail from jane.doe@example.com",
                        "parameters": {"type": "object", "properties": {}},
                    },
                }
            ],
        },
        EMAIL,
    ),
    (
        "legacy functions definition",
        {
            "messages": [{"role": "user", "content": "Let them know it shipped."}],
            "functions": [
                {
                    "name": "notify",
                    "description": "e-mail jane.doe@example.com",
                    "parameters": {"type": "object", "properties": {}},
                }
            ],
        },
        EMAIL,
    ),
    (
        "response_format schema",
        {
            "messages": [{"role": "user", "content": "Fill in the form."}],
            "response_format": {
                "type": "json_schema",
                "json_schema": {
                    "name": "form",
                    "schema": {
                        "type": "object",
                        "properties": {"card": {"type": "string", "default": _CARD}},
                    },
                },
            },
        },
        CREDIT_CARD,
    ),
    (
        "name field",
        {"messages": [{"role": "user", "name": "jane.doe@example.com", "content": "Hello there."}]},
        EMAIL,
    ),
    (
        "legacy function_call arguments",
        {
            "messages": [
                _USER,
                {
                    "role": "assistant",
                    "function_call": {
                        "name": "auth",
                        "arguments": '{"key": "sk-proj-abcdefghijklmnopqrstuvwx1234"}',
                    },
                },
                {"role": "user", "content": "Next step?"},
            ]
        },
        SECRET,
    ),
    (
        "image part beside text",
        {
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}},
                        {"type": "text", "text": f"my card {_CARD}, what's on the image?"},
                    ],
                }
            ]
        },
        CREDIT_CARD,
    ),
]

# The same shapes with nothing private in them: a tool-using request is not private by its shape alone.
ORDINARY_REQUEST_SHAPES: list[tuple[str, dict]] = [
    (
        "tool call with ordinary arguments",
        {
            "messages": [
                _USER,
                {
                    "role": "assistant",
                    "tool_calls": [
                        {
                            "id": "call_1",
                            "type": "function",
                            "function": {
                                "name": "search_flights",
                                "arguments": '{"from": "PAR", "to": "NYC"}',
                            },
                        }
                    ],
                },
                {"role": "tool", "tool_call_id": "call_1", "content": '{"flights": 3, "cheapest": 412.5}'},
                {"role": "user", "content": "Pick the cheapest."},
            ],
            "tools": [
                {
                    "type": "function",
                    "function": {
                        "name": "search_flights",
                        "description": "Search flights between two airports",
                        "parameters": {
                            "type": "object",
                            "properties": {"from": {"type": "string"}, "to": {"type": "string"}},
                        },
                    },
                }
            ],
        },
    ),
    ("named user", {"messages": [{"role": "user", "name": "analyst_7", "content": "Explain TCP vs UDP."}]}),
    (
        "functions and a JSON schema",
        {
            "messages": [{"role": "user", "content": "Weather in Oslo as JSON."}],
            "functions": [{"name": "get_weather", "parameters": {"type": "object", "properties": {}}}],
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "weather", "schema": {"type": "object"}},
            },
        },
    ),
]
