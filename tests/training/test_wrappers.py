"""The wrapper library: train/eval disjointness, prompt lengths, and the request bodies `wrap` builds."""

from __future__ import annotations

import json
import random
import re
import statistics
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from tierwise.core.request_text import content_text, record_text
from tierwise.training.paths import wrappers_dir
from tierwise.training.wrappers import CONDITIONS, ROLES, SPLITS, WrapperLibrary


def token_count(tokenizer: Any, text: str) -> int:
    """WordPiece tokens of `text`, without [CLS]/[SEP]; the tokenizer must not truncate or pad."""
    return len(tokenizer.encode(text, add_special_tokens=False).ids)


def untruncated(tokenizer: Any) -> Any:
    """A copy of a `tokenizers.Tokenizer` with truncation and padding off (the shipped one caps at 128)."""
    clone = type(tokenizer).from_str(tokenizer.to_str())
    clone.no_truncation()
    clone.no_padding()
    return clone


def token_lengths(library: WrapperLibrary, tokenizer: Any) -> dict[str, list[int]]:
    """Token counts per kind of wrapper text; system prompts are counted as sent (passages included)."""
    counter = untruncated(tokenizer)
    history_texts = ["\n\n".join(str(m.get("content") or "") for m in h.messages) for h in library.histories]
    texts = {
        "system_prompts": [p.text for p in library.system_prompts],
        "format_rules": [s.text for s in library.format_rules],
        "few_shot_headers": [s.text for s in library.few_shot_headers],
        "histories": history_texts,
        "follow_ups": [s.text for s in library.follow_ups],
    }
    return {kind: [token_count(counter, t) for t in group] for kind, group in texts.items()}


TASKS = [
    "What is the capital of Peru?",
    "Prove that there are infinitely many primes of the form 4k+3.",
    "Write a function f(x) that returns {x: x**2} and put the result in \\boxed{}; use {task} literally.",
]
SEEDS = range(12)
MIN_COUNTS = {
    "system_prompts": 25,
    "format_rules": 20,
    "few_shot_headers": 12,
    "histories": 15,
    "follow_ups": 8,
}
SENTENCE_MIN_WORDS = 8


@pytest.fixture(scope="module", params=SPLITS)
def library(request: pytest.FixtureRequest) -> WrapperLibrary:
    return WrapperLibrary.load(request.param)


@pytest.fixture(scope="module")
def raw_splits() -> dict[str, dict[str, Any]]:
    return {s: yaml.safe_load((wrappers_dir() / f"{s}.yaml").read_text(encoding="utf-8")) for s in SPLITS}


@pytest.fixture(scope="module")
def tokenizer() -> Any:
    tokenizers = pytest.importorskip("tokenizers")
    from tierwise.training.base_model import tokenizer_path

    try:
        path = tokenizer_path("all-MiniLM-L6-v2")
    except RuntimeError as err:  # the base model package is not installed
        pytest.skip(str(err))
    return tokenizers.Tokenizer.from_file(str(path))


# Disjointness -----------------------------------------------------------------------------------------


def strings(node: Any) -> Iterator[str]:
    """Every string in a parsed YAML tree, mapping keys included."""
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for key, value in node.items():
            yield str(key)
            yield from strings(value)
    elif isinstance(node, list):
        for item in node:
            yield from strings(item)


def words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", text.lower())


def long_sentences(raw: dict[str, Any]) -> set[tuple[str, ...]]:
    pieces = (p for s in strings(raw) for p in re.split(r"(?<=[.!?:;])\s+|\n+", s))
    return {tuple(w) for w in map(words, pieces) if len(w) >= SENTENCE_MIN_WORDS}


def word_runs(raw: dict[str, Any], n: int) -> set[tuple[str, ...]]:
    runs: set[tuple[str, ...]] = set()
    for text in strings(raw):
        w = words(text)
        runs.update(tuple(w[i : i + n]) for i in range(len(w) - n + 1))
    return runs


def entry_ids(raw: dict[str, Any]) -> set[str]:
    ids = {e["id"] for kind in MIN_COUNTS | {"acknowledgements": 0} for e in raw[kind]}
    return ids | set(raw.get("blocks") or {}) | set(raw.get("passages") or {}) | set(raw.get("tools") or {})


def test_ids_blocks_passages_and_tools_are_disjoint(raw_splits: dict[str, dict[str, Any]]) -> None:
    assert not entry_ids(raw_splits["train"]) & entry_ids(raw_splits["eval"])


