"""Deterministic detectors for personal data and secrets in a prompt: a security boundary, since a
miss sends personal data to a third-party model.

The text is first brought to a canonical form (`canonical_text`): Unicode compatibility forms
(NFKC: fullwidth digits and letters, fullwidth or small @), other digits to ASCII, look-alike dots
and dashes to ASCII, zero-width characters removed. Each detector then looks for candidates with a
regular expression and, where a checksum exists, checks it with python-stdnum (Luhn for card
numbers, ISO 13616 mod-97 and the country's format for IBANs), so that ordinary numbers, dates,
versions, ISBNs and IP addresses are not flagged. Card numbers may be grouped by spaces, dashes,
dots, slashes or underscores and split across lines; e-mail addresses may be written `[at]`,
`(dot)`, `at ... dot`, with spaces around `@` or with look-alike characters.

The patterns are linear (bounded repetition, no nested unbounded groups), so a 1 MiB prompt is
scanned in well under a second; the service scans prompts longer than `OFFLOAD_CHARS` in a worker
thread (`detect_private_data_async`) so that a large prompt does not stall the event loop.
tools/privacy_cases.py is the adversarial set; `make reliability` reports recall and the
false-positive rate on it.
"""

from __future__ import annotations

import asyncio
import re
import unicodedata
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from stdnum import iban as stdnum_iban
from stdnum import luhn as stdnum_luhn

EMAIL = "email"
PHONE = "phone"
CREDIT_CARD = "credit_card"
IBAN = "iban"
SECRET = "secret"

# The reason a decision gives when this rule sent it to the private tier.
PRIVATE_DATA = "private_data"

# Prompts at least this long are scanned in a worker thread by `detect_private_data_async`.
OFFLOAD_CHARS = 32_768

# -- canonical form ---------------------------------------------------------------------------------

_INVISIBLE = "\u00ad\u180e\u200b\u200c\u200d\u2060\u2061\u2062\u2063\u2064\ufeff"
_LOOKALIKES = str.maketrans(
    {
        **dict.fromkeys(_INVISIBLE),
        **dict.fromkeys("\u3002\uff61\ufe52\u2024\u00b7", "."),  # ideographic / small / leader dots
        **dict.fromkeys("\u2010\u2011\u2012\u2013\u2014\u2212\ufe58\ufe63\uff0d", "-"),
        **dict.fromkeys("\u00a0\u2007\u202f\u3000", " "),
    }
)
_NON_ASCII_DIGIT_RE = re.compile(r"(?![0-9])\d")


def canonical_text(text: str) -> str:
    """`text` with look-alike characters replaced by the ASCII ones the detectors look for."""
    if text.isascii():
        return text
    text = unicodedata.normalize("NFKC", text).translate(_LOOKALIKES)
    return _NON_ASCII_DIGIT_RE.sub(lambda m: str(unicodedata.decimal(m.group(0))), text)


def _digits(text: str) -> str:
    return "".join(char for char in text if char.isdigit())


# -- e-mail ----------------------------------------------------------------------------------------

# Patterns start with a character class and check "not preceded by" right after the first character,
# so the regex engine skips ahead quickly and tries each word once.
_EMAIL_RE = re.compile(
    r"[\w%+-](?<![\w.%+-][\w%+-])[\w.%+-]{0,63}@(?:[^\W_](?:[\w-]{0,61}\w)?\.){1,8}[^\W\d_]{2,24}\b"
)
# Obfuscated addresses: `[at]` `(dot)` `{at}`, ` at ` ... ` dot `, spaces around `@` and `.`; the last
# label must be a common top-level domain (so `weights @ inputs.T` or "look at example.com" are not).
_TLDS = (
    r"(?:com|org|net|edu|gov|mil|int|info|biz|name|pro|mobi|io|ai|app|dev|tech|cloud|online|site|xyz|"
    r"email|mail|me|[a-z]{2})"
)
_AT = r"(?:\s{0,3}[\[({<]\s{0,3}(?:at|@)\s{0,3}[\])}>]\s{0,3}|\s{1,3}at\s{1,3}|\s{0,3}@\s{0,3})"
_DOT = r"(?:\s{0,3}[\[({<]\s{0,3}(?:dot|\.)\s{0,3}[\])}>]\s{0,3}|\s{1,3}dot\s{1,3}|\s{0,3}\.\s{0,3})"
_OBFUSCATED_EMAIL_RE = re.compile(
    rf"[\w+-](?<![\w.+-][\w+-])[\w+-]{{0,63}}(?:{_DOT}[\w+-]{{1,63}}){{0,4}}{_AT}"
    rf"[\w-]{{1,63}}(?:{_DOT}[\w-]{{1,63}}){{0,4}}?{_DOT}{_TLDS}(?![\w.-]*\w)",
    re.IGNORECASE,
)
# Only texts with one of these markers can hold an obfuscated address.
_OBFUSCATION_HINT_RE = re.compile(r"[\[({<]\s*(?:at|dot|@|\.)\s*[\])}>]|\s@|@\s|\sdot\s", re.IGNORECASE)


