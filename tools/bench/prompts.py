"""The prompt pool the benchmarks draw from, and texts of an exact token length cut from it."""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from pathlib import Path

from tierwise.core.text_encoding import TextEncoder

from tools.harness import REPO_DIR

DEFAULT_PROMPTS = REPO_DIR / "data" / "processed" / "test.jsonl"
FALLBACK_PROMPTS = [
    "What is the capital of France?",
    "Write a haiku about autumn leaves.",
    "Summarise the main argument of this paragraph in two sentences: the committee found that ...",
    "Prove that there are infinitely many primes, then generalise the argument to arithmetic progressions.",
    "Design a distributed rate limiter for a multi-region API gateway and discuss its failure modes.",
]


def read_prompts(path: Path, limit: int = 2000, seed: int = 7) -> tuple[list[str], str]:
    """(up to `limit` shuffled texts, where they came from); a built-in sample when `path` is missing."""
    if not path.is_file():
        return FALLBACK_PROMPTS, f"built-in sample ({path} not found)"
    with open(path, encoding="utf-8") as f:
        texts = [json.loads(line).get("text") for line in f if line.strip()]
    texts = [t for t in texts if isinstance(t, str) and t.strip()]
    random.Random(seed).shuffle(texts)
    return texts[:limit], f"{path.relative_to(REPO_DIR) if path.is_relative_to(REPO_DIR) else path}"


def prompt_of_tokens(encoder: TextEncoder, pool: Sequence[str], tokens: int) -> str:
    """A text of exactly (or just over) `tokens` content tokens, cut from the prompt pool."""
    words = " ".join(pool).split()
    while len(words) < tokens * 2:
        words = words * 2
    low, high = 1, tokens * 2
    while low < high:  # the fewest words reaching the token count
        middle = (low + high) // 2
        _, (count,) = encoder.encode_ids([" ".join(words[:middle])])
        if count >= tokens:
            high = middle
        else:
            low = middle + 1
    return " ".join(words[:low])