def test_no_sentence_of_eight_words_is_shared(raw_splits: dict[str, dict[str, Any]]) -> None:
    shared = long_sentences(raw_splits["train"]) & long_sentences(raw_splits["eval"])
    assert not shared, [" ".join(s) for s in shared]


def test_no_run_of_eight_words_is_shared(raw_splits: dict[str, dict[str, Any]]) -> None:
    """Stricter than whole sentences: no eight consecutive words in common anywhere."""
    shared = word_runs(raw_splits["train"], 8) & word_runs(raw_splits["eval"], 8)
    assert not shared, [" ".join(s) for s in shared]


def test_ids_are_unique_within_a_split(library: WrapperLibrary) -> None:
    groups = [library.system_prompts, library.format_rules, library.few_shot_headers, library.histories]
    ids = [e.id for group in groups for e in group]
    ids += [e.id for e in (*library.follow_ups, *library.acknowledgements)]
    assert len(ids) == len(set(ids))


def test_files_stay_small() -> None:
    for split in SPLITS:
        assert (wrappers_dir() / f"{split}.yaml").stat().st_size < 400_000


# Contents ---------------------------------------------------------------------------------------------


def test_each_kind_has_enough_entries(library: WrapperLibrary) -> None:
    for kind, minimum in MIN_COUNTS.items():
        assert len(getattr(library, kind)) >= minimum, kind
    assert len(library.acknowledgements) >= 8


def test_system_prompt_lengths_span_short_to_long(library: WrapperLibrary, tokenizer: Any) -> None:
    lengths = token_lengths(library, tokenizer)["system_prompts"]
    assert len(lengths) >= 25
    assert sum(n < 100 for n in lengths) >= 8
    assert sum(n >= 800 for n in lengths) >= 6
    assert min(lengths) >= 20 and max(lengths) <= 1500
    assert 100 < statistics.median(lengths) < 800


def test_short_and_long_pools_hold_their_token_bounds(library: WrapperLibrary, tokenizer: Any) -> None:
    lengths = token_lengths(library, tokenizer)["system_prompts"]
    counted = {p.id: n for p, n in zip(library.system_prompts, lengths, strict=True)}
    assert all(counted[p.id] < 150 for p in library.short_prompts())
    assert all(counted[p.id] >= 800 for p in library.long_prompts())
    assert len(library.long_prompts()) >= 6


def test_many_app_kinds(library: WrapperLibrary) -> None:
    apps = {p.app for p in library.system_prompts}
    needed = {"customer_support", "internal_assistant", "rag", "tutoring", "coding_agent", "extraction"}
    assert needed <= apps and {"translation", "summarization", "finance", "legal_information"} <= apps
    assert len(apps) >= 12


def test_tools_have_the_openai_shape(library: WrapperLibrary) -> None:
    for tool in (t for p in library.system_prompts for t in p.tools):
        assert tool["type"] == "function"
        assert set(tool["function"]) == {"name", "description", "parameters"}
        assert tool["function"]["parameters"]["type"] == "object"


def test_tool_histories_answer_every_call(library: WrapperLibrary) -> None:
    tool_histories = [h for h in library.histories if h.kind == "tools"]
    assert len(tool_histories) >= 4
    for history in tool_histories:
        calls = [c for m in history.messages for c in m.get("tool_calls") or []]
        answered = {m["tool_call_id"] for m in history.messages if m["role"] == "tool"}
        assert calls and {c["id"] for c in calls} == answered
        assert all(isinstance(json.loads(c["function"]["arguments"]), dict) for c in calls)


def test_chat_histories_have_one_to_four_turns(library: WrapperLibrary) -> None:
    for history in library.chat_histories():
        users = sum(m["role"] == "user" for m in history.messages)
        assert 1 <= users <= 4 and history.messages[-1]["role"] == "assistant"


# Request bodies ---------------------------------------------------------------------------------------


def body_text(body: dict[str, Any]) -> str:
    if "text" in body:
        return body["text"]
    return "\n".join(content_text(m["content"]) for m in body["messages"])


def check_body(body: dict[str, Any], task: str, condition: str) -> None:
    if "text" in body:
        assert set(body) == {"text"} and task in body["text"]
        return
    messages = body["messages"]
    assert messages and all(isinstance(m, dict) and m["role"] in ROLES for m in messages)
    assert set(body) <= {"messages", "tools"}
    assert task in body_text(body)
    if condition != "follow_up":
        assert messages[-1]["role"] == "user" and task in content_text(messages[-1]["content"])
    assert task in record_text(body) or condition == "follow_up"


