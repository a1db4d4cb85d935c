"""Readers of the two collections labeled with today's price classes: ZeroEval and shaberi.

Each model's class (fast / balanced / frontier) is in the collection's models.json, so a row's tiers
come straight from which of today's classes pass it (rules in `tierwise.training.labels`).
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

from tierwise.training.labels import TIERS, cheapest_passing, half_or_more_pass
from tierwise.training.source_rows import LabeledPrompt, SourceStats, nonblank_lines
from tierwise.training.text_cleaning import clean_prompt
from tierwise.training.verdicts import model_key

# --- ZeroEval (GSM8K, MATH level 5, CRUXEval; 43-51 models of 2024, all three tiers) ----------
# The most direct evidence about today's classes: each model's class is in zeroeval/models.json.
# Only the `core` models (one per family) of the three classes vote, so snapshots and providers of
# one model do not count twice; `other` (below 7B, 30-34B, DeepSeek, GPT-4/4-turbo) is left out.
ZEROEVAL_FILES = {"gsm": "zeroeval_gsm8k", "math_l5": "zeroeval_math_l5", "crux": "cruxeval"}
# CRUXEval's opening sentence is the same in all 800 rows: it only identifies the dataset.
CRUXEVAL_PREAMBLE = (
    "You are given a Python function and an assertion containing an input to the function. "
    "Complete the assertion with a literal (no unsimplified expressions, no function calls) "
    "containing the output when executing the provided code on the given input, even if the "
    "function is incorrect or incomplete."
)


def _tier_models(path: Path, core_only: bool) -> dict[str, str]:
    """model name -> tier, from a models.json that gives each model's price class."""
    models = json.loads(path.read_text(encoding="utf-8"))
    return {
        name: m["class"]
        for name, m in models.items()
        if m["class"] in TIERS and (m.get("core", False) or not core_only)
    }


def read_zeroeval(root: Path, stats: SourceStats) -> Iterator[LabeledPrompt]:
    """Cheapest tier in which at least half of the core models with a verdict on the row pass."""
    tier_of = _tier_models(root / "zeroeval" / "models.json", core_only=True)
    # The core models of each class are the ones whose abilities stand for today's classes in the fit.
    stats.price_classes.update({model_key(m): tier for m, tier in tier_of.items()})
    for name, source in ZEROEVAL_FILES.items():
        for line in nonblank_lines(root / "zeroeval" / f"{name}.jsonl"):
            row = json.loads(line)
            stats.read["zeroeval"] += 1
            text = row["prompt"]
            if source == "cruxeval":
                text = text.strip().removeprefix(CRUXEVAL_PREAMBLE)
            text = clean_prompt(text)
            # Every model's verdict informs the fit (snapshots and `other` too); only core ones vote.
            stats.verdicts.add(text, source, {m: 1.0 if c else 0.0 for m, c in row["correct"].items()})
            outcomes: dict[str, list[float]] = defaultdict(list)
            for model, correct in row["correct"].items():
                if model in tier_of:
                    outcomes[tier_of[model]].append(1.0 if correct else 0.0)
            if not outcomes:
                stats.drop("zeroeval", f"no core model verdicts ({source})")
                continue
            allowed = cheapest_passing(outcomes, passes=half_or_more_pass)
            if allowed is None:
                stats.drop("zeroeval", f"no tier passes ({source})")
                continue
            yield LabeledPrompt(text, allowed, source, "zeroeval")


# --- shaberi (Japanese chat prompts, GPT-4.1 judge scores of 13 current models) --------------
SHABERI_FILES = {"elyza_tasks_100": "shaberi_elyza", "rakuda_questions": "shaberi_rakuda"}
SHABERI_PASS_SHARE = 0.8  # a model passes at >= 4 of 5 (ELYZA) or >= 8 of 10 (Rakuda)


def read_shaberi(root: Path, stats: SourceStats) -> Iterator[LabeledPrompt]:
    """Cheapest tier in which at least half of its models pass; all rows are Japanese (lang "ja").

    Inversions (the fast tier passes, the frontier tier fails) are kept as `fast` and counted: the
    judge is lenient and one answer per model is noisy (shaberi/README.md).
    """
    tier_of = _tier_models(root / "shaberi" / "models.json", core_only=True)
    for name, source in SHABERI_FILES.items():
        for line in nonblank_lines(root / "shaberi" / f"{name}.jsonl"):
            row = json.loads(line)
            stats.read["shaberi"] += 1
            threshold = SHABERI_PASS_SHARE * row["scale"]
            outcomes: dict[str, list[float]] = defaultdict(list)
            for model, score in row["scores"].items():
                if model in tier_of:
                    outcomes[tier_of[model]].append(1.0 if score >= threshold else 0.0)
            if not outcomes:
                stats.drop("shaberi", "no scores")
                continue
            allowed = cheapest_passing(outcomes, passes=half_or_more_pass)
            if allowed is None:
                stats.drop("shaberi", "no tier passes")
                continue
            if allowed == {"fast"} and "frontier" in outcomes and not half_or_more_pass(outcomes["frontier"]):
                stats.note("shaberi", "inversions kept as fast (fast tier passes, frontier tier fails)")
            yield LabeledPrompt(clean_prompt(row["prompt"]), allowed, source, "shaberi", lang="ja")
