"""Readers for the public outcome and difficulty data under DATA_DIR.

Each reader yields `LabeledPrompt`s: cleaned text, the allowed tiers derived by the rules in
`tierwise.training.labels`, the benchmark it came from (`source`) and the collection it was read from
(`origin`). Rows a rule cannot label are counted in `SourceStats`, never silently lost. Every model
verdict a reader sees, of rows it drops too, goes to `SourceStats.verdicts` for the item-response fit.
"""

from __future__ import annotations

import csv
import json
import re
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

from tierwise.training.fit_sources import read_mmlu_pro
from tierwise.training.labels import (
    DIFFICULTY_SOURCE_TIERS,
    MATH_LEVEL_TIERS,
    cheapest_passing,
)
from tierwise.training.price_class_sources import read_shaberi, read_zeroeval
from tierwise.training.source_rows import LabeledPrompt, SourceStats, nonblank_lines
from tierwise.training.text_cleaning import chat_to_text, clean_prompt, format_choices
from tierwise.training.verdicts import choice_guess

csv.field_size_limit(2**31 - 1)  # RouterBench cells hold whole model responses


# --- RouterBench (11 models of 2023: today's fast and balanced classes) ---------------------
# What a 2023 70B model or gpt-3.5 passes, a 2025 fast model passes (gpt-4o-mini beats
# gpt-3.5-turbo and llama-2-70b on every benchmark here), so the 2023 balanced class stands for
# today's `fast`; gpt-4-1106 is about today's balanced class, and the older Claudes sit with it.
# No frontier model was run: a row neither tier passes is unresolved. The 7-13B models
# (mistral-7b, WizardLM-13B) are below today's fast class, so they are left out.
ROUTERBENCH_TIERS = {
    "fast": [
        "mistralai/mixtral-8x7b-chat",
        "meta/code-llama-instruct-34b-chat",
        "zero-one-ai/Yi-34B-Chat",
        "meta/llama-2-70b-chat",
        "claude-instant-v1",
        "gpt-3.5-turbo-1106",
    ],
    "balanced": ["claude-v1", "claude-v2", "gpt-4-1106-preview"],
}
ROUTERBENCH_FILES = {"arc_challenge": True, "winograde": True, "mbpp": False}  # name -> multiple choice
ROUTERBENCH_GUESS = {"arc_challenge": choice_guess(4), "winograde": choice_guess(2), "mbpp": 0.0}
# Every model with a 0/1 column is a verdict for the fit, the 7-13B models left out of the tiers too.
ROUTERBENCH_MODELS = [
    *ROUTERBENCH_TIERS["fast"],
    *ROUTERBENCH_TIERS["balanced"],
    "mistralai/mistral-7b-chat",
    "WizardLM/WizardLM-13B-V1.2",
]


def read_routerbench(root: Path, stats: SourceStats) -> Iterator[LabeledPrompt]:
    for name, multiple_choice in ROUTERBENCH_FILES.items():
        source = "winogrande" if name == "winograde" else name
        for split in ("train", "test"):
            with open(root / "routerbench" / f"{name}_{split}.csv", newline="", encoding="utf-8") as f:
                for row in csv.DictReader(f):
                    stats.read["routerbench"] += 1
                    text = clean_prompt(row["prompt"])
                    verdicts = {m: float(row[m]) for m in ROUTERBENCH_MODELS if row.get(m)}
                    stats.verdicts.add(text, source, verdicts, ROUTERBENCH_GUESS[name])
                    outcomes = {
                        t: [float(row[m]) for m in ms if row.get(m)] for t, ms in ROUTERBENCH_TIERS.items()
                    }
                    outcomes = {t: o for t, o in outcomes.items() if o}  # a blank cell: model not run
                    if not outcomes:
                        stats.drop("routerbench", "no outcomes")
                        continue
                    allowed = cheapest_passing(outcomes, multiple_choice)
                    if allowed is None:
                        stats.drop("routerbench", "no tier passes (no frontier model was run)")
                        continue
                    yield LabeledPrompt(text, allowed, source, "routerbench")


