"""Tiny files in the real layout of each public collection `tierwise.training.sources` reads: the
writers the label-rule tests share (tests/training/test_sources*.py)."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable
from pathlib import Path

from tierwise.training.sources import ROUTERBENCH_TIERS, LabeledPrompt


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")


def write_csv(path: Path, header: list[str], rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=header)
        writer.writeheader()
        writer.writerows(rows)


def labels(rows: Iterable[LabeledPrompt]) -> dict[str, set[str]]:
    """text -> allowed tiers of each labeled row."""
    return {r.text: set(r.allowed) for r in rows}


# --- zeroeval ---------------------------------------------------------------------------------
ZEROEVAL_MODELS = {
    "fast-a": {"class": "fast", "core": True},
    "fast-b": {"class": "fast", "core": True},
    "fast-old": {"class": "fast", "core": False},  # a snapshot: does not vote
    "bal-a": {"class": "balanced", "core": True},
    "bal-b": {"class": "balanced", "core": True},
    "front-a": {"class": "frontier", "core": True},
    "front-b": {"class": "frontier", "core": True},
    "odd": {"class": "other", "core": True},  # unsure class: ignored
}


def zeroeval_dir(root: Path, gsm: list[dict], math: list[dict] = (), crux: list[dict] = ()) -> Path:
    (root / "zeroeval").mkdir(parents=True)
    (root / "zeroeval" / "models.json").write_text(json.dumps(ZEROEVAL_MODELS))
    for name, rows in (("gsm", gsm), ("math_l5", math), ("crux", crux)):
        write_jsonl(
            root / "zeroeval" / f"{name}.jsonl",
            [{"id": f"{name}-#{i}", "task": name, "gold": "1", **r} for i, r in enumerate(rows)],
        )
    return root


# --- shaberi ---------------------------------------------------------------------------------
SHABERI_MODELS = {
    "f1": {"class": "fast", "core": True},
    "f2": {"class": "fast", "core": True},
    "b1": {"class": "balanced", "core": True},
    "b2": {"class": "balanced", "core": True},
    "x1": {"class": "frontier", "core": True},
    "x2": {"class": "frontier", "core": True},
}


def shaberi_dir(root: Path, elyza: list[dict], rakuda: list[dict]) -> Path:
    (root / "shaberi").mkdir(parents=True)
    (root / "shaberi" / "models.json").write_text(json.dumps(SHABERI_MODELS))
    write_jsonl(
        root / "shaberi" / "elyza_tasks_100.jsonl",
        [
            {"id": f"elyza-{i:03d}", "dataset": "elyza/ELYZA-tasks-100", "category": None, "scale": 5, **r}
            for i, r in enumerate(elyza, 1)
        ],
    )
    write_jsonl(
        root / "shaberi" / "rakuda_questions.jsonl",
        [
            {"id": f"rakuda-{i}", "dataset": "yuzuai/rakuda-questions", "category": "地理", "scale": 10, **r}
            for i, r in enumerate(rakuda, 1)
        ],
    )
    return root


# --- RouterBench -----------------------------------------------------------------------------
ROUTERBENCH_MODELS = [
    "WizardLM/WizardLM-13B-V1.2",
    "claude-instant-v1",
    "claude-v1",
    "claude-v2",
    "gpt-3.5-turbo-1106",
    "gpt-4-1106-preview",
    "meta/code-llama-instruct-34b-chat",
    "meta/llama-2-70b-chat",
    "mistralai/mistral-7b-chat",
    "mistralai/mixtral-8x7b-chat",
    "zero-one-ai/Yi-34B-Chat",
]
FAST_2023 = ROUTERBENCH_TIERS["fast"]  # today's fast class: the 2023 balanced-class models
BALANCED_2023 = ["claude-v1", "claude-v2", "gpt-4-1106-preview"]


def routerbench_row(prompt: str, eval_name: str, passing: set[str]) -> dict:
    row = {"": "0", "sample_id": "x", "prompt": repr([prompt]), "eval_name": eval_name}
    row |= {m: "1.0" if m in passing else "0.0" for m in ROUTERBENCH_MODELS}
    return row | {"oracle_model_to_route_to": "gpt-4-1106-preview"}


def routerbench_dir(root: Path, arc: list[dict], mbpp: list[dict]) -> Path:
    header = ["", "sample_id", "prompt", "eval_name", *ROUTERBENCH_MODELS, "oracle_model_to_route_to"]
    for name, rows in (("arc_challenge", arc), ("mbpp", mbpp), ("winograde", [])):
        write_csv(root / "routerbench" / f"{name}_train.csv", header, rows)
        write_csv(root / "routerbench" / f"{name}_test.csv", header, [])
    return root


# --- LLMRouter -------------------------------------------------------------------------------
SMALL_2024 = [
    "qwen2.5-7b-instruct",
    "codegemma-7b",
    "gemma-2-9b-it",
    "llama-3.1-8b-instruct",
    "mistral-7b-instruct-v0.3",
]
NEMOTRONS = ["llama-3.1-nemotron-51b-instruct", "llama-3.3-nemotron-super-49b-v1"]
CHATQA = ["llama3-chatqa-1.5-8b", "llama3-chatqa-1.5-70b"]


def llmrouter_dir(root: Path, rows: list[tuple[str, str, str, set[str]]]) -> Path:
    """rows: (question, task_name, metric, passing models)."""
    (root / "llmrouter").mkdir(parents=True)
    queries = [{"task_name": t, "query": q, "metric": m, "choices": None} for q, t, m, _ in rows]
    scores = [
        {"question": q, "scores": {m: 1.0 if m in ok else 0.0 for m in SMALL_2024 + NEMOTRONS + CHATQA}}
        for q, _, _, ok in rows
    ]
    write_jsonl(root / "llmrouter" / "default_query_train.jsonl", queries)
    write_jsonl(root / "llmrouter" / "default_query_test.jsonl", [])
    (root / "llmrouter" / "train.json").write_text(json.dumps(scores))
    (root / "llmrouter" / "test.json").write_text("[]")
    return root


# --- RouteLLM --------------------------------------------------------------------------------
MIXTRAL, GPT4 = "mistralai/Mixtral-8x7B-Instruct-v0.1", "gpt-4-1106-preview"


# --- OpenAssistant (qlora) -------------------------------------------------------------------
OASST_FILES = {
    "7b": "7b-guanaco-oa-generations-topp0.9-temp0.7",
    "30b": "30b-guanaco-oa-generations-topp0.9-temp0.7",
    "gpt-3.5": "gpt-3.5-oa-generations",
    "gpt-4": "gpt-4-oa-generations",
}


def oasst_verdicts(root: Path, a: str, b: str, scores: dict[str, int]) -> None:
    """File `a-vs-b`: score 1 = a's answer better, 2 = b's, 3 = tie, -1 = unparsed."""
    name = f"{OASST_FILES[a]}-vs-{OASST_FILES[b]}-gpt-4-reviewer-threeclass.jsonl"
    write_jsonl(
        root / "oasst-qlora" / "ratings-gpt4" / name,
        [{"review_id": "r", "message_id": mid, "score": s, "text": "..."} for mid, s in scores.items()],
    )
