"""Readers for the public outcome and difficulty data under DATA_DIR.

Each reader yields `LabeledPrompt`s: cleaned text, the allowed tiers derived by the rules in
`training.labels`, the benchmark it came from (`source`) and the collection it was read from
(`origin`). Rows a rule cannot label are counted in `SourceStats`, never silently lost.
"""

from __future__ import annotations

import csv
import json
import re
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from training.labels import DIFFICULTY_SOURCE_TIERS, MATH_LEVEL_TIERS, cheapest_passing
from training.text_cleaning import chat_to_text, clean_prompt, format_choices

csv.field_size_limit(2**31 - 1)  # RouterBench cells hold whole model responses


@dataclass(frozen=True)
class LabeledPrompt:
    text: str
    allowed: frozenset[str]
    source: str  # the benchmark or dataset: "mmlu", "gsm8k", "oasst", ...
    origin: str  # the collection folder it was read from: "routellm", "routerbench", ...
    weight: float = 1.0
    lang: str = "en"


@dataclass
class SourceStats:
    """Rows read and rows dropped (with the reason) per origin, for the datasheet."""

    read: Counter[str] = field(default_factory=Counter)
    dropped: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))

    def drop(self, origin: str, reason: str) -> None:
        self.dropped[origin][reason] += 1


def _lines(path: Path) -> Iterator[str]:
    """Non-blank lines; only \n ends a line (str.splitlines would also split on U+2028 in a JSON string)."""
    with open(path, encoding="utf-8") as f:
        yield from (line for line in f if line.strip())


# --- RouterBench (11 models over all three tiers) -------------------------------------------
ROUTERBENCH_TIERS = {
    "fast": ["mistralai/mistral-7b-chat", "WizardLM/WizardLM-13B-V1.2"],
    "balanced": [
        "mistralai/mixtral-8x7b-chat",
        "meta/code-llama-instruct-34b-chat",
        "zero-one-ai/Yi-34B-Chat",
        "meta/llama-2-70b-chat",
        "claude-instant-v1",
        "gpt-3.5-turbo-1106",
    ],
    "frontier": ["claude-v1", "claude-v2", "gpt-4-1106-preview"],
}
ROUTERBENCH_FILES = {"arc_challenge": True, "winograde": True, "mbpp": False}  # name -> multiple choice


def read_routerbench(root: Path, stats: SourceStats) -> Iterator[LabeledPrompt]:
    for name, multiple_choice in ROUTERBENCH_FILES.items():
        source = "winogrande" if name == "winograde" else name
        for split in ("train", "test"):
            with open(root / "routerbench" / f"{name}_{split}.csv", newline="", encoding="utf-8") as f:
                for row in csv.DictReader(f):
                    stats.read["routerbench"] += 1
                    outcomes = {
                        t: [float(row[m]) for m in ms if row.get(m)] for t, ms in ROUTERBENCH_TIERS.items()
                    }
                    outcomes = {t: o for t, o in outcomes.items() if o}  # a blank cell: model not run
                    if not outcomes:
                        stats.drop("routerbench", "no outcomes")
                        continue
                    allowed = cheapest_passing(outcomes, multiple_choice)
                    if allowed is None:
                        stats.drop("routerbench", "no tier passes")
                        continue
                    yield LabeledPrompt(clean_prompt(row["prompt"]), allowed, source, "routerbench")


# --- LLMRouter (9 open models, 7B to 70B: fast and balanced only) ----------------------------
LLMROUTER_TIERS = {
    "fast": [
        "qwen2.5-7b-instruct",
        "codegemma-7b",
        "gemma-2-9b-it",
        "llama-3.1-8b-instruct",
        "mistral-7b-instruct-v0.3",
    ],
    "balanced": ["llama-3.1-nemotron-51b-instruct", "llama-3.3-nemotron-super-49b-v1"],
}
# Scores that look like answer-parsing failures, not ability (see SOURCES.md): left out per task.
LLMROUTER_EXCLUDED = {
    "*": {"llama3-chatqa-1.5-8b", "llama3-chatqa-1.5-70b"},  # retrieval-tuned, weak at instructions
    "mmlu": {"qwen2.5-7b-instruct"},
    "human_eval": {"gemma-2-9b-it"},
}
LLMROUTER_MULTIPLE_CHOICE = {"em_mc"}
LLMROUTER_EXACT_MATCH_QA = {"trivia_qa", "natural_qa"}  # a 0 is often a correct answer worded differently


def _llmrouter_outcomes(task: str, scores: dict[str, float]) -> dict[str, list[float]]:
    excluded = LLMROUTER_EXCLUDED["*"] | LLMROUTER_EXCLUDED.get(task, set())
    outcomes = {
        t: [scores[m] for m in ms if m in scores and m not in excluded] for t, ms in LLMROUTER_TIERS.items()
    }
    return {t: o for t, o in outcomes.items() if o}