# Addresses that name a service, not a person (`git@github.com:org/repo.git`).
_SERVICE_LOCAL_PARTS = frozenset({"git"})


def has_email(text: str) -> bool:
    if "@" in text and any(
        m.group(0).partition("@")[0].lower() not in _SERVICE_LOCAL_PARTS for m in _EMAIL_RE.finditer(text)
    ):
        return True
    return _OBFUSCATION_HINT_RE.search(text) is not None and _OBFUSCATED_EMAIL_RE.search(text) is not None


# -- phone numbers ---------------------------------------------------------------------------------

# International numbers (+CC or 00 CC, then 2-6 groups), North American (xxx) xxx-xxxx / xxx-xxx-xxxx,
# and any 7-15 digit number right after a phone keyword. Bare digit runs, dates and versions are not.
_INTERNATIONAL_PHONE_RE = re.compile(
    r"(?:\+(?<![\w+]\+) ?|0(?<![\w.,]0)(?<!\d[ -]0)0 ?)[1-9]\d{0,2}(?:[ .-]?\(?\d{1,4}\)?){2,6}(?![\w.]?\d)"
)
_NANP_PHONE_RE = re.compile(
    r"(?:\((?<![\w.-]\()\d{3}\) ?|\d(?<![\w.-]\d)\d{2}[-. ])\d{3}[-. ]\d{4}(?![\w-]|\.\d)"
)
_PHONE_KEYWORDS = ("phone", "tel", "mobile", "cell", "call me at", "whatsapp")
_KEYWORD_PHONE_RE = re.compile(
    r"\b(?:phone|tel|telephone|mobile|cell|call me at|whatsapp)\b(?: me)?(?: on| at)?\s*(?:number|no\.?|#)?"
    r"\s*[:.]?\s*(\+?\(?\d[\d ().-]{5,18}\d)"
)
_PHONE_DIGITS = (7, 15)
_INTERNATIONAL_DIGITS = (8, 15)


def has_phone(text: str) -> bool:
    low, high = _PHONE_DIGITS
    if any(low <= len(_digits(m.group(0))) <= high for m in _NANP_PHONE_RE.finditer(text)):
        return True
    if "+" in text or "00" in text:
        low_international, high_international = _INTERNATIONAL_DIGITS
        for match in _INTERNATIONAL_PHONE_RE.finditer(text):
            digits = _digits(match.group(0))
            if match.group(0).startswith("0"):
                digits = digits[2:]
            if low_international <= len(digits) <= high_international:
                return True
    lowered = text.lower()
    if any(keyword in lowered for keyword in _PHONE_KEYWORDS):
        return any(low <= len(_digits(m.group(1))) <= high for m in _KEYWORD_PHONE_RE.finditer(lowered))
    return False


# -- payment cards ---------------------------------------------------------------------------------

# A run of digit groups joined by separators: spaces, - . / _ (with spaces around), or a line break.
_CARD_RUN_RE = re.compile(
    r"\d+(?:(?:[ \t]{1,3}|[ \t]{0,3}[-./_][ \t]{0,3}|[ \t]{0,3}[-./_]?[ \t]{0,3}\r?\n[ \t]{0,8})\d+)*"
)
_CARD_LENGTHS = (13, 19)


