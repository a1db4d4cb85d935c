"""Deterministic detectors for personal data and secrets in a prompt.

Each detector is a regular expression for candidates plus, where a checksum exists, the check
(Luhn for card numbers, ISO 13616 mod-97 for IBANs), so that ordinary numbers, dates, versions
and IP addresses are not flagged. The patterns are linear (no nested unbounded repetition), so a
1 MiB prompt is scanned in milliseconds.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

EMAIL = "email"
PHONE = "phone"
CREDIT_CARD = "credit_card"
IBAN = "iban"
SECRET = "secret"

# Patterns start with a literal or a character class (the regex engine then skips ahead quickly);
# "not preceded by" checks come right after the first character for the same reason.
_EMAIL_RE = re.compile(
    r"[A-Za-z0-9._%+-](?<![\w.+-][A-Za-z0-9._%+-])[A-Za-z0-9._%+-]{0,63}@(?:[A-Za-z0-9-]{1,63}\.){1,8}[A-Za-z]{2,24}\b"
)

# International (+CC ...) numbers, North American (xxx) xxx-xxxx / xxx-xxx-xxxx, and any 7-15 digit
# number right after a phone keyword. Bare digit runs, dates and dotted versions are not phones.
_INTERNATIONAL_PHONE_RE = re.compile(r"\+(?<![\w+]\+)\d{1,3}(?:[ .-]?\(?\d{1,4}\)?){2,5}(?![\w.]?\d)")
_NANP_PHONE_RE = re.compile(
    r"(?:\((?<![\w.-]\()\d{3}\) ?|\d(?<![\w.-]\d)\d{2}[-. ])\d{3}[-. ]\d{4}(?![\w-]|\.\d)"
)
_PHONE_KEYWORDS = ("phone", "tel", "mobile", "cell", "call me at", "whatsapp")
_KEYWORD_PHONE_RE = re.compile(
    r"\b(?:phone|tel|telephone|mobile|cell|call me at|whatsapp)\b\s*(?:number|no\.?|#)?\s*[:.]?\s*"
    r"(\(?\d[\d ().-]{5,18}\d)"
)
_PHONE_DIGITS = (7, 15)

_CARD_RE = re.compile(r"\d(?<![\d.-]\d)(?:[ -]?\d){12,18}(?![\d-]|\.\d)")

_IBAN_RE = re.compile(
    r"[A-Z](?<![A-Za-z0-9][A-Z])[A-Z]\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,4})?(?![A-Za-z0-9])"
)
# IBAN length per country (ISO 13616 registry); unknown countries are checked at the matched length.
_IBAN_LENGTHS = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22, "BR": 29,
    "BY": 28, "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DK": 18, "DO": 28, "EE": 20, "EG": 29,
    "ES": 24, "FI": 18, "FO": 18, "FR": 27, "GB": 22, "GE": 22, "GI": 23, "GL": 18, "GR": 27, "GT": 28,
    "HR": 21, "HU": 28, "IE": 22, "IL": 23, "IQ": 23, "IS": 26, "IT": 27, "JO": 30, "KW": 30, "KZ": 20,
    "LB": 28, "LC": 32, "LI": 21, "LT": 20, "LU": 20, "LV": 21, "MC": 27, "MD": 24, "ME": 22, "MK": 19,
    "MR": 27, "MT": 31, "MU": 30, "NL": 18, "NO": 15, "PK": 24, "PL": 28, "PS": 29, "PT": 25, "QA": 29,
    "RO": 24, "RS": 22, "SA": 24, "SC": 31, "SE": 24, "SI": 19, "SK": 24, "SM": 27, "ST": 25, "SV": 28,
    "TL": 23, "TN": 24, "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20,
}  # fmt: skip

# (literal that must occur, pattern): the literal check skips the regex for almost every prompt.
_SECRET_PATTERNS: tuple[tuple[tuple[str, ...], re.Pattern[str]], ...] = (
    (("sk-",), re.compile(r"\bsk-(?:proj-|ant-|live-|test-)?[A-Za-z0-9_-]{20,}")),  # OpenAI, Anthropic
    (("_live_", "_test_"), re.compile(r"\b(?:sk|rk|pk)_(?:live|test)_[A-Za-z0-9]{16,}")),  # Stripe
    (("AKIA", "ASIA"), re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b")),  # AWS access key id
    (("ghp_", "gho_", "ghu_", "ghs_", "ghr_"), re.compile(r"\bgh[pousr]_[A-Za-z0-9]{36,}")),  # GitHub
    (("github_pat_",), re.compile(r"\bgithub_pat_[A-Za-z0-9_]{22,}")),
    (("glpat-",), re.compile(r"\bglpat-[A-Za-z0-9_-]{20,}")),  # GitLab
    (("xox",), re.compile(r"\bxox[abprs]-[A-Za-z0-9-]{10,}")),  # Slack
    (("AIza",), re.compile(r"\bAIza[0-9A-Za-z_-]{35}")),  # Google API key
    (("eyJ",), re.compile(r"\beyJ[A-Za-z0-9_-]{10,}\.eyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}")),  # JWT
    (("PRIVATE KEY",), re.compile(r"-----BEGIN (?:[A-Z0-9]+ ){0,3}PRIVATE KEY(?: BLOCK)?-----")),
)
# A quoted literal assigned to a secret-looking name (matched on lower-cased text); placeholders
# such as "<token>" or "${TOKEN}" are skipped.
_SECRET_KEYWORDS = ("key", "secret", "token", "passw")
_SECRET_ASSIGNMENT_RE = re.compile(
    r"\b(?:api[_-]?key|secret[_-]?key|client[_-]?secret|access[_-]?token|auth[_-]?token|password|passwd)"
    r"\b['\"]?\s*[:=]\s*['\"](?![^'\"]*[<>{}$*])(?!x{4})[^'\"\s]{8,200}['\"]"
)


def luhn_valid(digits: str) -> bool:
    """The Luhn checksum used by payment card numbers."""
    total = 0
    for position, char in enumerate(reversed(digits)):
        value = int(char)
        if position % 2 == 1:
            value *= 2
            if value > 9:
                value -= 9
        total += value
    return total % 10 == 0


def iban_valid(iban: str) -> bool:
    """ISO 13616 check: move the first four characters to the end, letters to 10..35, mod 97 == 1."""
    if not 15 <= len(iban) <= 34 or not iban.isalnum():
        return False
    rearranged = iban[4:] + iban[:4]
    number = "".join(str(int(char, 36)) for char in rearranged)
    return int(number) % 97 == 1


def _digits(text: str) -> str:
    return "".join(char for char in text if char.isdigit())


def has_email(text: str) -> bool:
    return "@" in text and _EMAIL_RE.search(text) is not None


def has_phone(text: str) -> bool:
    low, high = _PHONE_DIGITS
    matches = list(_NANP_PHONE_RE.finditer(text))
    if "+" in text:
        matches += _INTERNATIONAL_PHONE_RE.finditer(text)
    lowered = text.lower()
    if any(keyword in lowered for keyword in _PHONE_KEYWORDS):
        matches += _KEYWORD_PHONE_RE.finditer(lowered)
    return any(low <= len(_digits(m.group(m.lastindex or 0))) <= high for m in matches)


def has_credit_card(text: str) -> bool:
    for match in _CARD_RE.finditer(text):
        digits = _digits(match.group(0))
        # Issuer prefixes start with 2-6 (Mastercard 2-series, Amex/Diners/JCB, Visa, Mastercard, Discover).
        if digits[0] in "23456" and len(set(digits)) > 1 and luhn_valid(digits):
            return True
    return False


def has_iban(text: str) -> bool:
    for match in _IBAN_RE.finditer(text):
        compact = match.group(0).replace(" ", "")
        length = _IBAN_LENGTHS.get(compact[:2], len(compact))
        if len(compact) >= length and iban_valid(compact[:length]):
            return True
    return False


def has_secret(text: str) -> bool:
    for literals, pattern in _SECRET_PATTERNS:
        if any(literal in text for literal in literals) and pattern.search(text):
            return True
    lowered = text.lower()
    return any(k in lowered for k in _SECRET_KEYWORDS) and _SECRET_ASSIGNMENT_RE.search(lowered) is not None


@dataclass(frozen=True)
class Detector:
    kind: str
    found_in: Callable[[str], bool]


DETECTORS: tuple[Detector, ...] = (
    Detector(SECRET, has_secret),
    Detector(EMAIL, has_email),
    Detector(CREDIT_CARD, has_credit_card),
    Detector(IBAN, has_iban),
    Detector(PHONE, has_phone),
)


def detect_private_data(text: str) -> list[str]:
    """The kinds of personal data or secrets found in `text` (empty when none), in a fixed order."""
    return [detector.kind for detector in DETECTORS if detector.found_in(text)]