@pytest.mark.parametrize("condition", CONDITIONS)
def test_every_condition_builds_a_valid_body(library: WrapperLibrary, condition: str) -> None:
    for seed in SEEDS:
        for task in TASKS:
            check_body(library.wrap(task, condition, random.Random(seed)), task, condition)


def test_conditions_have_their_shape(library: WrapperLibrary) -> None:
    rng = random.Random(0)
    task = TASKS[0]
    assert library.wrap(task, "agent_tools", rng)["tools"]
    assert "text" in library.wrap(task, "few_shot", rng)
    developer = library.wrap(task, "developer_parts", rng)["messages"]
    assert developer[0]["role"] == "developer" and isinstance(developer[-1]["content"], list)
    follow_up = library.wrap(task, "follow_up", rng)["messages"]
    assert follow_up[-1]["content"] != task and follow_up[-2]["role"] == "assistant"
    assert any(m.get("tool_calls") for m in library.wrap(task, "agent_tools", rng)["messages"])


def test_multi_turn_has_earlier_turns(library: WrapperLibrary) -> None:
    for seed in SEEDS:
        messages = library.wrap(TASKS[0], "multi_turn", random.Random(seed))["messages"]
        assert messages[0]["role"] == "system" and 3 <= len(messages) <= 10


def test_rag_uses_both_layouts(library: WrapperLibrary) -> None:
    bodies = [library.wrap(TASKS[0], "rag", random.Random(seed)) for seed in range(30)]
    in_system = [b for b in bodies if "[1] " in b["messages"][0]["content"]]
    in_user = [b for b in bodies if any("[1] " in str(m["content"]) for m in b["messages"][1:])]
    assert in_system and in_user


def test_format_rule_uses_both_shapes(library: WrapperLibrary) -> None:
    bodies = [library.wrap(TASKS[0], "format_rule", random.Random(seed)) for seed in range(30)]
    assert any("text" in b for b in bodies) and any("messages" in b for b in bodies)


def test_sample_builds_valid_bodies_of_many_shapes(library: WrapperLibrary) -> None:
    rng = random.Random(7)
    bodies = [library.sample(TASKS[1], rng) for _ in range(200)]
    assert all(TASKS[1] in body_text(b) for b in bodies)
    assert sum("tools" in b for b in bodies) > 0 and sum("text" in b for b in bodies) > 0


def test_same_seed_same_body(library: WrapperLibrary) -> None:
    for condition in CONDITIONS:
        first = library.wrap(TASKS[1], condition, random.Random(42))
        assert first == library.wrap(TASKS[1], condition, random.Random(42))
    assert library.sample(TASKS[0], random.Random(5)) == library.sample(TASKS[0], random.Random(5))


def test_bodies_do_not_share_state_with_the_library(library: WrapperLibrary) -> None:
    body = library.wrap(TASKS[0], "agent_tools", random.Random(1))
    body["messages"][1]["content"] = "changed"
    body["tools"][0]["function"]["name"] = "changed"
    assert body != library.wrap(TASKS[0], "agent_tools", random.Random(1))


# Errors -----------------------------------------------------------------------------------------------


def test_unknown_condition_is_named(library: WrapperLibrary) -> None:
    with pytest.raises(ValueError, match="unknown wrapper condition 'nope'.*system_short"):
        library.wrap("hi", "nope", random.Random(0))


def test_unknown_split_is_named() -> None:
    with pytest.raises(ValueError, match="unknown wrapper split 'test'.*train, eval"):
        WrapperLibrary.load("test")


def test_missing_file_says_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"eval\.yaml is missing.*restore it"):
        WrapperLibrary.load("eval", tmp_path)


def test_broken_file_names_the_file(tmp_path: Path) -> None:
    raw = yaml.safe_load((wrappers_dir() / "train.yaml").read_text(encoding="utf-8"))
    raw["system_prompts"][0]["blocks"] = ["no_such_block"]
    (tmp_path / "train.yaml").write_text(yaml.safe_dump(raw), encoding="utf-8")
    with pytest.raises(ValueError, match=r"train\.yaml: .*block 'no_such_block'"):
        WrapperLibrary.load("train", tmp_path)
    (tmp_path / "train.yaml").write_text("split: eval\n", encoding="utf-8")
    with pytest.raises(ValueError, match="expected 'train'"):
        WrapperLibrary.load("train", tmp_path)