def card_issuer_length_ok(digits: str) -> bool:
    """Whether `digits` starts with a card issuer's prefix (IIN range) and has that issuer's length."""
    length = len(digits)
    two, four = int(digits[:2]), int(digits[:4])
    if digits[0] == "4":  # Visa
        return length in (13, 16, 19)
    if two in (34, 37):  # American Express
        return length == 15
    if 51 <= two <= 55 or 2221 <= four <= 2720:  # Mastercard
        return length == 16
    if 300 <= int(digits[:3]) <= 305 or two in (36, 38, 39):  # Diners Club
        return 14 <= length <= 19
    if 3528 <= four <= 3589:  # JCB
        return 16 <= length <= 19
    if digits[0] == "6":  # Discover, UnionPay, Maestro, RuPay
        return 16 <= length <= 19
    if two in (50, 56, 57, 58):  # Maestro
        return 13 <= length <= 19
    return False


def luhn_valid(digits: str) -> bool:
    """The Luhn checksum used by payment card numbers (python-stdnum)."""
    return digits.isdigit() and stdnum_luhn.is_valid(digits)


def _card_windows(groups: list[str]) -> Iterator[str]:
    """Card-number candidates in a run of digit groups: consecutive groups of 13-19 digits in all,
    each group but the last of 3 or more digits (4-4-4-4, 4-6-5, split lines), or a run of single
    digits that is the whole run ("4 1 1 1 ...")."""
    low, high = _CARD_LENGTHS
    if all(len(group) == 1 for group in groups):
        if low <= len(groups) <= high:
            yield "".join(groups)
        return
    for start in range(len(groups)):
        total = 0
        for end in range(start, len(groups)):
            if end > start and len(groups[end - 1]) < 3:
                break
            total += len(groups[end])
            if total > high:
                break
            if total >= low:
                yield "".join(groups[start : end + 1])


def has_credit_card(text: str) -> bool:
    for match in _CARD_RUN_RE.finditer(text):
        run = match.group(0)
        if len(run) < _CARD_LENGTHS[0]:
            continue
        start = match.start()
        if start > 1 and text[start - 1] == "." and text[start - 2].isdigit():
            continue  # the digits of a decimal fraction ("3.14159...") are not a card number
        for digits in _card_windows(re.findall(r"\d+", run)):
            if len(set(digits)) > 1 and card_issuer_length_ok(digits) and luhn_valid(digits):
                return True
    return False


# -- IBANs -----------------------------------------------------------------------------------------

_IBAN_RE = re.compile(
    r"[A-Za-z](?<![A-Za-z0-9][A-Za-z])[A-Za-z]\d{2}(?:(?:[ \t-]|[ \t]?\r?\n)?[A-Za-z0-9]){11,30}"
)
# IBAN length per country (ISO 13616 registry); the candidate is cut to it before the check.
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


def iban_valid(iban: str) -> bool:
    """ISO 13616: the country's length and BBAN format and the mod-97 check (python-stdnum). National
    checks (such as a registry of bank codes) are left out: a missing bank code is still an IBAN."""
    return 15 <= len(iban) <= 34 and iban.isalnum() and stdnum_iban.is_valid(iban, check_country=False)


def has_iban(text: str) -> bool:
    for match in _IBAN_RE.finditer(text):
        compact = re.sub(r"[\s-]", "", match.group(0)).upper()
        length = _IBAN_LENGTHS.get(compact[:2])
        if length is not None and len(compact) >= length and iban_valid(compact[:length]):
            return True
    return False


# -- secrets ---------------------------------------------------------------------------------------

