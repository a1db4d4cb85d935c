"""Readers of collections whose tier labels come only from the item-response fit (difficulty.py).

MMLU-Pro: 12,032 ten-option questions with the verdicts of 26-29 models (2023-2024 open models from
6B to 110B, Gemini 1.5 Flash and Pro). No label rule fits it: no model of today's top class was run,
and its older models stand for no class by themselves. Its many verdicts per question are what make
it valuable: the fit places each question on the scale where today's classes' abilities are known
(through the models it shares with ZeroEval and LLMRouter), and the build labels it from there.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from pathlib import Path

from tierwise.training.labels import TIERS
from tierwise.training.source_rows import LabeledPrompt, SourceStats
from tierwise.training.text_cleaning import clean_prompt, format_choices
from tierwise.training.verdicts import choice_guess

FIT_LABELED_ORIGINS = ("mmlu-pro",)
UNLABELED = frozenset(TIERS)  # no rule bounds the tier: the build writes the fit's tier instead


def mmlu_pro_source(category: str) -> str:
    """One source per category ("computer science" -> "mmlu_pro_computer_science")."""
    return "mmlu_pro_" + "_".join(category.lower().split())


def read_mmlu_pro(root: Path, stats: SourceStats) -> Iterator[LabeledPrompt]:
    """Every question with at least one right answer; all of them inform the fit."""
    with gzip.open(root / "mmlu-pro" / "outcomes.jsonl.gz", "rt", encoding="utf-8") as f:
        for line in f:
            if not line.strip():
                continue
            row = json.loads(line)
            stats.read["mmlu-pro"] += 1
            source = mmlu_pro_source(row["category"])
            text = clean_prompt(f"{row['question']}\n{format_choices(row['options'])}")
            stats.verdicts.add(text, source, row["correct"], choice_guess(len(row["options"])))
            if not any(row["correct"].values()):
                stats.drop(
                    "mmlu-pro", "no model answers it right (a wrong key is as likely as a hard question)"
                )
                continue
            yield LabeledPrompt(text, UNLABELED, source, "mmlu-pro")
