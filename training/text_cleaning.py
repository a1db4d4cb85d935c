"""Strip formatting that only identifies a dataset, so the model learns the request, not its origin.

Benchmarks wrap the same kind of question in their own boilerplate: few-shot examples,
"Please answer with the letter..." prefixes, "Answer:" suffixes, `A)` versus `A.` choice layouts.
A classifier can identify the source from those alone, and the source predicts the label, so the
model would score well on its own sources and learn nothing that transfers to real traffic.
"""

from __future__ import annotations

import ast
import re
import unicodedata

# A few-shot example ends with its answer letter; the real question comes after the last one.
_FEW_SHOT_ANSWER = re.compile(r"Answer:\s*[A-E]\s*\n\s*\n", re.IGNORECASE)
_BOILERPLATE = [
    re.compile(r"Please answer with the letter of the correct answer\.?", re.IGNORECASE),
    re.compile(r"Print only a single choice\s+from\s+(\"[A-E]\"(\s+or\s+)?)+\s*without explanation\.?", re.I),
    re.compile(r"After careful thought, put you(r)? final answer in \\boxed\{\.\.\.\}\.?", re.IGNORECASE),
    re.compile(r"^The following are multiple choice questions \(with answers\) about [^.\n]*\.", re.I | re.M),
    re.compile(r"\n?\s*Answer:\s*$", re.IGNORECASE),
]
_QA_PREFIX = re.compile(r"^\s*(Q|Question)\s*:\s*", re.IGNORECASE)
_CHOICE_LINE = re.compile(r"^\s*\(?([A-E])\s*[\).:]\s+", re.MULTILINE)
_CHAT_MARKERS = re.compile(r"\s*###\s*(Human|Assistant)\s*:\s*")


def unwrap_list_repr(prompt: str) -> str:
    """RouterBench stores prompts as the repr of a Python list of strings."""
    stripped = prompt.strip()
    if stripped.startswith("[") and stripped.endswith("]"):
        try:
            value = ast.literal_eval(stripped)
        except (ValueError, SyntaxError):
            return prompt
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return "\n\n".join(value)
    return prompt


def drop_few_shot(text: str) -> str:
    """Keep only the question after the last answered few-shot example."""
    parts = _FEW_SHOT_ANSWER.split(text)
    return parts[-1] if len(parts) > 1 else text


def canonical_choices(text: str) -> str:
    """Write answer choices one way (`A) ...`) whatever the benchmark's layout, when A and B exist."""
    letters = {m.group(1) for m in _CHOICE_LINE.finditer(text)}
    if {"A", "B"} <= letters:
        return _CHOICE_LINE.sub(lambda m: f"{m.group(1)}) ", text)
    return text


def format_choices(choices: list[str]) -> str:
    """Choices kept in a separate field are appended in the canonical layout."""
    return "\n".join(f"{chr(ord('A') + i)}) {c}" for i, c in enumerate(choices))


def chat_to_text(text: str) -> str:
    """`### Human: ... ### Assistant: ...` transcripts become turns separated by blank lines."""
    turns = [t.strip() for t in _CHAT_MARKERS.split(text) if t.strip() and t not in ("Human", "Assistant")]
    return "\n\n".join(turns)


def clean_prompt(text: str) -> str:
    """The full cleaning pipeline applied to every benchmark prompt."""
    text = unicodedata.normalize("NFC", unwrap_list_repr(text))
    text = drop_few_shot(text)
    for pattern in _BOILERPLATE:
        text = pattern.sub("", text)
    text = _QA_PREFIX.sub("", text)
    text = canonical_choices(text)
    text = re.sub(r"[ \t]+\n", "\n", text)
    text = re.sub(r"\n{3,}", "\n\n", text)
    return text.strip()


def dedup_key(text: str) -> str:
    """Normalized text for deduplication: case, punctuation and whitespace do not matter."""
    text = unicodedata.normalize("NFKC", text).lower()
    return " ".join(re.sub(r"[^\w]+", " ", text).split())