# (literals one of which must occur, pattern): the literal check skips the regex for almost every prompt.
_SECRET_PATTERNS: tuple[tuple[tuple[str, ...], re.Pattern[str]], ...] = (
    (("sk-",), re.compile(r"\bsk-[A-Za-z0-9_-]{20,400}")),  # OpenAI, Anthropic, OpenRouter (+ a digit)
    (("_live_", "_test_"), re.compile(r"\b(?:sk|rk|pk)_(?:live|test)_[A-Za-z0-9]{16,}")),  # Stripe
    (("AKIA", "ASIA"), re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b")),  # AWS access key id
    (("ghp_", "gho_", "ghu_", "ghs_", "ghr_"), re.compile(r"\bgh[pousr]_[A-Za-z0-9]{36,}")),  # GitHub
    (("github_pat_",), re.compile(r"\bgithub_pat_[A-Za-z0-9_]{22,}")),
    (("glpat-",), re.compile(r"\bglpat-[A-Za-z0-9_-]{20,}")),  # GitLab
    (("xox",), re.compile(r"\bxox[abprs]-[A-Za-z0-9-]{10,}")),  # Slack tokens
    (("hooks.slack.com",), re.compile(r"hooks\.slack\.com/services/T[A-Z0-9]+/B[A-Z0-9]+/[A-Za-z0-9]{16,}")),
    (("AIza",), re.compile(r"\bAIza[0-9A-Za-z_-]{35}")),  # Google API key
    (("hf_",), re.compile(r"\bhf_[A-Za-z0-9]{30,}")),  # Hugging Face
    (("eyJ",), re.compile(r"\beyJ[A-Za-z0-9_-]{10,}\.eyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}")),  # JWT
    (("PRIVATE",), re.compile(r"-----BEGIN\s{1,3}(?:[A-Z0-9]+\s{1,3}){0,3}PRIVATE\s{1,3}KEY")),  # PEM
    # Credentials in a URL (scheme://user:password@host), placeholders excepted.
    (
        ("://",),
        re.compile(
            r"\b[a-z][a-z0-9+.-]{1,20}://[^\s:/@]{1,64}:"
            r"(?!(?:password|passwd|pass|secret|pwd|changeme)@)[^\s@/<>{}$*]{3,128}@[\w.-]",
            re.IGNORECASE,
        ),
    ),
)
# A literal assigned to a secret-looking name (matched on lower-cased text): quoted, or unquoted with a
# letter and a digit or symbol (so "password: required" is not); placeholders such as "<token>",
# "${TOKEN}" or "xxxx" are skipped.
_SECRET_KEYWORDS = ("key", "secret", "token", "passw", "pwd")
_SECRET_NAMES = (
    r"(?:api[_-]?key|secret[_-]?key|secret[_-]?access[_-]?key|client[_-]?secret|access[_-]?token|"
    r"auth[_-]?token|password|passwd|passphrase|pwd)"
)
_SECRET_ASSIGNMENT_RE = re.compile(
    rf"(?<![a-z0-9]){_SECRET_NAMES}\b['\"]?\s*[:=]\s*['\"](?![^'\"]*[<>{{}}$*])(?!x{{4}})[^'\"\s]{{8,200}}['\"]"
)
_SECRET_UNQUOTED_RE = re.compile(
    rf"(?<![a-z0-9]){_SECRET_NAMES}\b(?:\s+is|\s*[:=])\s*(?![<{{$*])(?!x{{4}})"
    r"(?=[^\s'\"()\[\]{}<>]{0,200}[a-z])(?=[^\s'\"()\[\]{}<>]{0,200}[0-9!#%&+/=?@^~])"
    r"[^\s'\"()\[\]{}<>]{6,200}(?![^\s.,;:!?])"
)


def _has_digit(key: str) -> bool:
    """A random key body has digits; `sk-learn-and-other-words` has none."""
    return any(char.isdigit() for char in key)


def has_secret(text: str) -> bool:
    for literals, pattern in _SECRET_PATTERNS:
        if any(literal in text for literal in literals) and any(
            literals != ("sk-",) or _has_digit(match.group(0)) for match in pattern.finditer(text)
        ):
            return True
    lowered = text.lower()
    if not any(keyword in lowered for keyword in _SECRET_KEYWORDS):
        return False
    return (
        _SECRET_ASSIGNMENT_RE.search(lowered) is not None or _SECRET_UNQUOTED_RE.search(lowered) is not None
    )


# -- all detectors ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Detector:
    kind: str
    found_in: Callable[[str], bool]  # takes the canonical text


DETECTORS: tuple[Detector, ...] = (
    Detector(SECRET, has_secret),
    Detector(EMAIL, has_email),
    Detector(CREDIT_CARD, has_credit_card),
    Detector(IBAN, has_iban),
    Detector(PHONE, has_phone),
)


def detect_private_data(text: str) -> list[str]:
    """The kinds of personal data or secrets found in `text` (empty when none), in a fixed order."""
    canonical = canonical_text(text)
    return [detector.kind for detector in DETECTORS if detector.found_in(canonical)]


async def detect_private_data_async(text: str, offload_chars: int = OFFLOAD_CHARS) -> list[str]:
    """`detect_private_data` that scans texts of `offload_chars` or more in a worker thread, so a
    large prompt does not hold the event loop (the regular expressions release no GIL, but other
    requests' I/O is served between the thread's time slices)."""
    if len(text) < offload_chars:
        return detect_private_data(text)
    return await asyncio.to_thread(detect_private_data, text)