# --- LLMRouter (9 open models of 2024, 7B to 70B: today's fast class only) -------------------
# The 7-9B models are today's fast class (or below it). The 49-51B nemotrons (distilled from
# Llama-3.1/3.3-70B) score like gpt-4o-mini here (MMLU 0.83-0.87), so they are fast class too,
# and they vote in the multiple-choice majority: they are the voters closest to today's fast
# model, and leaving them out would let the weaker 7-9B models alone decide (MMLU rows passed:
# 365 with all seven voting, 229 with the 7-9B models alone). No stronger model was run, so a
# row the fast tier fails is unresolved.
LLMROUTER_TIERS = {
    "fast": [
        "qwen2.5-7b-instruct",
        "codegemma-7b",
        "gemma-2-9b-it",
        "llama-3.1-8b-instruct",
        "mistral-7b-instruct-v0.3",
        "llama-3.1-nemotron-51b-instruct",
        "llama-3.3-nemotron-super-49b-v1",
    ],
}
# Scores that look like answer-parsing failures, not ability (see SOURCES.md): left out per task.
LLMROUTER_EXCLUDED = {
    "*": {"llama3-chatqa-1.5-8b", "llama3-chatqa-1.5-70b"},  # retrieval-tuned, weak at instructions
    "mmlu": {"qwen2.5-7b-instruct"},
    "human_eval": {"gemma-2-9b-it"},
}
LLMROUTER_MULTIPLE_CHOICE = {"em_mc"}
LLMROUTER_EXACT_MATCH_QA = {"trivia_qa", "natural_qa"}  # a 0 is often a correct answer worded differently
# Not verdicts for the fit: exact-match QA (above) and CommonGen, whose score is a coverage share.
# No guessing floor: GPQA scores below chance (10%) show that unparsed answers count as wrong.
LLMROUTER_NOT_VERDICTS = LLMROUTER_EXACT_MATCH_QA | {"commongen"}


def _llmrouter_outcomes(task: str, scores: dict[str, float]) -> dict[str, list[float]]:
    excluded = LLMROUTER_EXCLUDED["*"] | LLMROUTER_EXCLUDED.get(task, set())
    outcomes = {
        t: [scores[m] for m in ms if m in scores and m not in excluded] for t, ms in LLMROUTER_TIERS.items()
    }
    return {t: o for t, o in outcomes.items() if o}


def read_llmrouter(root: Path, stats: SourceStats) -> Iterator[LabeledPrompt]:
    queries: dict[str, dict] = {}
    for split in ("train", "test"):
        for line in nonblank_lines(root / "llmrouter" / f"default_query_{split}.jsonl"):
            q = json.loads(line)
            queries[q["query"]] = q
    for split in ("train", "test"):
        for row in json.loads((root / "llmrouter" / f"{split}.json").read_text(encoding="utf-8")):
            stats.read["llmrouter"] += 1
            query = queries.get(row["question"])
            if query is None:
                stats.drop("llmrouter", "no task name (question not in default_query_*.jsonl)")
                continue
            task = query["task_name"]
            text = query["query"]
            choices = query.get("choices")
            if isinstance(choices, list) and choices and all(isinstance(c, str) for c in choices):
                text = f"{text}\n{format_choices(choices)}"
            text = clean_prompt(text)
            if task not in LLMROUTER_NOT_VERDICTS:
                excluded = LLMROUTER_EXCLUDED["*"] | LLMROUTER_EXCLUDED.get(task, set())
                stats.verdicts.add(text, task, {m: s for m, s in row["scores"].items() if m not in excluded})
            outcomes = _llmrouter_outcomes(task, row["scores"])
            allowed = cheapest_passing(outcomes, query["metric"] in LLMROUTER_MULTIPLE_CHOICE)
            if allowed is None:
                if task in LLMROUTER_EXACT_MATCH_QA:
                    stats.drop("llmrouter", "exact-match QA failure (not trusted)")
                else:
                    stats.drop("llmrouter", "no tier passes (no stronger model was run)")
                continue
            yield LabeledPrompt(text, allowed, task, "llmrouter")


# --- RouteLLM (Mixtral-8x7B and gpt-4-1106: bounds the tier) ---------------------------------
# Mixtral-8x7B is below today's fast class: what it passes, a fast model passes. gpt-4-1106 is about
# today's balanced class, and today's fast model is stronger than Mixtral, so it may pass what
# Mixtral failed: a row only GPT-4 passes is fast or balanced. Rows neither passes are dropped.
ROUTELLM_MIXTRAL = "mistralai/Mixtral-8x7B-Instruct-v0.1"
ROUTELLM_GPT4 = "gpt-4-1106-preview"
ROUTELLM_LABELS = {
    "mixtral passes": frozenset({"fast"}),
    "only gpt-4 passes": frozenset({"fast", "balanced"}),
}