def read_llmrouter(root: Path, stats: SourceStats) -> Iterator[LabeledPrompt]:
    queries: dict[str, dict] = {}
    for split in ("train", "test"):
        for line in _lines(root / "llmrouter" / f"default_query_{split}.jsonl"):
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
            outcomes = _llmrouter_outcomes(task, row["scores"])
            allowed = cheapest_passing(outcomes, query["metric"] in LLMROUTER_MULTIPLE_CHOICE)
            if allowed is None:
                stats.drop("llmrouter", "no tier passes (no frontier model was run)")
                continue
            if task in LLMROUTER_EXACT_MATCH_QA and "fast" not in allowed:
                stats.drop("llmrouter", "exact-match QA failure (not trusted)")
                continue
            text = query["query"]
            choices = query.get("choices")
            if isinstance(choices, list) and choices and all(isinstance(c, str) for c in choices):
                text = f"{text}\n{format_choices(choices)}"
            yield LabeledPrompt(clean_prompt(text), allowed, task, "llmrouter")


# --- RouteLLM (Mixtral = balanced, GPT-4 = frontier: bounds the tier) ------------------------
ROUTELLM_TIERS = {"balanced": "mistralai/Mixtral-8x7B-Instruct-v0.1", "frontier": "gpt-4-1106-preview"}


def _routellm_file(
    path: Path, source: str, multiple_choice: bool, stats: SourceStats
) -> Iterator[LabeledPrompt]:
    with open(path, newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            stats.read["routellm"] += 1
            outcomes = {t: [1.0 if row[m] == "True" else 0.0] for t, m in ROUTELLM_TIERS.items()}
            allowed = cheapest_passing(outcomes, multiple_choice)
            if allowed is None:
                stats.drop("routellm", "no tier passes")
                continue
            yield LabeledPrompt(clean_prompt(row["prompt"]), allowed, source, "routellm")


def read_routellm(root: Path, stats: SourceStats) -> Iterator[LabeledPrompt]:
    for path in sorted((root / "routellm" / "mmlu").glob("*.csv")):
        yield from _routellm_file(path, "mmlu", True, stats)
    yield from _routellm_file(root / "routellm" / "gsm8k" / "gsm8k_responses.csv", "gsm8k", False, stats)


# --- OpenAssistant prompts with GPT-4 pairwise verdicts (qlora) -----------------------------
OASST_FAST = {"guanaco-7b", "guanaco-13b", "vicuna-13b"}
OASST_BALANCED = {"guanaco-30b", "guanaco-65b", "gpt-3.5"}


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


def read_oasst(root: Path, stats: SourceStats) -> Iterator[LabeledPrompt]:
    """fast if a small system ties or beats gpt-3.5; else balanced if a mid system ties or beats GPT-4.

    The GPT-4 judge favours long answers, so the small-versus-gpt-3.5 comparison is the steadier
    signal for `fast` (SOURCES.md).
    """
    verdicts: dict[str, list[tuple[str, str, int]]] = defaultdict(list)
    for path in sorted((root / "oasst-qlora" / "ratings-gpt4").glob("*-threeclass.jsonl")):
        a_part, b_part = path.name.removesuffix("-gpt-4-reviewer-threeclass.jsonl").split("-vs-")
        a, b = _oasst_system(a_part), _oasst_system(b_part)
        for line in path.read_text(encoding="utf-8").splitlines():
            r = json.loads(line)
            if r.get("score") in (1, 2, 3):
                verdicts[r["message_id"]].append((a, b, int(r["score"])))
    for line in _lines(root / "oasst-qlora" / "oa_questions.jsonl"):
        q = json.loads(line)
        stats.read["oasst-qlora"] += 1
        balanced_ok = _oasst_holds_up(verdicts, q["message_id"], OASST_BALANCED, "gpt-4")
        fast_ok = _oasst_holds_up(verdicts, q["message_id"], OASST_FAST, "gpt-3.5")
        if balanced_ok is None or fast_ok is None:
            stats.drop("oasst-qlora", "no verdicts")
            continue
        tier = "fast" if fast_ok else ("balanced" if balanced_ok else "frontier")
        text = chat_to_text(q["input"])
        yield LabeledPrompt(text, frozenset({tier}), "oasst", "oasst-qlora", lang=q.get("lang", "en"))


# --- Difficulty-only sources: the source or MATH level bounds the tier ------------------------
def read_math_levels(root: Path, stats: SourceStats) -> Iterator[LabeledPrompt]:
    for line in _lines(root / "math-levels" / "math_test.jsonl"):
        row = json.loads(line)
        stats.read["math-levels"] += 1
        m = re.search(r"(\d)", str(row.get("level", "")))
        if not m or int(m.group(1)) not in MATH_LEVEL_TIERS:
            stats.drop("math-levels", "level not 1-5")
            continue
        yield LabeledPrompt(
            clean_prompt(row["problem"]), MATH_LEVEL_TIERS[int(m.group(1))], "math", "math-levels"
        )


def _qwen_math_text(name: str, row: dict) -> str:
    if name == "svamp":
        return f"{row['Body'].strip()} {row['Question'].strip()}"
    if name == "asdiv":
        return f"{row['body'].strip()} {row['question'].strip()}"
    if name == "mawps":
        return row["input"]
    if name in ("aqua", "sat_math"):
        options = [re.sub(r"^\(?[A-E]\s*[\).:]\s*", "", o) for o in row["options"]]
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
    "routerbench": read_routerbench,
    "llmrouter": read_llmrouter,
    "routellm": read_routellm,
    "oasst-qlora": read_oasst,
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