def _routellm_file(path: Path, source: str, stats: SourceStats) -> Iterator[LabeledPrompt]:
    guess = choice_guess(4) if source == "mmlu" else 0.0
    with open(path, newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            stats.read["routellm"] += 1
            text = clean_prompt(row["prompt"])
            verdicts = {m: float(row[m] == "True") for m in (ROUTELLM_MIXTRAL, ROUTELLM_GPT4)}
            stats.verdicts.add(text, source, verdicts, guess)
            if row[ROUTELLM_MIXTRAL] == "True":
                allowed = ROUTELLM_LABELS["mixtral passes"]
            elif row[ROUTELLM_GPT4] == "True":
                allowed = ROUTELLM_LABELS["only gpt-4 passes"]
            else:
                stats.drop("routellm", "no tier passes")
                continue
            yield LabeledPrompt(text, allowed, source, "routellm")


def read_routellm(root: Path, stats: SourceStats) -> Iterator[LabeledPrompt]:
    for path in sorted((root / "routellm" / "mmlu").glob("*.csv")):
        yield from _routellm_file(path, "mmlu", stats)
    yield from _routellm_file(root / "routellm" / "gsm8k" / "gsm8k_responses.csv", "gsm8k", stats)


# --- OpenAssistant prompts with GPT-4 pairwise verdicts (qlora) -----------------------------
# gpt-3.5 and the 30-65B systems of 2023 are within today's fast class, and GPT-4 (2023) is about
# today's balanced class. A prompt is `fast` when the small systems tie or beat gpt-3.5, or when
# the mid systems tie or beat GPT-4, in at least half of their verdicts; otherwise GPT-4 level,
# `balanced`, is enough. No system beyond GPT-4 was judged, so this source gives no `frontier`.
OASST_SMALL = {"guanaco-7b", "guanaco-13b", "vicuna-13b"}
OASST_MID = {"guanaco-30b", "guanaco-65b", "gpt-3.5"}
OASST_FAST_WHEN_HELD_UP = ((OASST_SMALL, "gpt-3.5"), (OASST_MID, "gpt-4"))  # (systems, reference)
OASST_OTHERWISE = "balanced"


def _oasst_system(part: str) -> str:
    if m := re.match(r"(\d+b)-guanaco", part):
        return f"guanaco-{m.group(1)}"
    for name in ("vicuna-13b", "gpt-3.5", "gpt-4"):
        if part.startswith(name):
            return name
    raise ValueError(f"unknown system in ratings file name part {part!r}")


def _oasst_holds_up(
    verdicts: dict[str, list[tuple[str, str, int]]], message_id: str, systems: set[str], reference: str
) -> bool | None:
    """Share of verdicts where one of `systems` ties or beats `reference` is at least one half."""
    held, total = 0, 0
    for a, b, score in verdicts.get(message_id, []):
        if a in systems and b == reference:
            held, total = held + (score in (1, 3)), total + 1
        elif b in systems and a == reference:
            held, total = held + (score in (2, 3)), total + 1
    return None if total == 0 else held * 2 >= total


def _oasst_shares(verdicts: dict[str, list[tuple[str, str, int]]], message_id: str) -> dict[str, float]:
    """Each system's share of its verdicts (against any other system) where it ties or wins.

    The fit reads that share as the system's judged outcome on the prompt: a prompt where only
    GPT-4's answer holds up is a hard one; one where a 7B answer holds up against GPT-4 is easy.
    """
    held: dict[str, list[float]] = defaultdict(list)
    for a, b, score in verdicts.get(message_id, []):
        held[a].append(float(score in (1, 3)))
        held[b].append(float(score in (2, 3)))
    return {system: sum(h) / len(h) for system, h in held.items()}


def read_oasst(root: Path, stats: SourceStats) -> Iterator[LabeledPrompt]:
    """fast if the small systems hold up against gpt-3.5 or the mid systems against GPT-4; else balanced.

    The GPT-4 judge favours long answers; either comparison is enough for `fast` because both
    sides of it are at or below today's fast class (gpt-3.5) or today's balanced class (GPT-4).
    """
    verdicts: dict[str, list[tuple[str, str, int]]] = defaultdict(list)
    for path in sorted((root / "oasst-qlora" / "ratings-gpt4").glob("*-threeclass.jsonl")):
        a_part, b_part = path.name.removesuffix("-gpt-4-reviewer-threeclass.jsonl").split("-vs-")
        a, b = _oasst_system(a_part), _oasst_system(b_part)
        for line in path.read_text(encoding="utf-8").splitlines():
            r = json.loads(line)
            if r.get("score") in (1, 2, 3):
                verdicts[r["message_id"]].append((a, b, int(r["score"])))
    for line in nonblank_lines(root / "oasst-qlora" / "oa_questions.jsonl"):
        q = json.loads(line)
        stats.read["oasst-qlora"] += 1
        held_up = [
            _oasst_holds_up(verdicts, q["message_id"], systems, reference)
            for systems, reference in OASST_FAST_WHEN_HELD_UP
        ]
        if all(h is None for h in held_up):
            stats.drop("oasst-qlora", "no verdicts")
            continue
        tier = "fast" if any(held_up) else OASST_OTHERWISE
        text = chat_to_text(q["input"])
        stats.verdicts.add(text, "oasst", _oasst_shares(verdicts, q["message_id"]))
        yield LabeledPrompt(text, frozenset({tier}), "oasst", "oasst-qlora", lang=q.get("lang", "en"))


# --- Difficulty-only sources: the source or MATH level bounds the tier ------------------------
def read_math_levels(root: Path, stats: SourceStats) -> Iterator[LabeledPrompt]:
    for line in nonblank_lines(root / "math-levels" / "math_test.jsonl"):
        row = json.loads(line)
        stats.read["math-levels"] += 1
        m = re.search(r"(\d)", str(row.get("level", "")))
        if not m or int(m.group(1)) not in MATH_LEVEL_TIERS:
            stats.drop("math-levels", "level not 1-5")
            continue
        allowed = MATH_LEVEL_TIERS[int(m.group(1))]
        if allowed is None:
            stats.drop("math-levels", f"level {m.group(1)} does not bound the tier (see zeroeval_math_l5)")
            continue
        yield LabeledPrompt(clean_prompt(row["problem"]), allowed, "math", "math-levels")


def _qwen_math_text(name: str, row: dict) -> str:
    if name == "svamp":
        return f"{row['Body'].strip()} {row['Question'].strip()}"
    if name == "asdiv":
        return f"{row['body'].strip()} {row['question'].strip()}"
    if name == "mawps":
        return row["input"]
    if name in ("aqua", "sat_math"):
        options = row["options"]
        if isinstance(options, str):  # sat_math keeps its choices in one string: "A) ... B) ..."
            options = re.split(r"\s+(?=[B-E][\).]\s)", options.strip())
        options = [re.sub(r"^\(?[A-E]\s*[\).:]\s*", "", o) for o in options]
        return f"{row['question']}\n{format_choices(options)}"
    return row.get("question") or row["problem"]


def read_qwen_math(root: Path, stats: SourceStats) -> Iterator[LabeledPrompt]:
    for name, allowed in DIFFICULTY_SOURCE_TIERS.items():
        path = root / "qwen-math" / f"{name}.jsonl"
        for line in path.read_text(encoding="utf-8").splitlines():
            stats.read["qwen-math"] += 1
            text = _qwen_math_text(name, json.loads(line))
            yield LabeledPrompt(clean_prompt(text), allowed, name, "qwen-math")


READERS = {
    "zeroeval": read_zeroeval,
    "shaberi": read_shaberi,
    "routerbench": read_routerbench,
    "llmrouter": read_llmrouter,
    "routellm": read_routellm,
    "oasst-qlora": read_oasst,
    "mmlu-pro": read_mmlu_pro,
    "math-levels": read_math_levels,
    "qwen-math": read_qwen_math,
}


def read_public_sources(root: Path, stats: SourceStats) -> Iterator[LabeledPrompt]:
    missing = [name for name in READERS if not (root / name).is_dir()]
    if missing:
        raise FileNotFoundError(
            f"{root} lacks {missing}; set TIERWISE_DATA_DIR to the folder holding the public datasets "
            "(see data/README.md for where each comes from)."
        )
    for reader in READERS.values():
        yield from reader(root, stats)
